import dataclasses
import hashlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from nblib import data
from nblib.data import corpora

REAL = corpora.CORPORA["hotel"]


@pytest.fixture()
def empty_data_dir(tmp_path, monkeypatch):
    target = tmp_path / "raw"
    monkeypatch.setenv("NBLIB_DATA_DIR", str(target))
    return target


def make_mirror(tmp_path, content: bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / REAL.file_name).write_bytes(content)
    return mirror


def test_fetch_from_mirror_verifies_and_places_file(tmp_path, empty_data_dir, monkeypatch):
    good = (corpora.REPO_ROOT / "data" / "raw" / REAL.file_name).read_bytes()
    monkeypatch.setenv("NBLIB_DATA_MIRROR", str(make_mirror(tmp_path, good)))
    path = corpora.fetch("hotel", progress=False)
    assert path == empty_data_dir / REAL.file_name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REAL.sha256
    assert [p.name for p in empty_data_dir.iterdir()] == [REAL.file_name]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_bad_mirror_file_raises_with_instructions_and_leaves_nothing(tmp_path, empty_data_dir, monkeypatch, damage):
    good = (corpora.REPO_ROOT / "data" / "raw" / REAL.file_name).read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else good.replace("酒店".encode(), "旅馆".encode(), 1)
    monkeypatch.setenv("NBLIB_DATA_MIRROR", str(make_mirror(tmp_path, bad)))
    with pytest.raises(corpora.DataError) as err:
        corpora.fetch("hotel", progress=False)
    message = str(err.value)
    assert "checksum mismatch" in message and REAL.sha256 in message and REAL.url in message
    assert not empty_data_dir.exists() or list(empty_data_dir.iterdir()) == []


def test_no_network_raises_with_instructions_and_leaves_nothing(empty_data_dir, monkeypatch):
    monkeypatch.delenv("NBLIB_DATA_MIRROR", raising=False)
    # A closed local port: the download fails at once, as it does without a network.
    dead = dataclasses.replace(REAL, url="http://127.0.0.1:9/ChnSentiCorp_htl_all.csv")
    monkeypatch.setitem(corpora.CORPORA, "hotel", dead)
    with pytest.raises(corpora.DataError) as err:
        corpora.fetch("hotel", progress=False)
    assert "could not download" in str(err.value) and "NBLIB_DATA_MIRROR" in str(err.value)
    assert list(empty_data_dir.iterdir()) == []


def test_mirror_without_the_file_says_so(tmp_path, empty_data_dir, monkeypatch):
    (tmp_path / "empty_mirror").mkdir()
    monkeypatch.setenv("NBLIB_DATA_MIRROR", str(tmp_path / "empty_mirror"))
    with pytest.raises(corpora.DataError, match="has no ChnSentiCorp_htl_all.csv"):
        corpora.fetch("hotel", progress=False)
    assert list(empty_data_dir.iterdir()) == []


def test_corrupt_file_in_place_is_not_trusted(empty_data_dir):
    empty_data_dir.mkdir(parents=True)
    (empty_data_dir / REAL.file_name).write_text("label,review\n1,好\n", encoding="utf-8")
    with pytest.raises(corpora.DataError, match="corrupt or a different version"):
        corpora.fetch("hotel", progress=False)


def test_unknown_corpus():
    with pytest.raises(KeyError, match="known: hotel, waimai, shopping"):
        corpora.fetch("imdb")


def test_load_hotel_is_clean(hotel):
    assert len(hotel) == 7765  # 7,766 rows, one empty review dropped
    assert list(hotel.columns) == ["text", "label"]
    assert set(hotel["label"]) == {0, 1}
    assert hotel["label"].sum() == 5322
    assert not hotel["text"].str.contains("\ufeff").any()
    assert (hotel["text"] == hotel["text"].str.strip()).all() and (hotel["text"] != "").all()


def test_load_hotel_reports_the_empty_review(capsys):
    data.load_hotel(verbose=True)
    assert "dropped 1 empty review" in capsys.readouterr().out


def test_csv_without_expected_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentiment,text\n1,很好\n", encoding="utf-8")
    with pytest.raises(corpora.DataError, match=r"lacks column\(s\) \['label', 'review'\]"):
        data.read_labelled_csv(path)


def test_csv_with_bad_labels_and_bom_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes("\ufefflabel,review\n1,很好\n2,一般\n".encode())
    with pytest.raises(corpora.DataError, match="label must be 0 or 1"):
        data.read_labelled_csv(path)
    path.write_bytes("\ufefflabel,review\n1,\ufeff 很好 \n0,   \n".encode())
    frame, n_empty = data.read_labelled_csv(path)
    assert frame["text"].tolist() == ["很好"] and n_empty == 1


