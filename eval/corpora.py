"""The text lmplanes ships for perplexity: WikiText-2's test split (provenance in ``eval/README.md``)."""

from __future__ import annotations

from pathlib import Path

WIKITEXT2_TEST = Path(__file__).resolve().parent / "corpora" / "wikitext-2-test.txt"
WIKITEXT2_TEST_SHA256 = "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"
