"""The batched MoE layer equals a naive per-token loop, forward and gradients, for every routing choice; the
auxiliary losses equal their formulas computed token by token.

The reference (``naive_moe``) is written from the definitions in :class:`specs.MoEConfig`: for each token, its
scores, its top-k experts, each expert's SwiGLU on that one token vector, weighted and summed; capacity is
applied by walking the assignments in priority order (all first choices, then all second choices, earlier
tokens first); expert choice walks each expert's column of scores. Tolerance: float32, the same arithmetic
in another order (batched matmuls vs one vector at a time). The weights are large on purpose (std 0.3, so
routing is decisive): outputs reach ~12 and gradients ~25, and the observed max errors are 2.4e-6 (outputs)
and 5.7e-6 (gradients), a few float32 ulps of those values; ``ATOL``/``RTOL`` of 1e-5 each leave room, while a
wrong weight, expert or dropped token moves outputs by > 1e-2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attn.context import AttentionContext, ForwardRecord
from blocks.moe import RECORD_KEY, MoE
from blocks.moe_losses import moe_losses
from specs.moe_config import MoEConfig

ATOL = 1e-5
RTOL = 1e-5
D_MODEL = 16
N_TOKENS = 2 * 13


def _expert(moe: MoE, e: int, v: torch.Tensor) -> torch.Tensor:
    w = moe.experts
    return w.w2[e] @ (F.silu(w.w1[e] @ v) * (w.w3[e] @ v))


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """One token at a time, from the definitions."""
    cfg = moe.cfg
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    logits = (flat @ moe.router.weight.t()).float()
    rows: list[torch.Tensor] = [torch.zeros(flat.shape[-1]) for _ in range(n)]
    if cfg.routing == "expert_choice":
        capacity = max(1, min(n, math.ceil(cfg.capacity_factor * n * cfg.top_k / cfg.n_experts)))
        probs = logits.softmax(dim=-1)
        for e in range(cfg.n_experts):
            weights, tokens = probs[:, e].topk(capacity)
            for w, t in zip(weights, tokens.tolist(), strict=True):
                rows[t] = rows[t] + w * _expert(moe, e, flat[t])
    else:
        choices = []
        for t in range(n):
            scores = logits[t].softmax(-1) if cfg.gate == "softmax" else logits[t].sigmoid()
            weights, experts = scores.topk(cfg.top_k)
            if cfg.normalize_top_k:
                weights = weights / weights.sum()
            choices.append((weights, experts.tolist()))
        capacity = n * cfg.top_k if cfg.capacity_factor is None else math.ceil(cfg.capacity_factor * n * cfg.top_k / cfg.n_experts)
        taken = [0] * cfg.n_experts
        for j in range(cfg.top_k):  # priority: every first choice, then every second choice, ...
            for t in range(n):
                weights, experts = choices[t]
                e = experts[j]
                taken[e] += 1
                if taken[e] <= capacity:
                    rows[t] = rows[t] + weights[j] * _expert(moe, e, flat[t])
    out = torch.stack(rows)
    if moe.shared is not None:
        shared = torch.stack([moe.shared.mlp(v) for v in flat])
        if moe.shared.gate is not None:
            shared = shared * torch.stack([torch.sigmoid(moe.shared.gate.weight[0] @ v) for v in flat])[:, None]
        out = out + shared
    return out.reshape(x.shape)


def _moe(seed: int = 0, **fields) -> MoE:
    cfg = MoEConfig(**{"n_experts": 5, "top_k": 2, "expert_hidden": 12, **fields})
    torch.manual_seed(seed)
    moe = MoE(cfg, D_MODEL)
    moe.experts.init_weights(0.3, 0.3)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    if moe.shared is not None:
        for p in moe.shared.parameters():
            torch.nn.init.normal_(p, std=0.3)
    return moe


CASES = {
    "softmax-renormalised": {},
    "softmax-raw": {"normalize_top_k": False},
    "sigmoid-renormalised": {"gate": "sigmoid"},
    "sigmoid-raw": {"gate": "sigmoid", "normalize_top_k": False},
    "top1": {"top_k": 1},
    "shared": {"n_shared_experts": 2, "shared_expert_hidden": 6},
    "shared-gated": {"n_shared_experts": 1, "shared_expert_gate": True},
    "capacity-drops": {"capacity_factor": 0.6},
    "capacity-ample": {"capacity_factor": 4.0},
    "capacity-sigmoid-shared": {"capacity_factor": 0.8, "gate": "sigmoid", "n_shared_experts": 1},
    "expert-choice": {"routing": "expert_choice", "capacity_factor": 1.0},
    "expert-choice-small": {"routing": "expert_choice", "capacity_factor": 0.3, "n_shared_experts": 1},
}


@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_batched_equals_naive_loop_forward_and_gradients(fields: dict) -> None:
    moe = _moe(**fields)
    x = torch.randn(2, N_TOKENS // 2, D_MODEL, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))

    def run(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        xi = x.clone().requires_grad_(True)
        out = fn(moe, xi)
        params = [xi, *moe.parameters()]
        return out.detach(), list(torch.autograd.grad((out * probe).sum(), params))

    out, grads = run(lambda m, xi: m(xi))
    ref, ref_grads = run(naive_moe)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    names = ["x", *(n for n, _ in moe.named_parameters())]
    for name, g, r in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_capacity_case_really_drops_and_reports_it() -> None:
    """The ``capacity-drops`` case is not vacuous: assignments are dropped, the output changes, and the
    metric counts them (checked against the naive priority walk)."""
    moe = _moe(capacity_factor=0.6)
    x = torch.randn(N_TOKENS, D_MODEL, generator=torch.Generator().manual_seed(1))
    record = ForwardRecord()
    with torch.no_grad():
        dropping = moe(x, AttentionContext(record=record))
        moe.cfg = MoEConfig(n_experts=5, top_k=2, expert_hidden=12)  # the same weights, dropless
        dropless = moe(x)
    assert (dropping - dropless).abs().max() > 1e-2
    experts = (x @ moe.router.weight.t()).softmax(-1).topk(2).indices
    capacity = math.ceil(0.6 * N_TOKENS * 2 / 5)
    counts = torch.bincount(experts.reshape(-1), minlength=5)
    expected = (counts - capacity).clamp(min=0).sum().item() / (2 * N_TOKENS)
    _, metrics = moe_losses(record.close()[RECORD_KEY], MoEConfig(n_experts=5, expert_hidden=12, capacity_factor=0.6))
    assert expected > 0
    assert metrics["moe_dropped"].item() == pytest.approx(expected)


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_aux_losses_equal_their_formulas_over_layers(gate: str) -> None:
    """Two layers' reports combine as ``E * sum_e mean_l(load) * mean_l(prob)`` and ``mean_l mean_t lse^2``."""
    fields = {"gate": gate, "aux_loss_weight": 0.1, "z_loss_weight": 0.01}
    layers = [_moe(seed=s, **fields) for s in (0, 1)]
    x = torch.randn(N_TOKENS, D_MODEL, generator=torch.Generator().manual_seed(3))
    record = ForwardRecord()
    for layer in layers:
        layer(x, AttentionContext(record=record))
    losses, metrics = moe_losses(record.close()[RECORD_KEY], layers[0].cfg)
    assert metrics == {}
    loads, probs, zs = [], [], []
    for layer in layers:
        logits = (x @ layer.router.weight.t()).float()
        scores = logits.softmax(-1) if gate == "softmax" else logits.sigmoid()
        counts = torch.zeros(5)
        for t in range(N_TOKENS):
            for e in scores[t].topk(2).indices.tolist():
                counts[e] += 1
        loads.append(counts / N_TOKENS)
        probs.append((scores / scores.sum(-1, keepdim=True)).mean(0))
        zs.append(torch.stack([torch.logsumexp(row, 0) ** 2 for row in logits]).mean())
    balance = 0.1 * 5 * (torch.stack(loads).mean(0) * torch.stack(probs).mean(0)).sum()
    torch.testing.assert_close(losses["moe_balance"], balance, atol=1e-6, rtol=0)
    torch.testing.assert_close(losses["moe_z"], 0.01 * torch.stack(zs).mean(), atol=1e-6, rtol=0)


