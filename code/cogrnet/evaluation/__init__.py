"""Evaluation: medpy-exact metrics, the per-case evaluation loop and the reports."""
from .evaluate import evaluate_model, mean_dice, score_prediction, segment_image
from .metrics import asd, binary_metrics, case_metrics, dc, hd95, jc, surface_distances
from .report import format_table, summarize, write_report

__all__ = ["asd", "binary_metrics", "case_metrics", "dc", "evaluate_model", "format_table",
           "hd95", "jc", "mean_dice", "score_prediction", "segment_image", "summarize",
           "surface_distances", "write_report"]
