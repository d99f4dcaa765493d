"""How fast this CPU multiplies matrices: the yardstick the research log uses to name its machines.

A 2048 × 2048 ``torch.mm`` timed on 1 and 2 threads (and as many as the machine has), in fp32 (and bf16
with ``--bf16``: slow on a CPU without AVX512-BF16 or AMX), after a few warm-up products, best of
``--repeats`` timed loops. A `small` model's fine-tuning and
pretraining steps are bound by products of this kind, so the fp32 rate says roughly how long
`make report` takes on a machine compared with another (docs/experiments.md, "Machines").

Run:  .venv/bin/python benchmarks/bench_matmul.py [--size 2048] [--products 20] [--repeats 3] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def gflops(size: int, threads: int, dtype: torch.dtype, products: int, repeats: int) -> float:
    """Best rate over ``repeats`` loops of ``products`` products, in GFLOP/s (2·n³ per product)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    for _ in range(3):  # warm-up: allocator, kernel choice
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(products):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * products / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--products", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 products")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}, {cores} cores, {args.size}² torch.mm, best of {args.repeats} × "
          f"{args.products} products")
    for threads in sorted({1, min(2, cores), cores}):
        fp32 = gflops(args.size, threads, torch.float32, args.products, args.repeats)
        line = f"  {threads} thread(s): fp32 {fp32:6.1f} GFLOP/s"
        if args.bf16:
            bf16 = gflops(args.size, threads, torch.bfloat16, args.products, args.repeats)
            line += f", bf16 {bf16:6.1f} GFLOP/s (bf16 / fp32 {bf16 / fp32:.2f})"
        print(line)


if __name__ == "__main__":
    main()
