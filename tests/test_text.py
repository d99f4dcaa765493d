import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nblib.data.text import SPECIAL_TOKENS, CharTokenizer, WordTokenizer, pad_batch, truncate

ids_lists = st.lists(st.integers(0, 10_000), max_size=300)
strategies = st.sampled_from(["head", "tail", "head+tail"])


@given(ids_lists, st.integers(0, 200), strategies, st.floats(0.0, 1.0))
def test_truncate_bounds_length_and_keeps_order(ids, max_len, strategy, frac):
    out = truncate(ids, max_len, strategy, head_fraction=frac)
    assert len(out) == min(len(ids), max_len)
    # order kept: `out` is a subsequence of `ids`
    it = iter(ids)
    assert all(any(x == y for y in it) for x in out)


@given(ids_lists, st.integers(0, 200), st.floats(0.0, 1.0))
def test_head_plus_tail_is_prefix_plus_suffix(ids, max_len, frac):
    out = truncate(ids, max_len, "head+tail", head_fraction=frac)
    if len(ids) <= max_len:
        assert out == ids
        return
    n_head = round(max_len * frac)
    assert out[:n_head] == ids[:n_head]
    assert out[n_head:] == ids[len(ids) - (max_len - n_head):]


def test_truncate_defaults_follow_sun_et_al():
    ids = list(range(1000))
    out = truncate(ids, 510, "head+tail")
    assert out[:128] == ids[:128] and out[128:] == ids[-382:]
    assert truncate(ids, 5, "head") == [0, 1, 2, 3, 4] and truncate(ids, 2, "tail") == [998, 999]


def test_truncate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown truncation strategy"):
        truncate([1, 2, 3], 2, "middle")
    with pytest.raises(ValueError, match="max_len"):
        truncate([1], -1)


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.build(["房间很干净", "房间很大", "早餐一般", "干净"], min_count=2)


def test_char_tokenizer_specials_and_min_count(tok):
    assert tok.id_to_token[:5] == SPECIAL_TOKENS
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert "房" in tok.token_to_id and "早" not in tok.token_to_id  # 早 seen once < min_count
    assert tok.id_to_token[5] in {"房", "间", "很", "干", "净"}  # most frequent first


def test_encode_decode_roundtrip_and_unknown(tok):
    ids = tok.encode("房间很干净")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "房间很干净"
    assert tok.encode("房早", add_special=False) == [tok.token_to_id["房"], tok.unk_id]
    assert len(tok.encode("房间很干净" * 10, max_len=8)) == 8


def test_batch_encode_pads_right_with_mask(tok):
    batch = tok.batch_encode(["房间", "房间很干净"], max_len=6)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].sum(1).tolist() == [4, 6]
    assert (batch["input_ids"][~batch["attention_mask"]] == tok.pad_id).all()
    with pytest.raises(ValueError):
        pad_batch([])


def test_save_load(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.id_to_token == tok.id_to_token
    (tmp_path / "w.json").write_text('{"kind": "word", "tokens": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a CharTokenizer file"):
        CharTokenizer.load(tmp_path / "w.json")


def test_word_tokenizer():
    wt = WordTokenizer.build(["房间很干净，早餐一般", "房间很大，早餐很好"], min_count=2)
    assert wt.id_to_word[:4] == ["[PAD]", "[UNK]", "<S>", "</S>"]
    words = wt.tokenize("房间很干净")
    assert "房间" in words
    assert wt.encode(["房间", "没见过的词"]) == [wt.token_to_id["房间"], wt.unk_id]
