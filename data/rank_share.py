"""One rank's share of a global batch stream: how data-parallel ranks split a run's batches.

The stream is opened once for the whole run, as if by one process (``rank=0, world_size=1``, the global
``batch_size``); rank ``r`` of ``world_size`` takes rows ``[r * b, (r + 1) * b)`` of every batch, with
``b = batch_size / world_size``, and reads only those rows. So the ranks' shares are disjoint, together they are
exactly the batch one process would train on, and the cursor (the global batch number) means the same batches
for any number of ranks: a run saved on two processes resumes on one, or on four, with the same sample order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data.batch_stream import BatchStream
from data.errors import DataError
from data.shards import TokenShards
from specs import Batch


class RankShare:
    """Rank ``rank``'s rows of every batch of ``stream`` (a stream opened for one process)."""

    def __init__(self, stream: BatchStream, *, rank: int = 0, world_size: int = 1) -> None:
        if stream.world_size != 1:
            raise DataError("RankShare splits a global stream: open it with world_size=1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, {world_size}) for world_size {world_size}, got {rank}")
        if stream.batch_size % world_size:
            raise DataError(
                f"the global batch of {stream.batch_size} rows does not split evenly over {world_size} ranks; "
                f"make data.batch_size a multiple of {world_size}"
            )
        share = stream.batch_size // world_size
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.rows = slice(rank * share, (rank + 1) * share)

    @property
    def shards(self) -> TokenShards:
        return self.stream.shards

    def batch(self, index: int) -> Batch:
        """This rank's rows of global batch ``index``."""
        return self.stream.batch(index, self.rows)

    def __iter__(self) -> Iterator[Batch]:
        """This rank's rows of the global batches from the cursor on (the cursor moves past each one)."""
        return self.stream.batches(rows=self.rows)

    def state_dict(self) -> dict[str, Any]:
        """The global cursor: the same on every rank, and meaningful for any number of ranks."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
