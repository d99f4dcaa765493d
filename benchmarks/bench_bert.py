"""Training speed and peak memory: nblib's BERT vs Hugging Face ``BertForMaskedLM``.

Same config (4 layers × 256, 4 heads, I=1024, vocab 4000), same batch (32 × 128, 15% masked,
MLM only), same threads, AdamW steps in train mode (dropout on), fp32 and bf16 autocast.
The implementations are interleaved round by round so that load from other processes on a
shared machine hits both alike. Speed: the best round of each (as ``timeit`` does: other load
only ever slows a run down, so the fastest round is the least disturbed); memory: the median.

Memory: peak resident set size (RSS) above the RSS just before the measured steps, read from
``VmHWM`` in /proc/self/status after resetting it through /proc/self/clear_refs (Linux) and
returning freed heap to the OS with ``malloc_trim``. Where that reset is not possible it falls
back to ``resource.getrusage`` max-RSS deltas, which only see new process-wide peaks.

Run:  .venv/bin/python benchmarks/bench_bert.py [--rounds 3] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

import torch

from nblib.models.bert import BertConfig, BertForPreTraining, mask_tokens


class _Vocab:
    pad_id, unk_id, cls_id, sep_id, mask_id = range(5)
    vocab_size = 4000


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> tuple[int, bool]:
    """Trim the heap and reset the peak-RSS counter; returns (baseline KiB, whether reset worked)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5 = reset the peak RSS (VmHWM) to the current RSS
        return _rss_kib("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False


def _peak_since(baseline: int, reset_ok: bool) -> float:
    peak = _rss_kib("VmHWM") if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - baseline) / 1024  # MiB


def make_models(config: BertConfig) -> dict[str, tuple[torch.nn.Module, object]]:
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**config.to_hf_config())
    hf = transformers.BertForMaskedLM(hf_config).train()
    ours = BertForPreTraining(config).train()
    return {
        "nblib": (ours, lambda b: ours.pretraining_step(b)["loss"]),
        "hf": (hf, lambda b: hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"].long(),
                                token_type_ids=b["token_type_ids"], labels=b["labels"]).loss),
    }


def measure(model: torch.nn.Module, loss_fn, batch, steps: int, bf16: bool) -> tuple[float, float]:
    """(tokens/s, peak MiB) over ``steps`` AdamW steps after one warm-up step."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()  # warm-up: allocations, kernel selection, optimiser state
    baseline, reset_ok = _reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    tokens = int(batch["attention_mask"].sum()) * steps
    return tokens / seconds, _peak_since(baseline, reset_ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = BertConfig(vocab_size=_Vocab.vocab_size, hidden_size=256, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=1024)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, _Vocab.vocab_size, (args.batch, args.seq_len), generator=g)
    input_ids[:, 0], input_ids[:, -1] = _Vocab.cls_id, _Vocab.sep_id
    attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    masked, labels = mask_tokens(input_ids, attention_mask, _Vocab, generator=g)
    batch = {"input_ids": masked, "attention_mask": attention_mask,
             "token_type_ids": torch.zeros_like(masked), "labels": labels}

    models = make_models(config)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for precision in ("fp32", "bf16"):
            for name, (model, loss_fn) in models.items():
                row = measure(model, loss_fn, batch, args.steps, precision == "bf16")
                results.setdefault((name, precision), []).append(row)
                print(f"round {r}: {name:5s} {precision}: {row[0]:6.0f} tokens/s, "
                      f"peak +{row[1]:5.0f} MiB", flush=True)

    print(f"\nBERT 4×256, I=1024, V=4000, batch {args.batch}×{args.seq_len}, "
          f"{args.threads} threads, torch {torch.__version__}; {args.rounds} rounds × {args.steps} "
          "steps; speed: best round; memory: median peak RSS above the pre-step RSS")
    print("| precision | tokens/s nblib | HF | ratio | peak MiB nblib | HF | ratio |")
    print("|---|---|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        cells = []
        for column, summary in ((0, max), (1, statistics.median)):  # speed, memory
            ours = summary(row[column] for row in results[("nblib", precision)])
            hf = summary(row[column] for row in results[("hf", precision)])
            cells.append(f"{ours:.0f} | {hf:.0f} | {ours / hf:.2f}")
        print(f"| {precision} | " + " | ".join(cells) + " |")
    print("ratio = nblib / HF: above 1 means nblib is faster (speed) or heavier (memory).")


if __name__ == "__main__":
    main()
