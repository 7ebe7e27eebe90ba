"""Sequential packed sequences: the token stream cut into consecutive rows, with document ids and positions.

Row ``j`` of the stream is tokens ``[j * seq_len, (j + 1) * seq_len + 1)``: ``seq_len`` inputs and their next
tokens as labels, so consecutive rows share one token and every token but the first is a label once per
epoch. The order of rows is a permutation seeded by ``(seed, epoch)`` (or the stream order with
``shuffle=False``), the same on every rank; rank ``r`` of ``world_size`` takes rows ``r, r + world_size, ...``
of it, cut to equal counts, so ranks never share a row. Each rank's rows are grouped into full batches (a
remainder is dropped, keeping shapes fixed).

Documents come from the boundaries the build recorded (``SPLIT-doc-starts.bin``), so they work with or
without an end-of-sequence token between documents. A batch carries ``document_ids`` (numbered from 0 in
each row), ``positions`` that restart at 0 at each document (and at the start of a row), and ``-100`` labels
where the next token belongs to another document.
"""

from __future__ import annotations

import numpy as np
import torch

from data.batch_stream import BatchStream
from data.collation import positions_within_documents
from data.errors import DataError
from data.shards import TokenShards
from specs import IGNORE_INDEX, Batch


class PackedSequences(BatchStream):
    """Batches of consecutive ``seq_len`` rows of ``shards``, ``epochs`` times over (``None``: endlessly)."""

    def __init__(
        self,
        shards: TokenShards,
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        epochs: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(shards, seq_len=seq_len, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
        if epochs is not None and epochs < 1:
            raise DataError(f"epochs must be at least 1 (or None for no end), got {epochs}")
        self.shuffle = shuffle
        self.epochs = epochs
        self._num_rows = (len(shards) - 1) // seq_len
        self._rows_per_rank = self._num_rows // world_size
        self.batches_per_epoch = self._rows_per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the {shards.split!r} split has {self._num_rows} rows of {seq_len} tokens: not one batch of "
                f"{batch_size} for each of {world_size} rank(s); use a smaller batch or sequence"
            )
        self._epoch_rows: tuple[int, np.ndarray] | None = None  # (epoch, this rank's rows in order)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_epoch_rows": None}

    def num_batches(self) -> int | None:
        return None if self.epochs is None else self.epochs * self.batches_per_epoch

    def settings(self) -> dict:
        return {**super().settings(), "shuffle": self.shuffle}

    def rows(self, epoch: int) -> np.ndarray:
        """This rank's row numbers for ``epoch``, in the order they are served."""
        if self._epoch_rows is None or self._epoch_rows[0] != epoch:
            if self.shuffle:
                generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
                order = generator.permutation(self._num_rows)
            else:
                order = np.arange(self._num_rows, dtype=np.int64)
            self._epoch_rows = (epoch, order[self.rank :: self.world_size][: self._rows_per_rank])
        return self._epoch_rows[1]

    def batch(self, index: int, rows: slice = slice(None)) -> Batch:
        epoch, within = divmod(index, self.batches_per_epoch)
        chosen = self.rows(epoch)[within * self.batch_size : (within + 1) * self.batch_size][rows]
        starts = chosen.astype(np.int64) * self.seq_len
        tokens = self.shards.windows(starts, self.seq_len + 1)
        offsets = starts[:, None] + np.arange(self.seq_len + 1, dtype=np.int64)
        documents = np.searchsorted(self.shards.doc_starts, offsets, side="right") - 1
        labels = tokens[:, 1:].copy()
        labels[documents[:, 1:] != documents[:, :-1]] = IGNORE_INDEX  # the next token opens another document
        document_ids = documents[:, :-1] - documents[:, :1]
        return Batch(
            input_ids=torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])),
            labels=torch.from_numpy(labels),
            positions=torch.from_numpy(positions_within_documents(document_ids)),
            document_ids=torch.from_numpy(document_ids),
        )
