"""MoEConfig: which feed-forward layers are Mixture-of-Experts, and how they route and balance.

Plain data (no torch), nested in :class:`specs.ModelConfig` as ``moe``; ``None`` there means a dense model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from specs.config_io import FieldProblem


@dataclass(frozen=True, kw_only=True, slots=True)
class MoEConfig:
    """A Mixture-of-Experts feed-forward layer: a linear router (no bias) over ``n_experts`` SwiGLU experts of
    width ``expert_hidden``, plus optional always-on shared experts.

    * ``routing``: ``token_choice`` -- each token picks its ``top_k`` experts by score (Mixtral, Qwen-MoE,
      DeepSeek); ``expert_choice`` -- each expert picks its ``capacity`` best tokens among all tokens of the
      forward (Zhou et al. 2022), so a token may get any number of experts. Expert choice looks at every
      token of the batch, later ones included: it is not causal, and cached decoding differs from the full
      forward (use it for training studies or encoders, not for autoregressive serving).
    * ``gate``: scores are ``softmax`` over experts of the router logits (Mixtral, Qwen) or an independent
      ``sigmoid`` per expert (DeepSeek-V3). A chosen expert's output is weighted by its score;
      ``normalize_top_k`` divides the chosen scores by their sum (Mixtral and Qwen 3 MoE: true; Qwen 2 MoE:
      ``norm_topk_prob`` false). Token choice only.
    * ``capacity_factor``: token choice: ``None`` is dropless; a number caps each expert at
      ``ceil(capacity_factor * tokens * top_k / n_experts)`` assignments per forward, first choices of all
      tokens before second choices, earlier tokens first (GShard's priority); assignments past the cap are
      dropped (that expert adds nothing for the token; the residual carries it) and the dropped fraction is
      reported as the metric ``moe_dropped``. Expert choice needs it: each expert takes that many tokens
      (``capacity_factor = 1`` gives ``top_k`` experts per token on average).
    * ``n_shared_experts`` SwiGLU experts of width ``shared_expert_hidden`` (default ``expert_hidden``) see
      every token and are added to the routed output; they are stored as one SwiGLU of width
      ``n_shared_experts * shared_expert_hidden``, which is the same function (DeepSeek's layout).
      ``shared_expert_gate`` scales the shared output by ``sigmoid(x . w)``, a learned scalar per token
      (Qwen 2 MoE's ``shared_expert_gate``).
    * ``aux_loss_weight``: the load-balancing loss of Switch/Mixtral, ``n_experts * sum_e f_e * p_e``, where
      ``f_e`` is the fraction of (token, choice) assignments the router gives expert ``e`` (before capacity)
      and ``p_e`` the mean router probability of ``e`` (the sigmoid scores normalised per token for the
      ``sigmoid`` gate), both averaged over all tokens of every MoE layer of the forward -- as transformers'
      ``load_balancing_loss_func`` does, so ``aux_loss_weight`` equals its ``router_aux_loss_coef``.
      It equals ``top_k`` when routing is uniform. Token choice only.
    * ``z_loss_weight``: the router z-loss of ST-MoE, the mean over tokens and MoE layers of
      ``logsumexp(router_logits) ** 2``.
    * Layer ``i`` is MoE when ``i >= first_dense_layers`` and ``(i + 1) % every == 0`` (the other layers use
      the model's ``mlp``); ``every = 1`` makes every layer after the first dense ones MoE (DeepSeek's
      ``first_k_dense_replace``, Qwen 2 MoE's ``decoder_sparse_step``).
    """

    routing: Literal["token_choice", "expert_choice"] = "token_choice"
    n_experts: int
    top_k: int = 2
    gate: Literal["softmax", "sigmoid"] = "softmax"
    normalize_top_k: bool = True
    expert_hidden: int
    n_shared_experts: int = 0
    shared_expert_hidden: int | None = None  # None: expert_hidden
    shared_expert_gate: bool = False
    capacity_factor: float | None = None  # None: dropless (token choice only)
    aux_loss_weight: float = 0.0
    z_loss_weight: float = 0.0
    every: int = 1
    first_dense_layers: int = 0

    def __post_init__(self) -> None:
        for name in ("n_experts", "top_k", "expert_hidden", "every"):
            if getattr(self, name) < 1:
                raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("n_shared_experts", "first_dense_layers"):
            if getattr(self, name) < 0:
                raise FieldProblem(name, f"must be >= 0, got {getattr(self, name)}")
        if self.top_k > self.n_experts:
            raise FieldProblem("top_k", f"({self.top_k}) exceeds n_experts ({self.n_experts})")
        if self.shared_expert_hidden is not None:
            if self.shared_expert_hidden < 1:
                raise FieldProblem("shared_expert_hidden", f"must be >= 1, got {self.shared_expert_hidden}")
            if self.n_shared_experts == 0:
                raise FieldProblem("shared_expert_hidden", "is set but n_shared_experts is 0")
        if self.shared_expert_gate and self.n_shared_experts == 0:
            raise FieldProblem("shared_expert_gate", "is set but n_shared_experts is 0")
        if self.capacity_factor is not None and not (self.capacity_factor > 0 and math.isfinite(self.capacity_factor)):
            raise FieldProblem("capacity_factor", f"must be a finite number > 0, got {self.capacity_factor}")
        for name in ("aux_loss_weight", "z_loss_weight"):
            if not getattr(self, name) >= 0:
                raise FieldProblem(name, f"must be >= 0, got {getattr(self, name)}")
        if self.routing == "expert_choice":
            if self.capacity_factor is None:
                raise FieldProblem("capacity_factor", "expert choice needs one: it sets how many tokens each expert takes")
            if self.aux_loss_weight:
                raise FieldProblem("aux_loss_weight", "expert choice balances the experts by construction; set 0")
            if self.gate != "softmax":
                raise FieldProblem("gate", "expert choice scores tokens with the softmax over experts")

    @property
    def shared_hidden(self) -> int:
        """Width of the one SwiGLU that holds all shared experts (0 without them)."""
        return self.n_shared_experts * (self.shared_expert_hidden or self.expert_hidden)

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) has a MoE feed-forward (else the model's dense ``mlp``)."""
        return layer >= self.first_dense_layers and (layer + 1) % self.every == 0

    def capacity(self, tokens: int) -> int:
        """Assignments (token choice) or tokens (expert choice) one expert takes from ``tokens`` tokens; needs a
        ``capacity_factor``. At most ``tokens``, at least 1."""
        assert self.capacity_factor is not None
        wanted = math.ceil(self.capacity_factor * tokens * self.top_k / self.n_experts)
        return max(1, min(tokens, wanted))
