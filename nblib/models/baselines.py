"""Baselines every model is compared with: the majority class and TF-IDF + logistic regression.

Introduced in notebook 01_baselines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline


def majority_label(train: pd.DataFrame) -> int:
    """The most frequent training label (ties: the smaller label)."""
    counts = train["label"].value_counts()
    return int(counts[counts == counts.max()].index.min())


def tfidf_pipeline(C: float = 1.0) -> Pipeline:
    """Character 1–3-grams (Chinese needs no segmentation for this), sublinear TF, balanced LR."""
    return make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(C=C, max_iter=2000, class_weight="balanced"),
    )


def fit_tfidf(
    train: pd.DataFrame, val: pd.DataFrame, Cs: Sequence[float] = (0.25, 0.5, 1, 2, 4, 8, 16)
) -> tuple[Pipeline, float, dict[float, float], float]:
    """Fit one pipeline per ``C``, keep the best by validation macro-F1 (never the test split).

    Returns the chosen pipeline, its ``C``, the validation macro-F1 of every ``C`` and the seconds
    spent fitting all of them.
    """
    start = time.perf_counter()
    pipes = {C: tfidf_pipeline(C).fit(train["text"], train["label"]) for C in Cs}
    scores = {C: float(f1_score(val["label"], p.predict(val["text"]), average="macro"))
              for C, p in pipes.items()}
    best_C = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    return pipes[best_C], best_C, scores, time.perf_counter() - start
