"""Training and evaluation on top of the networks (``spectral3d train|evaluate|predict``).

An application package: ``import spectral3d`` does not import it, and its names load on first
access (PEP 562), so :class:`TrainConfig` (``spectral3d.train.config``) needs no torch.
"""

from spectral3d._lazy import lazy_exports

_CHECKPOINT = (
    "load_config",
    "load_model_state",
    "load_training_state",
    "resolve_checkpoint",
    "save_checkpoint",
    "update_pointer",
)
_TRAINER = ("FitResult", "fit", "predict")

__all__ = sorted([*_CHECKPOINT, *_TRAINER, "TrainConfig"])

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_CHECKPOINT, "spectral3d.train.checkpoint"),
        **dict.fromkeys(_TRAINER, "spectral3d.train.trainer"),
        "TrainConfig": "spectral3d.train.config",
    },
    submodules=("checkpoint", "config", "explain", "trainer", "workflow"),
)
