"""Speed of nblib's GPT beside Hugging Face's GPT2LMHeadModel, and what the KV cache buys.

(a) Training tokens/s (forward + backward + AdamW step) of nblib.models.gpt.GPT and transformers'
    GPT2LMHeadModel at the same size (4 layers × 256, 4 heads, vocabulary 4000, batch 32×128,
    dropout 0), fp32 (and bf16 autocast with --bf16), measured in interleaved repeats so that load from other
    processes hits both alike. Goal: ratio nblib/HF ≥ 1.0.
(b) Generation tokens/s for 128 new tokens with and without the key/value cache. Goal: ≥ 3×.

Run: .venv/bin/python benchmarks/bench_gpt.py [--repeats 3] [--steps 1] [--bf16]
Not part of the test command; notebook 04_gpt quotes its output.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from nblib.models.gpt import GPT, GPTConfig

VOCAB, LAYERS, WIDTH, HEADS, BATCH, SEQ = 4000, 4, 256, 4, 32, 128


def make_models() -> tuple[GPT, torch.nn.Module]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPTConfig(vocab_size=VOCAB, n_positions=256, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    ours = GPT(config)
    hf = GPT2LMHeadModel(GPT2Config(**ours.hf_config(), bos_token_id=2, eos_token_id=3))
    hf.config._attn_implementation = "sdpa"  # HF's fastest CPU attention, like ours
    hf.load_state_dict(ours.to_hf())  # the same weights, so generation must give the same tokens
    return ours, hf


def train_step_fn(model: torch.nn.Module, kind: str, bf16: bool) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, VOCAB, (BATCH, SEQ), generator=g),
             "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.bool)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
        with autocast:
            if kind == "nblib":
                loss = model.pretraining_step(batch)["loss"]
            else:  # HF shifts the labels itself
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(),
                             labels=batch["input_ids"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_training(ours: GPT, hf: torch.nn.Module, repeats: int, steps: int, bf16: bool) -> None:
    label = "bf16 autocast" if bf16 else "fp32"
    fns = {"nblib": train_step_fn(ours, "nblib", bf16), "hf": train_step_fn(hf, "hf", bf16)}
    for fn in fns.values():
        fn()  # warm-up: allocator, kernels, optimiser state
    speeds: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # interleave, alternating who goes first
        for name in order:
            start = time.perf_counter()
            for _ in range(steps):
                fns[name]()
            speeds[name].append(steps * BATCH * SEQ / (time.perf_counter() - start))
    med = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"(a) training, {label}: batch {BATCH}x{SEQ}, {repeats} interleaved repeats x {steps} steps")
    for name, v in speeds.items():
        print(f"    {name:6s} median {med[name]:8.0f} tokens/s   (runs: {', '.join(f'{x:.0f}' for x in v)})")
    per_repeat = [a / b for a, b in zip(speeds["nblib"], speeds["hf"], strict=True)]
    print(f"    ratio nblib/HF = {med['nblib'] / med['hf']:.2f}  "
          f"(per repeat: {', '.join(f'{x:.2f}' for x in per_repeat)})")


def bench_generation(ours: GPT, hf: torch.nn.Module, new_tokens: int, repeats: int) -> None:
    ours.eval()
    hf.eval()
    prompt = torch.randint(5, VOCAB, (1, 16), generator=torch.Generator().manual_seed(1))
    runs = {
        "nblib, KV cache": lambda: ours.generate(prompt, new_tokens, greedy=True, use_cache=True),
        "nblib, no cache": lambda: ours.generate(prompt, new_tokens, greedy=True, use_cache=False),
        "HF generate, cache": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                  do_sample=False, max_new_tokens=new_tokens,
                                                  min_new_tokens=new_tokens, pad_token_id=0),
    }
    outputs = {}
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        ours.generate(prompt, 8, greedy=True)  # warm-up
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                    max_new_tokens=8, pad_token_id=0)
        for _ in range(repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                outputs[name] = fn()
                speeds[name].append(new_tokens / (time.perf_counter() - start))
    med = {name: statistics.median(v) for name, v in speeds.items()}
    same = all(torch.equal(outputs["nblib, KV cache"], out) for out in outputs.values())
    print(f"(b) generation: batch 1, prompt 16, {new_tokens} new tokens (greedy), median of {repeats}")
    for name in runs:
        print(f"    {name:18s} {med[name]:8.1f} tokens/s")
    print(f"    KV cache speed-up = {med['nblib, KV cache'] / med['nblib, no cache']:.1f}x; "
          f"all three produced the same tokens: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="training steps per timed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also compare under bf16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, hf = make_models()
    print(f"torch {torch.__version__}, {args.threads} threads; model {LAYERS}x{WIDTH}, {HEADS} heads, "
          f"vocab {VOCAB}: nblib {ours.num_parameters():,} / HF {hf.num_parameters():,} parameters")
    begin = time.perf_counter()
    bench_training(ours, hf, args.repeats, args.steps, bf16=False)
    if args.bf16:  # doubles the training part; worth it on CPUs with avx512_bf16 / AMX
        bench_training(ours, hf, args.repeats, args.steps, bf16=True)
    bench_generation(ours, hf, new_tokens=128, repeats=args.repeats)
    print(f"total {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
