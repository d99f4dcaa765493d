"""Re-initialise the top encoder layer, train longer on few labels? A probe on validation only (Zhang et al. 2021).

Zhang et al. ("Revisiting few-sample BERT fine-tuning", 2021) found two fixes for fine-tuning BERT on a few hundred
labelled examples: re-initialise the top layer(s) before fine-tuning (the top of a pretrained encoder is specialised
to its pretraining objective, here predicting masked or replaced characters, and transfers worst) and train for more
steps than the usual three epochs. This probe tries both on lesson 03's BERT and lesson 03b's ELECTRA
discriminator, each against its random-init twin, with the lessons' own fine-tuning (``course.fit_variant``, mean
pooling, the preset's rate, the same stratified subsets): ``--reinit K`` re-initialises the top K Transformer blocks
(and the final LayerNorm of the pre-LN encoder) with the model's own init; ``--min-steps S`` sets
``Preset.few_label_min_steps`` (``small``: 150, i.e. 160 steps = 40 epochs at 100 labels). The jobs run as
one-thread jobs on the course's pool and print validation accuracy and macro-F1 only; nothing here reads test or
out-of-domain scores. Runs go to a scratch folder. Beside each variant it prints the same init's validation
scores from the main job's records (``runs/small/<model>-<init>-n<labels>/<seed>/result.json``), which used
today's recipe (no re-initialisation, 150 minimum steps).

Run (with ``<runs>`` a runs folder whose ``small/pretrain/{bert,electra}.pt`` and records exist, after ``make report``):
    NBLIB_RUNS_DIR=<runs> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/reinit_probe.py \
        --models bert electra --counts 100 --seeds 0 1 --reinit 0 1 --min-steps 150 400
    NBLIB_RUNS_DIR=<runs> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/reinit_probe.py \
        --models bert electra --counts 100 1000 --seeds 0 1 2 --reinit 0 1 --min-steps 150 --skip-recorded
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time

import torch
from electra_lesson import fine_tuning_discriminator
from torch import nn

from nblib import course, data, tasks
from nblib.data import datamodules
from nblib.models import bert
from nblib.presets import get_preset
from nblib.results.records import runs_dir
from nblib.training import pool, saved_runs

PRESET, SUBSET_SEED = "small", 0  # the lessons' stratified subsets are drawn with seed 0


def reinitialise_top(encoder: bert.BertModel, k: int, seed: int) -> None:
    """Re-initialise the top ``k`` blocks of ``encoder`` (and its final LayerNorm when pre-LN) as at construction:
    N(0, initializer_range) weights, zero biases, LayerNorms at (1, 0). The draws come from a generator of their
    own, so the global stream (the classifier head's init, dropout) is the lesson's whether or not k > 0."""
    if k <= 0:
        return
    std = encoder.config.initializer_range
    generator = torch.Generator().manual_seed(1000 + seed)
    modules = [*encoder.layers[-k:]] + ([encoder.final_ln] if encoder.final_ln is not None else [])
    for top in modules:
        for m in top.modules():
            if isinstance(m, nn.Linear):
                with torch.no_grad():
                    m.weight.normal_(0.0, std, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()


def build(model: str, init: str, seed: int) -> tuple[nn.Module, bert.BertModel, object]:
    """(encoder to fine-tune, its BertModel, tokenizer) as lesson 03 / 03b build them."""
    preset = get_preset(PRESET)
    if model == "bert":
        course_encoder = tasks.course_encoder(preset, seed=0)
        encoder = course_encoder.build(init, seed=seed)
        return encoder, encoder.bert, course_encoder.tokenizer
    checkpoint = runs_dir() / preset.name / "pretrain" / "electra.pt" if init == "pretrained" else None
    tokenizer, encoder = fine_tuning_discriminator(preset, checkpoint, seed)
    return encoder, encoder.bert, tokenizer


def probe_run(*, model: str, init: str, n: int, seed: int, reinit: int, min_steps: int, scratch: str) -> dict:
    """One fine-tuning on ``n`` labels; validation scores."""
    preset = get_preset(PRESET).replace(few_label_min_steps=min_steps)
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    encoder, body, tokenizer = build(model, init, seed)
    reinitialise_top(body, reinit, seed)
    frame = datamodules.subsample(split.train, n, seed=SUBSET_SEED)
    epochs = preset.few_label_epochs(n)
    started = time.time()
    _, _, results = course.fit_variant(
        encoder, preset=preset, split=split, collate=saved_runs.TokenCollate(tokenizer, preset.max_len),
        pooling=bert.classification_pooling(nsp=False), seed=seed, lr=preset.finetune_lr_for(model, init),
        frame=frame, max_epochs=epochs, run_dir=f"{scratch}/{model}-{init}-{n}-{seed}-r{reinit}-s{min_steps}")
    return {"model": model, "init": init, "labels": n, "seed": seed, "reinit": reinit, "min_steps": min_steps,
            "epochs": epochs, "val_acc": round(results["val"]["accuracy"], 4),
            "val_f1": round(results["val"]["macro_f1"], 4), "seconds": round(time.time() - started)}


def recorded(model: str, init: str, n: int, seed: int) -> dict | None:
    """The main job's validation scores for the same run with today's recipe, if its record exists."""
    path = runs_dir() / PRESET / f"{model}-{init}-n{n}" / str(seed) / "result.json"
    if not path.exists():
        return None
    val = json.loads(path.read_text(encoding="utf-8"))["val"]
    return {"val_acc": round(val["accuracy"], 4), "val_f1": round(val["macro_f1"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bert", "electra"], choices=("bert", "electra"))
    parser.add_argument("--counts", nargs="+", type=int, default=[100])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--reinit", nargs="+", type=int, default=[0, 1], help="top blocks to re-initialise")
    parser.add_argument("--min-steps", nargs="+", type=int, default=[150, 400], help="few_label_min_steps")
    parser.add_argument("--skip-recorded", action="store_true",
                        help="leave out variants equal to the main job's recipe (read from its records) but the first")
    args = parser.parse_args()
    get_preset(PRESET).configure_torch()
    if "bert" in args.models:
        tasks.course_encoder(get_preset(PRESET), seed=0)  # loads (or pretrains once) before the pool starts
    base_steps = get_preset(PRESET).few_label_min_steps
    jobs = []
    for model, n, seed, init, reinit, steps in itertools.product(
            args.models, args.counts, args.seeds, ("pretrained", "random"), args.reinit, args.min_steps):
        if init == "random" and reinit:
            continue  # re-initialising a random encoder changes nothing but its draw
        first = (n, seed) == (args.counts[0], args.seeds[0])  # one recorded run is rerun: the probe == the lesson
        if args.skip_recorded and not reinit and steps == base_steps and not first and recorded(model, init, n, seed):
            continue
        jobs.append({"model": model, "init": init, "n": n, "seed": seed, "reinit": reinit, "min_steps": steps})
    scratch = tempfile.mkdtemp(prefix="reinit_probe_")
    rows = pool.run_jobs(probe_run, [dict(j, scratch=scratch) for j in jobs], threads=1,
                         desc="re-init probe runs", cache=False)
    print(f"{'model':>7} {'init':>10} {'labels':>6} {'seed':>4} {'reinit':>6} {'steps':>5} {'epochs':>6} "
          f"{'val acc':>7} {'val F1':>6} {'recorded acc / F1':>17} {'seconds':>7}")
    for r in rows:
        rec = recorded(r["model"], r["init"], r["labels"], r["seed"])
        rec_text = f"{rec['val_acc']:.4f} / {rec['val_f1']:.4f}" if rec else "–"
        print(f"{r['model']:>7} {r['init']:>10} {r['labels']:>6} {r['seed']:>4} {r['reinit']:>6} "
              f"{r['min_steps']:>5} {r['epochs']:>6} {r['val_acc']:>7.4f} {r['val_f1']:>6.4f} {rec_text:>17} "
              f"{r['seconds']:>7}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
