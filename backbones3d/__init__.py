"""backbones3d: whole 3D networks and a timm-style registry (DESIGN.md §1, §2, §5–§9).

Importing the package imports every model file, which registers its models here and in timm's
registry (``timm.create_model("mambaout_femto_3d")`` works after ``import backbones3d``).

Example::

    >>> import torch, backbones3d
    >>> model = backbones3d.create_model("test_mambaout_3d")
    >>> model(torch.randn(1, 3, 16, 16, 16)).shape
    torch.Size([1, 2])
"""

from backbones3d._builder import create_model
from backbones3d._registry import get_pretrained_cfg, is_model, list_models, list_modules, register_model

# Model files: one import each, so that their models register.

__all__ = [
    "create_model",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_modules",
    "register_model",
]
