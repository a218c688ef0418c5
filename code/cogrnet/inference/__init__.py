"""Inference: sliding-window prediction of whole volumes and its post-processing."""
from .sliding_window import (gaussian_importance_map, largest_component, postprocess,
                             predict_volume, sliding_window_inference, strides_from_overlap,
                             window_grid, window_starts)

__all__ = ["gaussian_importance_map", "largest_component", "postprocess", "predict_volume",
           "sliding_window_inference", "strides_from_overlap", "window_grid", "window_starts"]
