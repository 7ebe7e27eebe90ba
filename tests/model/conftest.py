"""Helpers for the Hugging Face parity tests of the model plane (imported as ``tests.model.conftest``).

Every family is checked the same way: a tiny random-init ``transformers`` model (fp32, eager attention) with
every parameter moved off its initial value, saved with ``save_pretrained`` and imported with
``model.from_hf``; or one of our models exported with ``model.to_hf`` and loaded by ``transformers``. Both
then see the same ids and their logits are compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

TOL = 1e-5  # float32; the same arithmetic in a different order (fused RMSNorm, matmul blocking) differs by ~1e-6
VOCAB = 256


@torch.no_grad()
def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (unit or zero norms, zero biases) so each one is exercised."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)


def hf_model(model_cls: type, config_cls: type, *, seed: int = 0, scale: float = 0.05, **config) -> torch.nn.Module:
    """A random-init ``transformers`` causal LM, perturbed, in eval mode, with eager attention."""
    cfg = config_cls(**config, attn_implementation="eager")
    torch.manual_seed(seed)
    hf = model_cls(cfg).to(torch.float32)
    perturb_(hf, seed=seed + 1, scale=scale)
    return hf.eval()


def load_hf(path: Path) -> torch.nn.Module:
    """What ``transformers`` makes of a directory we wrote: every tensor used, none missing or left over."""
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, output_loading_info=True, dtype=torch.float32, attn_implementation="eager"
    )
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], (key, info[key])
    return hf.eval()


def ids(seed: int = 2, batch: int = 2, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def max_diff(ours: torch.nn.Module, hf: torch.nn.Module, tokens: torch.Tensor, label: str) -> float:
    """Largest absolute logit difference (printed, so ``pytest -s`` shows the measured figures)."""
    with torch.no_grad():
        diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    print(f"{label}: max abs logit diff {diff:.3e}")
    return diff


@torch.no_grad()
def decode_diffs(ours: torch.nn.Module, hf: torch.nn.Module, tokens: torch.Tensor, prefill: int) -> list[float]:
    """Our cached decoding (a prefill, then one token per step) against ``transformers``' full forward."""
    reference = hf(tokens).logits
    cache = ours.new_cache(tokens.shape[0], tokens.shape[1])
    steps = [ours(tokens[:, :prefill], cache=cache)]
    steps += [ours(tokens[:, t : t + 1], cache=cache) for t in range(prefill, tokens.shape[1])]
    diffs = [(steps[0] - reference[:, :prefill]).abs().max().item()]
    diffs += [(step[:, 0] - reference[:, prefill + i]).abs().max().item() for i, step in enumerate(steps[1:])]
    print(f"incremental decode: max abs logit diff per step {[f'{d:.1e}' for d in diffs]}")
    return diffs


def edit_config(path: Path, **changes) -> None:
    """Change keys of a saved ``config.json`` in place (``None`` values are written as null)."""
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
