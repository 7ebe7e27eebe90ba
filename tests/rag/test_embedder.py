"""Our embedder on the real all-MiniLM-L6-v2 equals sentence-transformers' ``encode`` on the same folder
(offline), to 1e-5: tokenization with special tokens, truncation at 256 tokens, length-sorted batches of
padded rows, mean pooling and normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rag
import specs

TEXTS = [
    "A man is eating food.",
    "The new movie is really awesome!",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "Héllo, WORLD -- it's 3:30pm; naïve café?",
    "short",
    " ".join(["Retrieval augmented generation cites the passages it reads."] * 40),  # over 256 tokens: truncated
    "Paris is the capital of France.\n\nBerlin is the capital of Germany.",
]


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # sentence-transformers must read the folder, never the hub
        st = SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    assert st.max_seq_length == 256
    return st.encode(TEXTS, batch_size=3, convert_to_tensor=True)


def test_embeddings_equal_sentence_transformers(minilm: rag.Embedder, reference: torch.Tensor) -> None:
    assert isinstance(minilm, specs.TextEmbedder)
    ours = minilm.embed(TEXTS)
    # Observed (x86 CPU, fp32): 1.2e-7 (sdpa vs transformers' attention, summation order).
    diff = (ours - reference).abs().max().item()
    print(f"max abs diff vs sentence-transformers: {diff:.2e}")
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == torch.float32 and diff <= 1e-5
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))
    assert minilm.count_tokens(TEXTS)[5] == 256 and minilm.count_tokens(["short"]) == [3]  # [CLS] short [SEP]
    assert torch.equal(minilm.embed(TEXTS[::-1]), ours.flip(0))  # input order kept whatever the batching


def test_sentence_settings_read_the_model_folder(minilm_dir: Path, tmp_path: Path) -> None:
    assert rag.sentence_settings(minilm_dir) == rag.EmbedderSettings(pooling="mean", normalize=True, max_tokens=256)
    assert rag.sentence_settings(tmp_path) == rag.EmbedderSettings()  # a plain encoder folder: the defaults
    (tmp_path / "modules.json").write_text('[{"type": "x.Pooling", "path": "p"}]')
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ValueError, match="max_tokens"):
        rag.sentence_settings(tmp_path)
