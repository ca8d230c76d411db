"""Training and evaluation on top of the networks (``spectral3d train|evaluate|predict``).

An application package: ``import spectral3d`` does not import it.
"""

from spectral3d.train.checkpoint import (
    load_config,
    load_model_state,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
    update_pointer,
)
from spectral3d.train.trainer import FitResult, TrainConfig, fit, predict

__all__ = [
    "FitResult",
    "TrainConfig",
    "fit",
    "load_config",
    "load_model_state",
    "load_training_state",
    "predict",
    "resolve_checkpoint",
    "save_checkpoint",
    "update_pointer",
]