def test_balance_loss_is_top_k_when_routing_is_uniform() -> None:
    """Equal logits: every probability is 1/E and (ties broken alike) the loads still sum to top_k."""
    moe = _moe(aux_loss_weight=1.0)
    torch.nn.init.zeros_(moe.router.weight)
    record = ForwardRecord()
    moe(torch.randn(N_TOKENS, D_MODEL), AttentionContext(record=record))
    losses, _ = moe_losses(record.close()[RECORD_KEY], moe.cfg)
    assert losses["moe_balance"].item() == pytest.approx(2.0)


def test_a_closed_record_takes_nothing_more() -> None:
    record = ForwardRecord()
    record.add("moe", 1)
    assert record.close() == {"moe": [1]}
    record.add("moe", 2)
    assert record.close() == {"moe": [1]}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"top_k": 6}, "top_k"),
        ({"routing": "expert_choice"}, "capacity_factor"),
        ({"routing": "expert_choice", "capacity_factor": 1.0, "aux_loss_weight": 0.01}, "aux_loss_weight"),
        ({"shared_expert_gate": True}, "shared_expert_gate"),
        ({"capacity_factor": 0.0}, "capacity_factor"),
        ({"every": 0}, "every"),
    ],
)
def test_config_refuses_impossible_combinations(fields: dict, field: str) -> None:
    from specs.config_io import FieldProblem

    with pytest.raises(FieldProblem) as caught:
        MoEConfig(**{"n_experts": 5, "expert_hidden": 12, **fields})
    assert field in str(caught.value)
