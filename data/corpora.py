"""The corpus lmplanes ships (tinyshakespeare) and nanoGPT's shakespeare-char dataset built from it.

Provenance of the corpus is in ``data/README.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from data.build import build_corpus
from data.errors import DataError
from data.manifest import sha256_file
from data.shards import TokenShards

TINYSHAKESPEARE = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Bump when the recipe below changes, so an old cached build is never taken for the new one.
_SHAKESPEARE_CHAR = "shakespeare_char-v1"


def default_cache_dir() -> Path:
    """``$LMPLANES_CACHE_DIR``, else ``$XDG_CACHE_HOME/lmplanes``, else ``~/.cache/lmplanes``."""
    if os.environ.get("LMPLANES_CACHE_DIR"):
        return Path(os.environ["LMPLANES_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmplanes"


def shakespeare_char(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of nanoGPT's shakespeare-char dataset, built from the shipped corpus on first use.

    Character tokenizer over the 65 sorted characters, split 90/10 by position: 1,003,854 train and 111,540
    val tokens, stored as uint16. A cached build is reused when its manifest and file sizes check out.
    """
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / _SHAKESPEARE_CHAR
    try:
        for split in ("train", "val"):
            TokenShards(folder, split)
        return folder
    except DataError:
        pass  # not built yet, or damaged: build it (again)
    if sha256_file(TINYSHAKESPEARE) != TINYSHAKESPEARE_SHA256:
        raise DataError(f"{TINYSHAKESPEARE} does not have the sha256 data/README.md records; reinstall lmplanes")
    build_corpus([TINYSHAKESPEARE], folder, tokenizer="char", split_by="position", val_fraction=0.1, overwrite=True)
    return folder
