"""Inference: a trained model from its checkpoint (``model``), sliding-window prediction of
whole volumes and its post-processing (``sliding_window``), the preprocessing a checkpoint
records and the inference flags resolved into settings (``settings``: :class:`InferenceFlags`,
:class:`InferenceSettings`), and the segmentation of images (``segment``:
:func:`segment_image`, :func:`predict`)."""
from ..checkpoints import load_checkpoint
from .model import checkpoint_patch, load_model, load_weights
from .segment import predict, segment_image
from .settings import InferenceFlags, InferenceSettings
from .sliding_window import (gaussian_importance_map, largest_component, postprocess,
                             predict_volume, sliding_window_inference, strides_from_overlap,
                             window_grid, window_starts)

__all__ = ["InferenceFlags", "InferenceSettings", "checkpoint_patch", "gaussian_importance_map",
           "largest_component", "load_checkpoint", "load_model", "load_weights", "postprocess",
           "predict", "predict_volume", "segment_image", "sliding_window_inference",
           "strides_from_overlap", "window_grid", "window_starts"]
