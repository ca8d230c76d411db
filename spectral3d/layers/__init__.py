"""Drop-in 3D layers (DESIGN.md §3–§7), re-exported flat, timm-style; volumes ``(N, C, D, H, W)`` in and out.

Shared arguments: ``dim``/``channels``/``num_channels`` C; ``kernel_size`` an odd int or ``(D, H, W)`` of odd ints;
``mlp_ratio``: hidden width ``int(mlp_ratio · C)``; ``drop_path``: stochastic-depth rate of the residual branch;
``eps``: added in norms (1e-6); ``conv_mlp``: timm's channels-first layout (1×1×1 convs, LayerNorm3d);
``drop_rate``: dropout before a classifier; ``device``/``dtype``: where and how parameters are created.
"""

from spectral3d.layers.convnextv2_block import ConvNeXtV2Block3d, ConvNeXtV2Body3d, GRNMlp3d
from spectral3d.layers.depthwise import DepthwiseConv3d
from spectral3d.layers.drlm import DRLM, DRLMOutput, SymmetricPairEncoder
from spectral3d.layers.fusion import MultiScaleFusion
from spectral3d.layers.gated_cnn import GatedCNNBlock3d
from spectral3d.layers.heads import (
    POOL_TYPES,
    ClassifierHead3d,
    MlpHead,
    channel_linear,
    check_global_pool,
    global_pool_3d,
)
from spectral3d.layers.norm import GRN3d, LayerNorm3d
from spectral3d.layers.patch_embed import PatchEmbed3d
from spectral3d.layers.samb import SAMB, band_index
from spectral3d.layers.samblock import SAMBlock
from spectral3d.layers.spectral_stem import SpectralStem3d
from spectral3d.layers.tabular import TabularEncoder

__all__ = [
    "POOL_TYPES",
    "ClassifierHead3d",
    "channel_linear",
    "check_global_pool",
    "global_pool_3d",
    "DRLM",
    "SAMB",
    "ConvNeXtV2Block3d",
    "ConvNeXtV2Body3d",
    "DRLMOutput",
    "DepthwiseConv3d",
    "GRN3d",
    "GRNMlp3d",
    "GatedCNNBlock3d",
    "LayerNorm3d",
    "MlpHead",
    "MultiScaleFusion",
    "PatchEmbed3d",
    "SAMBlock",
    "SpectralStem3d",
    "SymmetricPairEncoder",
    "TabularEncoder",
    "band_index",
]
