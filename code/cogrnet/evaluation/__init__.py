"""Evaluation: medpy-exact metrics, the per-case evaluation loop and the reports;
:func:`evaluate_split` is ``test.py``'s whole run."""
from .evaluate import (evaluate_model, require_scorable, score_prediction,
                       validation_dice)
from .metrics import asd, binary_metrics, case_metrics, dc, hd95, jc, surface_distances
from .report import format_table, summarize, write_report
from .run import EvaluationResult, evaluate_split

__all__ = ["EvaluationResult", "asd", "binary_metrics", "case_metrics", "dc", "evaluate_model",
           "evaluate_split", "format_table", "hd95", "jc", "require_scorable",
           "score_prediction", "summarize", "surface_distances", "validation_dice",
           "write_report"]
