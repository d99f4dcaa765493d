"""``python -m nblib.predict RUN_DIR [TEXT ...] [--file reviews.csv --column review --out predictions.csv]``

Label and P(positive) for new reviews from any fine-tuned run folder (ELMo, BERT, GPT, the static
model, TF-IDF): the folder of a run's ``result.json``, e.g. ``runs/small/gpt-pretrained/0``. With
``--file`` and a label column (``--label-column``, default ``label``, used when present) it also
prints accuracy, macro-F1 and per-class recall. Introduced with notebook 06_inside_the_models
(:func:`nblib.training.saved_runs.load_classifier`); the README shows it on two hotel reviews.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class PredictError(ValueError):
    """A refused input (empty review, missing column, unreadable file); the message names it."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nblib.predict", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", help="a fine-tuned run folder, e.g. runs/small/gpt-pretrained/0")
    p.add_argument("texts", nargs="*", help="reviews to classify")
    p.add_argument("--file", help="a CSV of reviews (UTF-8)")
    p.add_argument("--column", default="review", help="the CSV column holding the reviews (default: review)")
    p.add_argument("--label-column", default="label",
                   help="the CSV column of 0/1 labels, if any: then the metrics are printed (default: label)")
    p.add_argument("--out", help="write the CSV with label and prob_positive columns added here")
    return p


def _read_csv(path: Path, column: str, label_column: str):
    import pandas as pd

    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PredictError(f"{path}: not a readable UTF-8 CSV ({type(err).__name__}: {err})") from None
    if column not in frame.columns:
        raise PredictError(f"{path}: no column {column!r}; its columns are {list(frame.columns)} "
                           "(choose one with --column)")
    if label_column in frame.columns:
        bad = ~frame[label_column].isin([0, 1])
        if bad.any():
            row = int(frame.index[bad][0]) + 2  # the header is line 1
            raise PredictError(f"{path}, line {row}: label {frame[label_column][bad].iloc[0]!r} is not 0 or 1")
    return frame


def _check_texts(texts: Sequence[object], where: Callable[[int], str]) -> list[str]:
    """The reviews as strings; an empty one (or a missing CSV cell) is an error naming it."""
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise PredictError(f"{where(i)}: empty review")
        out.append(t)
    return out


def run(args: argparse.Namespace) -> dict:
    """Classify; print a table (and the metrics when labels are given). Returns what was printed."""
    if not args.texts and not args.file:
        raise PredictError("give reviews to classify, or --file reviews.csv")
    frame = None
    texts = _check_texts(args.texts, lambda i: f"text {i + 1}")
    if args.file:
        path = Path(args.file)
        frame = _read_csv(path, args.column, args.label_column)
        texts += _check_texts(frame[args.column].tolist(), lambda i: f"{path}, line {i + 2}")

    from nblib.training.saved_runs import (  # torch: only once the input is fine
        LABELS,
        load_classifier,
    )

    model = load_classifier(args.run_dir)
    labels, probs = model.predict(texts)
    out: dict = {"labels": labels, "prob_positive": probs}
    for text, label, prob in zip(texts[: len(args.texts)], labels, probs, strict=False):
        print(f"{label}\t{LABELS[label]}\tP(positive)={prob:.3f}\t{text}")
    if frame is not None:
        n = len(args.texts)
        frame = frame.assign(pred=labels[n:], prob_positive=[round(p, 4) for p in probs[n:]])
        if args.out:
            frame.to_csv(args.out, index=False, encoding="utf-8")
            print(f"wrote {args.out} ({len(frame)} reviews)")
        elif not args.texts:
            for label, prob, text in zip(frame["pred"], frame["prob_positive"], frame[args.column], strict=True):
                print(f"{label}\t{LABELS[label]}\tP(positive)={prob:.3f}\t{text}")
        if args.label_column in frame.columns:
            from nblib.training.classifier import evaluate_predictions

            metrics = evaluate_predictions(frame[args.label_column].astype(int).tolist(), frame["pred"].tolist())
            out["metrics"] = metrics
            recall = ", ".join(f"{LABELS[int(c)]} {r:.3f}" for c, r in metrics["recall"].items())
            print(f"{metrics['n']} labelled reviews: accuracy {metrics['accuracy']:.3f}, "
                  f"macro-F1 {metrics['macro_f1']:.3f}, recall {recall}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nblib.training.saved_runs import RunNotLoadableError

    try:
        run(args)
    except (PredictError, RunNotLoadableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
