"""Training speed of nblib's BiLM against plain ``torch.nn.LSTM`` stacks of the same size.

Both models share everything but the LSTMs: the same token encoder (char-CNN → highway →
projection), the same adaptive softmax over the same vocabulary, the same loss code. They differ in

- nblib ``BiLM``: one ``nn.LSTM(proj_size=P)`` per layer (so that layer 2 gets its residual
  connection), the backward direction reversed within each row's real length (a gather), and
  dropout on each layer's input;
- plain: per direction one ``nn.LSTM(num_layers=2, proj_size=P, dropout=p)`` (no residual), the
  backward direction on ``torch.flip`` (correct only without padding, as in this batch).

One step = forward, backward and an Adam update on a full batch of B×T words (word ids drawn from
a Zipf law, as in text, since the adaptive softmax's cost depends on how many targets are rare).
Models alternate within each repeat, starting with a different one each time, so that load from
other processes hits both alike. Reports each model's tokens/s (best and median repeat) and the
ratio nblib / plain (from the best repeats, and the median of the per-repeat ratios).

On a machine shared with other jobs, wall-clock time with 2 threads mostly measures the others
(a thread waiting for a busy core stalls the whole step); ``--threads 1 --clock cpu`` counts this
process's CPU seconds instead, which the neighbours barely change.

Run: .venv/bin/python benchmarks/bench_elmo.py [--batch 32 --words 64 --repeats 7 --steps 2]
     .venv/bin/python benchmarks/bench_elmo.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nblib.models.elmo import BiLM, ElmoConfig

warnings.filterwarnings("ignore", message="LSTM with projections")


class PlainBiLM(BiLM):
    """The same model with each direction's two layers in one ``nn.LSTM(num_layers=2)``."""

    def __init__(self, config: ElmoConfig):
        super().__init__(config)
        P = config.projection_dim
        del self.forward_lstms, self.backward_lstms

        def lstm() -> nn.LSTM:
            return nn.LSTM(P, config.cell_size, num_layers=config.n_layers, proj_size=P,
                           batch_first=True, dropout=config.dropout)

        self.fw_lstm, self.bw_lstm = lstm(), lstm()

    def directions(self, attention_mask: Tensor, char_ids: Tensor
                   ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        x = self.token_encoder(char_ids)  # (B, T, P)
        fw, _ = self.fw_lstm(self.dropout(x))
        bw, _ = self.bw_lstm(self.dropout(x).flip(1))
        return x, [fw], [bw.flip(1)]  # only the top layer: what the loss reads


def make_batch(config: ElmoConfig, batch: int, words: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    rank = torch.arange(1, config.word_vocab_size - 3, dtype=torch.float)
    zipf = 1.0 / rank
    input_ids = 4 + torch.multinomial(zipf / zipf.sum(), batch * words, replacement=True,
                                      generator=g)
    char_ids = torch.zeros(batch, words, config.max_chars_per_word, dtype=torch.long)
    n_chars = torch.randint(1, 4, (batch, words), generator=g)  # most Chinese words: 1–3 chars
    for k in range(config.max_chars_per_word - 2):
        chars = torch.randint(5, config.char_vocab_size, (batch, words), generator=g)
        char_ids[..., k + 1] = torch.where(k < n_chars, chars, 0)
    char_ids[..., 0] = 2  # begin-of-word mark
    char_ids.scatter_(2, (n_chars + 1)[..., None], 3)  # end-of-word mark
    return {"input_ids": input_ids.view(batch, words),
            "attention_mask": torch.ones(batch, words, dtype=torch.bool), "char_ids": char_ids}


def time_steps(model: BiLM, opt: torch.optim.Optimizer, batch: dict[str, Tensor], steps: int,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per training step (forward, backward, Adam update) by ``clock``."""
    start = clock()
    for _ in range(steps):
        loss = model.pretraining_step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (clock() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per model per repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock seconds, or this process's CPU seconds (all its threads)")
    ap.add_argument("--budget-s", type=float, default=150.0,
                    help="start no new repeat after this many seconds (a busy machine is slow)")
    ap.add_argument("--char-vocab", type=int, default=5000)
    ap.add_argument("--word-vocab", type=int, default=20000)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    config = ElmoConfig(char_vocab_size=args.char_vocab, word_vocab_size=args.word_vocab)
    models: dict[str, BiLM] = {}
    for name, cls in (("nblib BiLM", BiLM), ("plain nn.LSTM", PlainBiLM)):
        torch.manual_seed(0)
        models[name] = cls(config).train()
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    optims = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    batch = make_batch(config, args.batch, args.words)
    tokens = args.batch * args.words
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
          f"batch {args.batch}×{args.words} words, "
          f"cell {config.cell_size} / proj {config.projection_dim}, {config.n_layers} layers per "
          f"direction, adaptive softmax over {config.word_vocab_size} words")
    for name, n in counts.items():
        print(f"  {name}: {n:,} parameters")

    for name in models:  # warm-up: allocator, first-call kernels
        time_steps(models[name], optims[name], batch, 1)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    start = time.perf_counter()
    for r in range(args.repeats):
        if r > 0 and time.perf_counter() - start > args.budget_s:
            print(f"  time budget of {args.budget_s:.0f} s spent after {r} repeats")
            break
        for name in names if r % 2 == 0 else names[::-1]:
            seconds[name].append(time_steps(models[name], optims[name], batch, args.steps, clock))
        rates = ", ".join(f"{n} {tokens / seconds[n][-1]:,.0f} tok/s" for n in names)
        print(f"  repeat {r + 1}: {rates}", flush=True)

    # Other processes only ever slow a step down: the best repeat is the least disturbed one, and
    # the ratio within a repeat (both models measured back to back) cancels slow drifts in load.
    per_repeat = [a / b for a, b in zip(seconds[names[1]], seconds[names[0]], strict=True)]
    print(f"training tokens/s   {'best':>7s}  {'median':>7s}")
    for name in names:
        best, median = tokens / min(seconds[name]), tokens / statistics.median(seconds[name])
        print(f"  {name:16s}  {best:7,.0f}  {median:7,.0f}")
    best_ratio = min(seconds[names[1]]) / min(seconds[names[0]])
    each = ", ".join(f"{x:.3f}" for x in per_repeat)
    print(f"ratio {names[0]} / {names[1]} (tokens/s): best {best_ratio:.3f}, median per repeat "
          f"{statistics.median(per_repeat):.3f} (each: {each})")


if __name__ == "__main__":
    main()
