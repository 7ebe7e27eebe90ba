"""Helpers shared by the Hugging Face interop tests (``from tests.model.conftest import ...``): tiny random
``transformers`` models moved off their initial values, token ids, and the logit comparison every family is
checked by. ``transformers`` is imported by the helpers that need it, so the other model tests never load it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import specs

# A tiny LlamaConfig (head dim 16), shared by the Llama tests; each adds its own context and RoPE settings.
TINY_LLAMA: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=176,
    vocab_size=256,
)


@torch.no_grad()
def perturb_(module: nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (unit norms, zero biases) so each one is exercised."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def tiny_hf(model_class: Any, config: Any) -> nn.Module:
    """``model_class(config)`` under a fixed seed, in float32, perturbed, in eval mode."""
    torch.manual_seed(0)
    hf = model_class(config).to(torch.float32)
    perturb_(hf, seed=1)
    return hf.eval()


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


def logit_diff(ours: torch.Tensor, theirs: torch.Tensor, label: str) -> float:
    """The largest absolute difference, printed so that ``pytest -s`` shows how much room a tolerance has."""
    diff = (ours - theirs).abs().max().item()
    print(f"{label}: max abs logit diff {diff:.3e}")
    return diff


@torch.no_grad()
def model_diff(ours: nn.Module, hf: nn.Module, ids: torch.Tensor, label: str) -> float:
    """:func:`logit_diff` of our model and a ``transformers`` one on ``ids``."""
    return logit_diff(ours(ids), hf(ids).logits, label)


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
