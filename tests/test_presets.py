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


def test_few_label_epochs_see_about_3000_reviews_within_bounds():
    small = get_preset("small")
    assert small.few_label_epochs(100) == 10  # capped: 30 epochs would be needed for 3,000
    assert small.few_label_epochs(300) == 10
    assert small.few_label_epochs(1000) == 3
    assert small.few_label_epochs(6213) == small.finetune_epochs  # never fewer than the preset's


def test_ablation_seeds_default_to_the_main_seeds():
    assert get_preset("small").seeds_for_ablations == (0,)
    full = get_preset("full")
    assert full.ablation_seeds is None and full.seeds_for_ablations == full.seeds
    assert get_preset("smoke").replace(ablation_seeds=(3,)).seeds_for_ablations == (3,)
