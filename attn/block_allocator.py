"""BlockAllocator: which blocks of a paged KV cache are in use, by how many rows, and which hold a known prefix.

A block is free (no row holds it) or held by one or more rows (a reference count). A full block whose tokens
are known can be *published* under a key naming its content: ``(parent, tokens)``, where ``parent`` is the
published block holding the tokens before it (``-1`` for the first block of a sequence). Keys chain through
block ids rather than hashes, so two keys are equal only when the whole prefixes are: a lookup never returns a
block computed for other tokens. A block is unpublished when it is freed, or before its only holder writes into
it; the chain stays sound because any row holding a block also holds every block before it.
"""

from __future__ import annotations

from specs.cache import CacheFull

PrefixKey = tuple[int, tuple[int, ...]]
NO_PARENT = -1


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self._free = list(range(num_blocks - 1, -1, -1))  # popped from the end: low ids first
        self._refs = [0] * num_blocks
        self._key_of: dict[int, PrefixKey] = {}
        self._block_of: dict[PrefixKey, int] = {}

    @property
    def total(self) -> int:
        return len(self._refs)

    @property
    def free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        """``n`` free blocks, each now held once."""
        if n > len(self._free):
            raise CacheFull(f"KV cache is full: {n} blocks needed, {len(self._free)} of {self.total} are free")
        blocks = [self._free.pop() for _ in range(n)]
        for block in blocks:
            self._refs[block] = 1
        return blocks

    def retain(self, block: int) -> None:
        """One more row holds ``block``."""
        if self._refs[block] == 0:
            raise ValueError(f"block {block} is free; only a held block can be shared")
        self._refs[block] += 1

    def release(self, block: int) -> None:
        """One row fewer holds ``block``; the last release frees (and unpublishes) it."""
        if self._refs[block] == 0:
            raise ValueError(f"block {block} is already free")
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self.unpublish(block)
            self._free.append(block)

    def holders(self, block: int) -> int:
        """How many rows hold ``block``."""
        return self._refs[block]

    def shared(self, block: int) -> bool:
        """Whether more than one row holds ``block`` (a row must copy it before writing)."""
        return self._refs[block] > 1

    def publish(self, block: int, key: PrefixKey) -> None:
        """Offer the held, full ``block`` to later rows under ``key`` (a no-op when ``key`` or ``block`` is
        already published: the first computation of a prefix is the one shared)."""
        if self._refs[block] == 0:
            raise ValueError(f"block {block} is free; only a held block can be published")
        if key not in self._block_of and block not in self._key_of:
            self._block_of[key] = block
            self._key_of[block] = key

    def unpublish(self, block: int) -> None:
        key = self._key_of.pop(block, None)
        if key is not None:
            del self._block_of[key]

    def published(self, block: int) -> bool:
        return block in self._key_of

    def lookup(self, key: PrefixKey) -> int | None:
        return self._block_of.get(key)