# The split is fixed forever: if this checksum changes, every number in the course changes.
SPLIT_SHA256 = "4bde7b758df71d1b1339c8d03e210a77bfbf9bb903db475bd9abfae5d12cff99"


def test_split_is_pinned(hotel_split):
    assert data.split_checksum(hotel_split) == SPLIT_SHA256


def test_split_is_stratified_and_disjoint(hotel, hotel_split):
    parts = [hotel_split.train, hotel_split.val, hotel_split.test]
    assert [len(p) for p in parts] == [6213, 776, 776]
    ids = [set(p.index) for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(hotel.index)
    for p in parts:
        assert abs(p["label"].mean() - hotel["label"].mean()) < 0.005
    # Independent of row order: a shuffled frame gives the same split.
    again = data.split(hotel.sample(frac=1.0, random_state=1))
    assert data.split_checksum(again) == SPLIT_SHA256


def test_pretraining_corpus_holds_no_val_or_test_text(hotel_split):
    corpus = data.pretraining_corpus(hotel_split)
    keys = [data.normalize(t) for t in corpus]
    assert len(keys) == len(set(keys)), "not deduplicated"
    held_out = {data.normalize(t) for t in pd.concat([hotel_split.val["text"], hotel_split.test["text"]])}
    assert not held_out & set(keys)
    assert 60_000 < len(corpus) < 80_000
    # The hotel train split is in; the shopping data's 酒店 category (not in train) is out.
    train_keys = {data.normalize(t) for t in hotel_split.train["text"]}
    assert train_keys <= set(keys)
    shopping = data.load_shopping()
    hotel_cat = {data.normalize(t) for t in shopping.loc[shopping["cat"] == "酒店", "text"]}
    others = {data.normalize(t) for t in shopping.loc[shopping["cat"] != "酒店", "text"]}
    waimai = {data.normalize(t) for t in data.load_waimai()["text"]}
    assert not (hotel_cat - train_keys - others - waimai) & set(keys)


def test_pretraining_corpus_sample_is_seeded(hotel_split):
    a = data.pretraining_corpus(hotel_split, max_texts=100, seed=0)
    assert a == data.pretraining_corpus(hotel_split, max_texts=100, seed=0) and len(a) == 100
    assert a != data.pretraining_corpus(hotel_split, max_texts=100, seed=1)


def test_fetch_all_cli(capsys):
    assert corpora.main(["fetch-all"]) == 0
    assert corpora.main(["nonsense"]) == 2


def test_python_m_nblib_data_is_the_fetch_command():
    """The Makefile and the README call `python -m nblib.data fetch-all`: it must reach corpora.main."""
    proc = subprocess.run([sys.executable, "-m", "nblib.data", "nonsense"], capture_output=True, text=True,
                          timeout=120, cwd=corpora.REPO_ROOT)
    assert proc.returncode == 2 and "usage: python -m nblib.data fetch-all|fetch-tasks" in proc.stderr


def test_mirror_copy_is_byte_exact(tmp_path, empty_data_dir, monkeypatch):
    mirror = tmp_path / "m"
    shutil.copytree(corpora.REPO_ROOT / "data" / "raw", mirror)
    monkeypatch.setenv("NBLIB_DATA_MIRROR", str(mirror))
    for name in corpora.CORPORA:
        assert corpora.sha256_of(corpora.fetch(name, progress=False)) == corpora.CORPORA[name].sha256


# The out-of-domain test is fixed like the split.
OOD_SHA256 = "ff327f94dbf3387ac2ce861538cfcbe95a979c7b0cd0ebfb162b558afe643958"


def test_ood_test_is_pinned_and_stratified():
    waimai = data.load_waimai()
    ood = data.ood_test(waimai)
    assert data.ood_checksum(ood) == OOD_SHA256
    assert len(ood) == data.OOD_SIZE and ood.index.is_unique
    assert abs(ood["label"].mean() - waimai["label"].mean()) < 0.001
    # independent of row order
    assert data.ood_checksum(data.ood_test(waimai.sample(frac=1.0, random_state=3))) == OOD_SHA256
    with pytest.raises(ValueError, match="asked from"):
        data.ood_test(waimai.iloc[:10])


def test_pretraining_corpus_holds_no_out_of_domain_text(hotel_split):
    corpus = {data.normalize(t) for t in data.pretraining_corpus(hotel_split)}
    ood = {data.normalize(t) for t in data.ood_test()["text"]}
    assert len(ood) > 1900 and not ood & corpus
    # the rest of waimai_10k is still pretraining text
    waimai = {data.normalize(t) for t in data.load_waimai()["text"]}
    assert len((waimai - ood) & corpus) > 9000
