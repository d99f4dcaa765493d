"""Fine-tune a public Chinese checkpoint on the hotel reviews from the command line.

Introduced in notebook 07_pretrained_checkpoints. The command line works in the spirit of
transformers' ``run_glue.py``::

    python -m nblib.hub.finetune --model_name_or_path bert-base-chinese --output_dir out/bbc \\
        --max_seq_length 128 --learning_rate 2e-5 --num_train_epochs 2

The checkpoint is loaded by :mod:`nblib.hub.checkpoints` (a BERT or an ELECTRA discriminator into nblib's
own BERT encoder) and fine-tuned by the course's ``classifier.SentimentClassifier`` through
``finetuning.fit_classifier``: the same classifier, optimiser schedule, model selection (best
validation macro-F1) and metrics as every model of the course. Only the tokenizer is the
checkpoint's own (:class:`nblib.hub.hf_tokenizer.HFCollate`). Outputs: run_glue-style
``all_results.json`` and a results record ``result.json`` (with ``--add_to_comparison`` also under
``runs/<preset>/`` for lesson 05's table).

Heavy libraries (Lightning, transformers) are imported inside the functions that need them, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nblib.hub import CheckpointNotFoundError
from nblib.hub.checkpoints import RECORD_MODELS, load_encoder
from nblib.hub.hf_tokenizer import HFCollate, normalization_table
from nblib.models.bert import BertForPreTraining
from nblib.models.hf_io import CheckpointMismatchError
from nblib.presets import PRESETS

OUTPUTS = ("all_results.json", "result.json", "checkpoints", "logs")  # what a run writes


# ---------------------------------------------------------------------------------------------
# Fine-tuning, metrics and the record


def flat_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """run_glue-style flat metrics: val/test accuracy, macro-F1, per-class recall, sizes, time."""
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        metrics = results[part]
        out[f"{part}_accuracy"] = metrics["accuracy"]
        out[f"{part}_macro_f1"] = metrics["macro_f1"]
        for label, recall in metrics["recall"].items():
            out[f"{part}_recall_{label}"] = recall
        out[f"{part}_samples"] = metrics["n"]
    fine = results.get("finetuning") or {}
    out["epochs"] = fine.get("epochs")
    out["train_runtime_s"] = fine.get("seconds")
    out["inference_reviews_per_s"] = results.get("inference_reviews_per_s")
    return out


def fine_tune_bert(
    model: BertForPreTraining,
    collate: HFCollate,
    frames: tuple[Any, Any, Any],
    preset: Any,
    run_dir: str | Path,
    *,
    learning_rate: float = 2e-5,
    epochs: int = 2,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[Any, Any, dict]:
    """The course's protocol on a loaded checkpoint: ``SentimentClassifier`` (pooling ``cls``
    through BERT's pooler) + ``fit_classifier``. Returns (classifier, trainer, results)."""
    from nblib.data.datamodules import ClassificationDataModule
    from nblib.training.classifier import SentimentClassifier
    from nblib.training.finetuning import fit_classifier

    train_frame, val_frame, test_frame = frames
    datamodule = ClassificationDataModule(train_frame, val_frame, test_frame, collate, batch_size)
    torch.manual_seed(seed)  # the new head's initialisation
    classifier = SentimentClassifier(model, pooling="cls", lr=learning_rate)
    trainer, results = fit_classifier(classifier, datamodule, collate, preset, run_dir,
                                      seed=seed, max_epochs=epochs)
    return classifier, trainer, results


# ---------------------------------------------------------------------------------------------
# The command line


