"""The sentiment task's data: cleaning, the hotel reviews' fixed split, the out-of-domain test, the pretraining text.

Introduced in notebook 00_data, and read by every lesson after it. The files come verified from
:func:`nblib.data.corpora.fetch`; here they become clean ``(text, label)`` frames, the fixed stratified
80/10/10 split of the hotel reviews (:func:`split`), the out-of-domain test of waimai reviews
(:func:`ood_test`) and the unlabelled pretraining corpus that no evaluation review can leak into
(:func:`pretraining_corpus`). Tests pin the sha256 of every id list.

``python -m nblib.data fetch-all`` (``fetch-tasks``: lesson 08's corpora) fetches and verifies the
files (:func:`nblib.data.corpora.main`).
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nblib.data.corpora import CORPORA, DataError, fetch


def normalize(text: str) -> str:
    """Strip byte-order marks and surrounding whitespace; NFKC-fold full-width forms.

    NFKC maps full-width Latin letters, digits and punctuation to their ASCII forms, so "ＯＫ"
    and "OK" are one string: used for deduplication and leakage checks, not for model input.
    """
    return unicodedata.normalize("NFKC", clean(text))


def clean(text: object) -> str:
    """The cleaning every review gets before a model sees it: no BOM, no surrounding space."""
    if not isinstance(text, str):
        return ""
    return text.replace("\ufeff", "").strip()


def _read_csv(source: Path | io.BytesIO, required: list[str], what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(source, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{what} is not a readable UTF-8 CSV: {err}") from err
    frame.columns = [clean(c) for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)}. "
            f"Expected columns {required}."
        )
    return frame


def read_labelled_csv(path: Path | str, *, what: str | None = None) -> tuple[pd.DataFrame, int]:
    """Read a ``label,review`` CSV into a clean ``(text, label)`` frame.

    Returns the frame (index = row number in the file, the review's id) and the number of empty
    reviews dropped. Labels must be 0 or 1.
    """
    what = what or str(path)
    frame = _read_csv(Path(path), ["label", "review"], what)
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[~labels.isin([0, 1])]
    if len(bad):
        raise DataError(
            f"{what}: label must be 0 or 1; row(s) {list(bad[:5])} hold {list(frame['label'][bad[:5]])}"
        )
    out = pd.DataFrame({"text": frame["review"].map(clean), "label": labels.astype(int)})
    out.index.name = "id"
    empty = out["text"] == ""
    return out[~empty], int(empty.sum())


def load_hotel(*, verbose: bool = True) -> pd.DataFrame:
    """The task: ChnSentiCorp_htl_all as a clean ``(text, label)`` frame, index = row id in the CSV.

    Byte-order marks and surrounding whitespace are stripped; the one empty review is dropped
    and counted (printed when ``verbose``).
    """
    frame, n_empty = read_labelled_csv(fetch("hotel"), what=CORPORA["hotel"].file_name)
    if verbose and n_empty:
        print(f"load_hotel: dropped {n_empty} empty review(s); {len(frame)} remain")  # a notice for the lesson, not an error
    return frame


def load_waimai() -> pd.DataFrame:
    """waimai_10k (food delivery reviews) as a clean ``(text, label)`` frame; pretraining text."""
    frame, _ = read_labelled_csv(fetch("waimai"), what=CORPORA["waimai"].file_name)
    return frame


def load_shopping() -> pd.DataFrame:
    """online_shopping_10_cats as a clean ``(cat, text, label)`` frame; pretraining text."""
    path = fetch("shopping")
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("online_shopping_10_cats.csv")
    frame = _read_csv(io.BytesIO(raw), ["cat", "label", "review"], "online_shopping_10_cats.csv")
    out = pd.DataFrame(
        {"cat": frame["cat"].map(clean), "text": frame["review"].map(clean), "label": frame["label"]}
    )
    return out[out["text"] != ""]


# ---------------------------------------------------------------------------------------------
# The fixed split


@dataclass(frozen=True)
class Split:
    """The fixed stratified 80/10/10 split of the hotel reviews (ids are CSV row numbers)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    # the out-of-domain test (:func:`ood_test`, waimai reviews): every classifier is scored on it too
    ood: pd.DataFrame | None = None

    def limit(self, max_train: int | None, max_eval: int | None) -> Split:
        """The first rows of each part (already shuffled): the smoke preset's small split."""
        ood = None if self.ood is None else self.ood.iloc[:max_eval]
        return Split(self.train.iloc[:max_train], self.val.iloc[:max_eval], self.test.iloc[:max_eval], ood)

    def ids(self) -> dict[str, list[int]]:
        return {k: [int(i) for i in getattr(self, k).index] for k in ("train", "val", "test")}


SPLIT_SEED = 0


def split(frame: pd.DataFrame | None = None, *, seed: int = SPLIT_SEED) -> Split:
    """Stratified 80/10/10 split with seed 0: the same ids on every machine, forever.

    Uses the legacy ``numpy.random.RandomState`` stream, which numpy keeps bit-stable across
    versions, and sorted ids, so the split does not depend on row order or library versions.
    A test pins the sha256 of the id lists. The real split (no ``frame`` given) also carries the
    out-of-domain test in ``ood``.
    """
    ood = ood_test() if frame is None else None
    frame = load_hotel(verbose=False) if frame is None else frame
    rng = np.random.RandomState(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in sorted(frame["label"].unique()):
        ids = np.sort(frame.index[frame["label"] == label].to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_val = n_test = round(0.1 * len(ids))
        parts["test"].extend(ids[:n_test])
        parts["val"].extend(ids[n_test : n_test + n_val])
        parts["train"].extend(ids[n_test + n_val :])
    # Shuffle within each part (seeded) so batches mix labels; the CSV is sorted by label.
    chosen = {k: frame.loc[np.asarray(v)[rng.permutation(len(v))]] for k, v in parts.items()}
    return Split(**chosen, ood=ood)


def split_checksum(s: Split) -> str:
    """sha256 of the three id lists (sorted, as text): what the tests pin."""
    ids = s.ids()
    text = "\n".join(f"{k}:" + ",".join(map(str, sorted(ids[k]))) for k in ("train", "val", "test"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The out-of-domain test: food-delivery reviews no model reads in any form

OOD_SIZE = 2000  # labelled waimai_10k reviews held out as the out-of-domain test
OOD_SEED = 0


def ood_test(frame: pd.DataFrame | None = None, *, size: int = OOD_SIZE, seed: int = OOD_SEED) -> pd.DataFrame:
    """A fixed, stratified slice of waimai_10k: the out-of-domain test (``text``, ``label``).

    Classifiers fine-tuned on hotel reviews are scored on these food-delivery reviews, which
    :func:`pretraining_corpus` removes from the pretraining text (by normalised text, so a
    duplicate elsewhere in the corpus cannot leak either). Stratified by label with waimai's own
    class balance (one review in three positive, where the hotel data has two in three), drawn
    with the legacy ``RandomState`` stream like :func:`split`; a test pins the sha256 of the ids
    (row numbers in the waimai CSV). The order is shuffled (seeded) so a prefix is a fair sample.
    """
    frame = load_waimai() if frame is None else frame
    if size > len(frame):
        raise ValueError(f"out-of-domain test of {size} reviews asked from {len(frame)}")
    rng = np.random.RandomState(seed)
    chosen: list[int] = []
    for label in sorted(frame["label"].unique()):
        ids = np.sort(frame.index[frame["label"] == label].to_numpy())
        n = round(size * len(ids) / len(frame))
        chosen.extend(ids[rng.permutation(len(ids))[:n]])
    ids = np.asarray(chosen)[rng.permutation(len(chosen))]
    return frame.loc[ids]


def ood_checksum(frame: pd.DataFrame) -> str:
    """sha256 of the out-of-domain test's sorted ids (what the tests pin)."""
    return hashlib.sha256(",".join(map(str, sorted(int(i) for i in frame.index))).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The pretraining corpus


def pretraining_corpus(s: Split | None = None, max_texts: int | None = None, seed: int = 0) -> list[str]:
    """Unlabelled pretraining text: online_shopping without 酒店 + waimai_10k + the hotel *train* split.

    Deduplicated after :func:`normalize` (first occurrence kept, order stable), and any text
    whose normalised form equals a hotel val/test review or an out-of-domain test review
    (:func:`ood_test`) is removed, so no evaluation review can leak into pretraining, even through
    the shopping data's copies of hotel reviews or a duplicate inside waimai_10k.
    ``max_texts`` keeps a seeded random sample of that many texts (the smoke preset).
    """
    s = split() if s is None else s
    shopping = load_shopping()
    waimai = load_waimai()
    sources = [
        shopping.loc[shopping["cat"] != "酒店", "text"].tolist(),
        waimai["text"].tolist(),
        s.train["text"].tolist(),
    ]
    evaluated = pd.concat([s.val["text"], s.test["text"], ood_test(waimai)["text"]])
    held_out = {normalize(t) for t in evaluated}
    seen: set[str] = set()
    corpus: list[str] = []
    for texts in sources:
        for text in texts:
            key = normalize(text)
            if key and key not in seen and key not in held_out:
                seen.add(key)
                corpus.append(text)
    if max_texts is not None and max_texts < len(corpus):
        keep = np.sort(np.random.RandomState(seed).permutation(len(corpus))[:max_texts])
        corpus = [corpus[i] for i in keep]
    return corpus

