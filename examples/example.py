"""lmplanes in one page: build a model from a preset, run it, checkpoint it, load it back, decode with a cache.

    python examples/example.py [--out DIR]

The model is nanoGPT's Shakespeare-character configuration with random weights, so the generated text is
noise; training arrives with the ``train`` plane.
"""

from __future__ import annotations

import argparse
import tempfile
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
    print(f"built {cfg.name}: {model.count_parameters(cfg):,} parameters")

    prompt = encode("ROMEO:")
    logits = lm(prompt)
    print(f"forward: input {list(prompt.shape)} -> logits {list(logits.shape)}")

    ckpt = model.save_checkpoint(lm, out_dir / "gpt-shakespeare-char", overwrite=True)
    problems = model.verify_manifest(ckpt)
    print(f"saved {ckpt}: {sorted(p.name for p in ckpt.iterdir())}; manifest {'ok' if not problems else problems}")

    loaded = model.load_checkpoint(ckpt)
    assert torch.equal(loaded(prompt), logits), "the loaded checkpoint computes different logits"
    print("loaded it back: identical logits")

    generated = greedy_generate(loaded, prompt, new_tokens=24)
    print(f"greedy continuation with the KV cache: {decode(prompt[0])}{decode(generated[0])!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where to write the checkpoint (default: a temp dir)")
    args = parser.parse_args()
    if args.out is not None:
        main(args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
