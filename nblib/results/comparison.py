"""What the data can tell: the comparison table, and gains of pretraining over the random-init twin
with paired intervals; ``figures/comparison.md`` and the README's results block.

Introduced in notebook 05_compare. Reads results records only (plain dicts; no torch, no corpora:
each record keeps the true labels of the reviews it scored). :mod:`nblib.results.report` runs the lessons
and calls :func:`write_comparison` at the end. Long because the comparison is one job from records to
the Markdown the README carries: tables, paired intervals, verdicts, cost.

Every pretrained model has a *random-init twin*: the same architecture and fine-tuning, started
from random weights. Both are scored on the same reviews, so the comparison is **paired**: for each
review we know whether each run got it right. :func:`paired_gap` estimates the gain (pretrained
minus random accuracy, in points) and a 95% bootstrap interval that resamples both sources of
chance at once: the reviews (another test set of the same size) and the seeds (another draw of
initialisation and batch order). "Pretraining pays" is said only where the whole interval is above
zero (:func:`verdict`).

The gains are computed for every model and label count (on `small`: 100, 1,000 and all labels; 300 once `make ablations` has run) on the
in-domain test (hotel reviews) and on the out-of-domain test (waimai food-delivery reviews that no
model read in any form; ``data.ood_test``), from the ``predictions`` and ``ood_predictions`` of
the records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from nblib.presets import Preset, get_preset
from nblib.results.records import (
    REPO_ROOT,
    RUN_ID_ENV,
    RecordError,
    git_revision,
    load_record,
    runs_dir,
)

FIGURES_DIR = REPO_ROOT / "figures"
# Every model a record may name, in the order the table shows them.
KNOWN_MODELS = ["majority", "tfidf", "static", "elmo", "bert", "electra", "gpt", "bert-base-chinese", "chinese-electra"]
# Every variant a record may name, in the order the figures show them within a model (lesson 05).
VARIANTS = ["baseline", "pretrained", "random", "pretrained-frozen", "random-frozen", "pretrained-lm0", "random-lm0",
            "zero-shot"]
# The ablations (`make ablations`): the pretrained model or its twin with one part of the recipe changed.
ABLATIONS = frozenset({"pretrained-frozen", "random-frozen", "pretrained-lm0", "random-lm0"})
# The hatches that mark, in the figures, what is neither a model nor its random twin, and their legend.
HATCHES = {"//": "ablation: frozen biLM (ELMo) or no auxiliary LM loss (GPT)",
           "xx": "zero-shot: the pretrained model prompted, no fine-tuning"}

PARTS = {"test": "predictions", "ood": "ood_predictions"}  # part → the record field of its predictions
PART_NAMES = {"test": "in-domain (hotel test)", "ood": "out-of-domain (waimai)"}


class ComparisonError(RecordError):
    """Records that cannot be compared (names the record)."""


def correctness(records: Sequence[Mapping], labels: pd.Series, part: str = "test",
                ids: list | None = None) -> tuple[np.ndarray, list]:
    """A (seeds, reviews) 0/1 matrix of which reviews each record got right, and the review ids.

    ``labels`` holds the true labels indexed by review id. All records must cover the same reviews
    (``ids`` when given: the twin's).
    """
    field = PARTS[part]
    rows = []
    for r in records:
        pred = r.get(field)
        if not pred:
            raise ComparisonError(f"{r.get('_path', r.get('model'))}: no {field} in the record")
        if ids is None:
            ids = list(pred["ids"])
            missing = sorted(set(ids) - set(labels.index))
            if missing:
                raise ComparisonError(f"{part} ids {missing[:5]} have no label")
        series = pd.Series(pred["pred"], index=pred["ids"])
        if set(series.index) != set(ids):
            raise ComparisonError(f"{r.get('_path', r.get('model'))}: its {part} predictions cover "
                                  "other reviews than its twin's")
        rows.append(series.loc[ids].to_numpy() == labels.loc[ids].to_numpy())
    return np.asarray(rows, dtype=float), ids or []


def paired_gap(pretrained: np.ndarray, random: np.ndarray, *, n_boot: int = 2000,
               seed: int = 0) -> dict[str, float]:
    """Gain in accuracy points of ``pretrained`` over ``random`` ((seeds, reviews) 0/1 matrices).

    The bootstrap draws, ``n_boot`` times, the reviews with replacement (the same draw for both
    twins: the pairing) and each twin's seeds with replacement, and takes the mean difference. With
    one seed per twin it is the plain paired bootstrap over reviews.
    """
    if pretrained.shape[1] != random.shape[1]:
        raise ComparisonError("the twins were scored on different numbers of reviews")
    rng = np.random.default_rng(seed)
    n = pretrained.shape[1]
    boot = np.empty(n_boot)
    for b in range(n_boot):
        reviews = rng.integers(0, n, size=n)
        p = pretrained[rng.integers(0, len(pretrained), size=len(pretrained))][:, reviews]
        q = random[rng.integers(0, len(random), size=len(random))][:, reviews]
        boot[b] = p.mean() - q.mean()
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"gain": 100 * (pretrained.mean() - random.mean()), "low": 100 * low, "high": 100 * high}


def records_gap(first: Sequence[Mapping], second: Sequence[Mapping], labels: pd.Series, part: str = "test", *,
                n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """:func:`paired_gap` of two groups of records (the seeds of one row each) on the same reviews of
    ``part``: a pretrained model over its random twin in :func:`gains_table`, or any two rows."""
    p, ids = correctness(first, labels, part)
    q, _ = correctness(second, labels, part, ids)
    return paired_gap(p, q, n_boot=n_boot, seed=seed)


def verdict(low: float, high: float) -> str:
    """What an interval lets us say: "pays" (all above 0), "costs" (all below), else "not resolved"."""
    if low > 0:
        return "pays"
    if high < 0:
        return "costs"
    return "not resolved"


def _label_key(record: Mapping) -> int | None:
    return record.get("label_count")


def is_cut(record: Mapping) -> float | None:
    """The minutes at which a time cap cut this record's pretraining short (None: the full budget)."""
    pre = record.get("pretraining") or {}
    cap = (pre.get("budget") or {}).get("time_cap") or {}
    if cap.get("capped"):
        return round(cap.get("max_seconds", 0) / 60, 1)
    return None


def gains_table(records: Sequence[Mapping], labels: Mapping[str, pd.Series], *, n_boot: int = 2000,
                seed: int = 0, task: str | None = None) -> pd.DataFrame:
    """One row per model × label count: the gain over the random twin in each part, with its interval.

    ``labels`` maps a part ("test", "ood") to its labels indexed by review id; a part whose records
    lack predictions is left out of that row. Pretrained records cut by a time cap are left out of
    the gains (their row says so): a cut run did not read the budget.
    """
    rows = []
    chosen = [r for r in records if r.get("task", "sentiment") == (task or "sentiment")]
    models = list(dict.fromkeys(r["model"] for r in chosen))
    counts = sorted({_label_key(r) for r in chosen}, key=lambda c: (c is None, c or 0))
    for model in models:
        for count in counts:
            pre = [r for r in chosen if r["model"] == model and r["variant"] == "pretrained"
                   and _label_key(r) == count]
            rand = [r for r in chosen if r["model"] == model and r["variant"] == "random"
                    and _label_key(r) == count]
            if not pre or not rand:
                continue
            cut = [is_cut(r) for r in pre if is_cut(r) is not None]
            row: dict[str, object] = {"model": model, "labels": "all" if count is None else f"{count:,}",
                                      "seeds": f"{len(pre)} / {len(rand)}"}
            for part, part_labels in labels.items():
                if cut:
                    row[f"{part} gain"] = f"– (pretraining cut at {cut[0]:g} min)"
                    row[f"{part} verdict"] = "–"
                    continue
                if not all(r.get(PARTS[part]) for r in pre + rand):
                    continue
                g = records_gap(pre, rand, part_labels, part, n_boot=n_boot, seed=seed)
                row[f"{part} gain"] = f"{g['gain']:+.1f} [{g['low']:+.1f}, {g['high']:+.1f}]"
                row[f"{part} verdict"] = verdict(g["low"], g["high"])
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Records → table and file


def load_records(root: Path) -> list[dict]:
    """Every ``result.json`` under ``root``, validated; a bad one raises naming the file."""
    records = []
    for path in sorted(root.rglob("result.json")):
        record = load_record(path)
        if record["model"] not in KNOWN_MODELS:
            raise RecordError(f"{path}: unknown model {record['model']!r}; known: {KNOWN_MODELS}")
        record["_path"] = str(path)
        records.append(record)
    return records


def _mean_std(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def comparison_table(records: list[dict]) -> pd.DataFrame:
    """One row per (model, variant) trained on all labels: mean ± std over seeds, costs beside."""
    rows = []
    for r in records:
        if r.get("label_count") is not None:
            continue  # label-efficiency runs go in their own figure
        pre = r["pretraining"] or {}
        fine = r["finetuning"] or {}
        cut = is_cut(r)
        ood = r.get("ood") or {}
        rows.append({
            "model": r["model"], "variant": r["variant"] + (f" (cut at {cut:g} min)" if cut else ""),
            "seed": r["seed"],
            "accuracy": r["test"]["accuracy"], "macro_f1": r["test"]["macro_f1"],
            "ood_accuracy": ood.get("accuracy"), "ood_macro_f1": ood.get("macro_f1"),
            "ood_recall_neg": (ood.get("recall") or {}).get("0"),
            "ood_recall_pos": (ood.get("recall") or {}).get("1"),
            "pretrain_chars": pre.get("characters"),
            "recall_neg": r["test"]["recall"].get("0"), "recall_pos": r["test"]["recall"].get("1"),
            "long_accuracy": (r.get("test_long") or {}).get("accuracy"),
            "parameters": r["parameters"], "pretrain_tokens": pre.get("tokens"),
            "pretrain_min": (pre.get("seconds") or 0) / 60 if pre else None,
            "finetune_min": (fine.get("seconds") or 0) / 60, "reviews_per_s": r["inference_reviews_per_s"],
        })
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(KNOWN_MODELS)}
    out = []
    for (model, variant), g in frame.groupby(["model", "variant"], sort=False):
        out.append({
            "model": model, "variant": variant, "seeds": len(g),
            "test accuracy": _mean_std(g["accuracy"]), "test macro-F1": _mean_std(g["macro_f1"]),
            "recall neg": f"{g['recall_neg'].mean():.3f}", "recall pos": f"{g['recall_pos'].mean():.3f}",
            "accuracy >128 chars": "–" if g["long_accuracy"].isna().all() else f"{g['long_accuracy'].mean():.3f}",
            "OOD accuracy": "–" if g["ood_accuracy"].isna().all() else _mean_std(g["ood_accuracy"]),
            "OOD macro-F1": "–" if g["ood_macro_f1"].isna().all() else _mean_std(g["ood_macro_f1"]),
            "OOD recall neg / pos": "–" if g["ood_recall_neg"].isna().all()
            else f"{g['ood_recall_neg'].mean():.3f} / {g['ood_recall_pos'].mean():.3f}",
            "pretrain chars": "–" if g["pretrain_chars"].isna().all() else f"{int(g['pretrain_chars'].iloc[0]):,}",
            "parameters": f"{int(g['parameters'].iloc[0]):,}",
            "pretrain tokens": "–" if g["pretrain_tokens"].isna().all() else f"{int(g['pretrain_tokens'].iloc[0]):,}",
            "pretrain min": "–" if g["pretrain_min"].isna().all() else f"{g['pretrain_min'].iloc[0]:.1f}",
            "fine-tune min": f"{g['finetune_min'].mean():.2f}",
            "reviews/s": "–" if g["reviews_per_s"].isna().all() else f"{g['reviews_per_s'].mean():.0f}",
            "_order": (order[model], variant != "pretrained", variant),
        })
    return pd.DataFrame(out).sort_values("_order").drop(columns="_order").reset_index(drop=True)


# Columns of `comparison_table` that read this run's clock: a rerun of the same commit changes them and
# nothing else, so `figures/comparison.md` puts them in a table of their own after the results.
CLOCK_COLUMNS = ("pretrain min", "fine-tune min", "reviews/s")
COST_HEADING = "What each row cost on this machine"


def split_results_and_clock(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the results: everything a rerun reproduces bit for bit; model, variant and the clock columns)."""
    if table.empty:  # no records yet
        return table, table
    clock = [c for c in CLOCK_COLUMNS if c in table.columns]
    return table.drop(columns=clock), table[["model", "variant", *clock]]


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def labels_from_records(records: Sequence[Mapping]) -> dict[str, pd.Series]:
    """True labels by review id of each part ("test", "ood"), from the records' predictions (each run
    keeps the labels of the reviews it scored): the comparison never reads the corpora."""
    out: dict[str, pd.Series] = {}
    for part, field in PARTS.items():
        pieces = []
        for r in records:
            pred = r.get(field)
            if not pred:
                continue
            if "labels" not in pred:
                raise ComparisonError(f"{r.get('_path', r.get('model'))}: its {field} keep no true labels "
                                      "(a record of an older version): rerun it")
            pieces.append(pd.Series(pred["labels"], index=pred["ids"]))
        if pieces:
            joined = pd.concat(pieces)
            joined = joined[~joined.index.duplicated()]
            out[part] = joined
    return out


def pretraining_budgets(records: Sequence[Mapping]) -> list[int]:
    """The character budgets the records' pretrained models were given (``pretraining.settings``), sorted:
    one number when the comparison is fair, several when records of different budgets were mixed."""
    budgets = {((r.get("pretraining") or {}).get("settings") or {}).get("pretrain_chars") for r in records}
    return sorted(b for b in budgets if b is not None)


def _budget_phrase(records: Sequence[Mapping]) -> str:
    """The protocol line's words for the pretraining budget, read from the records (not from today's preset,
    which may have changed since they were made)."""
    budgets = pretraining_budgets(records)
    if not budgets:
        return "no pretrained model among the records yet"
    if len(budgets) == 1:
        return f"the same budget of {budgets[0]:,} characters of it"
    return ("budgets that DIFFER between records (" + ", ".join(f"{b:,}" for b in budgets)
            + " characters): rows of different budgets are not a fair comparison; rerun `make report`")


def _label_count_line(preset: Preset) -> str:
    """The protocol line's sentence on label counts, and the cuts that keep the main job within its time."""
    line = (f" Label-efficiency runs: {', '.join(f'{n:,}' for n in preset.label_counts)} labelled reviews in the "
            "main job")
    if preset.ablation_label_counts:
        extra = ", ".join(f"{n:,}" for n in preset.ablation_label_counts)
        line += (f"; {extra} only with `make ablations` (at every seed; its rows join the gains table once it "
                 "has run), cut from the main job to fit its time on 2 cores")
    return line + "."


