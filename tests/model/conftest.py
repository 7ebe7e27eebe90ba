"""Helpers shared by the Hugging Face interop tests (``from tests.model.conftest import ...``).

Every family is checked the same way: a tiny random-init ``transformers`` model (fp32, eager attention) with
every parameter moved off its initial value, saved with ``save_pretrained`` and imported with
``model.from_hf``; or one of our models exported with ``model.to_hf`` and loaded by ``transformers``. Both then
see the same ids and their logits are compared. ``transformers`` is imported by the helpers that need it, so
the other model tests never load it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import specs

TOL = 1e-5  # float32; the same arithmetic in a different order (fused RMSNorm, matmul blocking) differs by ~1e-6
VOCAB = 256

# A tiny LlamaConfig (head dim 16), shared by the Llama tests; each adds its own context and RoPE settings.
TINY_LLAMA: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=176,
    vocab_size=VOCAB,
)


@torch.no_grad()
def perturb_(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (unit or zero norms, zero biases) so each one is exercised."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)


def tiny_hf(model_class: Any, config: Any, *, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """``model_class(config)`` under a fixed seed, in float32, perturbed, in eval mode."""
    torch.manual_seed(seed)
    hf = model_class(config).to(torch.float32)
    perturb_(hf, seed=seed + 1, scale=scale)
    return hf.eval()


def hf_model(model_cls: type, config_cls: type, *, seed: int = 0, scale: float = 0.05, **config: Any) -> nn.Module:
    """A random-init ``transformers`` causal LM from ``config_cls(**config)``, perturbed, with eager attention."""
    return tiny_hf(model_cls, config_cls(**config, attn_implementation="eager"), seed=seed, scale=scale)


def load_hf(path: Path) -> nn.Module:
    """An exported directory loaded by ``transformers`` (fp32, eager), asserting that every tensor was used
    and none was missing or misshapen."""
    import transformers

    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, output_loading_info=True, dtype=torch.float32, attn_implementation="eager"
    )
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], (key, info[key])
    return hf.eval()


def random_ids(vocab_size: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def ids(seed: int = 2, batch: int = 2, seq: int = 16) -> torch.Tensor:
    """:func:`random_ids` over the tiny models' vocabulary."""
    return random_ids(VOCAB, batch, seq, seed)


def logit_diff(ours: torch.Tensor, theirs: torch.Tensor, label: str) -> float:
    """The largest absolute difference, printed so that ``pytest -s`` shows how much room a tolerance has."""
    diff = (ours - theirs).abs().max().item()
    print(f"{label}: max abs logit diff {diff:.3e}")
    return diff


@torch.no_grad()
def model_diff(ours: nn.Module, hf: nn.Module, ids: torch.Tensor, label: str) -> float:
    """:func:`logit_diff` of our model and a ``transformers`` one on ``ids``."""
    return logit_diff(ours(ids), hf(ids).logits, label)


@torch.no_grad()
def decode_diffs(ours: nn.Module, hf: nn.Module, tokens: torch.Tensor, prefill: int) -> list[float]:
    """Our cached decoding (a prefill, then one token per step) against ``transformers``' full forward."""
    reference = hf(tokens).logits
    cache = ours.new_cache(tokens.shape[0], tokens.shape[1])
    steps = [ours(tokens[:, :prefill], cache=cache)]
    steps += [ours(tokens[:, t : t + 1], cache=cache) for t in range(prefill, tokens.shape[1])]
    diffs = [(steps[0] - reference[:, :prefill]).abs().max().item()]
    diffs += [(step[:, 0] - reference[:, prefill + i]).abs().max().item() for i, step in enumerate(steps[1:])]
    print(f"incremental decode: max abs logit diff per step {[f'{d:.1e}' for d in diffs]}")
    return diffs


def edit_config(path: Path, **changes: Any) -> None:
    """Change keys of a saved ``config.json`` in place (``None`` values are written as null)."""
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def edited_copy(src: Path, dst: Path, config_edit: Callable | None = None, tensors_edit: Callable | None = None) -> Path:
    """A copy of the single-file checkpoint ``src`` at ``dst``, its ``config.json`` mapping and its tensor dict
    changed in place by the edits given (to make one fault at a time)."""
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    tensors = load_file(src / "model.safetensors")
    if tensors_edit:
        tensors_edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def assert_same_model(back: nn.Module, ours: nn.Module, *, weights: bool = True) -> None:
    """``back`` (an import of an export of ``ours``) has its config, but for the name (an import names the
    model after its directory), and, when ``weights``, its tensors bit for bit."""
    strip = {"name"}
    assert {k: v for k, v in specs.to_dict(back.config).items() if k not in strip} == {
        k: v for k, v in specs.to_dict(ours.config).items() if k not in strip
    }
    if weights:
        for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
