"""Numbered batches with a resumable cursor, split across distributed ranks and DataLoader workers.

A :class:`BatchStream` yields batches ``0, 1, 2, ...`` for its rank, and batch ``i`` is a pure function of the
dataset's settings, the rank and ``i``. Three things follow:

- resuming is storing ``i``: ``state_dict()`` after ``k`` batches, ``load_state_dict`` into a fresh dataset,
  and it yields batch ``k`` next, exactly the batch the first one would have;
- DataLoader workers split the numbers, not the data: worker ``w`` of ``W`` yields ``k + w, k + w + W, ...``,
  which a DataLoader (``batch_size=None``, in-order delivery, its default) hands out as ``k, k + 1, ...``: the
  same batches in the same order for any number of workers, and never one twice;
- ranks get disjoint data or independent random streams (see each dataset), given ``rank`` and
  ``world_size`` as plain numbers, so nothing here needs ``torch.distributed``.

Each yielded batch is a :class:`specs.Batch`; the stream is a ``torch.utils.data.IterableDataset``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from data.errors import DataError
from data.shards import TokenShards
from specs import Batch


class BatchStream(IterableDataset):
    """Base of the datasets: numbering, worker and rank split, cursor. Subclasses define :meth:`batch`."""

    def __init__(
        self, shards: TokenShards, *, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("world_size", world_size)):
            if value < 1:
                raise DataError(f"{name} must be at least 1, got {value}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, {world_size}) for world_size {world_size}, got {rank}")
        if len(shards) < seq_len + 1:
            raise DataError(f"the {shards.split!r} split holds {len(shards)} tokens, fewer than one sequence of "
                            f"seq_len + 1 = {seq_len + 1}")
        self.shards = shards
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._next = 0  # the number of the batch this process yields next

    def batch(self, index: int, rows: slice = slice(None)) -> Batch:
        """Batch number ``index`` of this rank (only its ``rows``: a share of the batch that is read alone)."""
        raise NotImplementedError

    def num_batches(self) -> int | None:
        """How many batches the stream holds for this rank (``None``: it never ends)."""
        return None

    def batches(self, worker: int = 0, num_workers: int = 1, rows: slice = slice(None)) -> Iterator[Batch]:
        """This worker's share of the stream from the cursor on: batches ``k + worker``, ``k + worker + num_workers``...
        (of each, only ``rows``)."""
        if not 0 <= worker < num_workers:
            raise DataError(f"worker must be in [0, {num_workers}), got {worker}")
        index, end = self._next + worker, self.num_batches()
        while end is None or index < end:
            batch = self.batch(index, rows)
            self._next = index + 1  # before the yield: state_dict() between batches sees the batch as consumed
            yield batch
            index += num_workers

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        return self.batches(info.id, info.num_workers) if info is not None else self.batches()

    def settings(self) -> dict[str, Any]:
        """What must match for a saved cursor to mean the same batches."""
        return {
            "dataset": type(self).__name__,
            "data": self._data_id(),
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def _data_id(self) -> str:
        """The split's shards, by content: the sha256 of their sha256 sums (a moved folder still resumes)."""
        shards = self.shards.manifest["splits"][self.shards.split]["shards"]
        return hashlib.sha256(" ".join(shard["sha256"] for shard in shards).encode()).hexdigest()

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """The cursor, as JSON-ready plain data.

        ``batches_consumed``: the number of batches the caller took, when DataLoader workers iterate copies of
        this dataset in other processes (this object then never sees the batches pass). Default: the batches
        this object has yielded.
        """
        return {**self.settings(), "next_batch": self._next if batches_consumed is None else batches_consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved cursor; the settings it was saved with must match this dataset's."""
        mine = self.settings()
        differ = [f"{key} {state.get(key)!r} (now {value!r})" for key, value in mine.items() if state.get(key) != value]
        if differ:
            raise DataError("cannot resume: the cursor was saved with other settings: " + ", ".join(differ))
        index = state.get("next_batch")
        if not isinstance(index, int) or index < 0:
            raise DataError(f"cannot resume: next_batch must be a whole number >= 0, got {index!r}")
        self._next = index

