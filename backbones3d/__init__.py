"""backbones3d: whole 3D networks and a timm-style registry (DESIGN.md §1, §2, §5–§9).

Importing the package registers every model here and in timm's registry.

Example::

    >>> import torch, backbones3d
    >>> backbones3d.create_model("test_mambaout_3d")(torch.randn(1, 3, 16, 16, 16)).shape
    torch.Size([1, 2])
"""

from backbones3d._builder import create_model
from backbones3d._registry import (
    get_pretrained_cfg,
    is_model,
    is_multi_sequence,
    list_models,
    list_modules,
    register_model,
)
from backbones3d.inflate import InflationReport, inflate_2d

# Model files: one import line each (after the registry), so that their models register.
# isort: split
from backbones3d import convnextv2_3d as convnextv2_3d
from backbones3d import densenet3d as densenet3d
from backbones3d import desamba as desamba
from backbones3d import efficientnet3d as efficientnet3d
from backbones3d import mambaout3d as mambaout3d
from backbones3d import resnet3d as resnet3d
from backbones3d import samnet as samnet
from backbones3d import swinv2_3d as swinv2_3d
from backbones3d import vim3d as vim3d
from backbones3d import vit3d as vit3d

__all__ = [
    "InflationReport",
    "create_model",
    "get_pretrained_cfg",
    "inflate_2d",
    "is_model",
    "is_multi_sequence",
    "list_models",
    "list_modules",
    "register_model",
]
