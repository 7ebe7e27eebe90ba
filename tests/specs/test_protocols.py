"""The runtime-checkable protocols: small fakes satisfy them, incomplete ones do not."""

from __future__ import annotations

import torch

from specs import (
    CacheLayout,
    CacheStep,
    CausalLM,
    EncoderModel,
    KVCache,
    LMOutput,
    MemoryKV,
    ParallelizableModel,
    RecurrentState,
    Seq2SeqLM,
    load_preset,
)


class FakeCache:
    """A concatenating KV cache whose rows always hold the same number of tokens: enough to show the protocol."""

    def __init__(self, batch: int, max_len: int) -> None:
        self._batch, self._max_len = batch, max_len
        self._k: dict[int, torch.Tensor] = {}
        self._v: dict[int, torch.Tensor] = {}
        self._len = 0
        self._states: dict[int, dict[str, torch.Tensor]] = {}
        self._memory: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def layout(self) -> CacheLayout:
        return CacheLayout(n_layers=1, batch=self._batch, n_kv_heads=1, head_dim=4, max_len=self._max_len, dtype="float32")

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def seq_lens(self) -> torch.Tensor:
        return torch.full((self._batch,), self._len, dtype=torch.int64)

    def step(self, n_new: int) -> CacheStep:
        if self._len + n_new > self._max_len:
            raise ValueError("full")
        return CacheStep(q_offset=self._len)

    def update(self, layer, k, v):
        kept = self._k.get(layer, k[:, :, :0])[:, :, : self._len]
        self._k[layer] = torch.cat([kept, k], dim=2)
        self._v[layer] = torch.cat([self._v.get(layer, v[:, :, :0])[:, :, : self._len], v], dim=2)
        return self._k[layer], self._v[layer]

    def advance(self, n_new: int) -> None:
        self._len += n_new

    def reset(self, rows=None) -> None:
        if rows is not None:
            raise ValueError("this fake resets every row or none")
        self._len = 0

    def evict(self, n) -> None:
        self._len -= int(n)

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
        self._states[layer] = dict(state)

    # MemoryKV
    def memory(self, layer):
        return self._memory.get(layer)

    def set_memory(self, layer, k, v) -> None:
        self._memory[layer] = (k, v)


class NoEvictCache(FakeCache):
    evict = None  # type: ignore[assignment]


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = load_preset("llama-tiny")
        self.emb = torch.nn.Embedding(self.config.vocab_size, 8)

    def forward(self, input_ids, *, positions=None, cache=None, attn_mask=None, output="logits"):
        hidden = self.emb(input_ids)
        if output == "logits":
            return self.output_head()(hidden)
        return LMOutput(hidden=hidden)

    def new_cache(self, batch, max_len, *, dtype=None, device=None, fixed_shapes=False):
        return FakeCache(batch, max_len)

    def output_head(self):
        return lambda hidden: hidden @ self.emb.weight.T

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


def test_fake_cache_is_a_kv_cache_memory_and_recurrent_state():
    cache = FakeCache(2, 16)
    assert isinstance(cache, KVCache) and isinstance(cache, RecurrentState) and isinstance(cache, MemoryKV)
    k = torch.zeros(2, 1, 3, 4)
    assert cache.step(3).q_offset == 0
    k_all, _ = cache.update(0, k, k)
    cache.advance(3)
    assert k_all.shape == (2, 1, 3, 4) and cache.seq_lens.tolist() == [3, 3]
    cache.evict(1)
    assert cache.step(1).q_offset == 2
    k_all, _ = cache.update(0, k[:, :, :1], k[:, :, :1])
    assert k_all.shape == (2, 1, 3, 4)  # the evicted token was overwritten
    cache.set_state(0, {"recurrent": torch.zeros(2, 1, 4, 4), "conv": torch.zeros(2, 8, 3)})
    assert set(cache.state(0)) == {"recurrent", "conv"}


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
    out = lm(torch.zeros(1, 3, dtype=torch.int64), output="hidden")
    assert out.logits is None and out.aux_losses == {}
    assert torch.equal(lm.output_head()(out.hidden), logits)
    assert not isinstance(lm, Seq2SeqLM)


def test_encoder_and_seq2seq():
    assert isinstance(TinyEncoder(), EncoderModel)
    assert isinstance(TinySeq2Seq(), Seq2SeqLM)
    assert not isinstance(TinySeq2Seq(), CausalLM)  # no output_head
    assert not isinstance(torch.nn.Linear(2, 2), CausalLM)
