"""Pretraining throughput of the preset's ELMo, BERT and GPT: today's code path against opt-in speed-ups.

Each model is built as its lesson builds it for pretraining (02_elmo, 03_bert, 04_gpt: sizes from the
preset, the lessons' default recipe) and trained on real corpus batches from its
``LanguageModelDataModule`` (length-grouped, seeded), through the very path ``pretraining.pretrain``
runs: ``pretraining.pretraining_trainer`` → Lightning ``Trainer.fit`` of a ``Pretrainer``. A step is
everything a pretraining step costs: fetching and collating the batch (jieba for ELMo, masking for
BERT), forward, backward, the AdamW update, Lightning's logging.

Variants (one fresh model each, same init; ``--variants`` picks them):

- ``today``: ``PretrainingRun``'s defaults (fp32, torch's for-loop AdamW);
- ``foreach`` / ``fused``: ``PretrainingRun(adamw=...)``, the same AdamW update in fewer kernels (same
  math; ``fused`` may differ in the last bits);
- ``lean``: ``PretrainingRun(lean_logging=True)``, ``self.log`` only on the steps the logger writes (the
  same numbers);
- ``bf16``: ``PretrainingRun(precision="bf16-mixed")``, every step under ``torch.autocast("cpu",
  torch.bfloat16)`` (other numbers: matmuls in bf16; attention, softmaxes and losses in fp32);
- ``new``: the combination this benchmark recommends for the model (``NEW`` below).

Rounds interleave the variants (the order alternates), each variant fitting ``--steps`` steps on the
same batches (round r reads the data module's batch order for seed r). The first step of every fit
is not timed (start-up, allocation). Reported per variant: tokens/s of the best round and the
median, the ratio to ``today`` (best rounds, and the median of the per-round ratios), and the MFU:
achieved FLOP/s = 6·N·tokens/s, with N = all parameters (the records' ``estimated_flops``
convention; it ignores attention's T² term and counts embedding lookups as matmuls), divided by the
measured matmul peak of the dtype the variant multiplies in (a 2048² ``torch.mm``, same threads).
Tokens are what ``Pretrainer`` counts: real (unpadded) positions, [CLS]/[SEP]/<S>/</S> included.

On a machine shared with other jobs, ``--clock cpu`` counts this process's CPU seconds (all its
threads) instead of wall time; the lead's measurement is ``--quick`` on a quiet machine.

Run: NBLIB_DATA_MIRROR=<mirror> .venv/bin/python benchmarks/bench_pretraining.py --quick
       (today against new only, 3 rounds of 20 steps: about a minute or two on 2 quiet cores)
     NBLIB_DATA_MIRROR=<mirror> .venv/bin/python benchmarks/bench_pretraining.py
       (every candidate: today,fused,lean,bf16,new; 5 rounds of 25 steps; --variants to choose)
     (busy machine:) nice -n 19 ... bench_pretraining.py --quick --clock cpu [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from nblib import data
from nblib.data import datamodules, text
from nblib.models import bert, elmo, gpt
from nblib.presets import Preset, get_preset
from nblib.training import pretraining

# The variants: the fields of pretraining.PretrainingRun (keywords of pretraining_trainer) they set.
VARIANTS: dict[str, dict[str, Any]] = {
    "today": {},
    "foreach": {"adamw": "foreach"},
    "fused": {"adamw": "fused"},
    "lean": {"lean_logging": True},
    "bf16": {"precision": "bf16-mixed"},
    "fused+lean": {"adamw": "fused", "lean_logging": True},
    "bf16+fused+lean": {"precision": "bf16-mixed", "adamw": "fused", "lean_logging": True},
}
# What this benchmark recommends per model, from its own runs on the 2-core EPYC (avx512_bf16, no
# AMX; 2026-12-03, busy machine, --threads 1 --clock cpu): bf16 paid for BERT and GPT (matmuls ~2×
# faster in bf16 once attention stays fp32), fused AdamW and lean logging a few % each.
NEW: dict[str, str] = {"elmo": "fused+lean", "bert": "bf16+fused+lean", "gpt": "bf16+fused+lean"}
ELMO_CELL = 256  # the LSTM cells lesson 02 pretrains on small (the preset's elmo_cell_size)


@dataclass
class Subject:
    """One model as its lesson pretrains it: a builder (same init every call) and its data."""

    name: str
    build: Callable[[], nn.Module]
    datamodule: datamodules.LanguageModelDataModule


def subjects(preset: Preset, names: list[str], elmo_cell: int | None) -> Iterator[Subject]:
    """The lessons' pretraining set-ups (02_elmo, 03_bert with its defaults, 04_gpt), seed 0, each
    made when its turn comes (ELMo's word vocabulary runs jieba over the whole corpus)."""
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=0)
    chars = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
    n_heldout = max(1, len(corpus) // 100)
    train, heldout = corpus[:-n_heldout], corpus[-n_heldout:]
    B, L = preset.pretrain_batch_size, preset.pretrain_seq_len
    for name in names:
        if name == "bert":
            collate = bert.make_collate(chars, L, nsp=False, whole_word=False)
            config = bert.BertConfig.from_preset(preset, chars.vocab_size, pre_ln=True, pretraining=True)
            build: Callable[[], nn.Module] = functools.partial(bert.BertForPreTraining, config)
            read: Callable[[str], int] = lambda t: min(len(t), L - 2)  # noqa: E731
        elif name == "gpt":
            collate = functools.partial(gpt.collate_causal_lm, tokenizer=chars, max_len=L)
            build = functools.partial(gpt.GPT, gpt.GPTConfig.from_preset(preset, chars.vocab_size,
                                                                         pretraining=True))
            read = lambda t: min(len(t), L - 1)  # noqa: E731
        elif name == "elmo":
            words = text.WordTokenizer.build(corpus, max_size=preset.elmo_word_vocab)
            cell = preset.elmo_cell_size if elmo_cell is None else elmo_cell
            config = elmo.ElmoConfig.from_preset(preset, chars.vocab_size, words.vocab_size,
                                                 pretraining=True, cell_size=cell)
            collate = elmo.make_collate(words, chars, preset.max_words, config.max_chars_per_word)
            build = functools.partial(elmo.BiLM, config)

            def read(t: str, words: Any = words) -> int:
                return sum(len(w) for w in text.truncate(words.tokenize(t), preset.max_words - 2))
        else:
            raise SystemExit(f"unknown model {name!r}; use elmo, bert, gpt")
        dm = datamodules.LanguageModelDataModule(train, heldout, collate, B, seed=0, chars_read=read)
        yield Subject(name, build, dm)


class StepClock(pl.Callback):
    """The clock and the real tokens at the end of every training step."""

    def __init__(self, clock: Callable[[], float]):
        self.clock, self.times, self.tokens = clock, [], []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.times.append(self.clock())
        self.tokens.append(int(batch["attention_mask"].sum()))


def fit_steps(model: nn.Module, subject: Subject, preset: Preset, variant: str, steps: int,
              data_seed: int, clock: Callable[[], float], run_dir: str) -> tuple[float, int]:
    """(seconds, tokens) of steps 2..``steps`` of one fit through ``pretraining_trainer``."""
    subject.datamodule.seed = data_seed  # this round's batch order, the same for every variant
    timer = StepClock(clock)
    module, trainer = pretraining.pretraining_trainer(model, preset, run_dir, max_steps=steps, seed=0,
                                                      callbacks=[timer], **VARIANTS[variant])
    with contextlib.redirect_stdout(io.StringIO()):  # LineProgress's lines
        trainer.fit(module, datamodule=subject.datamodule)
    return timer.times[-1] - timer.times[0], sum(timer.tokens[1:])


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """FLOP/s of the best of ``repeats`` n×n ``torch.mm`` in ``dtype`` at the current thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        best = min(best, clock() - start)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--models", default="elmo,bert,gpt")
    ap.add_argument("--variants", default="today,fused,lean,bf16,new",
                    help=f"comma-separated, of {sorted(VARIANTS)} and new")
    ap.add_argument("--quick", action="store_true",
                    help="today and new only, 3 rounds of 20 steps (≤ 4 min on 2 quiet cores)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25, help="steps per fit (the first is not timed)")
    ap.add_argument("--threads", type=int, default=None, help="default: the preset's num_threads")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock seconds, or this process's CPU seconds (all its threads)")
    ap.add_argument("--elmo-cell", type=int, default=ELMO_CELL,
                    help=f"ELMo's LSTM cells (lesson 02 pretrains {ELMO_CELL}; 0: the preset's)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps, args.variants = 3, 20, "today,new"

    os.environ["NBLIB_PROGRESS"] = "lines"  # as under make report: no bar
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LSTM with projections.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    preset = get_preset(args.preset)
    preset.configure_torch()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in wanted:
        if v != "new" and v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; use {sorted(VARIANTS)} or new")
    if "today" not in wanted:
        wanted.insert(0, "today")

    started = time.perf_counter()
    peaks = {torch.float32: matmul_peak(torch.float32, clock=clock),
             torch.bfloat16: matmul_peak(torch.bfloat16, clock=clock)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, preset "
          f"{preset.name}: batch {preset.pretrain_batch_size} texts ≤ {preset.pretrain_seq_len} tokens, "
          f"{args.rounds} rounds × {args.steps} steps (first untimed)")
    print(f"matmul peak (2048² torch.mm): fp32 {peaks[torch.float32] / 1e9:,.1f} GFLOP/s, "
          f"bf16 {peaks[torch.bfloat16] / 1e9:,.1f} GFLOP/s "
          f"(CPU bf16 support: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()})")
    todo = subjects(preset, names, args.elmo_cell or None)

    summary = []
    with tempfile.TemporaryDirectory() as run_dir:
        while True:
            t0 = time.perf_counter()
            subject = next(todo, None)
            if subject is None:
                break
            variants = [NEW[subject.name] if v == "new" else v for v in wanted]
            variants = list(dict.fromkeys(variants))  # "new" may be one of the others
            models = {}
            for v in variants:
                torch.manual_seed(0)
                models[v] = subject.build().train()
            n_params = sum(p.numel() for p in models["today"].parameters())
            lengths = []
            for batch in subject.datamodule.train_dataloader():
                lengths.append(batch["attention_mask"].float().mean().item())
                if len(lengths) == 100:
                    break
            print(f"\n{subject.name}: {n_params:,} parameters; first 100 batches of the grouped order: "
                  f"{1 - statistics.mean(lengths):.1%} padding; set-up (corpus, tokenizers) "
                  f"{time.perf_counter() - t0:.0f} s")
            seconds: dict[str, list[float]] = {v: [] for v in variants}
            tokens: dict[str, list[int]] = {v: [] for v in variants}
            for v in variants:  # warm-up fit: first-call kernels, allocator, Lightning imports
                fit_steps(models[v], subject, preset, v, 2, 1000, clock, run_dir)
            for r in range(args.rounds):
                for v in variants if r % 2 == 0 else variants[::-1]:
                    s, n = fit_steps(models[v], subject, preset, v, args.steps, r, clock, run_dir)
                    seconds[v].append(s)
                    tokens[v].append(n)
                rates = ", ".join(f"{v} {tokens[v][-1] / seconds[v][-1]:,.0f}" for v in variants)
                print(f"  round {r + 1}: tokens/s {rates}", flush=True)
            best = {v: max(n / s for n, s in zip(tokens[v], seconds[v], strict=True)) for v in variants}
            median = {v: statistics.median(n / s for n, s in zip(tokens[v], seconds[v], strict=True))
                      for v in variants}
            print(f"  {'variant':16s} {'tokens/s best':>14s} {'median':>8s} {'× today':>8s} "
                  f"{'per-round median':>16s} {'MFU':>6s}")
            for v in variants:
                per_round = [seconds["today"][i] / seconds[v][i] for i in range(len(seconds[v]))]
                peak = peaks[torch.bfloat16 if "precision" in VARIANTS[v] else torch.float32]
                mfu = 6 * n_params * best[v] / peak
                print(f"  {v:16s} {best[v]:14,.0f} {median[v]:8,.0f} {best[v] / best['today']:8.2f} "
                      f"{statistics.median(per_round):16.2f} {mfu:6.1%}")
            new = NEW[subject.name]
            if new in variants:
                summary.append((subject.name, new, best["today"], best[new], n_params))

    if summary:
        print(f"\nsummary (best rounds; MFU against the fp32 / bf16 matmul peak), {time.perf_counter() - started:.0f} s")
        print(f"  {'model':6s} {'new':16s} {'today tok/s':>11s} {'new tok/s':>10s} {'ratio':>6s} "
              f"{'MFU today':>9s} {'MFU new':>8s}")
        for name, new, today, fast, n in summary:
            peak = peaks[torch.bfloat16 if "precision" in VARIANTS[new] else torch.float32]
            print(f"  {name:6s} {new:16s} {today:11,.0f} {fast:10,.0f} {fast / today:6.2f} "
                  f"{6 * n * today / peaks[torch.float32]:9.1%} {6 * n * fast / peak:8.1%}")


if __name__ == "__main__":
    main()
