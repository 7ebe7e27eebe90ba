"""lmplanes in one page: build a model from a preset, run it, checkpoint it, load it back, decode with a cache.

    python examples/example.py [--out DIR]

The model is nanoGPT's Shakespeare-character configuration with RANDOM weights: nothing has trained it, so
the text it generates is noise. The checkpoint stays in DIR (default: runs/example) for the commands the
script suggests at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import model
import specs

# The 65 distinct characters of the Tiny Shakespeare corpus, sorted: the vocabulary of gpt-shakespeare-char.
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def encode(text: str) -> torch.Tensor:
    return torch.tensor([[ALPHABET.index(ch) for ch in text]])


def decode(ids: torch.Tensor) -> str:
    return "".join(ALPHABET[i] for i in ids.tolist())


@torch.no_grad()
def greedy_generate(lm: specs.CausalLM, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Prefill the prompt into a KV cache, then feed back one argmax token at a time."""
    cache = lm.new_cache(prompt.shape[0], prompt.shape[1] + new_tokens)
    token = lm(prompt, cache=cache)[:, -1:].argmax(dim=-1)
    out = [token]
    for _ in range(new_tokens - 1):
        token = lm(token, cache=cache)[:, -1:].argmax(dim=-1)
        out.append(token)
    return torch.cat(out, dim=1)


def main(out_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = specs.load_config("gpt-shakespeare-char")
    lm = model.build(cfg).eval()
    print(f"built {cfg.name}: {model.count_parameters(cfg):,} parameters, randomly initialised (untrained)")

    prompt = encode("ROMEO:")
    logits = lm(prompt)
    print(f"forward: input {list(prompt.shape)} -> logits {list(logits.shape)}")

    # overwrite=True replaces only an earlier checkpoint of this script, never other files.
    ckpt = model.save_checkpoint(lm, out_dir / "gpt-shakespeare-char", overwrite=True)
    problems = model.verify_checkpoint(ckpt)
    print(f"saved {ckpt}: {sorted(p.name for p in ckpt.iterdir())}; verified: {'ok' if not problems else problems}")

    loaded = model.load_checkpoint(ckpt)
    assert torch.equal(loaded(prompt), logits), "the loaded checkpoint computes different logits"
    print("loaded it back: identical logits")

    generated = greedy_generate(loaded, prompt, new_tokens=24)
    print(f"greedy continuation with the KV cache (noise: the weights are random): "
          f"{decode(prompt[0])}{decode(generated[0])!r}")
    print("next:")
    print(f"  lmplanes checkpoint show {ckpt}      # what the checkpoint holds")
    print(f"  lmplanes checkpoint verify {ckpt}    # every file against its manifest, tensors against the config")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/example"), help="where to keep the checkpoint")
    main(parser.parse_args().out)
