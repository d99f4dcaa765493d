"""Lesson 08's task corpora as fixed splits: MSRA named entities, OCNLI sentence pairs, CMRC 2018 spans.

Introduced in notebook 08_bert_four_uses (BERT's other three uses: character tagging, sentence
pairs, answer spans). The files come verified from :func:`nblib.data.corpora.fetch` (registered in
:data:`nblib.data.corpora.TASK_CORPORA`, fetched the first time they are read); the readers here parse
them, raise naming the file and line on anything malformed, count what they drop or repair, and cut
seeded splits pinned by :func:`task_split_checksum`.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nblib.data import SPLIT_SEED, clean
from nblib.data.corpora import DataError, fetch

BIO_TYPES = ("PER", "LOC", "ORG")
BIO_TAGS = ("O", *(f"{p}-{t}" for t in BIO_TYPES for p in "BI"))  # O B-PER I-PER B-LOC I-LOC B-ORG I-ORG
NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence of a BIO file: its characters, one tag each, and the file line of its first one."""

    text: str
    tags: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class QAExample:
    """One CMRC 2018 question. ``answers`` holds every reference text (scoring uses only these);
    ``spans`` the (start, text) of those located in ``context`` (training uses only these)."""

    qid: str
    article: str
    context: str
    question: str
    answers: tuple[str, ...]
    spans: tuple[tuple[int, str], ...]
    line: int


@dataclass(frozen=True)
class TaskSplit:
    """A fixed train/val/test split of one task's examples (lists, or frames for OCNLI)."""

    train: Any
    val: Any
    test: Any
    notes: dict  # what the loader dropped or repaired, counted

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "val", "test")}


def read_bio(text: str, what: str) -> list[TaggedSentence]:
    """Parse ``char<TAB>tag`` lines (blank line between sentences) into sentences, notebook 08.

    A line that is not one character, a tab and one of :data:`BIO_TAGS` raises naming ``what``
    and the line. Tags are kept as written (the file has 17 I- tags that follow O; the tagger's
    decoder repairs such sequences, the scorer reads them as seqeval does).
    """
    sentences: list[TaggedSentence] = []
    chars: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate(text.replace("\ufeff", "").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if chars:
                sentences.append(TaggedSentence("".join(chars), tuple(tags), first))
                chars, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or len(parts[0]) != 1 or parts[1] not in BIO_TAGS:
            raise DataError(f"{what} line {number}: expected one character, a tab and a tag in "
                            f"{list(BIO_TAGS)}; got {line[:40]!r}")
        if not chars:
            first = number
        chars.append(parts[0])
        tags.append(parts[1])
    if chars:
        sentences.append(TaggedSentence("".join(chars), tuple(tags), first))
    return sentences


def _task_split_ids(n: int, seed: int, val: float = 0.1, test: float = 0.1) -> dict[str, np.ndarray]:
    """Seeded 80/10/10 (by default) permutation of ``range(n)``: test first, then val, then train."""
    order = np.random.RandomState(seed).permutation(n)
    n_test, n_val = round(test * n), round(val * n)
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def load_msra(seed: int = SPLIT_SEED) -> TaskSplit:
    """MSRA named entities as a fixed 80/10/10 split of its 55,289 sentences (seed 0), notebook 08.

    dh_msra.txt has no official train/test boundary, so ours is a seeded permutation of the
    sentences in file order, pinned by a checksum test (:func:`task_split_checksum`).
    """
    path = fetch("msra")
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("dh_msra.txt")
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{path}: cannot read dh_msra.txt from the zip ({err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"dh_msra.txt is not UTF-8: {err}") from err
    sentences = read_bio(text, "dh_msra.txt")
    ids = _task_split_ids(len(sentences), seed)
    parts = {k: [sentences[i] for i in v] for k, v in ids.items()}
    return TaskSplit(parts["train"], parts["val"], parts["test"], {"sentences": len(sentences)})


def read_ocnli(text: str, what: str) -> tuple[pd.DataFrame, int]:
    """OCNLI JSON lines as a frame (sentence1, sentence2, label id, genre, prem_id, line), notebook 08.

    Rows labelled "-" (no annotator majority: 15 in train, 50 in dev) are dropped and counted;
    a line that is not JSON, lacks a field, has another label or an empty sentence raises naming
    ``what`` and the line.
    """
    rows, dropped = [], 0
    for number, line in enumerate(text.replace("\ufeff", "").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{what} line {number}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{what} line {number}: not a JSON object")
        missing = [k for k in ("sentence1", "sentence2", "label") if k not in row]
        if missing:
            raise DataError(f"{what} line {number}: missing field(s) {missing}")
        if row["label"] == "-":
            dropped += 1
            continue
        if row["label"] not in NLI_LABELS:
            raise DataError(f"{what} line {number}: label {row['label']!r} is not one of {list(NLI_LABELS)} or '-'")
        a, b = clean(row["sentence1"]), clean(row["sentence2"])
        if not a or not b:
            side = "sentence1" if not a else "sentence2"
            raise DataError(f"{what} line {number}: {side} is empty; a pair needs two sentences")
        rows.append({"sentence1": a, "sentence2": b, "label": NLI_LABELS.index(row["label"]),
                     "genre": str(row.get("genre", "")), "prem_id": str(row.get("prem_id", number)),
                     "line": number})
    return pd.DataFrame(rows), dropped


def load_ocnli(seed: int = SPLIT_SEED, val_share: float = 0.1) -> TaskSplit:
    """OCNLI: train.10k without a seeded 10% of its premises (validation), and dev as the test set.

    The public test labels are hidden, so dev is our test. Validation is cut from train by premise
    (``prem_id``): the hypotheses written for one premise stay on one side. Introduced in notebook 08.
    """
    train, dropped_train = read_ocnli(fetch("ocnli_train").read_text(encoding="utf-8"), "ocnli_train.10k.json")
    test, dropped_dev = read_ocnli(fetch("ocnli_dev").read_text(encoding="utf-8"), "ocnli_dev.json")
    premises = np.array(sorted(train["prem_id"].unique()))
    chosen = set(premises[np.random.RandomState(seed).permutation(len(premises))[: round(val_share * len(premises))]])
    is_val = train["prem_id"].isin(chosen)
    notes = {"dropped_no_majority": {"train": dropped_train, "dev": dropped_dev}}
    return TaskSplit(train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True),
                     test, notes)


def read_cmrc(text: str, what: str, counts: dict | None = None) -> list[QAExample]:
    """SQuAD-style CMRC 2018 JSON as questions, notebook 08.

    Every answer text is kept for scoring. For training spans: an ``answer_start`` of -1 (the dev
    set marks answers an annotator wrote that are not in the passage that way: 193 of them) is
    counted and left out of ``spans``; an offset whose text is elsewhere in the passage is moved to
    the nearest occurrence and counted (5 in trial, 7 in dev); an offset whose text is nowhere in
    the passage, a missing field or an empty answer raises naming ``what``, the line and the id.
    """
    counts = {"unlocated": 0, "moved": 0} if counts is None else counts
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} line {err.lineno}: not valid JSON ({err.msg})") from None

    lines: dict[str, int] = {}  # every "id" value -> the file line it is on (for error messages)
    line, last = 1, 0
    for match in re.finditer(r'"id"\s*:\s*"([^"]*)"', text):
        line += text.count("\n", last, match.start())
        last = match.start()
        lines.setdefault(match.group(1), line)

    def line_of(key: str) -> int:
        return lines.get(key, 0)

    examples: list[QAExample] = []
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    qid = qa["id"]
                    texts, spans = [], []
                    for answer in qa["answers"]:
                        answer_text, start = answer["text"], int(answer["answer_start"])
                        if not answer_text.strip():
                            raise DataError(f"{what} line {line_of(qid)}: question {qid} has an empty answer")
                        texts.append(answer_text)
                        if start == -1:
                            counts["unlocated"] += 1
                            continue
                        if context[start : start + len(answer_text)] != answer_text:
                            found = [i for i in range(len(context)) if context.startswith(answer_text, i)]
                            if not found:
                                raise DataError(
                                    f"{what} line {line_of(qid)}: question {qid}: answer {answer_text[:30]!r} "
                                    f"is not at offset {start} and nowhere else in its passage")
                            start = min(found, key=lambda i: abs(i - start))
                            counts["moved"] += 1
                        spans.append((start, answer_text))
                    if not texts:
                        raise DataError(f"{what} line {line_of(qid)}: question {qid} has no answer")
                    examples.append(QAExample(qid, str(article.get("id", "")), context, qa["question"],
                                              tuple(texts), tuple(spans), line_of(qid)))
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{what}: not SQuAD-style CMRC JSON ({type(err).__name__}: {err}); expected "
                        "data[].paragraphs[].{context, qas[].{id, question, answers[].{text, answer_start}}}") from None
    return examples


