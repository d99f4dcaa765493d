"""How well does lesson 03b's ELECTRA discriminator find the replaced characters on held-out text?

Loads the pretraining checkpoint ``<runs>/<preset>/pretrain/<name>.pt`` (``pretraining.load_pretrained``: the
model and its vocabulary, from the checkpoint alone), rebuilds lesson 03b's held-out slice of the pretraining
corpus (the last 1% of ``data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=<the run's data seed>)``;
the corpus never holds a hotel val/test review), masks it as the lesson does (``bert.collate_mlm``, batch i seeded
with i) and prints ``electra.replaced_token_metrics`` (precision, recall at logit 0, ROC-AUC and average precision
on the *replaced* characters, the replaced share, RTD loss beside the base-rate entropy, the generator's MLM
accuracy) for the checkpoint and for the same model at its random init. When the checkpoint's loss history holds
the per-step ``rtd_recall`` / ``rtd_auc`` (checkpoints made since they exist) it prints a few points of the curve.

``--smoke`` first pretrains a ``smoke`` ELECTRA as lesson 03b does (generator ½, λ = 50, pre-LN) into a temporary
runs folder, then measures it: seconds, for CI and to try the script.

Run (a checkpoint of the small preset):
    NBLIB_RUNS_DIR=<runs> NBLIB_DATA_MIRROR=<mirror> nice -n 19 .venv/bin/python experiments/electra_diagnostics.py
Smoke:
    NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/electra_diagnostics.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from electra_lesson import pretraining_parts

from nblib import data
from nblib.models import bert, electra
from nblib.presets import Preset, get_preset
from nblib.results import records
from nblib.training import pretraining, saved_runs

COLUMNS = ("roc_auc", "recall", "precision", "average_precision", "replaced_share", "rtd_acc", "rtd_loss",
           "base_rate_entropy", "generator_mlm_acc", "sampled_original_share", "positions")


def heldout_texts(preset: Preset, seed: int) -> list[str]:
    """Lesson 03b's held-out pretraining texts: the corpus's last 1% (the lesson's ``heldout_texts``)."""
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=seed)
    return corpus[-max(1, len(corpus) // 100):]


def heldout_batches(texts: list[str], tokenizer: Any, preset: Preset) -> list[dict[str, torch.Tensor]]:
    """Masked-LM batches of ``texts`` as the lesson's pretraining sees them, batch i masked with seed i."""
    size = preset.pretrain_batch_size
    return [bert.collate_mlm(texts[i:i + size], tokenizer, preset.pretrain_seq_len, seed=i // size)
            for i in range(0, len(texts), size)]


def pretrain_smoke(seed: int) -> None:
    """A smoke-preset ELECTRA pretrained as lesson 03b does, into ``$NBLIB_RUNS_DIR/smoke/pretrain/electra.pt``."""
    preset = get_preset("smoke")
    preset.configure_torch()
    _, lm_data, config = pretraining_parts(preset, seed=seed, generator_size=0.5)
    torch.manual_seed(seed)
    model = electra.ElectraForPreTraining(config)
    recipe = {"objective": "electra", "pre_ln": True, "generator_size": 0.5, "rtd_weight": 50.0}
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun("electra", seed=seed, recipe=recipe))
    print(f"smoke pretraining: {info['steps']} steps, {info['seconds']} s")


def curve(history: list[dict[str, float]], points: int = 6) -> list[dict[str, float]]:
    """A few points of the per-step diagnostics, each the mean of the steps since the previous point."""
    keys = [k for k in ("rtd_recall", "rtd_auc", "rtd_precision", "mlm_acc") if history and k in history[0]]
    if "rtd_auc" not in keys:
        return []
    edges = sorted({round(i * len(history) / points) for i in range(points + 1)})
    rows = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        part = history[lo:hi]
        rows.append({"steps": f"{part[0]['step']}-{part[-1]['step']}",
                     **{k: round(sum(h[k] for h in part) / len(part), 3) for k in keys}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--name", default="electra", help="the checkpoint's name under <runs>/<preset>/pretrain/")
    parser.add_argument("--runs", help="the runs folder (default: $NBLIB_RUNS_DIR, else runs/)")
    parser.add_argument("--smoke", action="store_true", help="pretrain a smoke ELECTRA in a temporary folder first")
    parser.add_argument("--max-batches", type=int, default=None, help="held-out batches to read (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's masking and samples; the random init")
    parser.add_argument("--mask-share", default=None,
                        help="override ElectraConfig.generator_mask_share ('none': the batch's 80/10/10 input, "
                             "as checkpoints made before the 85/15 fix were trained)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    start = time.perf_counter()
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="electra-diagnostics-")
        os.environ["NBLIB_RUNS_DIR"] = tmp.name
        args.preset = "smoke"
        pretrain_smoke(args.seed)
    elif args.runs:
        os.environ["NBLIB_RUNS_DIR"] = args.runs
    preset = get_preset(args.preset)
    preset.configure_torch()
    model, info = pretraining.load_pretrained(preset, args.name)
    if not isinstance(model, electra.ElectraForPreTraining):
        raise SystemExit(f"{args.name}: a {type(model).__name__}, not an ElectraForPreTraining checkpoint")
    tokenizer = saved_runs.tokenizer_from_vocabulary(next(iter(info["tokenizers"].values())))
    data_seed = (info.get("settings") or {}).get("data_seed", 0)
    texts = heldout_texts(preset, data_seed)
    batches = heldout_batches(texts, tokenizer, preset)
    torch.manual_seed(args.seed)
    untrained = saved_runs.build_model(info["model"]).eval()  # the same config at a seeded random init
    if args.mask_share is not None:
        share = None if args.mask_share.lower() == "none" else float(args.mask_share)
        for m in (model, untrained):
            m.config.generator_mask_share = share

    results = {}
    for label, m in (("random init", untrained), ("pretrained", model)):
        results[label] = electra.replaced_token_metrics(m, batches, max_batches=args.max_batches, seed=args.seed)
    where = records.runs_dir() / preset.name / "pretrain" / f"{args.name}.pt"
    print(f"checkpoint {where if tmp is None else '(smoke, temporary) ' + where.name}: {info['steps']} steps, "
          f"{info.get('characters', 0):,} characters; held-out: {len(texts):,} corpus texts, "
          f"{results['pretrained']['batches']} batches; generator_mask_share "
          f"{model.config.generator_mask_share}")
    width = max(map(len, COLUMNS))
    print(f"{'':{width}}  {'random init':>11}  {'pretrained':>10}")
    for key in COLUMNS:
        a, b = results["random init"][key], results["pretrained"][key]
        fmt = (lambda v: f"{v:,}") if isinstance(a, int) else (lambda v: f"{v:.4f}")
        print(f"{key:{width}}  {fmt(a):>11}  {fmt(b):>10}")
    rows = curve(info.get("history") or [])
    if rows:
        print("per-step diagnostics from the training history (means over each span of steps):")
        for row in rows:
            print("  " + "  ".join(f"{k} {v}" for k, v in row.items()))
    else:
        print("the checkpoint's history has no per-step rtd_auc (made before pretraining_step returned it)")
    print(f"{time.perf_counter() - start:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(where), "steps": info["steps"], "results": results,
                                         "curve": rows}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
