import pytest

from nblib.presets import PRESETS, get_preset


def test_presets_exist_and_default_is_small():
    assert set(PRESETS) == {"smoke", "small", "full"}
    assert get_preset().name == "small"


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'tiny'; valid presets: smoke, small, full"):
        get_preset("tiny")


def test_replace_rejects_unknown_fields():
    smoke = get_preset("smoke")
    assert smoke.replace(max_len=32).max_len == 32
    with pytest.raises(ValueError, match=r"unknown preset field\(s\) \['max_length'\]"):
        smoke.replace(max_length=32)


def test_smoke_is_small_and_small_uses_all_data():
    smoke, small = get_preset("smoke"), get_preset("small")
    assert smoke.pretrain_tokens < small.pretrain_tokens and smoke.hidden_size < small.hidden_size
    assert small.max_train_reviews is None and small.max_eval_reviews is None
    assert len(small.seeds) == 3