def write_comparison(preset_name: str, wall_seconds: float | None = None,
                     out: Path | None = None, lesson_seconds: dict[str, float] | None = None,
                     run_label: str | None = None, ablations_seconds: float | None = None) -> Path:
    """Write ``figures/comparison.md``: the table, the gains with their intervals, the protocol, the run
    (``run_label``, default ``NBLIB_RUN_ID``; ``ablations_seconds``: what ``make ablations`` added to it)."""
    records = [r for r in load_records(runs_dir() / preset_name) if r.get("task", "sentiment") == "sentiment"]
    table, clock = split_results_and_clock(comparison_table(records))
    ablations = pd.DataFrame()
    if len(table):  # the ablation variants (pretrained-frozen, random-lm0) come from `make ablations`
        is_ablation = table["variant"].map(lambda v: v.split(" ")[0] in ABLATIONS)
        table, ablations = table[~is_ablation], table[is_ablation]
    out = out or FIGURES_DIR / "comparison.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    wall = f", wall time {wall_seconds / 60:.1f} min" if wall_seconds is not None else ""
    if wall and ablations_seconds is not None:
        wall += f" (the ablations {ablations_seconds / 60:.1f} min more)"
    run_label = run_label or os.environ.get(RUN_ID_ENV, "table only")
    versions = records[0]["versions"] if records else {}
    preset = get_preset(preset_name)  # its label counts (the budget is read from the records)
    ood_size = max((len(r["ood_predictions"]["ids"]) for r in records if r.get("ood_predictions")), default=0)
    lines = [
        f"# Comparison — preset `{preset_name}`",
        "",
        f"Written from the `{preset_name}` results records by `nblib.results.report` (what `make report` runs) "
        f"on {when}, commit {git_revision()}{wall}; run `{run_label}`; "
        f"torch {versions.get('torch', '?')}, {versions.get('threads', '?')} torch thread(s) per fine-tuning run, "
        f"device {versions.get('device', '?')}.",
        "",
        "Protocol: the fixed stratified 80/10/10 split (seed 0) of ChnSentiCorp_htl_all; the same "
        f"pretraining corpus and {_budget_phrase(records)} for every "
        "pretrained model (a row cut short by an opt-in time cap says so and is not compared); the same "
        "fine-tuning epochs, each model's learning rate chosen on validation; the epoch (or C) chosen by "
        f"validation macro-F1; test metrics on the hotel test reviews and, out of domain, on {ood_size:,} "
        "waimai_10k food-delivery reviews that no model read in any form; mean ± std over seeds. The "
        "ablations (ELMo's frozen biLM, GPT without its auxiliary LM loss) are not part of the main job: "
        "`make ablations` adds them in a section of their own."
        + _label_count_line(preset),
        "",
        to_markdown(table) if len(table) else "_No results records yet._",
        "",
    ]
    if len(ablations):
        lines += ["Ablations (`make ablations`, `preset.seeds_for_ablations`): the same protocol with one part "
                  "of the recipe changed, named by the variant's suffix (`-frozen`: the pretrained or random "
                  "encoder is not trained, only the layer mix and head; `-lm0`: no auxiliary LM loss).",
                  "", to_markdown(ablations), ""]
    has_predictions = any(r.get("predictions") for r in records)
    gains = gains_table(records, labels_from_records(records)) if has_predictions else pd.DataFrame()
    if len(gains):
        lines += [
            "What pretraining adds: pretrained minus random-init accuracy in points, mean over seeds, with a "
            "95% bootstrap interval over the reviews and the seeds, per number of labelled training reviews. "
            "\"pays\" only where the whole interval is above zero, \"costs\" where it is below, else \"not "
            "resolved\": the data cannot tell.",
            "",
            to_markdown(gains),
            "",
        ]
    if len(clock):
        lines += [
            f"{COST_HEADING} (a rerun of the same commit reproduces every number above this table, not "
            "the clock): minutes of pretraining (the cached checkpoint's own) and of fine-tuning a seed, "
            "and reviews scored per second.",
            "",
            to_markdown(clock),
            "",
        ]
    if lesson_seconds:
        lines += [
            "What each lesson took in this run (the lessons' headers point here), minutes of wall time, "
            "pretraining included:",
            "",
            to_markdown(pd.DataFrame([{"lesson": k, "minutes": f"{v / 60:.1f}"} for k, v in lesson_seconds.items()])),
            "",
        ]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


README_START = "<!-- results:start (written by `make report` from figures/comparison.md; do not edit) -->"
README_END = "<!-- results:end -->"


def readme_block(comparison_markdown: str) -> str:
    """The README's results block: the comparison file without its first (title) line."""
    body = comparison_markdown.split("\n", 1)[1] if "\n" in comparison_markdown else ""
    return body.strip("\n")


def write_readme_block(readme: str, comparison_markdown: str) -> str:
    """``readme`` with the text between the results markers replaced by :func:`readme_block`."""
    if README_START not in readme or README_END not in readme:
        raise ComparisonError("the README has no results markers "
                              f"({README_START!r} … {README_END!r})")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{readme_block(comparison_markdown)}\n{README_END}{tail}"


def readme_results(readme: str) -> str:
    """The text between the README's results markers (what the consistency test compares)."""
    if README_START not in readme or README_END not in readme:
        raise ComparisonError("the README has no results markers")
    return readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n")
