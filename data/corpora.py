"""The corpus lmplanes ships: tinyshakespeare (provenance in ``data/README.md``)."""

from __future__ import annotations

from pathlib import Path

TINYSHAKESPEARE = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
