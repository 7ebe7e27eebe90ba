"""What every decoder family must do beyond parity: cached decoding equals the full forward (sliding-window
layers included, with windows shorter than the sequence), DropPath, activation checkpointing, bfloat16
autocast and weight tying. Each family is a tiny config of ours (no ``transformers`` here); the Hugging Face
parity of the same options is in ``test_hf_qwen.py`` / ``test_hf_gemma.py``.

Tolerances (float32): cached vs full forward ``1e-5`` (the reasoning in ``test_decode_equals_forward.py``);
checkpointed vs plain gradients ``1e-6`` (``tests/train/test_wrappers.py``); bfloat16 autocast against float32
``BF16_TOL`` relative to the logits' spread (bf16 keeps 8 bits of mantissa, ~0.4% per op, accumulated over a
few layers; measured 0.04 to 0.07).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

import kernel
import model
import specs
import train.wrappers as wrappers

ATOL = 1e-5
GRAD_ATOL = 1e-6
BF16_TOL = 0.2  # max |bf16 - fp32| / std(fp32 logits); see the module docstring

# Overrides of llama-tiny (d_model 64, 4 heads / 2 KV heads, vocab 256); windows of 4 under 12-token sequences.
FAMILIES: dict[str, list[str]] = {
    "qwen2": ["n_layers=3", "attention.bias=true", "attention.out_bias=false", "attention.window=4"],
    "qwen3": ["n_layers=3", "attention.qk_norm=true", "attention.head_dim=32", "rope.theta=1000000.0"],
    "gemma2": [
        "n_layers=3",
        "attention.head_dim=32",
        "attention.window=4",
        "attention.global_every=2",
        "attention.softcap=5.0",
        "attention.scale=0.25",
        "residual=sandwich",
        "norm_weight_offset=1.0",
        "embedding_scale=8.0",
        "final_softcap=5.0",
        "mlp.kind=geglu",
        "mlp.gelu_approximate=tanh",
        "tie_embeddings=true",
    ],
    "gemma3": [
        "n_layers=3",
        "attention.head_dim=32",
        "attention.window=4",
        "attention.global_every=3",
        "attention.qk_norm=true",
        "attention.scale=0.25",
        "rope.theta=1000000.0",
        "rope.local_theta=10000.0",
        "residual=sandwich",
        "norm_weight_offset=1.0",
        "embedding_scale=8.0",
        "mlp.kind=geglu",
        "mlp.gelu_approximate=tanh",
        "tie_embeddings=true",
    ],
}


def _config(family: str, *extra: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.load_config("llama-tiny"), [*FAMILIES[family], "init_std=0.08", *extra])


def _perturb(m: torch.nn.Module, seed: int = 1) -> None:
    """Random norm scales and biases (around their initial values), so none is an invisible identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


@functools.cache
def _model(family: str) -> torch.nn.Module:
    """Built once per family; tests treat it as read-only."""
    torch.manual_seed(0)
    m = model.build(_config(family)).eval()
    _perturb(m)
    return m


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def _kernel_families() -> list:
    """(kernel, family) pairs where the kernel can serve the family (sdpa has no softcap) on the CPU
    (triton_flash only under TRITON_INTERPRET=1)."""
    return [
        pytest.param(name, family, id=f"{name}-{family}")
        for name in kernel.available()
        for family in FAMILIES
        if _config(family).attention.kernel_features() <= kernel.capabilities(name).features
        and "cpu" in kernel.capabilities(name).devices
    ]


# --------------------------------------------------------------------------------------------- cached decoding


@pytest.mark.parametrize("fixed_shapes", [False, True], ids=["eager-cache", "fixed-shapes"])
@pytest.mark.parametrize("chunks", [[6, 1, 1, 1, 1, 1, 1], [5, 3, 1, 3]], ids=["prefill-then-steps", "chunks"])
@pytest.mark.parametrize(("kernel_name", "family"), _kernel_families())
@torch.no_grad()
def test_cached_decode_equals_full_forward(kernel_name: str, family: str, chunks: list[int], fixed_shapes: bool) -> None:
    m = _model(family)
    total = sum(chunks)
    assert total > 2 * (m.config.attention.window or 0)  # the windows hide keys, in the prefill and after
    tokens = _ids(2, total, seed=total)
    with kernel.use_kernel(kernel_name):
        full = m(tokens)
        cache = m.new_cache(2, total, fixed_shapes=fixed_shapes)
        steps, start = [], 0
        for size in chunks:
            steps.append(m(tokens[:, start : start + size], cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0.0)


# -------------------------------------------------------------------------------------------------- DropPath


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_path_is_random_in_training_and_the_identity_in_eval(family: str) -> None:
    torch.manual_seed(0)
    plain = model.build(_config(family))
    dropping = model.build(_config(family, "drop_path=0.5"))
    dropping.load_state_dict(plain.state_dict())
    tokens = _ids(4, 8, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(dropping.eval()(tokens), plain.eval()(tokens), atol=0.0, rtol=0.0)
    dropping.train()
    draws = []
    for seed in (1, 2, 1):
        torch.manual_seed(seed)
        draws.append(dropping(tokens))
    assert not torch.equal(draws[0], draws[1])  # different branches dropped
    assert torch.equal(draws[0], draws[2])  # the same seed drops the same ones
    draws[0].sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in dropping.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_checkpointing_keeps_loss_and_gradients(family: str) -> None:
    torch.manual_seed(0)
    plain = model.build(_config(family, "dropout=0.1", "drop_path=0.2", "attention.kernel=manual"))
    wrapped = wrappers.apply_activation_checkpointing(copy.deepcopy(plain))
    tokens = _ids(2, 10, seed=5)
    losses = []
    for m in (plain, wrapped):
        torch.manual_seed(7)  # the same dropout and DropPath draws for both
        logits = m(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=0.0, rtol=0.0)
    for (name, a), (_, b) in zip(plain.named_parameters(), wrapped.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=GRAD_ATOL, rtol=0.0, msg=name)


# ------------------------------------------------------------------------------------------- bfloat16 autocast


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_autocast_is_close_to_float32_and_trains(family: str) -> None:
    m = copy.deepcopy(_model(family)).train()
    tokens = _ids(2, 12, seed=6)
    with torch.no_grad():
        reference = m(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(tokens)
    assert logits.dtype == torch.bfloat16
    error = ((logits.float() - reference).abs().max() / reference.std()).item()
    print(f"{family}: bf16 autocast max |diff| / std(logits) = {error:.3f}")
    assert error < BF16_TOL
    F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten()).backward()
    assert all(p.dtype == torch.float32 for p in m.parameters())  # autocast leaves the weights alone
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters())


# ------------------------------------------------------------------------------------------------ weight tying


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_head_is_the_embedding_through_training_and_checkpoints(family: str, tmp_path) -> None:
    m = model.build(_config(family, "tie_embeddings=true"))
    assert m.lm_head.weight is m.tok_embeddings.weight
    names = [name for name, _ in m.named_parameters()]
    assert "tok_embeddings.weight" in names and "lm_head.weight" not in names  # counted once
    optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
    tokens = _ids(2, 8, seed=8)
    F.cross_entropy(m(tokens).flatten(0, 1), tokens.flatten()).backward()
    optimizer.step()
    assert m.lm_head.weight is m.tok_embeddings.weight  # one tensor, updated once with both gradients
    model.save_checkpoint(m, tmp_path / "ckpt")
    back = model.load_checkpoint(tmp_path / "ckpt")
    assert back.lm_head.weight is back.tok_embeddings.weight
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(tokens), m.eval()(tokens), atol=0.0, rtol=0.0)