def load_cmrc(seed: int = SPLIT_SEED, test_share: float = 0.5, val_share: float = 0.1) -> TaskSplit:
    """CMRC 2018 as a fixed split by article, notebook 08.

    Only trial (1,002 questions) and dev (3,219) are public with answers here; the 10k-question
    train set the published models learned from is not used. Test: a seeded half of the dev
    articles; validation: a seeded tenth; train: trial plus the remaining dev articles.
    """
    counts = {"unlocated": 0, "moved": 0}
    trial = read_cmrc(fetch("cmrc_trial").read_text(encoding="utf-8"), "cmrc2018_trial.json", counts)
    dev = read_cmrc(fetch("cmrc_dev").read_text(encoding="utf-8"), "cmrc2018_dev.json", counts)
    articles = sorted({e.article for e in dev})
    ids = _task_split_ids(len(articles), seed, val=val_share, test=test_share)
    side = {articles[i]: k for k, v in ids.items() for i in v}
    parts: dict[str, list[QAExample]] = {"train": list(trial), "val": [], "test": []}
    for example in dev:
        parts[side[example.article]].append(example)
    return TaskSplit(parts["train"], parts["val"], parts["test"], counts)


def task_split_checksum(split_: TaskSplit) -> str:
    """sha256 of a task split's example keys (sentence first lines, OCNLI lines, CMRC ids) per part."""
    def keys(part: Any) -> list[str]:
        if isinstance(part, pd.DataFrame):
            return [str(x) for x in part["line"]]
        return [e.qid if isinstance(e, QAExample) else str(e.line) for e in part]

    text = "\n".join(f"{k}:" + ",".join(keys(getattr(split_, k))) for k in ("train", "val", "test"))
    return hashlib.sha256(text.encode()).hexdigest()
