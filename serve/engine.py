"""Engine: continuous batching over a paged KV cache.

Requests join and leave between decode steps. Each :meth:`Engine.step` first runs one decode forward over
every running request (one token each, through a view of the cache over their rows, whatever their lengths),
then admits waiting requests in arrival order: the newcomers' prompts are prefilled together, right-padded, through
a view of their rows (after linking the blocks of any prompt prefix another request already computed), and each
gives its first token.
So prefill and decode interleave step by step, and a finished or cancelled request frees its row and blocks
for the next one at once.

Memory is the paged cache's blocks. Admission stops at the first waiting request whose prefill finds too few
free blocks (:class:`specs.CacheFull`): nobody overtakes it, so no request starves. A decode step that needs
more blocks than are free preempts the running request that arrived last: its blocks are freed and it goes
back to the waiting queue in arrival order, to be recomputed from its prompt and the tokens it already gave
(its logits processing state and random stream stay with it, so its tokens are the ones it would have given).
The request that arrived first is never preempted, and every request fits the cache alone (checked on
submit), so the oldest always progresses.

Tokens are picked per request with :func:`serve.processing.process` and :func:`serve.processing.pick`, as
:func:`serve.stream` picks them: a request's tokens are those ``serve.generate`` gives for its prompt alone
(greedy, or sampling with a seed), up to the float noise of batched arithmetic.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from serve.events import TokenEvent
from serve.processing import pick, process
from specs.cache import CacheFull, PagedCache, PagedSpec
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot: requests running (holding a cache row) and waiting, cache blocks held and free, and how many
    times a running request was preempted or cancelled so far."""

    running: int
    waiting: int
    blocks_used: int
    blocks_free: int
    preemptions: int
    cancelled: int


@dataclass(eq=False)
class _Request:
    request_id: int
    prompt: list[int]
    cfg: GenerationConfig
    generator: torch.Generator | None
    sequence: torch.Tensor  # (1, S): prompt and generated tokens, for the repetition penalty
    counts: torch.Tensor  # (1, V): how often each token was generated, for frequency/presence penalties
    generated: list[int] = field(default_factory=list)
    row: int = -1  # the cache row while running, -1 otherwise

    def known_tokens(self) -> list[int]:
        """What a (re-)admission prefills: the prompt and every token already given."""
        return self.prompt + self.generated


