"""TensorSpec: symbolic dims bind across tensors; errors name the tensor, the dim and both sizes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specs import ShapeError, TensorSpec, checks_enabled, set_checks
from specs.tensor_spec import dtype_name

Q = TensorSpec("q", ("B", "Hq", "Tq", "D"), dtypes={"float32", "bfloat16"})
K = TensorSpec("k", ("B", "Hkv", "Tk", "D"))


def test_check_returns_bindings():
    assert Q.check(torch.zeros(2, 4, 3, 8)) == {"B": 2, "Hq": 4, "Tq": 3, "D": 8}


def test_bindings_carry_across_tensors():
    dims = Q.check(torch.zeros(2, 4, 3, 8))
    out = K.check(torch.zeros(2, 1, 5, 8), dims)
    assert out is dims
    assert dims == {"B": 2, "Hq": 4, "Tq": 3, "D": 8, "Hkv": 1, "Tk": 5}


def test_mismatch_names_tensor_dim_and_both_sizes():
    dims = Q.check(torch.zeros(2, 4, 3, 8))
    with pytest.raises(ShapeError) as info:
        K.check(torch.zeros(2, 1, 5, 16), dims)
    msg = str(info.value)
    assert msg.startswith("k: dim 'D' (axis 3) is 16 but D = 8")
    assert "(B, Hkv, Tk, D)" in msg and "[2, 1, 5, 16]" in msg


def test_keyword_dims_bind_before_checking():
    with pytest.raises(ShapeError, match="q: dim 'B' \\(axis 0\\) is 2 but B = 3"):
        Q.check(torch.zeros(2, 4, 3, 8), B=3)
    assert Q.check(torch.zeros(2, 4, 3, 8), B=2, V=100)["V"] == 100


def test_same_symbol_twice_in_one_spec():
    square = TensorSpec("m", ("T", "T"))
    square.check(torch.zeros(3, 3))
    with pytest.raises(ShapeError, match="m: dim 'T' \\(axis 1\\) is 4 but T = 3"):
        square.check(torch.zeros(3, 4))


def test_wrong_rank():
    with pytest.raises(ShapeError) as info:
        Q.check(torch.zeros(2, 3, 8))
    msg = str(info.value)
    assert msg.startswith("q: expected 4 dims (B, Hq, Tq, D), got shape [2, 3, 8]")


def test_wrong_dtype():
    with pytest.raises(ShapeError, match=r"q: dtype float16 not in \['bfloat16', 'float32'\]"):
        Q.check(torch.zeros(2, 4, 3, 8, dtype=torch.float16))
    Q.check(torch.zeros(2, 4, 3, 8, dtype=torch.bfloat16))
    K.check(torch.zeros(1, 1, 1, 1, dtype=torch.int8))  # dtypes=None accepts any dtype


def test_int_dims():
    spec = TensorSpec("rope_cache", ("T", 2, "D"))
    assert spec.check(torch.zeros(5, 2, 4)) == {"T": 5, "D": 4}
    with pytest.raises(ShapeError) as info:
        spec.check(torch.zeros(5, 3, 4))
    assert str(info.value).startswith("rope_cache: dim 1 is 3 but must be 2")


def test_wildcard_dim_accepts_anything_and_binds_nothing():
    spec = TensorSpec("x", ("B", "*", "*"))
    assert spec.check(torch.zeros(2, 3, 4)) == {"B": 2}
    assert spec.check(torch.zeros(2, 7, 1)) == {"B": 2}


def test_layout():
    spec = TensorSpec("x", ("N", "M"))
    sparse = torch.zeros(2, 2).to_sparse()
    with pytest.raises(ShapeError, match="x: layout sparse_coo, expected strided"):
        spec.check(sparse)
    TensorSpec("x", ("N", "M"), layout="sparse_coo").check(sparse)


def test_spec_normalises_dims_and_dtypes():
    spec = TensorSpec("x", ["B", "T"], dtypes=["int64"])
    assert spec.dims == ("B", "T") and spec.dtypes == frozenset({"int64"})
    hash(spec)


def test_set_checks_disables_and_restores():
    before = checks_enabled()
    with set_checks(False):
        assert not checks_enabled()
        assert Q.check(torch.zeros(1), B=2) == {"B": 2}  # nothing checked, keyword dims still returned
        Q.check(torch.zeros(2, 4, 3, 8, dtype=torch.int64))
        with set_checks(True):
            assert checks_enabled()
            with pytest.raises(ShapeError):
                Q.check(torch.zeros(1))
        assert not checks_enabled()
    assert checks_enabled() == before


def test_set_checks_restores_after_an_exception():
    before = checks_enabled()
    with pytest.raises(RuntimeError), set_checks(not before):
        raise RuntimeError
    assert checks_enabled() == before


def test_dtype_name():
    assert dtype_name(torch.zeros(1)) == "float32"
    assert dtype_name(torch.zeros(1, dtype=torch.bfloat16)) == "bfloat16"
    assert dtype_name(torch.zeros(1, dtype=torch.bool)) == "bool"


def test_shape_error_is_value_error():
    assert issubclass(ShapeError, ValueError)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_symbols_bind_to_the_first_size(shape, data):
    names = [f"S{i}" for i in range(len(shape))]
    spec = TensorSpec("t", tuple(names))
    dims = spec.check(torch.zeros(shape))
    assert dims == dict(zip(names, shape, strict=True))
    axis = data.draw(st.integers(0, len(shape) - 1))
    other = list(shape)
    other[axis] += data.draw(st.integers(1, 3))
    with pytest.raises(ShapeError) as info:
        spec.check(torch.zeros(other), dict(dims))
    msg = str(info.value)
    assert f"dim '{names[axis]}' (axis {axis}) is {other[axis]} but {names[axis]} = {shape[axis]}" in msg
