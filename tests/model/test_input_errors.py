"""Bad input to a model gets one clear error naming the input, the bound and what to change (never a raw
torch IndexError or a traceback from deep inside a layer)."""

from __future__ import annotations

import pytest
import torch

import model
import specs


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return model.build(specs.load_preset("llama-tiny")).eval()  # vocab 256, max_seq_len 128, 2 layers


def _ids(*shape: int, high: int = 256) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_token_id_at_or_beyond_the_vocabulary(llama):
    ids = _ids(2, 5)
    ids[1, 3] = 256
    with pytest.raises(specs.InputError, match=r"token id 256 at \[1, 3\] is outside the vocabulary .*vocab_size 256"):
        llama(ids)


@torch.no_grad()
def test_negative_token_id(llama):
    ids = _ids(1, 4)
    ids[0, 0] = -1
    with pytest.raises(specs.InputError, match=r"token id -1 at \[0, 0\]"):
        llama(ids)


@torch.no_grad()
def test_empty_input(llama):
    with pytest.raises(specs.InputError, match=r"input_ids has shape \[2, 0\]: no tokens to run"):
        llama(torch.zeros(2, 0, dtype=torch.int64))


@torch.no_grad()
def test_wrong_rank_and_dtype_name_input_ids(llama):
    with pytest.raises(specs.ShapeError, match=r"input_ids: expected 2 dims"):
        llama(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(specs.ShapeError, match=r"input_ids: dtype float32"):
        llama(torch.zeros(1, 5))


@torch.no_grad()
def test_rope_sequence_longer_than_max_seq_len_says_what_to_change(llama):
    llama(_ids(1, 128))  # exactly max_seq_len: fine
    with pytest.raises(specs.InputError, match=r"input of 129 tokens reaches position 128, beyond max_seq_len 128") as info:
        llama(_ids(1, 129))
    assert "raise max_seq_len in the config" in str(info.value) and "rope.scaling" in str(info.value)


@torch.no_grad()
def test_cache_longer_than_max_seq_len_is_refused(llama):
    with pytest.raises(specs.InputError, match=r"a cache of max_len 200 exceeds max_seq_len 128 of llama-tiny"):
        llama.new_cache(1, 200)


@torch.no_grad()
def test_cached_positions_past_max_seq_len(llama):
    cache = llama.new_cache(1, 128)
    llama(_ids(1, 126), cache=cache)
    with pytest.raises(ValueError, match="row 0 holds 126 tokens and 3 more exceed max_len 128"):
        llama(_ids(1, 3), cache=cache)


@torch.no_grad()
def test_explicit_positions_out_of_range_or_shape(llama):
    with pytest.raises(specs.InputError, match=r"positions range over -1..2"):
        llama(_ids(1, 4), positions=torch.tensor([[-1, 0, 1, 2]]))
    with pytest.raises(specs.ShapeError, match=r"positions: dim 'T'"):
        llama(_ids(1, 4), positions=torch.tensor([[0, 1, 2]]))


@torch.no_grad()
def test_cache_of_another_model_is_refused_before_anything_runs(llama):
    other = model.build(specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=3"]))
    cache = other.new_cache(1, 16)
    with pytest.raises(specs.ShapeError, match=r"cache was built for 3 layers x 2 kv heads x head dim 16, but llama-tiny has 2 x 2 x 16"):
        llama(_ids(1, 4), cache=cache)
    heads = model.build(specs.apply_overrides(specs.load_preset("llama-tiny"), ["attention.n_kv_heads=4"]))
    with pytest.raises(specs.ShapeError, match="4 kv heads"):
        llama(_ids(1, 4), cache=heads.new_cache(1, 16))
    assert cache.seq_lens.tolist() == [0]


@torch.no_grad()
def test_cache_for_another_batch_size(llama):
    with pytest.raises(specs.ShapeError, match=r"the cache holds 3 rows but input_ids has 2; new_cache\(batch=2"):
        llama(_ids(2, 4), cache=llama.new_cache(3, 16))


@torch.no_grad()
def test_value_checks_can_be_switched_off_for_hot_loops(llama):
    """With checks off (LMPLANES_CHECKS=0 / set_checks(False)) nothing reads token values: torch's own error."""
    ids = _ids(1, 4)
    ids[0, 0] = 999
    with specs.set_checks(False), pytest.raises(IndexError):
        llama(ids)


@torch.no_grad()
def test_unknown_output_kind(llama):
    with pytest.raises(ValueError, match="output must be 'logits', 'hidden' or 'all', got 'probs'"):
        llama(_ids(1, 4), output="probs")
