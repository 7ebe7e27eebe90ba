"""TensorSpec: the shape, dtype and layout a tensor must have where one plane hands it to another.

Dims use the project's fixed vocabulary (``B`` batch, ``T``/``Tq``/``Tk`` sequence, ``Hq``/``Hkv`` heads, ``D``
head dim, ``C`` model width, ``V`` vocabulary). A symbolic dim binds to the first size it meets, so
``check`` catches two tensors that disagree. Checks are cheap (no device sync) and can be switched off
with :func:`set_checks` or ``LMPLANES_CHECKS=0``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from specs.errors import ShapeError

if TYPE_CHECKING:
    import torch

_enabled = os.environ.get("LMPLANES_CHECKS", "1") not in ("0", "false", "False")


def checks_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def set_checks(enabled: bool) -> Iterator[None]:
    """Turn TensorSpec checks on or off inside a ``with`` block (the previous setting is restored)."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def dtype_name(t: torch.Tensor) -> str:
    """``torch.float32`` -> ``"float32"``, without importing torch."""
    return str(t.dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """``TensorSpec("q", ("B", "Hq", "Tq", "D"), dtypes={"float32", "bfloat16"})``.

    A dim is a symbol (bound by ``check``'s keyword arguments or by the first tensor that shows it), an int
    (exact size) or ``"*"`` (any size). ``dtypes=None`` accepts any dtype.
    """

    name: str
    dims: tuple[str | int, ...]
    dtypes: Set[str] | None = None  # stored as a frozenset
    layout: str = "strided"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        if self.dtypes is not None:
            object.__setattr__(self, "dtypes", frozenset(self.dtypes))

    def check(self, t: torch.Tensor, bound: dict[str, int] | None = None, **dims: int) -> dict[str, int]:
        """Check ``t`` and return the symbol bindings (``bound`` updated in place, plus ``dims``).

        Raises :class:`ShapeError` naming the tensor, the dim and both sizes.
        """
        bound = {} if bound is None else bound
        bound.update(dims)
        shape = tuple(t.shape)
        if not _enabled:  # still bind the symbols (callers read sizes from the result), but verify nothing
            bound.update((d, n) for d, n in zip(self.dims, shape) if isinstance(d, str) and d not in bound)
            return bound
        if len(shape) != len(self.dims):
            raise ShapeError(
                f"{self.name}: expected {len(self.dims)} dims {self._pattern()}, got shape {list(shape)}"
            )
        for axis, (want, got) in enumerate(zip(self.dims, shape)):
            if want == "*":
                continue
            if isinstance(want, int):
                if got != want:
                    raise ShapeError(f"{self.name}: dim {axis} is {got} but must be {want} ({self._pattern()})")
            elif want in bound and bound[want] != got:
                raise ShapeError(
                    f"{self.name}: dim {want!r} (axis {axis}) is {got} but {want} = {bound[want]} "
                    f"({self._pattern()}, got {list(shape)})"
                )
            else:
                bound[want] = got
        if self.dtypes is not None and dtype_name(t) not in self.dtypes:
            raise ShapeError(f"{self.name}: dtype {dtype_name(t)} not in {sorted(self.dtypes)}")
        layout = str(t.layout).removeprefix("torch.")
        if layout != self.layout:
            raise ShapeError(f"{self.name}: layout {layout}, expected {self.layout}")
        return bound

    def _pattern(self) -> str:
        return "(" + ", ".join(map(str, self.dims)) + ")"
