"""Transformer building blocks: norms, MLPs (GELU, SwiGLU, GeGLU), DropPath, pre-/post-/sandwich-norm residual
blocks, pre-/post-norm decoder blocks with cross-attention (encoder-decoders), and the constant scale and
soft-cap a model applies at its ends."""

from blocks.block import PostNormBlock, PreNormBlock, SandwichNormBlock, build_block
from blocks.cross_block import PostNormCrossBlock, PreNormCrossBlock, build_cross_block
from blocks.drop_path import DropPath
from blocks.mlp import GeGLU, GeluMLP, SwiGLU, build_mlp
from blocks.norms import OffsetRMSNorm, RMSNorm, build_norm
from blocks.scaling import Scale, Softcap

__all__ = [
    "DropPath",
    "GeGLU",
    "GeluMLP",
    "OffsetRMSNorm",
    "PostNormBlock",
    "PostNormCrossBlock",
    "PreNormBlock",
    "PreNormCrossBlock",
    "RMSNorm",
    "SandwichNormBlock",
    "Scale",
    "Softcap",
    "SwiGLU",
    "build_block",
    "build_cross_block",
    "build_mlp",
    "build_norm",
]