class FinetuneError(ValueError):
    """A refused command line (e.g. a non-empty output directory); nothing was changed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nblib.hub.finetune",
        description="Fine-tune a Hugging Face BERT checkpoint on the hotel reviews (or your CSVs) "
                    "with the course's classifier, and write metrics and a results record.")
    arg = parser.add_argument
    arg("--model_name_or_path", required=True,
        help="a BERT or ELECTRA-discriminator checkpoint folder, or a hub name such as "
             "bert-base-chinese or hfl/chinese-electra-180g-small-discriminator")
    arg("--output_dir", required=True, help="where all_results.json, result.json, logs go")
    arg("--overwrite_output_dir", action="store_true", help="allow a non-empty output_dir")
    arg("--max_seq_length", type=int, default=128, help="tokens per review, [CLS]/[SEP] included")
    arg("--learning_rate", type=float, default=2e-5)
    arg("--num_train_epochs", type=int, default=1)
    arg("--per_device_train_batch_size", type=int, default=32)
    arg("--seed", type=int, default=0)
    arg("--max_train_samples", type=int, default=None,
        help="fine-tune on a stratified sample of this many training reviews")
    arg("--train_file", help="CSV with columns label,review (with --validation_file, --test_file)")
    arg("--validation_file")
    arg("--test_file")
    arg("--preset", default="small", choices=list(PRESETS),
        help="preset of the hotel split (smoke: its small prefix) and the record's preset name")
    arg("--normalize_text", action=argparse.BooleanOptionalAction, default=True,
        help="map characters the vocabulary lacks (curly quotes, …, uppercase Latin) first")
    arg("--add_to_comparison", action="store_true",
        help="also write the record under runs/<preset>/ so lesson 05's table includes it "
             "(hotel split only)")
    return parser


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FinetuneError(f"--output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        entries = sorted(p.name for p in output_dir.iterdir())
        raise FinetuneError(
            f"output directory {output_dir} exists and is not empty ({len(entries)} entries: "
            f"{', '.join(entries[:5])}{', …' if len(entries) > 5 else ''}). Use "
            "--overwrite_output_dir to write into it anyway, or choose another --output_dir. "
            "Nothing was changed.")


def _frames(args: argparse.Namespace, preset: Any) -> tuple[tuple[Any, Any, Any], str]:
    """(train, val, test) frames and a description of where they came from."""
    from nblib import data

    files = (args.train_file, args.validation_file, args.test_file)
    if any(files):
        if not all(files):
            raise FinetuneError("pass --train_file, --validation_file and --test_file together "
                                "(CSV files with columns label,review)")
        frames = tuple(data.read_labelled_csv(f)[0] for f in files)
        source = "files " + ", ".join(str(f) for f in files)
    else:
        split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
        frames = (split.train, split.val, split.test)
        source = f"hotel split ({preset.name} preset)"
    for name, frame in zip(("train", "validation", "test"), frames, strict=True):
        if frame.empty:
            raise FinetuneError(f"the {name} data is empty")
    if args.max_train_samples is not None:
        from nblib.data.datamodules import subsample

        frames = (subsample(frames[0], args.max_train_samples, seed=args.seed), *frames[1:])
    return frames, source


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything that can be checked cheaply, then load, fine-tune and write the outputs."""
    from nblib.presets import get_preset

    output_dir = Path(args.output_dir).expanduser()
    _check_output_dir(output_dir, args.overwrite_output_dir)
    if args.max_seq_length < 3 or args.num_train_epochs < 1 or args.per_device_train_batch_size < 1:
        raise FinetuneError("--max_seq_length must be >= 3, --num_train_epochs and "
                            "--per_device_train_batch_size >= 1")
    custom = any((args.train_file, args.validation_file, args.test_file))
    if args.add_to_comparison and (custom or args.max_train_samples is not None):
        raise FinetuneError("--add_to_comparison needs the full hotel split of the preset "
                            "(no CSV files, no --max_train_samples)")
    preset = get_preset(args.preset)
    frames, source = _frames(args, preset)
    started = time.time()
    tokenizer, model, kind = load_encoder(args.model_name_or_path)
    # Lightning: imported once the cheap checks have passed
    from nblib.results.records import make_record, write_record
    from nblib.training.classifier import count_parameters

    if args.max_seq_length > model.config.max_position_embeddings:
        raise FinetuneError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                            f"{model.config.max_position_embeddings} positions")

    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # an earlier run's outputs (only with --overwrite_output_dir)
        old = output_dir / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    table = normalization_table(tokenizer.get_vocab()) if args.normalize_text else None
    collate = HFCollate(tokenizer, args.max_seq_length, table)
    _, trainer, results = fine_tune_bert(
        model, collate, frames, preset, output_dir, learning_rate=args.learning_rate,
        epochs=args.num_train_epochs, batch_size=args.per_device_train_batch_size, seed=args.seed)

    metrics = {"model_name_or_path": str(args.model_name_or_path), "data": source,
               "train_samples": len(frames[0]), **flat_metrics(results)}
    record = make_record(
        model=RECORD_MODELS[kind], variant="pretrained", preset=preset, seed=args.seed,
        train_size=len(frames[0]), parameters=count_parameters(model.bert), results=results,
        started=started, checkpoint=str(args.model_name_or_path), data=source,
        max_seq_length=args.max_seq_length, learning_rate=args.learning_rate,
        normalize_text=args.normalize_text)
    write_record(record, output_dir / "result.json", trainer=trainer)
    if args.add_to_comparison:
        metrics["comparison_record"] = str(write_record(record, trainer=trainer))
    (output_dir / "all_results.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False),
                                                 encoding="utf-8")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nblib.data.corpora import DataError

    try:
        metrics = run(args)
    except (FinetuneError, CheckpointNotFoundError, CheckpointMismatchError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("_samples")}, indent=2,
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
