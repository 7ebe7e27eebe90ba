"""The gated delta rule (Gated DeltaNet, Yang, Kautz and Hatamizadeh 2024), in a recurrent and a chunked form.

Each value head keeps a state ``S (Dk, Dv)``. Token ``t`` decays it by ``exp(g_t)`` (``g_t <= 0``), then moves
what it stores along ``k_t`` towards ``v_t`` by a step ``beta_t`` in ``[0, 1]`` (the delta rule), and reads it
with ``q_t``::

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T          o_t = scale * q_t^T S_t

The recurrent form runs that loop token by token (what one decoding step needs). The chunked form computes the
same function over chunks of ``C`` tokens: inside a chunk the corrections ``beta_t (v_t - S^T k_t)`` depend on
each other through a unit lower-triangular system (the UT transform), solved once per chunk, so only the short
loop over chunks is sequential (what training and prefill run).

Layout is ``(B, H, T, D)`` as in attention. Queries and keys may have fewer heads (``Hk``) than values (``Hv``):
key head ``h`` serves value heads ``h * Hv // Hk`` up to the next one (Qwen3-Next's grouping). Both forms compute
in float32 (float64 for float64 inputs) with autocast off: the decays ``exp(sum g)`` and the triangular solve
lose too much in bfloat16. Outputs come back in ``v``'s dtype, states in the compute dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from specs.tensor_spec import TensorSpec

_QK = TensorSpec("q/k", ("B", "Hk", "T", "Dk"))
_V = TensorSpec("v", ("B", "Hv", "T", "Dv"))
_GATE = TensorSpec("g/beta", ("B", "Hv", "T"))
_STATE = TensorSpec("initial_state", ("B", "Hv", "Dk", "Dv"))


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(sum(x ** 2) + eps)`` over the last dim (the epsilon inside the root, as the FLA kernels do)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def delta_rule_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    *,
    initial_state: Tensor | None = None,
    qk_l2norm: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The gated delta rule token by token: ``q, k (B, Hk, T, Dk)``, ``v (B, Hv, T, Dv)``, log-decays ``g`` and
    steps ``beta`` ``(B, Hv, T)``, state ``(B, Hv, Dk, Dv)`` (zeros when None). Returns the outputs
    ``(B, Hv, T, Dv)`` and the state after the last token. ``scale`` defaults to ``Dk ** -0.5``; ``qk_l2norm``
    normalises queries and keys to unit length first."""
    out_dtype = v.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, g, beta, state = _prepare(q, k, v, g, beta, initial_state, qk_l2norm, scale)
        outputs = []
        for t in range(v.shape[2]):
            k_t = k[:, :, t, None, :]  # (B, H, 1, Dk): row vectors, so k_t @ S reads the state along k_t
            state = state * g[:, :, t, None, None].exp()
            correction = beta[:, :, t, None, None] * (v[:, :, t, None, :] - k_t @ state)  # (B, H, 1, Dv)
            state = state + k_t.transpose(-1, -2) @ correction
            outputs.append(q[:, :, t, None, :] @ state)
        return torch.cat(outputs, dim=2).to(out_dtype), state


def delta_rule_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    *,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    qk_l2norm: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The same function as :func:`delta_rule_recurrent`, computed ``chunk_size`` tokens at a time.

    A sequence that is not a whole number of chunks is padded at the end with tokens that change nothing
    (``g = 0``: no decay; ``beta = 0``, ``k = 0``: no write), so the returned state is the last real token's."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = v.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, g, beta, state = _prepare(q, k, v, g, beta, initial_state, qk_l2norm, scale)
        batch, heads, length, _ = v.shape
        pad = -length % chunk_size
        if pad:
            q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
            g, beta = (torch.nn.functional.pad(x, (0, pad)) for x in (g, beta))
        n_chunks = (length + pad) // chunk_size
        q, k, v = (x.reshape(batch, heads, n_chunks, chunk_size, -1) for x in (q, k, v))
        g, beta = (x.reshape(batch, heads, n_chunks, chunk_size) for x in (g, beta))

        decay_in = g.cumsum(dim=-1)  # log of the decay from the chunk's start through token i
        causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
        # decay[i, j] = exp(decay_in[i] - decay_in[j]) for j <= i, else 0; masked before exp, so nothing overflows.
        decay = (decay_in[..., :, None] - decay_in[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        k_beta = k * beta[..., None]
        # Corrections u_i = beta_i (v_i - S_before_i^T k_i) solve (I + A) u = beta v - (beta exp(decay_in) k) S0,
        # with A[i, j] = beta_i k_i.k_j decay[i, j] strictly below the diagonal.
        system = (k_beta @ k.transpose(-1, -2) * decay).tril(-1)
        from_values = torch.linalg.solve_triangular(system, v * beta[..., None], upper=False, unitriangular=True)
        from_state = torch.linalg.solve_triangular(
            system, k_beta * decay_in.exp()[..., None], upper=False, unitriangular=True
        )
        within = q @ k.transpose(-1, -2) * decay  # what token i reads of the corrections written in its chunk
        q_decayed = q * decay_in.exp()[..., None]  # token i reads S0 decayed up to i
        k_to_end = k * (decay_in[..., -1:] - decay_in).exp()[..., None]  # correction j decayed to the chunk end
        chunk_decay = decay_in[..., -1].exp()[..., None, None]

        outputs = []
        for c in range(n_chunks):
            corrections = from_values[:, :, c] - from_state[:, :, c] @ state
            outputs.append(q_decayed[:, :, c] @ state + within[:, :, c] @ corrections)
            state = state * chunk_decay[:, :, c] + k_to_end[:, :, c].transpose(-1, -2) @ corrections
        out = torch.cat(outputs, dim=2)[:, :, :length]
        return out.to(out_dtype), state


def _prepare(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    initial_state: Tensor | None,
    qk_l2norm: bool,
    scale: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, widen queries/keys to the value heads, go to float32, normalise and scale the queries."""
    dims = _QK.check(q)
    _QK.check(k, dims)
    dims = _V.check(v, {"B": dims["B"], "T": dims["T"]})
    _GATE.check(g, dims)
    _GATE.check(beta, dims)
    key_heads, value_heads = q.shape[1], v.shape[1]
    if value_heads % key_heads:
        raise ValueError(f"value heads ({value_heads}) must be a multiple of query/key heads ({key_heads})")
    if value_heads != key_heads:
        q, k = (x.repeat_interleave(value_heads // key_heads, dim=1) for x in (q, k))
    compute = torch.promote_types(v.dtype, torch.float32)  # float32, or float64 for float64 inputs
    q, k, v, g, beta = (x.to(compute) for x in (q, k, v, g, beta))
    if qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    if initial_state is None:
        state = q.new_zeros(v.shape[0], value_heads, q.shape[-1], v.shape[-1])
    else:
        _STATE.check(initial_state, {"B": v.shape[0], "Hv": value_heads, "Dk": q.shape[-1], "Dv": v.shape[-1]})
        state = initial_state.to(compute)
    return q, k, v, g, beta, state
