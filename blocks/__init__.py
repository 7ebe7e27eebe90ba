"""Transformer building blocks: norms, MLPs (GELU, SwiGLU), DropPath, pre-/post-norm residual blocks."""

from blocks.block import PostNormBlock, PreNormBlock, build_block
from blocks.drop_path import DropPath
from blocks.mlp import GeluMLP, SwiGLU, build_mlp
from blocks.norms import RMSNorm, build_norm

__all__ = [
    "DropPath",
    "GeluMLP",
    "PostNormBlock",
    "PreNormBlock",
    "RMSNorm",
    "SwiGLU",
    "build_block",
    "build_mlp",
    "build_norm",
]
