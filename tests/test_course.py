"""nblib.course.finetune_variant: one comparison run, from encoder to results record."""

import json

import pytest
import torch
from test_train import synthetic_frames

from nblib import course
from nblib.data import Split
from nblib.data.text import CharTokenizer
from nblib.models.static import StaticEmbedding
from nblib.presets import get_preset
from nblib.results import records
from nblib.training import saved_runs

SMOKE = get_preset("smoke")


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.build(["房间早餐服务位置前台设施好差"], min_count=1)


def test_finetune_variant_trains_records_and_saves_a_loadable_run(tokenizer, runs_tmp):
    split = Split(*synthetic_frames(400))
    collate = saved_runs.TokenCollate(tokenizer, 16)
    torch.manual_seed(0)
    clf, record = course.finetune_variant(
        StaticEmbedding(tokenizer.vocab_size, 16), model="static", variant="random", preset=SMOKE,
        split=split, collate=collate, pooling="mean", seed=0, lr=3e-2, max_epochs=4, note="test")
    assert record["test"]["accuracy"] > 0.8 and record["finetune_lr"] == 3e-2 and record["note"] == "test"
    assert record["trainable_parameters"] == sum(p.numel() for p in clf.parameters())
    path = records.record_path(SMOKE, "static", "random", 0)
    assert records.load_record(path)["test"] == record["test"]
    assert saved_runs.load_classifier(path.parent).predict(["房间好"])[0] == [1]
    # few labels: its own folder; the learning rate defaults to the preset's choice for the model
    _, small = course.finetune_variant(
        StaticEmbedding(tokenizer.vocab_size, 16), model="gpt", variant="pretrained", preset=SMOKE,
        split=split, frame=split.train.iloc[:40], label_count=40, collate=collate, pooling="mean",
        seed=1, max_epochs=1)
    assert small["label_count"] == 40 and small["train_size"] == 40
    assert small["finetune_lr"] == SMOKE.finetune_lr_for("gpt", "pretrained")
    written = json.loads(records.record_path(SMOKE, "gpt", "pretrained", 1, 40).read_text())
    assert written["label_count"] == 40


def test_fit_variant_writes_no_record_and_run_dir_keeps_runs_out_of_the_comparison(tokenizer, runs_tmp, tmp_path):
    split = Split(*synthetic_frames(200))
    collate = saved_runs.TokenCollate(tokenizer, 16)
    torch.manual_seed(0)
    _, _, results = course.fit_variant(
        StaticEmbedding(tokenizer.vocab_size, 16), preset=SMOKE, split=split, collate=collate, pooling="mean",
        seed=0, lr=3e-2, run_dir=tmp_path / "study", max_epochs=1)
    assert {"val", "test", "finetuning"} <= set(results)
    assert not list((tmp_path / "study").rglob("result.json")), "fit_variant writes no record"
    # an experiment's run: its record goes into its own folder, never under runs/<preset>/
    _, record = course.finetune_variant(
        StaticEmbedding(tokenizer.vocab_size, 16), model="static", variant="random", preset=SMOKE,
        split=split, collate=collate, pooling="mean", seed=0, lr=3e-2, max_epochs=1,
        run_dir=tmp_path / "experiment" / "0")
    assert records.load_record(tmp_path / "experiment" / "0" / "result.json")["test"] == record["test"]
    assert not records.record_path(SMOKE, "static", "random", 0).exists()


def _save_report_checkpoint(name: str, preset, **settings) -> None:
    """A stand-in for a pretraining checkpoint of `make report`: what lesson_preset reads is its info."""
    path = records.runs_dir() / preset.name / "pretrain" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"settings": {"pretrain_chars": preset.pretrain_chars, "seed": 0, "max_steps": None, **settings}}
    torch.save({"state_dict": {}, "info": json.dumps(info)}, path)


def test_a_learners_sitting_starts_from_the_reports_checkpoints_only_when_all_are_saved(runs_tmp, capsys):
    small = get_preset("small")
    assert course.lesson_preset("small", full=True, seed=0) == small  # what `make report` runs
    short = course.lesson_preset("small", full=False, seed=0)  # nothing saved: a shorter pretraining
    assert short == small.sitting(0, short_pretraining=True) and short.name == "small-sitting"
    out = capsys.readouterr().out
    assert "500,000 characters" in out and "elmo, bert, electra, gpt" in out and "figures/comparison.md" in out
    for name in course.COURSE_PRETRAININGS[:3]:
        _save_report_checkpoint(name, small)
    _save_report_checkpoint("gpt", small, pretrain_chars=1_000)  # another budget is not the report's
    assert course.lesson_preset("small", full=False, seed=0).name == "small-sitting"
    assert "has not saved gpt under" in capsys.readouterr().out
    _save_report_checkpoint("gpt", small)
    assert course.lesson_preset("small", full=False, seed=0) == small.sitting(0)  # the report's runs, cached
    assert "come from its cache" in capsys.readouterr().out
    assert course.lesson_preset("small", full=False, seed=1).name == "small-sitting"  # pretrained with seed 0
    assert course.lesson_preset("smoke", full=False, seed=0) == get_preset("smoke")  # nothing to leave out
    with pytest.raises(ValueError, match="unknown preset"):
        course.lesson_preset("smal", full=False, seed=0)


def test_label_efficiency_without_label_counts_is_an_empty_typed_table(capsys):
    # a learner's sitting has no label counts; lesson 04 appends its all-label rows to this table and draws them,
    # which failed on an untyped (object) empty frame
    import pandas as pd

    split = Split(*synthetic_frames(40))
    few = course.label_efficiency(lambda **job: None, SMOKE.replace(label_counts=()), split, seed=0, ablations=False)
    assert list(few.columns) == course.LABEL_EFFICIENCY_COLUMNS and len(few) == 0
    assert "no label counts besides all" in capsys.readouterr().out
    curve = pd.concat([few, pd.DataFrame({"labelled reviews": [40], "init": ["random"], "seed": [0],
                                          "test accuracy": [0.8], "test macro-F1": [0.7]})], ignore_index=True)
    assert curve["test accuracy"].dtype == float and curve["labelled reviews"].dtype.kind == "i"
