"""The runtime-checkable protocols: small fakes satisfy them, incomplete ones do not."""

from __future__ import annotations

import torch

from specs import CausalLM, EncoderModel, KVCache, ParallelizableModel, RecurrentState, Seq2SeqLM, load_preset


class FakeCache:
    """A list-backed KV cache, enough to show the protocol's shape."""

    def __init__(self, batch: int, max_len: int) -> None:
        self._max_len = max_len
        self._k: dict[int, torch.Tensor] = {}
        self._v: dict[int, torch.Tensor] = {}
        self._lens = torch.zeros(batch, dtype=torch.int64)
        self._states: dict[int, torch.Tensor] = {}

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def seq_len(self) -> int:
        return int(self._lens[0])

    @property
    def seq_lens(self) -> torch.Tensor:
        return self._lens

    def update(self, layer, k, v):
        if layer in self._k:
            self._k[layer] = torch.cat([self._k[layer], k], dim=2)
            self._v[layer] = torch.cat([self._v[layer], v], dim=2)
        else:
            self._k[layer], self._v[layer] = k, v
        if layer == 0:
            self._lens += k.shape[2]
        return self._k[layer], self._v[layer]

    def reset(self) -> None:
        self._k.clear()
        self._v.clear()
        self._lens.zero_()

    def evict(self, n: int) -> None:
        for store in (self._k, self._v):
            for layer in store:
                store[layer] = store[layer][:, :, : store[layer].shape[2] - n]
        self._lens -= n

    def reorder(self, indices) -> None:
        for store in (self._k, self._v):
            for layer in store:
                store[layer] = store[layer][indices]

    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self._k.values(), *self._v.values()])

    # RecurrentState
    def state(self, layer):
        return self._states.get(layer)

    def set_state(self, layer, state) -> None:
        self._states[layer] = state


class NoEvictCache(FakeCache):
    evict = None  # type: ignore[assignment]


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = load_preset("llama-tiny")
        self.emb = torch.nn.Embedding(self.config.vocab_size, 8)

    def forward(self, input_ids, *, positions=None, cache=None, attn_mask=None):
        return self.emb(input_ids) @ self.emb.weight.T

    def new_cache(self, batch, max_len, *, dtype=None, device=None):
        return FakeCache(batch, max_len)

    def aux_losses(self):
        return {}

    def fsdp_units(self):
        return [self.emb]

    def tp_plan(self):
        return {"emb": "rowwise"}


class TinyEncoder:
    config = None

    def __call__(self, input_ids, *, key_padding_mask=None, token_type_ids=None):
        return input_ids


class TinySeq2Seq:
    config = None

    def encode(self, input_ids, *, key_padding_mask=None):
        return input_ids

    def decode(self, decoder_input_ids, memory, *, memory_padding_mask=None, cache=None):
        return decoder_input_ids

    def new_cache(self, batch, max_len, *, dtype=None, device=None):
        return FakeCache(batch, max_len)


def test_fake_cache_is_a_kv_cache_and_recurrent_state():
    cache = FakeCache(2, 16)
    assert isinstance(cache, KVCache) and isinstance(cache, RecurrentState)
    k = torch.zeros(2, 1, 3, 4)
    k_all, _ = cache.update(0, k, k)
    assert k_all.shape == (2, 1, 3, 4) and cache.seq_len == 3
    cache.evict(1)
    assert cache.seq_lens.tolist() == [2, 2] and cache.bytes() == 2 * 2 * 1 * 2 * 4 * 4


def test_incomplete_cache_is_not_a_kv_cache():
    assert not isinstance(NoEvictCache(1, 4), KVCache)
    assert not isinstance(object(), KVCache)
    assert not isinstance(object(), RecurrentState)


def test_module_satisfies_causal_lm_and_parallelizable():
    lm = TinyLM()
    assert isinstance(lm, CausalLM) and isinstance(lm, ParallelizableModel)
    assert isinstance(lm.new_cache(1, 8), KVCache)
    logits = lm(torch.zeros(1, 3, dtype=torch.int64))
    assert logits.shape == (1, 3, lm.config.vocab_size)
    assert not isinstance(lm, Seq2SeqLM)


def test_encoder_and_seq2seq():
    assert isinstance(TinyEncoder(), EncoderModel)
    assert isinstance(TinySeq2Seq(), Seq2SeqLM)
    assert not isinstance(TinySeq2Seq(), CausalLM)  # no aux_losses
    assert not isinstance(torch.nn.Linear(2, 2), CausalLM)
