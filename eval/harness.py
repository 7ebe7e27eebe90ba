"""An ``lmplanes`` model for EleutherAI's lm-evaluation-harness (``lm_eval``).

``LMPlanesLM`` implements the harness's ``LM`` interface through its ``TemplateLM`` base, which turns
``(context, continuation)`` requests into token ids exactly as the harness's own ``hf`` backend does (trailing
spaces of the context move to the continuation; an empty context becomes the prefix token). What is left here
is the scoring, with the same rules as ``hf``: the longest requests first, ``batch_size`` a forward, inputs
truncated from the left to the model's context; rolling loglikelihoods over the harness's own disjoint windows
(``lm_eval.utils.get_rolling_token_windows``); ``generate_until`` through :func:`serve.generate`.

lm_eval finds models in its registry, which its command line never extends from installed packages, so the
model is registered when this module is imported (:func:`register_with_lm_eval`) and ``python -m eval harness``
(or ``lmplanes eval harness``) imports it and then runs lm_eval's own command line with the same arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (fills the registry with lm_eval's own models before ours joins it)
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

import data
import specs
from eval.scoring import score_last_tokens
from serve.generate import generate
from specs.protocols import CausalLM, ModelStore, installed_store

NAME = "lmplanes"

# A request already turned into ids: ((context, continuation) or None for a rolling window, context, continuation).
TokenRequest = tuple[tuple[str, str] | None, list[int], list[int]]


class LMPlanesLM(TemplateLM):
    """lm_eval's view of an lmplanes causal LM and its tokenizer.

    From the harness: ``--model lmplanes --model_args checkpoint=DIR[,dtype=bfloat16,max_length=N,max_gen_toks=N]``
    with ``--batch_size N --device cpu|cuda``; the checkpoint is loaded through the model store installed under
    the ``lmplanes.model_stores`` entry point. From Python: ``LMPlanesLM(lm=model, tokenizer=tok)``.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        lm: CausalLM | None = None,
        tokenizer: data.Tokenizer | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        store: ModelStore | None = None,
    ) -> None:
        super().__init__()
        if (checkpoint is None) == (lm is None):
            raise ValueError("give either checkpoint=DIR or an lm (and its tokenizer)")
        if device is None and lm is not None:  # a model handed over stays where it is
            device = str(next(iter(lm.parameters())).device)  # type: ignore[attr-defined]
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if checkpoint is not None:
            weights = None if dtype in (None, "auto") else getattr(torch, str(dtype))
            module = (store or installed_store()).load(checkpoint, device=self._device, dtype=weights).eval()
            if not isinstance(module, CausalLM):
                raise ValueError(f"{checkpoint}: the model is not a causal LM (an {module.config.architecture})")  # type: ignore[union-attr]
            lm, tokenizer = module, data.load_tokenizer(checkpoint)
        if tokenizer is None:
            raise ValueError("an lm needs its tokenizer (tokenizer=...)")
        assert lm is not None
        self.lm = lm
        self.tokenizer_ = tokenizer
        if str(batch_size).startswith("auto"):
            raise ValueError("batch_size 'auto' is not supported by the lmplanes model; give a number")
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or lm.config.max_seq_len)
        self.max_gen_toks = int(max_gen_toks)

    # ---------------------------------------------------------------------------------- tokens (TemplateLM)
    @property
    def eot_token_id(self) -> int:
        if self.tokenizer_.eos_id is None:
            raise ValueError("the tokenizer has no end-of-sequence token, which the harness needs")
        return self.tokenizer_.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and the first rolling window start from: BOS when there is one, else EOS (the
        ``hf`` backend's rule)."""
        bos = self.tokenizer_.bos_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer_.encode(string)  # our tokenizers add no special tokens, like hf's causal default

    @property
    def tokenizer_name(self) -> str:
        return f"lmplanes-{self.tokenizer_.kind}-{self.tokenizer_.vocab_size}"

    # ---------------------------------------------------------------------------------- loglikelihood
    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1] + requests[i][2]), tuple(requests[i][1] + requests[i][2])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                rows, scored = [], []
                for i in batch:
                    _, context, continuation = requests[i]
                    if not context or not continuation or len(continuation) > self.max_length:
                        raise ValueError(f"request {i}: {len(context)} context and {len(continuation)} continuation "
                                         f"tokens (each must be non-empty, the continuation at most {self.max_length})")
                    rows.append((context + continuation)[-(self.max_length + 1) :])  # truncated from the left
                    scored.append(len(continuation))
                for i, score in zip(batch, score_last_tokens(self.lm, rows, scored, device=self._device)):
                    results[i] = (score.logprob, score.greedy)
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
                bar.update(len(batch))
        return [r for r in results if r is not None]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each string's whole log-likelihood, from the prefix token, over disjoint windows of the model's
        context (every token scored once, each window as full as the string allows)."""
        windows: list[TokenRequest] = []
        owners: list[int] = []
        for index, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string)
            pieces = get_rolling_token_windows(tokens, self.prefix_token_id, self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, pieces):
                windows.append((None, list(context), list(continuation)))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---------------------------------------------------------------------------------- generation
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or, when a task asks, sampled) continuations, cut at the first stop string or end of sequence."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        eos = self.tokenizer_.decode([self.eot_token_id])
        with tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm) as bar:
            for members in groups.values():
                members.sort(key=lambda i: -len(self.tok_encode(requests[i].args[0])))
                kwargs = normalize_gen_kwargs(requests[members[0]].args[1], self.max_gen_toks)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
                config = self._generation_config(kwargs, until)
                for start in range(0, len(members), self.batch_size):
                    batch = members[start : start + self.batch_size]
                    for i, text in zip(batch, self._generate([requests[i].args[0] for i in batch], config)):
                        answers[i] = postprocess_generated_text(text, until, None)
                        self.cache_hook.add_partial("generate_until", requests[i].args, answers[i])
                    bar.update(len(batch))
        return [a for a in answers if a is not None]

    def _generation_config(self, kwargs: dict[str, Any], until: list[str]) -> specs.GenerationConfig:
        max_new = int(kwargs.pop("max_gen_toks"))
        if max_new >= self.max_length:
            raise ValueError(f"max_gen_toks {max_new} leaves no room for a prompt in a context of {self.max_length}")
        sample = bool(kwargs.pop("do_sample", False))
        options = {key: kwargs.pop(key) for key in ("temperature", "top_k", "top_p", "seed") if key in kwargs}
        if not sample:
            options = {k: v for k, v in options.items() if k == "seed"}  # greedy reads no sampling settings
        if kwargs:
            raise ValueError(f"generation options the lmplanes model does not know: {sorted(kwargs)}")
        return specs.GenerationConfig(
            max_new_tokens=max_new, do_sample=sample, eos_token_ids=(self.eot_token_id,), stop=tuple(s for s in until if s),
            **options,
        )

    def _generate(self, contexts: Sequence[str], config: specs.GenerationConfig) -> list[str]:
        """The prompts, truncated from the left to leave room for the answer, left-padded into one batch."""
        room = self.max_length - config.max_new_tokens
        prompts = [self.tok_encode(context)[-room:] for context in contexts]
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.as_tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        out = generate(self.lm, ids.to(self._device), config, attention_mask=mask.to(self._device), tokenizer=self.tokenizer_)
        return self.tokenizer_.decode_batch([row[width:].tolist() for row in out.cpu()], skip_special_tokens=True)


def register_with_lm_eval() -> None:
    """Make ``lmplanes`` a model name lm_eval knows (idempotent)."""
    if NAME not in model_registry:
        model_registry.register(NAME, target=f"{__name__}:{LMPlanesLM.__name__}")


def run_lm_eval(argv: Sequence[str], cli: Callable[[], None] | None = None) -> int:
    """lm_eval's own command line on ``argv``, with ``lmplanes`` registered: ``--model lmplanes --model_args
    checkpoint=DIR --tasks ...``, local task folders with ``--include_path``, every other option as lm_eval has it."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    register_with_lm_eval()
    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        (cli or cli_evaluate)()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


register_with_lm_eval()
