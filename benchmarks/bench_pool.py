"""A fine-tuning grid one run after another at 2 threads vs side by side as one-thread runs (nblib.training.pool).

The grid: ``--runs`` label-efficiency runs of the `small` BERT from random init (its fine-tuning cost is
the pretrained twin's), ``--labels`` labelled reviews each, the preset's few-label schedule (at least 150
optimiser steps, 10 epochs), seeds 0, 1, ...; scored on validation, test and out of domain as every run of
the comparison. The two ways are interleaved round by round, so that load from other processes hits both
alike, and the wall time of each way is printed with the ratio of the two (sequential / pooled), beside
each run's validation accuracy (the thread count changes low-order bits, so the two ways agree to noise,
not bit for bit; within one way a rerun is bit-for-bit: tests/test_pool.py).

Run:  .venv/bin/python benchmarks/bench_pool.py [--runs 4] [--labels 300] [--rounds 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from nblib.training import pool


def finetune_random_bert(seed: int, n_labels: int, run_root: str) -> dict:
    """One label-efficiency run of a random-init `small` BERT; returns its record."""
    import torch

    from nblib import course, data
    from nblib.data import datamodules, text
    from nblib.models import bert
    from nblib.presets import get_preset
    from nblib.training import saved_runs

    preset = get_preset("small")
    split = data.split()
    corpus = data.pretraining_corpus(seed=0)
    tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
    collate = saved_runs.TokenCollate(tokenizer, preset.max_len)
    torch.manual_seed(seed)
    encoder = bert.BertForPreTraining(bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pre_ln=True))
    _, record = course.finetune_variant(
        encoder, model="bert", variant="random", preset=preset, split=split, collate=collate, pooling="cls",
        seed=seed, frame=datamodules.subsample(split.train, n_labels, seed=0), label_count=n_labels,
        max_epochs=preset.few_label_epochs(n_labels), run_dir=Path(run_root) / f"{seed}")
    return record


def run_grid(way: str, runs: int, labels: int, threads: int, root: Path) -> tuple[float, list[dict]]:
    jobs = [{"seed": seed, "n_labels": labels, "run_root": str(root / way)} for seed in range(runs)]
    start = time.perf_counter()
    if way == "sequential":
        records = pool.run_jobs(finetune_random_bert, jobs, threads=threads, workers=1, desc=way, cache=False)
    else:
        records = pool.run_jobs(finetune_random_bert, jobs, threads=1, workers=threads, desc=way, cache=False)
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="fine-tuning runs in the grid")
    parser.add_argument("--labels", type=int, default=300, help="labelled reviews per run")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (sequential, pooled)")
    parser.add_argument("--threads", type=int, default=2, help="cores: the sequential runs' threads, the pool's workers")
    args = parser.parse_args()
    os.environ.setdefault("NBLIB_PROGRESS", "lines")
    times: dict[str, list[float]] = {"sequential": [], "pooled": []}
    accuracy: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NBLIB_RUNS_DIR"] = tmp
        for r in range(args.rounds):
            for way in ("sequential", "pooled"):
                seconds, records = run_grid(way, args.runs, args.labels, args.threads, Path(tmp) / f"round{r}")
                times[way].append(seconds)
                accuracy[way] = [rec["val"]["accuracy"] for rec in records]
                print(f"round {r + 1}: {way:>10} {seconds:7.1f} s", flush=True)
    seq, par = min(times["sequential"]), min(times["pooled"])
    print(f"\n{args.runs} runs of {args.labels} labels (small BERT, random init), {args.threads} cores, "
          f"best of {args.rounds} round(s):")
    print(f"  one after another at {args.threads} threads: {seq:7.1f} s")
    print(f"  {args.threads} one-thread workers side by side: {par:7.1f} s")
    print(f"  ratio (sequential / pooled): {seq / par:.2f}x")
    for way, values in accuracy.items():
        print(f"  validation accuracy, {way:>10}: {' '.join(f'{v:.4f}' for v in values)}")


if __name__ == "__main__":
    main()
