"""Public checkpoints: finding (nblib.hub), loading (nblib.hub.checkpoints), tokenizer gaps and the collate
(nblib.hub.hf_tokenizer), and fine-tuning from the command line (nblib.hub.finetune).

Everything runs on the tiny random checkpoints of tests/tiny_checkpoints.py; nothing touches the
network (the hub tests point at an unreachable local port or set HF_HUB_OFFLINE).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_checkpoints import make_tiny_checkpoints, make_tiny_electra

from nblib import hub
from nblib.hub import checkpoints, finetune, hf_tokenizer
from nblib.models.bert import CheckpointMismatchError
from nblib.results import records

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]

GAPPY = ["“WIFI”很好…", "前台MM态度一般——CHECKIN很慢", "ＯＫ，房间３０平米～～", "‘KTV’太吵"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def csvs(tmp_path_factory, hotel_split):
    """Tiny label,review files: 32 train, 16 validation, 16 test reviews."""
    folder = tmp_path_factory.mktemp("csv")
    paths = {}
    for name, frame, n in [("train", hotel_split.train, 32), ("validation", hotel_split.val, 16),
                           ("test", hotel_split.test, 16)]:
        paths[name] = folder / f"{name}.csv"
        pd.DataFrame({"label": frame["label"][:n], "review": frame["text"][:n]}).to_csv(
            paths[name], index=False)
    return paths


def _cli_args(bert_dir, csvs, out, *extra):
    return ["--model_name_or_path", str(bert_dir), "--output_dir", str(out),
            "--train_file", str(csvs["train"]), "--validation_file", str(csvs["validation"]),
            "--test_file", str(csvs["test"]), "--max_seq_length", "64", "--learning_rate", "1e-3",
            "--num_train_epochs", "1", "--per_device_train_batch_size", "8", *extra]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _run_module(args, env_changes, tmp_path, timeout=60):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), **env_changes}
    env.pop("HF_HUB_CACHE", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nblib.hub.finetune", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_writes_metrics_and_record_then_refuses_a_non_empty_output_dir(
        tiny, csvs, tmp_path, runs_tmp, capsys):
    out = tmp_path / "out"
    assert finetune.main(_cli_args(tiny[0], csvs, out, "--seed", "3")) == 0
    metrics = json.loads((out / "all_results.json").read_text())
    for part, n in [("val", 16), ("test", 16)]:
        for key in ("accuracy", "macro_f1", "recall_0", "recall_1"):
            assert 0.0 <= metrics[f"{part}_{key}"] <= 1.0
        assert metrics[f"{part}_samples"] == n
    assert metrics["train_samples"] == 32
    record = records.load_record(out / "result.json")  # validates the record's fields
    assert (record["model"], record["variant"], record["seed"]) == ("bert-base-chinese", "pretrained", 3)
    assert record["train_size"] == 32 and record["checkpoint"] == str(tiny[0])
    assert record["test"]["accuracy"] == metrics["test_accuracy"]
    assert not list(runs_tmp.rglob("result.json")), "no --add_to_comparison: nothing under runs/"

    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    capsys.readouterr()
    assert finetune.main(_cli_args(tiny[0], csvs, out)) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite_output_dir" in err
    assert _snapshot(out) == before, "a refused run must leave the folder untouched"


def test_cli_overwrite_output_dir_and_add_to_comparison(tiny, tmp_path, runs_tmp):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "all_results.json").write_text("{}")
    args = ["--model_name_or_path", str(tiny[0]), "--output_dir", str(out), "--preset", "smoke",
            "--max_seq_length", "32", "--max_train_samples", "48", "--per_device_train_batch_size", "16"]
    assert finetune.main(args) == 1, "non-empty without --overwrite_output_dir"
    assert finetune.main([*args, "--overwrite_output_dir", "--add_to_comparison"]) == 1, \
        "--add_to_comparison refuses a subsample"
    args.remove("--max_train_samples")
    args.remove("48")
    assert finetune.main([*args, "--overwrite_output_dir", "--add_to_comparison"]) == 0
    assert (out / "notes.txt").read_text() == "mine", "files the run did not write are kept"
    assert json.loads((out / "all_results.json").read_text())["train_samples"] == 240
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["best.ckpt"]
    shared = records.record_path("smoke", "bert-base-chinese", "pretrained", 0)
    assert shared.is_relative_to(runs_tmp) and records.load_record(shared)["train_size"] == 240


def test_csv_without_label_review_columns_is_a_clear_error(tiny, csvs, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentiment,text\n1,很好\n0,很差\n", encoding="utf-8")
    out = tmp_path / "out"
    args = _cli_args(tiny[0], {**csvs, "train": bad}, out)
    assert finetune.main(args) == 1
    err = capsys.readouterr().err
    assert "bad.csv" in err and "'label'" in err and "'review'" in err
    assert not out.exists(), "nothing is created before the inputs are checked"
    assert finetune.main(["--model_name_or_path", str(tiny[0]), "--output_dir", str(out),
                          "--train_file", str(csvs["train"])]) == 1
    assert "together" in capsys.readouterr().err


def test_missing_checkpoint_offline_fails_fast_with_download_instructions(tmp_path):
    out = tmp_path / "out"
    proc, seconds = _run_module(["--model_name_or_path", "bert-base-chinese", "--output_dir", str(out)],
                                {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr
    assert "hf download bert-base-chinese --local-dir" in proc.stderr
    assert "git clone https://huggingface.co/bert-base-chinese" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert seconds < 45
    assert not out.exists() and not (tmp_path / "hf_home").exists(), "no half-written cache"


def test_unreachable_hub_fails_fast_with_download_instructions(tmp_path):
    out = tmp_path / "out"
    env = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc, seconds = _run_module(["--model_name_or_path", "someone/some-model", "--output_dir", str(out)],
                                env, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "could not get checkpoint 'someone/some-model'" in proc.stderr
    assert "hf download someone/some-model" in proc.stderr
    assert seconds < 45, "one short request, not minutes of retries"
    assert not out.exists()


def test_a_checkpoint_in_the_hf_cache_is_found_offline(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "models--someone--tiny-bert"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny[0], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_checkpoint("someone/tiny-bert") == snapshot
    (snapshot / "model.safetensors").unlink()  # an incomplete cache entry does not count
    with pytest.raises(hub.CheckpointNotFoundError, match="HF_HUB_OFFLINE is set"):
        hub.resolve_checkpoint("someone/tiny-bert")


def test_local_paths_that_are_not_checkpoints(tmp_path, tiny):
    with pytest.raises(hub.CheckpointNotFoundError, match="no checkpoint folder"):
        hub.resolve_checkpoint(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(hub.CheckpointNotFoundError, match="holds no weights"):
        hub.resolve_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tiny[0] / "model.safetensors").read_bytes())
    with pytest.raises(hub.CheckpointNotFoundError, match="holds no tokenizer"):
        hub.resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="'gpt2'"):
        checkpoints.load_bert(tiny[1])


# ---------------------------------------------------------------------------------------------
# Loading, equivalence, tokenizer gaps, collate


def test_loaded_models_match_transformers(tiny):
    tokenizer, bert = checkpoints.load_bert(tiny[0])
    batch = hf_tokenizer.HFCollate(tokenizer, 32)(["房间很干净,服务也好", "差"])
    real = batch["attention_mask"]
    hf = transformers.BertForPreTraining.from_pretrained(tiny[0]).eval()
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=real.long(),
                 token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        ours = bert.eval().encode(**batch)
    for a, b in zip(ref.hidden_states, ours, strict=True):
        assert (a[real] - b[real]).abs().max() < 1e-5

    gpt_tokenizer, gpt = checkpoints.load_gpt2(tiny[1])
    enc = gpt_tokenizer(["房间很干净,服务也好", "差"], padding=True, return_tensors="pt")
    real = enc["attention_mask"].bool()
    hf_gpt = transformers.GPT2LMHeadModel.from_pretrained(tiny[1]).eval()
    with torch.no_grad():
        # Only ids and mask: HF's GPT-2 would add wte[token_type_ids] (the BertTokenizer's zeros).
        ref = hf_gpt(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        diff = ref[real] - gpt.eval()(enc["input_ids"], real)[real]
    assert diff.abs().max() < 1e-5


def test_normalisation_reduces_unk(tiny):
    tokenizer, _ = checkpoints.load_bert(tiny[0])
    table = hf_tokenizer.normalization_table(tokenizer.get_vocab())
    before = hf_tokenizer.count_unk(GAPPY, tokenizer)
    after = hf_tokenizer.count_unk([t.translate(table) for t in GAPPY], tokenizer)
    assert before.texts_with_unk == len(GAPPY) and before.unk_tokens >= 8
    assert after.unk_tokens == 0
    culprits = dict(before.top)
    assert culprits["“"] == 1 and culprits["WIFI"] == 1 and culprits["…"] == 1
    assert hf_tokenizer.normalize_text("“WIFI”很好…，！") == '"wifi"很好...，！', "CJK punctuation stays"


def test_hf_collate_batches(tiny):
    tokenizer, _ = checkpoints.load_bert(tiny[0])
    collate = hf_tokenizer.HFCollate(tokenizer, max_length=8, table=hf_tokenizer.DEFAULT_TABLE)
    batch = collate(["房间很干净服务也很好早餐不错", "差", "“OK”"])
    assert batch["input_ids"].shape == (3, 8) and batch["attention_mask"].dtype == torch.bool
    assert (batch["token_type_ids"] == 0).all()
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert batch["input_ids"][0, -1] == tokenizer.sep_token_id, "a cut review still ends in [SEP]"
    assert batch["attention_mask"].sum(1).tolist() == [8, 3, 6]
    assert tokenizer.unk_token_id not in batch["input_ids"][2].tolist()
    with pytest.raises(ValueError, match="no room"):
        hf_tokenizer.HFCollate(tokenizer, max_length=2)


def test_cli_fine_tunes_an_electra_discriminator(tiny, csvs, tmp_path, runs_tmp):
    electra_dir = make_tiny_electra(tiny[0], tmp_path / "electra-tiny")
    out = tmp_path / "out-electra"
    assert finetune.main(_cli_args(electra_dir, csvs, out)) == 0
    record = records.load_record(out / "result.json")
    assert record["model"] == "chinese-electra" and record["variant"] == "pretrained"
    _, model, kind = checkpoints.load_encoder(electra_dir)
    assert kind == "electra" and model.config.embedding_size == 16
    # a GPT-2 folder is refused by name
    with pytest.raises(CheckpointMismatchError, match="gpt2"):
        checkpoints.load_encoder(tiny[1])
