"""Training: the loop, the method hooks and self-describing checkpoints; :func:`train` is
``train.py``'s whole run."""
from .trainer import TrainResult, Trainer, train

__all__ = ["TrainResult", "Trainer", "train"]
