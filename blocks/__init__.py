"""Transformer building blocks: norms, MLPs (GELU, SwiGLU, GeGLU), DropPath, pre-/post-/sandwich-norm residual
blocks, pre-/post-norm decoder blocks with cross-attention (encoder-decoders), Mixture-of-Experts feed-forwards,
and the constant scale and soft-cap a model applies at its ends."""

from blocks.block import PostNormBlock, PreNormBlock, SandwichNormBlock, build_block
from blocks.cross_block import PostNormCrossBlock, PreNormCrossBlock, build_cross_block
from blocks.drop_path import DropPath
from blocks.mlp import GeGLU, GeluMLP, SwiGLU, build_mlp
from blocks.moe import MoE, SharedExperts, SwiGLUExperts, build_feed_forward
from blocks.moe_losses import moe_losses
from blocks.norms import OffsetRMSNorm, RMSNorm, build_norm
from blocks.scaling import Scale, Softcap

__all__ = [
    "DropPath",
    "GeGLU",
    "GeluMLP",
    "MoE",
    "OffsetRMSNorm",
    "PostNormBlock",
    "PostNormCrossBlock",
    "PreNormBlock",
    "PreNormCrossBlock",
    "RMSNorm",
    "SandwichNormBlock",
    "Scale",
    "SharedExperts",
    "Softcap",
    "SwiGLU",
    "SwiGLUExperts",
    "build_block",
    "build_cross_block",
    "build_feed_forward",
    "build_mlp",
    "build_norm",
    "moe_losses",
]
