import dataclasses

import pytest

from nblib.presets import PRESETS, Preset, get_preset


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
    assert smoke.pretrain_chars < small.pretrain_chars and smoke.hidden_size < small.hidden_size
    assert small.max_train_reviews is None and small.max_eval_reviews is None
    assert len(small.seeds) == 3


def test_few_label_epochs_without_a_step_floor_see_about_3000_reviews_within_bounds():
    small = get_preset("small").replace(few_label_min_steps=None)
    assert small.few_label_epochs(100) == 10  # capped: 30 epochs would be needed for 3,000
    assert small.few_label_epochs(300) == 10
    assert small.few_label_epochs(1000) == 3
    assert small.few_label_epochs(6213) == small.finetune_epochs  # never fewer than the preset's


def test_ablation_seeds_default_to_the_main_seeds():
    assert get_preset("small").seeds_for_ablations == (0,)
    full = get_preset("full")
    assert full.ablation_seeds is None and full.seeds_for_ablations == full.seeds
    assert get_preset("smoke").replace(ablation_seeds=(3,)).seeds_for_ablations == (3,)


def test_pretraining_configs_take_the_preset_dropout_and_keep_the_shapes():
    from nblib.models import bert, elmo, gpt

    small = get_preset("small").replace(pretrain_dropout=0.05)
    b = bert.BertConfig.from_preset(small, 100, pretraining=True)
    assert (b.hidden_dropout_prob, b.attention_probs_dropout_prob) == (0.05, 0.05)
    assert bert.BertConfig.from_preset(small, 100).hidden_dropout_prob == 0.1  # fine-tuning
    g = gpt.GPTConfig.from_preset(small, 100, pretraining=True)
    assert (g.resid_pdrop, g.embd_pdrop, g.attn_pdrop) == (0.05, 0.05, 0.05)
    e = elmo.ElmoConfig.from_preset(small, 100, 200, pretraining=True)
    assert e.dropout == 0.05 and elmo.ElmoConfig.from_preset(small, 100, 200).dropout == 0.1
    # a checkpoint pretrained without dropout loads into the fine-tuning model unchanged
    smoke = get_preset("smoke")
    pretrained = gpt.GPT(gpt.GPTConfig.from_preset(smoke, 50, pretraining=True))
    gpt.GPT(gpt.GPTConfig.from_preset(smoke, 50)).load_state_dict(pretrained.state_dict())


def test_fine_tuning_rates_per_model_live_in_the_preset():
    small, smoke = get_preset("small"), get_preset("smoke")
    # lesson 02's grid picked a rate per init for the biLM, lesson 04's one rate for GPT (small only)
    assert small.finetune_lr_for("elmo", "pretrained") == 1e-3
    assert small.finetune_lr_for("elmo", "random-n100") == 1e-2  # the init is the part before "-"
    assert small.finetune_lr_for("gpt", "random") == 5e-4
    assert small.finetune_lr_for("bert", "pretrained") == small.finetune_lr == 2e-4
    assert {smoke.finetune_lr_for(m, v) for m in ("elmo", "gpt") for v in ("pretrained", "random")} == {
        smoke.finetune_lr}
    hash(small)  # still a frozen, hashable preset


def test_replace_refuses_a_value_of_another_kind_and_converts_yaml_lists():
    smoke = get_preset("smoke")
    with pytest.raises(ValueError, match="task_lr.*1.0e-3"):
        smoke.replace(task_lr="1e-3")  # what YAML makes of 1e-3
    with pytest.raises(ValueError, match="finetune_lr"):
        smoke.replace(finetune_lr="fast")
    with pytest.raises(ValueError, match="task_seeds"):
        smoke.replace(task_seeds=0)
    changed = smoke.replace(task_seeds=[0, 1], ablation_seeds=[3], finetune_lr=1, task_lr=1.0e-3)
    assert changed.task_seeds == (0, 1) and isinstance(changed.finetune_lr, float)
    assert changed.ablation_seeds == (3,)  # a tuple | None field: a tuple too, so the preset stays hashable
    hash(changed)
    assert changed.task_lr_for("random") == 1.0e-3
    assert smoke.task_lr_for("random") == smoke.finetune_lr_for("bert", "random")


