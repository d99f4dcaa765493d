"""Lesson 08's task corpora (MSRA NER, OCNLI, CMRC 2018): fetching, parsing, bad input, fixed splits.

The corpora are fetched on first use (from NBLIB_DATA_MIRROR offline), not by `fetch-all`.
"""

import json

import pytest

from nblib.data import corpora, task_data


@pytest.fixture(scope="module")
def msra():
    return task_data.load_msra()


@pytest.fixture(scope="module")
def ocnli():
    return task_data.load_ocnli()


@pytest.fixture(scope="module")
def cmrc():
    return task_data.load_cmrc()


def test_task_corpora_are_not_fetched_by_fetch_all():
    assert set(corpora.TASK_CORPORA).isdisjoint(corpora.CORPORA)
    assert {c.file_name for c in corpora.TASK_CORPORA.values()} == {
        "dh_msra.zip", "ocnli_train.10k.json", "ocnli_dev.json", "cmrc2018_trial.json", "cmrc2018_dev.json"}


def test_task_corpus_with_wrong_bytes_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ocnli_dev.json").write_text('{"sentence1": "a"}\n', encoding="utf-8")
    monkeypatch.setenv("NBLIB_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("NBLIB_DATA_DIR", str(tmp_path / "raw"))
    with pytest.raises(corpora.DataError, match="checksum mismatch for ocnli_dev.json"):
        corpora.fetch("ocnli_dev", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def test_msra_split_is_pinned(msra):
    assert msra.sizes() == {"train": 44231, "val": 5529, "test": 5529}
    assert task_data.task_split_checksum(msra) == "1386a49f4e61f7ad2f94669aac4c93db3df264e1809d24aea9267670704ff9ff"
    s = msra.train[0]
    assert len(s.text) == len(s.tags) and set(s.tags) <= set(task_data.BIO_TAGS)
    lines = {x.line for part in (msra.train, msra.val, msra.test) for x in part}
    assert len(lines) == 55289  # disjoint parts, every sentence once


def test_ocnli_split_is_pinned_and_drops_no_majority_rows(ocnli):
    assert ocnli.sizes() == {"train": 9008, "val": 977, "test": 2950}
    assert ocnli.notes["dropped_no_majority"] == {"train": 15, "dev": 50}
    assert task_data.task_split_checksum(ocnli) == "d0324f88acb3113f0cff5f39fd7c6e486dc1c458620a0e845f1f4aa614877db7"
    assert set(ocnli.train["prem_id"]).isdisjoint(ocnli.val["prem_id"])  # a premise stays on one side
    assert set(ocnli.test["label"]) == {0, 1, 2}


def test_cmrc_split_is_pinned_by_article(cmrc):
    assert cmrc.sizes() == {"train": 2288, "val": 323, "test": 1610}
    assert cmrc.notes == {"unlocated": 193, "moved": 12}
    assert task_data.task_split_checksum(cmrc) == "c31e3d6e1731a5517068135b16af2e4776016b56ab1f3f82b9547770c9274d4c"
    articles = {k: {e.article for e in getattr(cmrc, k)} for k in ("train", "val", "test")}
    assert articles["val"].isdisjoint(articles["test"]) and articles["train"].isdisjoint(articles["test"])
    for part in (cmrc.train, cmrc.val, cmrc.test):
        for e in part:
            assert e.spans, e.qid  # every question has a located answer to train on
            for start, text in e.spans:
                assert e.context[start : start + len(text)] == text


def test_bio_malformed_line_names_the_line():
    good = "我\tO\n爱\tO\n\n北\tB-LOC\n京\tI-LOC\n"
    sentences = task_data.read_bio(good, "x.txt")
    assert [(s.text, s.tags, s.line) for s in sentences] == [
        ("我爱", ("O", "O"), 1), ("北京", ("B-LOC", "I-LOC"), 4)]
    for bad, line in [("我\tO\n爱 O\n", 2), ("我\tO\n\n北京\tB-LOC\n", 3), ("我\tB-XYZ\n", 1)]:
        with pytest.raises(corpora.DataError, match=rf"x.txt line {line}:"):
            task_data.read_bio(bad, "x.txt")


def _nli(s1, s2, label):
    return json.dumps({"sentence1": s1, "sentence2": s2, "label": label, "prem_id": "p"}, ensure_ascii=False)


def test_ocnli_bad_lines_name_file_and_line():
    good = "\n".join([_nli("他来了", "有人来了", "entailment"), _nli("甲", "乙", "-")])
    frame, dropped = task_data.read_ocnli(good, "o.json")
    assert len(frame) == 1 and dropped == 1 and frame["label"].tolist() == [0]
    cases = {
        "not a JSON object": _nli("a", "b", "neutral") + "\n{broken",
        "sentence2 is empty": _nli("a", "b", "neutral") + "\n" + _nli("a", "  ", "neutral"),
        "is not one of": _nli("a", "b", "neutral") + "\n" + _nli("a", "b", "maybe"),
        r"missing field\(s\) \['label'\]": _nli("a", "b", "neutral") + '\n{"sentence1": "a", "sentence2": "b"}',
    }
    for message, text in cases.items():
        with pytest.raises(corpora.DataError, match=rf"o.json line 2: .*{message}|o.json line 2: {message}"):
            task_data.read_ocnli(text, "o.json")


def _squad(answers, context="北京是中国的首都。北京很大。"):
    doc = {"version": "v1.0", "data": [{"id": "A1", "title": "t", "paragraphs": [
        {"id": "A1_P", "context": context, "qas": [
            {"question": "首都是哪里？", "id": "Q1", "answers": answers}]}]}]}
    return json.dumps(doc, ensure_ascii=False, indent=2)


def test_cmrc_offsets_checked_moved_or_refused():
    counts = {"unlocated": 0, "moved": 0}
    ok = task_data.read_cmrc(_squad([{"text": "北京", "answer_start": 0}]), "c.json", counts)
    assert ok[0].spans == ((0, "北京"),) and ok[0].answers == ("北京",)
    moved = task_data.read_cmrc(_squad([{"text": "北京", "answer_start": 8}]), "c.json", counts)
    assert moved[0].spans == ((9, "北京"),) and counts["moved"] == 1  # the nearest occurrence
    unlocated = task_data.read_cmrc(_squad([{"text": "北京", "answer_start": 0}, {"text": "首都北京", "answer_start": -1}]),
                               "c.json", counts)
    assert unlocated[0].answers == ("北京", "首都北京") and len(unlocated[0].spans) == 1
    assert counts["unlocated"] == 1
    text = _squad([{"text": "上海", "answer_start": 0}])
    line = next(i for i, x in enumerate(text.split("\n"), 1) if '"Q1"' in x)
    with pytest.raises(corpora.DataError, match=rf"c.json line {line}: question Q1: answer '上海' is not at offset 0"):
        task_data.read_cmrc(text, "c.json")
    with pytest.raises(corpora.DataError, match="c.json line 3: not valid JSON"):
        task_data.read_cmrc('{\n  "data": [\n  ,]}', "c.json")
    with pytest.raises(corpora.DataError, match="c.json: not SQuAD-style"):
        task_data.read_cmrc('{"data": [{"paragraphs": [{"qas": []}]}]}', "c.json")


def test_fetch_tasks_cli(capsys):
    assert corpora.main(["fetch-tasks"]) == 0
    assert "cmrc_dev" in capsys.readouterr().out