class Engine:
    """Continuous batching of up to ``max_batch`` requests of at most ``max_len`` tokens each (prompt plus new
    tokens) over ``num_blocks`` cache blocks of ``block_size`` tokens (default: enough for every row to reach
    ``max_len``). Not thread-safe: one thread drives it (:class:`serve.async_engine.AsyncEngine` does)."""

    def __init__(
        self,
        model: CausalLM,
        *,
        max_batch: int,
        max_len: int,
        block_size: int = 16,
        num_blocks: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.max_len = max_len
        cache = model.new_cache(max_batch, max_len, paged=PagedSpec(block_size=block_size, num_blocks=num_blocks))
        if not isinstance(cache, PagedCache):
            raise TypeError(f"{type(model).__name__}.new_cache(paged=...) gave a {type(cache).__name__}, not a PagedCache")
        self.cache = cache
        self._device = cache.seq_lens.device  # where the model's cache (so its inputs) lives
        self._next_id = 0
        self._waiting: list[_Request] = []  # sorted by request id: arrival order, preempted ones included
        self._running: dict[int, _Request] = {}
        self._free_rows = list(range(max_batch - 1, -1, -1))  # popped from the end: low rows first
        self._preemptions = 0
        self._cancelled = 0

    # ------------------------------------------------------------------------------------------------ requests

    def check_request(self, prompt_ids: Sequence[int], cfg: GenerationConfig) -> None:
        """Refuse, in one line, a request the engine could never run. Reads only fixed settings, so any thread
        may call it."""
        if cfg.n != 1 or cfg.num_beams != 1 or cfg.stop:
            raise ValueError("an engine request is one sampled or greedy answer: n=1, num_beams=1, no stop strings")
        if not prompt_ids:
            raise ValueError("the prompt is empty; give at least one token")
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary (ids 0..{vocab - 1})")
        total = len(prompt_ids) + cfg.max_new_tokens
        if total > self.max_len:
            raise ValueError(
                f"a prompt of {len(prompt_ids)} tokens plus max_new_tokens {cfg.max_new_tokens} is {total} tokens, "
                f"over the engine's max_len {self.max_len}"
            )
        blocks = -(-total // self.cache.block_size)
        if blocks > self.cache.blocks_total:
            raise ValueError(
                f"a request of {total} tokens needs {blocks} blocks of {self.cache.block_size}, more than the "
                f"cache's {self.cache.blocks_total}; build the engine with more blocks"
            )

    def submit(self, prompt_ids: Sequence[int], cfg: GenerationConfig) -> int:
        """Queue a request; returns its id (what its :class:`TokenEvent`\\ s carry)."""
        self.check_request(prompt_ids, cfg)
        prompt = [int(t) for t in prompt_ids]
        # As serve.stream: a seed gives the request its own random stream; without one it draws from torch's.
        generator = None
        if cfg.do_sample and cfg.seed is not None:
            generator = torch.Generator(device=self._device).manual_seed(cfg.seed)
        request = _Request(
            request_id=self._next_id,
            prompt=prompt,
            cfg=cfg,
            generator=generator,
            sequence=torch.tensor([prompt], dtype=torch.long, device=self._device),
            counts=torch.zeros(1, self.model.config.vocab_size, device=self._device),
        )
        self._next_id += 1
        self._waiting.append(request)  # ids grow, so the list stays sorted
        return request.request_id

    def cancel(self, request_id: int) -> None:
        """Drop a waiting or running request and free its blocks; a request that already finished is left
        alone (a consumer may cancel after the last event)."""
        if not 0 <= request_id < self._next_id:
            raise ValueError(f"no request {request_id} was submitted")
        if request_id in self._running:
            self._release(self._running[request_id])
        else:
            waiting = [r for r in self._waiting if r.request_id == request_id]
            if not waiting:
                return
            self._waiting.remove(waiting[0])
        self._cancelled += 1

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def stats(self) -> EngineStats:
        free = self.cache.blocks_free
        return EngineStats(
            running=len(self._running), waiting=len(self._waiting), blocks_used=self.cache.blocks_total - free,
            blocks_free=free, preemptions=self._preemptions, cancelled=self._cancelled,
        )

    # ------------------------------------------------------------------------------------------------- steps

    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        """One decode step for the running requests, then the admission of waiting ones (each gives its first
        token). Returns the tokens made, a request's last one carrying its finish reason."""
        events: list[TokenEvent] = []
        preempted = self._decode(events)
        if not preempted:  # blocks just ran out: admitting now would only preempt again next step
            self._admit(events)
        return events

    def _decode(self, events: list[TokenEvent]) -> bool:
        """One token for every running request; returns whether a request had to be preempted for blocks."""
        batch = sorted(self._running.values(), key=lambda r: r.request_id)
        preempted = False
        while batch:
            tokens = torch.tensor([[r.generated[-1]] for r in batch], dtype=torch.long, device=self._device)
            try:
                logits = self.model(tokens, cache=self.cache.select([r.row for r in batch]))
                break
            except CacheFull:  # refused before anything was written: free the latest arrival's blocks, retry
                self._preempt(batch.pop())
                preempted = True
        else:
            return preempted
        for request, row_logits in zip(batch, logits[:, -1]):
            events.append(self._take_token(request, row_logits[None]))
        return preempted

    def _admit(self, events: list[TokenEvent]) -> None:
        """Admit the waiting requests that have free rows, oldest first, prefilled together in one forward. When
        they do not all fit (blocks, or a padded row past ``max_len``), the newest of them waits, and so on down
        to the oldest alone: nobody overtakes a waiting request. A request that would share prompt blocks with
        an earlier newcomer goes in the next forward, to link them instead of computing them again."""
        while self._waiting and self._free_rows:
            for count in range(self._batchable(min(len(self._waiting), len(self._free_rows))), 0, -1):
                group, rows = self._waiting[:count], self._free_rows[: -count - 1 : -1]  # low rows first
                last_logits = self._prefill(group, rows)
                if last_logits is not None:
                    break
            else:
                return
            del self._waiting[:count], self._free_rows[-count:]
            for request, row, logits in zip(group, rows, last_logits):
                request.row = row
                self._running[request.request_id] = request
                events.append(self._take_token(request, logits[None]))

    def _batchable(self, limit: int) -> int:
        """How many of the first ``limit`` waiting requests can be prefilled together: up to the first one whose
        next uncached prompt block is also an earlier one's (it would link that block once computed)."""
        size, seen = self.cache.block_size, []
        for request in self._waiting[:limit]:
            tokens = request.known_tokens()
            shared_to = self.cache.cached_prefix(tokens) + size  # the next block a later row could link
            if len(tokens) > shared_to and any(other[:shared_to] == tokens[:shared_to] for other in seen):
                break
            seen.append(tokens)
        return len(seen)

    def _prefill(self, group: list[_Request], rows: list[int]) -> torch.Tensor | None:
        """Write the known tokens of ``group`` into ``rows`` (after linking any cached prefix) in one forward and
        return each one's last logits ``(len(group), V)``, or None, with the rows left empty, when they do not
        fit. Shorter rows are padded on the right and the padding evicted after: under the causal rule no real
        token sees it, and a row publishes prefix blocks of its known tokens only. Any error leaves the rows
        empty too."""
        cache = self.cache.select(rows)
        try:
            linked = [cache.share_prefix(i, request.known_tokens()) for i, request in enumerate(group)]
            todo = [request.known_tokens()[n:] for request, n in zip(group, linked)]
            width = max(len(t) for t in todo)
            if max(linked) + width > self.max_len:  # a padded row would run past the cache
                cache.reset()
                return None
            ids = torch.tensor([t + t[-1:] * (width - len(t)) for t in todo], dtype=torch.long, device=self._device)
            hidden = self.model(ids, cache=cache, output="hidden").hidden
            lengths = torch.tensor([len(t) for t in todo], device=self._device)
            cache.evict(width - lengths)
        except CacheFull:
            cache.reset()
            return None
        except BaseException:
            cache.reset()
            raise
        # The head reads only each row's last position: the logits of the other prompt tokens are never needed.
        return self.model.output_head()(hidden[torch.arange(len(group), device=self._device), lengths - 1])

    def _take_token(self, request: _Request, logits: torch.Tensor) -> TokenEvent:
        """Pick ``request``'s next token from its ``(1, V)`` logits, as :func:`serve.stream` does."""
        cfg = request.cfg
        token = pick(process(logits.float(), request.sequence, request.counts, cfg), cfg, request.generator)
        request.sequence = torch.cat([request.sequence, token[:, None]], dim=1)
        request.counts.scatter_add_(1, token[:, None], torch.ones(1, 1, device=self._device))
        value = int(token)
        request.generated.append(value)
        reason = "stop" if value in cfg.eos_token_ids else "length" if len(request.generated) == cfg.max_new_tokens else None
        if reason is not None:
            self._release(request)
        return TokenEvent(request.request_id, value, reason)

    def _release(self, request: _Request) -> None:
        """Take ``request`` off its cache row, giving its blocks back."""
        assert request.row >= 0, f"request {request.request_id} holds no row"
        self.cache.reset([request.row])
        self._free_rows.append(request.row)
        request.row = -1
        del self._running[request.request_id]

    def _preempt(self, request: _Request) -> None:
        self._release(request)
        bisect.insort(self._waiting, request, key=lambda r: r.request_id)
        self._preemptions += 1
