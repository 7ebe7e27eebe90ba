"""Build a corpus into token shards: read, deduplicate, redact, tokenise, split, shard, describe.

The steps, in order: read documents (:mod:`data.documents`); drop exact and near duplicates
(:mod:`data.dedup`, optional); redact personal data in the documents kept (:mod:`data.pii`, optional); make
or load the tokenizer (``char`` and ``bpe:N`` learn from the documents kept, redacted, of both splits, as
nanoGPT's character vocabulary does); tokenise, appending the end-of-sequence token after each document when
the tokenizer has one; split into train and val (:mod:`data.splits`); write the shards, the tokenizer and,
last, ``manifest.json``, all in a staging folder renamed into place (:mod:`data.outdir`).

Token ids are stored as uint16 when the vocabulary fits (at most 65,536 ids), else uint32. The token ids of
the corpus are held in memory while it is split (4 bytes a token at most).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data import pii
from data.dedup import deduplicate
from data.documents import Source, read_documents
from data.errors import DataError
from data.manifest import FORMAT, MANIFEST_FILE, VERSION, file_record
from data.outdir import staged_outdir
from data.shard_writer import write_split
from data.splits import split_documents
from data.tokenizer import ROLES_FILE, TOKENIZER_FILE, Tokenizer, load_tokenizer
from data.tokenizer_builders import byte_tokenizer, char_tokenizer, train_bpe
from specs.config_files import atomic_write_text

DEFAULT_SHARD_SIZE_TOKENS = 100_000_000
TOKENIZER_CHOICES = "char, byte, bpe:VOCAB_SIZE, or a path to a tokenizer.json or a folder holding one"
_ENCODE_BATCH = 64  # documents per call into the (parallel) tokenizer


def resolve_tokenizer(spec: str | os.PathLike[str] | Tokenizer, documents: Sequence[str]) -> Tokenizer:
    """The tokenizer ``spec`` names: ``char``, ``byte`` or ``bpe:N`` (learned from ``documents``), or a path."""
    if isinstance(spec, Tokenizer):
        return spec
    text = str(spec)
    if text == "char":
        return char_tokenizer(documents)
    if text == "byte":
        return byte_tokenizer()
    if text.startswith("bpe:"):
        size = text.removeprefix("bpe:")
        if not size.isdigit():
            raise DataError(f"bpe:VOCAB_SIZE needs a whole number of ids, got {text!r}")
        return train_bpe(documents, int(size))
    if Path(text).exists():
        return load_tokenizer(text)
    raise DataError(f"unknown tokenizer {text!r}: use {TOKENIZER_CHOICES}")


def token_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 when ``vocab_size`` fits in it, else uint32; a request for uint16 that does not fit is an error."""
    fits16 = vocab_size <= 2**16
    if requested == "auto":
        return np.dtype(np.uint16 if fits16 else np.uint32)
    if requested == "uint16" and not fits16:
        raise DataError(f"a vocabulary of {vocab_size:,} ids does not fit in uint16 (at most 65,536); use uint32")
    if requested not in ("uint16", "uint32"):
        raise DataError(f"unknown token dtype {requested!r}; choose auto, uint16 or uint32")
    return np.dtype(requested)


def tokenize_documents(tokenizer: Tokenizer, documents: Sequence[str], *, progress: bool = False) -> list[np.ndarray]:
    """Each document's token ids (int64), followed by the end-of-sequence id when the tokenizer has one."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    arrays: list[np.ndarray] = []
    with tqdm(total=len(documents), desc="tokenising", unit="doc", disable=not progress) as bar:
        for start in range(0, len(documents), _ENCODE_BATCH):
            batch = documents[start : start + _ENCODE_BATCH]
            arrays.extend(np.array(ids + eos, dtype=np.int64) for ids in tokenizer.encode_batch(batch))
            bar.update(len(batch))
    return arrays


def build_corpus(
    inputs: Sequence[str | os.PathLike[str]],
    outdir: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] | Tokenizer = "char",
    shard_size_tokens: int = DEFAULT_SHARD_SIZE_TOKENS,
    dedup: bool = False,
    redact_pii: bool = False,
    val_fraction: float = 0.1,
    split_by: str = "auto",
    seed: int = 0,
    doc_sep: str | None = None,
    licenses: Sequence[str] = (),
    dtype: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build token shards of ``inputs`` (files or folders) in ``outdir``; return the manifest written there.

    See the module docstring for the steps and :mod:`data.dedup`, :mod:`data.pii` and :mod:`data.splits` for
    what ``dedup``, ``redact_pii`` and ``split_by`` do.
    """
    if shard_size_tokens < 1:
        raise DataError(f"the shard size must be at least one token, got {shard_size_tokens}")
    with staged_outdir(outdir, overwrite=overwrite) as staging:
        documents, sources = read_documents(inputs, doc_sep=doc_sep, progress=progress)
        read_count = len(documents)
        dedup_stats = None
        if dedup:
            keep, stats = deduplicate(tqdm(documents, desc="deduplicating", unit="doc", disable=not progress))
            documents, dedup_stats = [documents[i] for i in keep], stats.as_manifest()
        pii_counts = None
        if redact_pii:
            documents, pii_counts = _redact_all(documents, progress)
        tok = resolve_tokenizer(tokenizer, documents)
        token_type = token_dtype(tok.vocab_size, dtype)
        arrays = tokenize_documents(tok, documents, progress=progress)
        method, splits = split_documents(arrays, method=split_by, val_fraction=val_fraction, seed=seed, dtype=token_type)
        tok.save(staging)
        split_entries = {name: write_split(staging, name, s, token_type, shard_size_tokens) for name, s in splits.items()}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": token_type.name,
            "tokenizer": {
                "kind": tok.kind,
                "vocab_size": tok.vocab_size,
                "eos_id": tok.eos_id,
                "bos_id": tok.bos_id,
                "pad_id": tok.pad_id,
                "files": [file_record(staging / name) for name in (TOKENIZER_FILE, ROLES_FILE)],
            },
            "eos_after_each_document": tok.eos_id is not None,
            "sources": [_source_entry(s) for s in sources],
            "licenses": list(licenses),
            "documents": {"read": read_count, "kept": len(documents), "separator": doc_sep},
            "dedup": dedup_stats,
            "pii_redacted": pii_counts,
            "split": {"method": method, "val_fraction": val_fraction, "seed": seed},
            "shard_size_tokens": shard_size_tokens,
            "splits": split_entries,
        }
        atomic_write_text(staging / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _redact_all(documents: list[str], progress: bool) -> tuple[list[str], dict[str, int]]:
    totals = dict.fromkeys(pii.PII_KINDS, 0)
    redacted = []
    for text in tqdm(documents, desc="redacting", unit="doc", disable=not progress):
        clean, counts = pii.redact_pii(text)
        redacted.append(clean)
        for kind, count in counts.items():
            totals[kind] += count
    return redacted, totals


def _source_entry(source: Source) -> dict[str, Any]:
    return {"path": source.path, "bytes": source.bytes, "sha256": source.sha256, "documents": source.documents}
