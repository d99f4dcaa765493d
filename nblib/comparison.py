"""What the data can tell: gains of pretraining over the random-init twin, with paired intervals.

Introduced in notebook 05_compare. Reads results records only (plain dicts; no torch).

Every pretrained model has a *random-init twin*: the same architecture and fine-tuning, started
from random weights. Both are scored on the same reviews, so the comparison is **paired**: for each
review we know whether each run got it right. :func:`paired_gap` estimates the gain (pretrained
minus random accuracy, in points) and a 95% bootstrap interval that resamples both sources of
chance at once: the reviews (another test set of the same size) and the seeds (another draw of
initialisation and batch order). "Pretraining pays" is said only where the whole interval is above
zero (:func:`verdict`).

The gains are computed for every model and label count (100, 300, 1,000 and all labels) on the
in-domain test (hotel reviews) and on the out-of-domain test (waimai food-delivery reviews that no
model read in any form; ``data.ood_test``), from the ``predictions`` and ``ood_predictions`` of
the records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nblib.records import RecordError

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
                p, ids = correctness(pre, part_labels, part)
                q, _ = correctness(rand, part_labels, part, ids)
                g = paired_gap(p, q, n_boot=n_boot, seed=seed)
                row[f"{part} gain"] = f"{g['gain']:+.1f} [{g['low']:+.1f}, {g['high']:+.1f}]"
                row[f"{part} verdict"] = verdict(g["low"], g["high"])
            rows.append(row)
    return pd.DataFrame(rows)


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
