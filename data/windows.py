"""Random windows, nanoGPT style: each row starts at a uniformly drawn offset of the token stream.

A row is ``seq_len + 1`` consecutive tokens; ``input_ids`` are the first ``seq_len``, ``labels`` the last
``seq_len`` (the next token at each position). Windows ignore document boundaries, as nanoGPT's
``get_batch`` does. Rank ``r`` draws from its own random stream (seeded by ``(seed, r)``), so ranks are
independent rather than disjoint; batch ``i`` uses the stream's draws ``i * batch_size`` onwards, reached by
jumping the generator ahead, so any batch is available without drawing the ones before it.

Cost: one vectorised gather per batch (see :meth:`data.shards.TokenShards.windows`), no loop over rows: about
25 microseconds for a checked batch of 12 x 64 from the 1M-token shakespeare-char map on a 2-core Xeon, a
twelfth of nanoGPT's per-row sampling (``benchmarks/bench_data_sampling.py``, figures in BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from data.batch_stream import BatchStream
from data.shards import TokenShards
from specs import Batch


class RandomWindows(BatchStream):
    """Endless batches of ``batch_size`` windows of ``seq_len`` tokens drawn uniformly from ``shards``."""

    def __init__(
        self, shards: TokenShards, *, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(shards, seq_len=seq_len, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
        self._num_starts = len(shards) - seq_len  # a window of seq_len + 1 tokens fits at offsets [0, N - seq_len)
        self._bits: np.random.PCG64 | None = None  # the generator's state, which can jump ahead
        self._generator: np.random.Generator | None = None
        self._drawn = 0  # draws taken from the generator so far

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bits": None, "_generator": None, "_drawn": 0}

    def _seek(self, draw: int) -> np.random.Generator:
        """The generator positioned at draw number ``draw`` of this rank's stream."""
        if self._bits is None or self._generator is None or draw < self._drawn:
            self._bits = np.random.PCG64(np.random.SeedSequence([self.seed, self.rank]))
            self._generator = np.random.Generator(self._bits)
            self._drawn = 0
        self._bits.advance(draw - self._drawn)
        self._drawn = draw
        return self._generator

    def starts(self, index: int) -> np.ndarray:
        """The window start offsets of batch ``index``."""
        # random() takes exactly one 64-bit draw per value, which is what makes the jump-ahead exact.
        uniform = self._seek(index * self.batch_size).random(self.batch_size)
        self._drawn += self.batch_size
        return (uniform * self._num_starts).astype(np.int64)

    def batch(self, index: int, rows: slice = slice(None)) -> Batch:
        tokens = self.shards.windows(self.starts(index)[rows], self.seq_len + 1)
        return Batch(
            input_ids=torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])),
            labels=torch.from_numpy(np.ascontiguousarray(tokens[:, 1:])),
        )