def test_few_label_min_steps_and_validation_interval():
    small = get_preset("small")
    assert small.few_label_min_steps == 150  # small's choice on validation (experiments/few_label_probe.py)
    # 100 reviews at batch 32 are 4 steps an epoch: 38 epochs for 150 steps, validated every 8th
    # epoch (at most 5 checks), so rounded up to 40 epochs and the last epoch is validated
    assert small.max_val_checks == 5
    assert small.val_every(38) == 8 and small.few_label_epochs(100) == 40
    assert small.few_label_epochs(300) == 15  # 10 steps an epoch: 15 epochs, every 3rd validated
    assert small.few_label_min_epochs == 10  # and at least 10 epochs (1,000 labels: 5 left the twin at majority)
    assert small.few_label_epochs(1000) == 10 and small.val_every(10) == 2
    # the same epochs as with 10 checks (the schedule measured) for the main job's label counts
    ten = small.replace(max_val_checks=10)
    assert [ten.few_label_epochs(n) for n in small.label_counts] == [small.few_label_epochs(n) for n in small.label_counts]
    assert small.val_every(small.finetune_epochs) == 1  # all-label runs still validate every epoch
    assert small.replace(few_label_min_epochs=None).few_label_epochs(1000) == 5  # 150 steps alone
    # a label-efficiency run on all 6,213 reviews would also take 10 epochs (the main run takes the preset's 2)
    assert small.few_label_epochs(6213) == 10
    assert small.replace(few_label_min_epochs=None).few_label_epochs(6213) == small.finetune_epochs


def test_ablation_label_counts_join_only_with_ablations():
    small = get_preset("small")
    assert small.label_counts_to_run(False) == (100, 1000)  # the main job (`make report`)
    assert small.label_counts_to_run(True) == (100, 300, 1000)  # `make ablations`, a learner's ABLATIONS = True
    full = get_preset("full")
    assert full.label_counts_to_run(False) == full.label_counts_to_run(True) == (100, 300, 1000)
    both = small.replace(ablation_label_counts=[1000, 50])
    assert both.label_counts_to_run(True) == (50, 100, 1000)  # sorted, no count twice


def test_a_sitting_changes_only_grid_fields_unless_its_pretraining_is_short():
    small = get_preset("small")
    sitting = small.sitting(1)
    assert sitting.seeds == sitting.seeds_for_ablations == sitting.task_seeds == sitting.qa_seeds == (1,)
    assert sitting.name == "small" and sitting.label_counts == small.label_counts
    assert sitting.ablation_label_counts == () and sitting.pretrain_chars == small.pretrain_chars
    grid = {f.name for f in dataclasses.fields(Preset) if f.metadata.get("grid")}
    changed = {f.name for f in dataclasses.fields(Preset) if getattr(small, f.name) != getattr(sitting, f.name)}
    assert changed and changed <= grid  # every run it makes is one of the report's (the run cache's key)
    short = small.sitting(0, short_pretraining=True)
    assert short.name == "small-sitting" and short.seeds == (0,)
    assert short.pretrain_chars == small.sitting_pretrain_chars < small.pretrain_chars
    assert short.label_counts == small.sitting_label_counts
    smoke = get_preset("smoke")  # no shorter budget: the same runs, under the same name
    assert smoke.sitting(0, short_pretraining=True) == smoke.sitting(0)
    assert smoke.sitting(0) == smoke  # one seed already, no ablation counts: nothing to cut
    assert smoke.sitting(1).seeds_for_ablations == (1,)  # ablation_seeds None follows the seeds
