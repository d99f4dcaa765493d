"""What the lessons call: their set-up, one run of the comparison start to record, the label-efficiency runs.

``finetune_variant(...) -> (classifier, record)`` is one fine-tuning run of the comparison.

Introduced in notebook 02_elmo and used by 03_bert and 04_gpt: every pretrained-vs-random run of the
course is the same steps (the shared classifier on an encoder, the data module of the fixed split, the
trainer with model selection on validation, the results record under ``runs/<preset>/<model>-<variant>``),
so the lessons write only what differs: the encoder, its pooling, its collate and its options.
The learning rate defaults to the preset's choice for the model (``Preset.finetune_lr_for``).
:func:`fit_variant` is the same run without a record (lesson 03's truncation study).
:func:`lesson_preset` is what a lesson runs: `make report`'s whole grid, or a learner's sitting;
:func:`setup` is every lesson's first code cell; :func:`label_efficiency` the label-count runs of 02, 03 and 04.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from nblib.data.datamodules import ClassificationDataModule, Collate, subsample
from nblib.presets import Preset, get_preset
from nblib.results.records import make_record, record_path, write_record
from nblib.training.classifier import Pooling, SentimentClassifier, count_parameters
from nblib.training.finetuning import fit_classifier


def fit_variant(
    encoder: nn.Module,
    *,
    preset: Preset,
    split: Any,
    collate: Collate,
    pooling: Pooling,
    seed: int,
    lr: float,
    run_dir: str | Path,
    frame: pd.DataFrame | None = None,
    max_epochs: int | None = None,
    classifier_options: dict | None = None,
) -> tuple[SentimentClassifier, Any, dict]:
    """Fine-tune ``encoder`` (already built and seeded by the caller) on ``frame`` (default: the
    split's train reviews) with checkpoints and logs in ``run_dir``, and score val, test and
    out-of-domain. Writes no results record. Returns the classifier, the trainer and the results
    (``finetuning.fit_classifier``'s dict)."""
    frame = split.train if frame is None else frame
    clf = SentimentClassifier(encoder, pooling=pooling, lr=lr, **(classifier_options or {}))
    datamodule = ClassificationDataModule(frame, split.val, split.test, collate, preset.finetune_batch_size,
                                          ood=getattr(split, "ood", None))
    trainer, results = fit_classifier(clf, datamodule, collate, preset, run_dir, seed=seed,
                                      max_epochs=max_epochs)
    return clf, trainer, results


def finetune_variant(
    encoder: nn.Module,
    *,
    model: str,
    variant: str,
    preset: Preset,
    split: Any,
    collate: Collate,
    pooling: Pooling,
    seed: int,
    frame: pd.DataFrame | None = None,
    label_count: int | None = None,
    lr: float | None = None,
    max_epochs: int | None = None,
    pretraining: dict | None = None,
    classifier_options: dict | None = None,
    run_dir: str | Path | None = None,
    **record_extra: Any,
) -> tuple[SentimentClassifier, dict]:
    """Fine-tune ``encoder`` (already built and seeded by the caller, pretrained or not) as
    ``model``/``variant`` on ``frame`` (default: the split's train reviews), score val, test and
    out-of-domain, and write the record ``runs/<preset>/<model>-<variant>[-n<label_count>]/<seed>``
    (or into ``run_dir``, for runs that are not part of the comparison: ``experiments/``).

    ``lr`` defaults to ``preset.finetune_lr_for(model, variant)``; ``classifier_options`` go to
    :class:`SentimentClassifier` (``lm_loss_weight``, ``freeze_encoder``, ``num_layers``, ...);
    ``record_extra`` into the record (``finetune_lr``, ``trainable_parameters`` and ``label_count``
    are added here). Returns the classifier (on the CPU) and the record.
    """
    started = time.time()
    frame = split.train if frame is None else frame
    lr = preset.finetune_lr_for(model, variant) if lr is None else lr
    run_dir = record_path(preset, model, variant, seed, label_count).parent if run_dir is None else Path(run_dir)
    clf, trainer, results = fit_variant(encoder, preset=preset, split=split, collate=collate, pooling=pooling,
                                        seed=seed, lr=lr, run_dir=run_dir, frame=frame, max_epochs=max_epochs,
                                        classifier_options=classifier_options)
    extra = {} if label_count is None else {"label_count": label_count}
    trainable = sum(p.numel() for p in clf.parameters() if p.requires_grad)
    record = make_record(model=model, variant=variant, preset=preset, seed=seed, train_size=len(frame),
                         parameters=count_parameters(encoder), results=results, pretraining=pretraining,
                         started=started, finetune_lr=lr, trainable_parameters=trainable,
                         **extra, **record_extra)
    write_record(record, run_dir / "result.json", trainer=trainer)
    return clf.cpu(), record


LABEL_EFFICIENCY_COLUMNS = ["labelled reviews", "init", "seed", "test accuracy", "test macro-F1"]


def label_efficiency(
    finetune: Callable[..., tuple[Any, dict]],
    preset: Preset,
    split: Any,
    *,
    seed: int,
    ablations: bool,
    desc: str = "label-efficiency runs",
    **job_args: Any,
) -> pd.DataFrame:
    """The label-efficiency runs of a lesson: for each of the preset's label counts (with the ablation
    counts when ``ablations``: :meth:`Preset.label_counts_to_run`) one fixed subset of the train reviews,
    sampled with ``seed`` and shared by every seed of the grid; on it, each of ``preset.seeds`` × the two
    inits runs ``finetune(variant=..., seed=..., frame=..., label_count=..., max_epochs=..., **job_args)``
    for the preset's few-label epochs, side by side on the pool (:func:`nblib.training.pool.run_jobs`).
    ``finetune`` is the lesson's own run, returning ``(classifier, record)``. Returns one row per run
    (:data:`LABEL_EFFICIENCY_COLUMNS`; an empty frame with these columns when the preset has no label
    counts, as a learner's sitting). Introduced in notebook 02_elmo."""
    # imported here: the cache keys of fine-tuning jobs (nblib.training.runcache) stay free of the pool
    from nblib.training import pool

    grid = []
    for n_labels in preset.label_counts_to_run(ablations):
        subset = subsample(split.train, n_labels, seed=seed)  # one fixed subset, every seed trains on it
        grid += [{"variant": variant, "seed": run_seed, **job_args, "frame": subset, "label_count": n_labels,
                  "max_epochs": preset.few_label_epochs(n_labels)}
                 for run_seed in preset.seeds for variant in ("pretrained", "random")]
    if not grid:
        print("no label counts besides all in this sitting: figures/05_label_efficiency.png holds the report's curve")
    done = pool.run_jobs(finetune, grid, threads=preset.threads_per_job, desc=desc)
    rows = [{"labelled reviews": len(job["frame"]), "init": job["variant"], "seed": job["seed"],
             "test accuracy": record["test"]["accuracy"], "test macro-F1": record["test"]["macro_f1"]}
            for job, (_, record) in zip(grid, done, strict=True)]
    # typed even when empty (a sitting without label counts): lesson 04 appends its all-label rows to it
    return pd.DataFrame(rows, columns=LABEL_EFFICIENCY_COLUMNS).astype(
        {"labelled reviews": int, "seed": int, "test accuracy": float, "test macro-F1": float})


# The pretrainings of the course's lessons 02, 03, 03b and 04 (runs/<preset>/pretrain/<name>.pt).
COURSE_PRETRAININGS = ("elmo", "bert", "electra", "gpt")


def lesson_preset(name: str, *, full: bool, seed: int, report_figures: str = "figures/comparison.md") -> Preset:
    """The preset a lesson runs with. ``full`` (what `make report` passes): the named preset, its
    whole grid. Otherwise a learner's sitting (:meth:`Preset.sitting`): the one ``seed``, starting
    from `make report`'s pretrained checkpoints where all four of the course's are saved for this
    budget and seed (then every run is one the report made, and the run cache returns it), else from
    shorter pretrainings under ``runs/<name>-sitting/``: every lesson makes the same choice, so lesson
    05 finds the records of 01-04 in one folder. Prints what the sitting leaves out and where the
    report shows it (``report_figures``). Introduced in notebook 02_elmo."""
    # imported here, not at the top: the cache keys of fine-tuning jobs (nblib.training.runcache) stay free of it
    from nblib.training import pretraining

    preset = get_preset(name)
    if full:
        return preset

    def saved_by_report(model: str) -> bool:
        info = pretraining.saved_pretraining(preset, model) or {}
        settings = info.get("settings", {})
        return (settings.get("pretrain_chars") == preset.pretrain_chars and settings.get("seed") == seed
                and settings.get("max_steps") is None and not info.get("cut_at_minutes"))

    missing = [model for model in COURSE_PRETRAININGS if not saved_by_report(model)]
    sitting = preset.sitting(seed, short_pretraining=bool(missing))
    if sitting == preset:
        return preset  # nothing left out (smoke: one seed, no shorter budget)

    def counts(p: Preset) -> str:
        return ", ".join(["all", *(f"{n:,}" for n in p.label_counts)])

    lines = [f"A learner's sitting (FULL = False): seed {seed} (the report: {', '.join(map(str, preset.seeds))}); "
             f"labels {counts(sitting)} (the report: {counts(preset)}); no ablations unless ABLATIONS = True."]
    if sitting.name != preset.name:
        lines.append(f"Pretraining on {sitting.pretrain_chars:,} characters, not the report's "
                     f"{preset.pretrain_chars:,}: `make report` has not saved {', '.join(missing)} under "
                     f"runs/{preset.name}/pretrain/. This sitting's runs go to runs/{sitting.name}/.")
    else:
        lines.append(f"Pretrained models: `make report`'s checkpoints (runs/{preset.name}/pretrain/); the runs "
                     "it made come from its cache.")
    lines.append(f"FULL = True runs the whole grid (hours on 2 cores); the full result: {report_figures} "
                 "after `make report`.")
    print("\n".join(lines))
    return sitting


def setup(name: str, *, full: bool, seed: int, report_figures: str = "figures/comparison.md",
          changes: dict[str, Any] | None = None) -> tuple[Preset, Any]:
    """Every lesson's first code cell: the course's figure style (a font with Chinese characters),
    the lesson's preset (:func:`lesson_preset`, then ``changes``: a lesson's own preset fields, an
    unknown name raises), its torch threads, and the fixed split cut to the preset, whose sizes it
    prints. Returns ``(preset, split)``. Introduced in notebook 01_baselines."""
    # imported here: the cache keys of fine-tuning jobs (nblib.training.runcache) stay free of them
    from nblib import data
    from nblib.results.plotting import use_course_style

    use_course_style()
    preset = lesson_preset(name, full=full, seed=seed, report_figures=report_figures).replace(**(changes or {}))
    preset.configure_torch()  # the preset's torch threads, part of its recipe (smoke 1, small 2)
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    print({part: len(getattr(split, part)) for part in ("train", "val", "test", "ood")})
    return preset, split
