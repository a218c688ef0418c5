"""Training: the command line resolved into one :class:`TrainConfig`, the loop, the method
hooks and self-describing checkpoints; :func:`train` is ``train.py``'s whole run::

    from cogrnet.training import parse_config, train
    cfg = parse_config(["--dataset", "phantom", "--method", "mt", "--max_iteration", "100"])
    train(cfg.replace(seed=7))
"""
from ..train_config import TrainConfig
from .config import parse_config
from .trainer import TrainResult, Trainer, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "parse_config", "train"]
