"""The tensor-parallel plan of a transformer layer stack, shared by every assembler that stacks ``blocks``.

Keys are module paths with ``*`` for the layer index; the names are the ones ``attn`` and ``blocks`` give their
linears (SwiGLU/GeGLU ``w1``/``w3``/``w2``, the GELU MLP's ``fc``/``proj``), so one plan covers every MLP kind.
"""

from __future__ import annotations

from typing import Literal

LAYER_TP_PLAN: dict[str, Literal["colwise", "rowwise"]] = {
    "layers.*.attn.wq": "colwise",
    "layers.*.attn.wk": "colwise",
    "layers.*.attn.wv": "colwise",
    "layers.*.attn.wo": "rowwise",
    "layers.*.mlp.w1": "colwise",
    "layers.*.mlp.w3": "colwise",
    "layers.*.mlp.w2": "rowwise",
    "layers.*.mlp.fc": "colwise",
    "layers.*.mlp.proj": "rowwise",
}
