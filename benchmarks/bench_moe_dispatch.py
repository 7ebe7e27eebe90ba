"""MoE dispatch: ``blocks.MoE``'s padded batched experts (one ``bmm`` per projection over ``(E, Cap, C)`` slots)
against a loop over experts on contiguous slices of the tokens sorted by expert (the other formulation without
a grouped-GEMM kernel), forward + backward of the expert computation, dropless token choice.

    python benchmarks/bench_moe_dispatch.py [--repeats 20] [--tokens 2048] [--d-model 256] [--hidden 512]

Both contenders take the same router output and weights; the table gives the median time per forward+backward
and is printed, not written. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F
from bench_spine import cpu_name, interleaved_medians

from blocks.moe import MoE
from specs.moe_config import MoEConfig


def loop_over_experts(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Sort the (token, choice) assignments by expert and run each expert on its contiguous slice."""
    cfg = moe.cfg
    scores = moe.router(x).float().softmax(dim=-1)
    weight, expert = scores.topk(cfg.top_k, dim=-1)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    order = expert.reshape(-1).argsort(stable=True)
    token = order // cfg.top_k
    counts = torch.bincount(expert.reshape(-1), minlength=cfg.n_experts).tolist()
    w = moe.experts
    pieces = []
    for e, rows in enumerate(token.split(counts)):
        h = x[rows]
        pieces.append(F.linear(F.silu(F.linear(h, w.w1[e])) * F.linear(h, w.w3[e]), w.w2[e]))
    out_sorted = torch.cat(pieces) * weight.reshape(-1)[order].unsqueeze(-1)
    return x.new_zeros(x.shape).index_add(0, token, out_sorted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    print(f"{cpu_name()} ({platform.machine()}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| experts | top_k | batched bmm (ms) | loop over experts (ms) | loop / batched |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n_experts, top_k in ((8, 2), (16, 2)):
        torch.manual_seed(0)
        moe = MoE(MoEConfig(n_experts=n_experts, top_k=top_k, expert_hidden=args.hidden), args.d_model)
        moe.experts.init_weights(0.02, 0.02)
        x = torch.randn(args.tokens, args.d_model, requires_grad=True)
        with torch.no_grad():  # the two formulations agree before they race
            torch.testing.assert_close(moe(x), loop_over_experts(moe, x), atol=1e-5, rtol=1e-4)
        medians = interleaved_medians(
            {
                "batched": lambda moe=moe, x=x: moe(x).sum().backward(),
                "loop": lambda moe=moe, x=x: loop_over_experts(moe, x).sum().backward(),
            },
            repeats=args.repeats,
        )
        b, loop = medians["batched"] * 1e3, medians["loop"] * 1e3
        print(f"| {n_experts} | {top_k} | {b:.2f} | {loop:.2f} | {loop / b:.2f} |")


if __name__ == "__main__":
    main()
