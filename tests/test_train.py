import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nblib.data import datamodules
from nblib.data.text import CharTokenizer
from nblib.models.static import StaticEmbedding
from nblib.presets import get_preset
from nblib.results import records
from nblib.training import classifier, finetuning, pretraining, runcache

SMOKE = get_preset("smoke")


def test_scalar_mix_starts_as_an_even_average():
    layers = [torch.full((2, 3, 4), float(i)) for i in range(3)]
    mix = classifier.ScalarMix(3)
    torch.testing.assert_close(mix(layers), torch.full((2, 3, 4), 1.0))
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))
        mix.gamma.fill_(2.0)
    torch.testing.assert_close(mix(layers), torch.full((2, 3, 4), 4.0))
    with pytest.raises(ValueError, match="built for 3 layers"):
        mix(layers[:2])


def test_pooling_helpers_read_real_tokens_only():
    h = torch.arange(24.0).reshape(2, 4, 3)
    right = torch.tensor([[True, True, True, False], [True, True, False, False]])
    left = torch.tensor([[False, True, True, True], [False, False, True, True]])
    torch.testing.assert_close(classifier.last_real_token(h, right), torch.stack([h[0, 2], h[1, 1]]))
    torch.testing.assert_close(classifier.last_real_token(h, left), torch.stack([h[0, 3], h[1, 3]]))
    torch.testing.assert_close(classifier.masked_mean(h, right)[1], h[1, :2].mean(0))


def synthetic_frames(n: int, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Reviews whose label is in one character: 好 positive, 差 negative, padded with filler."""
    g = torch.Generator().manual_seed(seed)
    filler = "房间早餐服务位置前台设施"
    rows = []
    for _ in range(n):
        label = int(torch.randint(0, 2, (1,), generator=g))
        chars = [filler[int(i)] for i in torch.randint(0, len(filler), (8,), generator=g)]
        chars.insert(int(torch.randint(0, 8, (1,), generator=g)), "好" if label else "差")
        rows.append({"text": "".join(chars), "label": label})
    frame = pd.DataFrame(rows)
    return frame.iloc[: n // 2], frame.iloc[n // 2 : 3 * n // 4], frame.iloc[3 * n // 4 :]


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.build(["房间早餐服务位置前台设施好差"], min_count=1)


def test_classifier_learns_a_learnable_task_and_records_it(tokenizer, runs_tmp):
    tr, va, te = synthetic_frames(400)

    def collate(texts):
        return tokenizer.batch_encode(texts, 16)

    dm = datamodules.ClassificationDataModule(tr, va, te, collate, batch_size=16)
    encoder = StaticEmbedding(tokenizer.vocab_size, 16)
    model = classifier.SentimentClassifier(encoder, "mean", lr=3e-2)
    trainer, results = finetuning.fit_classifier(model, dm, collate, SMOKE, runs_tmp / "synthetic", max_epochs=4)
    assert results["test"]["accuracy"] > 0.9, results["test"]
    assert set(results["test"]["recall"]) == {"0", "1"}
    assert results["inference_reviews_per_s"] > 0 and results["finetuning"]["best_checkpoint"]
    assert len(results["predictions"]["pred"]) == len(te)
    record = records.make_record(model="static", variant="baseline", preset=SMOKE, seed=0,
                               train_size=len(tr), parameters=classifier.count_parameters(encoder), results=results)
    path = records.write_record(record, trainer=trainer)
    assert path == runs_tmp / "smoke" / "static-baseline" / "0" / "result.json"
    loaded = records.load_record(path)
    assert loaded["test"]["accuracy"] == results["test"]["accuracy"]
    assert loaded["versions"]["torch"] == torch.__version__


def test_classifier_rejects_bad_configuration(tokenizer):
    encoder = StaticEmbedding(tokenizer.vocab_size, 8)
    with pytest.raises(ValueError, match="unknown pooling"):
        classifier.SentimentClassifier(encoder, "max")
    with pytest.raises(ValueError, match="lm_loss"):
        classifier.SentimentClassifier(encoder, "mean", lm_loss_weight=0.5)
    with pytest.raises(ValueError, match="num_layers"):
        classifier.SentimentClassifier(encoder, "mix")


def test_datamodule_validates_frames():
    with pytest.raises(ValueError, match="needs columns 'text' and 'label'"):
        datamodules.ClassificationDataModule(pd.DataFrame({"review": ["x"]}), None, None, lambda t: {})


def test_length_grouped_batches_cover_every_review_once_and_pad_less():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 130, (1000,), generator=g).tolist()
    torch.manual_seed(1)
    order = list(datamodules.LengthGroupedSampler(lengths, batch_size=32, group_batches=10))
    assert sorted(order) == list(range(1000))
    torch.manual_seed(1)
    assert list(datamodules.LengthGroupedSampler(lengths, 32, 10)) == order  # seed_everything fixes it
    assert list(datamodules.LengthGroupedSampler(lengths, 32, 10)) != order  # and each epoch differs
    batches = [order[i : i + 32] for i in range(0, 1000, 32)]
    assert all(len(b) == 32 for b in batches[:-1])  # the DataLoader cuts the sampler's batches
    grouped_width = sum(max(lengths[i] for i in b) for b in batches) / len(batches)
    random_width = sum(max(lengths[i : i + 32]) for i in range(0, 1000, 32)) / len(batches)
    assert grouped_width < 0.8 * random_width, (grouped_width, random_width)


def test_predict_answers_in_input_order(tokenizer):
    texts = ["好", "差差差差差差", "房间好好好", "差", "前台服务差差"]

    def collate(batch):
        return tokenizer.batch_encode(batch, 16)

    torch.manual_seed(0)
    model = classifier.SentimentClassifier(StaticEmbedding(tokenizer.vocab_size, 8), "mean")
    labels, probs, _ = classifier.predict(model, texts, collate, batch_size=2)
    one_by_one = [classifier.predict(model, [t], collate)[1][0] for t in texts]
    assert probs == pytest.approx(one_by_one, abs=1e-6)
    assert labels == [int(p > 0.5) for p in one_by_one]


def test_records_with_problems_name_the_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"model": "bert"}), encoding="utf-8")
    with pytest.raises(records.RecordError, match=rf"{path}: missing field 'variant'"):
        records.load_record(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(records.RecordError, match="not valid JSON"):
        records.load_record(path)
    with pytest.raises(records.RecordError, match="no such results record"):
        records.load_record(tmp_path / "missing.json")


class ToyLM(nn.Module):
    """A bigram language model with the pretraining protocol, for the pretrain() tests."""

    def __init__(self, vocab: int = 20):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.out = nn.Linear(16, vocab)

    def pretraining_step(self, batch):
        ids = batch["input_ids"]
        logits = self.out(self.emb(ids[:, :-1]))
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        return {"loss": loss}


def toy_datamodule():
    texts = [[i % 20, (i + 1) % 20, (i + 2) % 20, (i + 3) % 20] for i in range(200)]

    def collate(items):
        ids = torch.tensor(items)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}

    return datamodules.LanguageModelDataModule(texts, texts[:32], collate, batch_size=16)


def test_pretrain_learns_caches_and_refuses_a_mismatched_checkpoint(runs_tmp):
    preset = SMOKE.replace(pretrain_chars=16 * 4 * 60, pretrain_seq_len=4, pretrain_batch_size=16,
                           pretrain_lr=3e-2)
    model = ToyLM()
    info = pretraining.pretrain(model, toy_datamodule(), preset, pretraining.PretrainingRun("toy"))
    assert info["steps"] == 60 and info["tokens"] == 60 * 16 * 4 and not info["cached"]
    assert info["history"][-1]["loss"] < 0.5 * info["history"][0]["loss"]
    assert info["val"]["loss"] < 1.0
    again = ToyLM()
    cached = pretraining.pretrain(again, toy_datamodule(), preset, pretraining.PretrainingRun("toy"))
    assert cached["cached"] and cached["steps"] == 60
    torch.testing.assert_close(again.out.weight, model.out.weight)
    grown = ToyLM()
    grown.extra = nn.Linear(2, 2)  # the same class and settings (the same cache key), other weights
    with pytest.raises(RuntimeError, match=r"missing keys .*extra\.weight"):
        pretraining.pretrain(grown, toy_datamodule(), preset, pretraining.PretrainingRun("toy"))
    # a model of another class is another cache key (the checkpoint names its model): it retrains
    assert not pretraining.pretrain(ToyLMAgain(), toy_datamodule(), preset, pretraining.PretrainingRun("toy"))["cached"]
    # another budget must not reuse the checkpoint: it retrains, and the new one is cached
    longer = preset.replace(pretrain_chars=16 * 4 * 80)
    retrained = pretraining.pretrain(ToyLM(), toy_datamodule(), longer, pretraining.PretrainingRun("toy"))
    assert not retrained["cached"] and retrained["steps"] == 80
    assert pretraining.pretrain(ToyLM(), toy_datamodule(), longer, pretraining.PretrainingRun("toy"))["cached"]
    # nor another pretraining dropout (same shapes, other weights)
    dropped = pretraining.pretrain(ToyLM(), toy_datamodule(), longer.replace(pretrain_dropout=0.1), pretraining.PretrainingRun("toy"))
    assert not dropped["cached"] and dropped["settings"]["pretrain_dropout"] == 0.1


@dataclasses.dataclass
class ToyConfig:
    widths: tuple[int, ...] = (1, 2)  # a tuple, as ELMo's filters: JSON gives it back as a list


class ToyLMWithConfig(ToyLM):
    """ToyLM with a config dataclass, which the checkpoint describes (saved_runs.model_spec)."""

    def __init__(self):
        super().__init__()
        self.config = ToyConfig()


def test_a_fresh_pretraining_and_its_cached_reload_give_runs_the_same_key(runs_tmp):
    """A run made from a fresh pretraining is found again by a rerun that loads the checkpoint: the info
    pretrain() returns is the same value either way (ELMo's tuple config once made lesson 02 refit all)."""
    preset = SMOKE.replace(pretrain_chars=16 * 4 * 20, pretrain_seq_len=4, pretrain_batch_size=16)
    fresh = pretraining.pretrain(ToyLMWithConfig(), toy_datamodule(), preset, pretraining.PretrainingRun("toy"))
    cached = pretraining.pretrain(ToyLMWithConfig(), toy_datamodule(), preset, pretraining.PretrainingRun("toy"))
    assert not fresh["cached"] and cached["cached"]
    assert fresh["model"]["config"]["widths"] == [1, 2]

    def job(info):
        return info["steps"]

    assert runcache.job_key(job, {"info": fresh}, threads=1) == runcache.job_key(job, {"info": cached}, threads=1)


class SlowToyLM(ToyLM):
    """ToyLM whose every step takes at least 20 ms: a budget of 300 steps needs 6 s or more."""

    def pretraining_step(self, batch):
        time.sleep(0.02)
        return super().pretraining_step(batch)


def test_time_cap_stops_pretraining_within_the_time(runs_tmp):
    preset = SMOKE.replace(pretrain_chars=16 * 4 * 300, pretrain_seq_len=4, pretrain_batch_size=16,
                           pretrain_lr=3e-2, warmup_steps=5, pretrain_max_minutes=0.04)  # 2.4 s
    info = pretraining.pretrain(SlowToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-capped"))
    budget = info["budget"]
    assert budget["steps"] == 300 and budget["time_cap"]["capped"]
    assert 20 < info["steps"] == budget["time_cap"]["steps_planned"] < 300
    assert info["seconds"] < 5.5  # the whole budget sleeps 6 s
    assert budget["time_cap"]["seconds_per_step"] >= 0.02
    # the record says the run was cut, and how much of the budget it read
    assert info["cut_at_minutes"] == 0.04 and info["characters"] == info["steps"] * 16 * 4 < budget["chars"]


def test_time_cap_is_opt_in_through_the_environment(monkeypatch):
    assert pretraining.max_pretrain_minutes(SMOKE) is None
    monkeypatch.setenv(pretraining.MAX_MINUTES_ENV, "13")
    assert pretraining.max_pretrain_minutes(SMOKE) == 13.0
    monkeypatch.setenv(pretraining.MAX_MINUTES_ENV, "soon")
    with pytest.raises(ValueError, match="not a number of minutes"):
        pretraining.max_pretrain_minutes(SMOKE)


def test_time_cap_replans_from_the_measured_speed_and_the_schedule_follows():
    """A fake clock: 0.5 s per step and a 100-second cap leave ~200 of the 1,000 planned steps."""
    clock = {"now": 0.0}
    cap = pretraining.TimeCap(100.0, 1000, check_every=10, skip=2, clock=lambda: clock["now"])
    module = pretraining.Pretrainer(ToyLM(), lr=1.0, warmup_steps=1)

    class FakeEpochLoop:
        max_steps = 1000

    class FakeTrainer:
        global_step = 0
        fit_loop = type("FitLoop", (), {"epoch_loop": FakeEpochLoop()})()

    trainer = FakeTrainer()
    cap.on_train_start(trainer, module)
    for step in range(1, 400):
        clock["now"] += 0.5
        trainer.global_step = step
        cap.on_train_batch_end(trainer, module)
        if step >= trainer.fit_loop.epoch_loop.max_steps:
            break
    assert 195 <= trainer.fit_loop.epoch_loop.max_steps <= 201 and module.planned_steps == cap.planned
    assert cap.report()["capped"] and cap.report()["seconds_per_step"] == 0.5
    roomy = pretraining.TimeCap(1e6, 50, check_every=10, skip=2, clock=lambda: clock["now"])
    roomy.on_train_start(trainer, module)
    assert not roomy.report()["capped"] and roomy.planned == 50


def test_recipe_is_part_of_the_cache_key_and_kept_in_the_checkpoint(runs_tmp):
    preset = SMOKE.replace(pretrain_chars=16 * 4 * 20, pretrain_seq_len=4, pretrain_batch_size=16)
    assert pretraining.saved_pretraining(preset, "toy-recipe") is None
    first = pretraining.pretrain(ToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-recipe", recipe={"pre_ln": True}))
    assert not first["cached"] and first["recipe"] == {"pre_ln": True}
    assert pretraining.pretrain(ToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-recipe", recipe={"pre_ln": True}))["cached"]
    changed = pretraining.pretrain(ToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-recipe", recipe={"pre_ln": False}))
    assert not changed["cached"]
    saved = pretraining.saved_pretraining(preset.name, "toy-recipe")
    assert saved["recipe"] == {"pre_ln": False} and saved["steps"] == 20 and "state_dict" not in saved


def test_pretraining_checkpoints_describe_model_tokenizer_and_collate(runs_tmp):
    """A checkpoint rebuilds its model alone (class, config, weights) and keeps the vocabulary and
    the collate settings; a changed vocabulary or collate setting is a changed cache key."""
    import functools

    from nblib.models import gpt
    from nblib.training import saved_runs

    texts = ["房间很干净服务也好", "早餐一般前台不热情", "位置不错下次还来"] * 20
    preset = SMOKE.replace(pretrain_chars=400, pretrain_batch_size=8)

    def run(tok, max_len=16):
        torch.manual_seed(0)
        model = gpt.GPT(gpt.GPTConfig.tiny(tok.vocab_size))
        collate = functools.partial(gpt.collate_causal_lm, tokenizer=tok, max_len=max_len)
        dm = datamodules.LanguageModelDataModule(texts, texts[:8], collate, batch_size=8)
        return model, pretraining.pretrain(model, dm, preset, pretraining.PretrainingRun("toy-gpt"))

    tok = CharTokenizer.build(texts, min_count=1)
    model, info = run(tok)
    assert info["settings"]["collate"]["max_len"] == 16
    assert info["settings"]["collate"]["function"] == "nblib.models.gpt.collate_causal_lm"
    assert info["settings"]["collate"]["tokenizer"]["size"] == tok.vocab_size
    loaded, saved = pretraining.load_pretrained(preset, "toy-gpt")
    assert type(loaded) is gpt.GPT and loaded.config == model.config
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    back = saved_runs.tokenizer_from_vocabulary(saved["tokenizers"]["tokenizer"])
    assert back.id_to_token == tok.id_to_token
    assert run(tok)[1]["cached"]
    assert not run(tok, max_len=12)[1]["cached"]  # another collate setting retrains
    other = CharTokenizer.build(texts + ["新字"], min_count=1)
    assert not run(other)[1]["cached"]  # another vocabulary retrains


class ToyLMAgain(ToyLM):
    """The same layers under another class name."""


def test_ddp_on_cpu_two_processes_one_record(tmp_path):
    """Data-parallel training with gloo on 2 CPU processes; only rank zero writes the record."""
    script = Path(__file__).with_name("ddp_script.py")
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    written = list(tmp_path.rglob("result.json"))
    assert len(written) == 1, written
    record = json.loads(written[0].read_text())
    assert record["world_size"] == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_character_budget_is_exact_and_counts_what_the_model_reads() -> None:
    from nblib.data.datamodules import LanguageModelDataModule

    rng = np.random.default_rng(0)
    texts = ["字" * int(n) for n in rng.integers(1, 40, size=203)]

    def collate(batch):
        return {"texts": batch}

    window = 20  # the model reads at most 20 characters of a text
    dm = LanguageModelDataModule(texts, texts[:4], collate, batch_size=8, seed=3,
                                 chars_read=lambda t: min(len(t), window))
    plan = dm.plan(5_000)
    # replay what training reads, epoch after epoch, from the real train_dataloader
    read, steps = [], 0
    loader = dm.train_dataloader()
    while steps < plan["steps"]:
        for batch in loader:
            read.append(sum(min(len(t), window) for t in batch["texts"]))
            steps += 1
            if steps == plan["steps"]:
                break
    assert sum(read) == plan["chars"] >= 5_000 > sum(read[:-1])  # the last step crosses the budget
    assert plan["epochs"] > 1  # the budget needs more than one pass here
    assert dm.chars_per_step(len(read)).tolist() == read
    # the same seed gives the same plan; another seed another order (same budget, other steps)
    again = LanguageModelDataModule(texts, texts[:4], collate, batch_size=8, seed=3,
                                    chars_read=lambda t: min(len(t), window))
    assert again.plan(5_000) == plan
    other = LanguageModelDataModule(texts, texts[:4], collate, batch_size=8, seed=4,
                                    chars_read=lambda t: min(len(t), window))
    assert other.chars_per_step(20).tolist() != dm.chars_per_step(20).tolist()
    with pytest.raises(ValueError, match="positive"):
        dm.plan(0)


def test_layer_normed_scalar_mix_equalises_scales_and_ignores_the_batch() -> None:
    torch.manual_seed(0)
    tiny, big = torch.randn(2, 5, 8) * 0.01, torch.randn(2, 5, 8) * 100
    plain = classifier.ScalarMix(2)([tiny, big])
    normed = classifier.ScalarMix(2, layer_norm=True)([tiny, big])
    assert plain.abs().mean() > 10 * normed.abs().mean()  # the big layer drowns the tiny one
    spread = normed.std(-1)  # half of each unit-variance layer: ~0.7, whatever the input scales
    assert (spread > 0.3).all() and (spread < 1.2).all()
    # a review's vector does not depend on the other reviews of its batch
    alone = classifier.ScalarMix(2, layer_norm=True)([tiny[:1], big[:1]])
    assert torch.allclose(alone, normed[:1])


def test_a_checkpoint_whose_settings_hold_tuples_is_found_again(runs_tmp):
    """The settings go through JSON in the checkpoint (tuples come back as lists): ELMo's config holds its
    filters as tuples, and comparing the two shapes retrained its 46-minute pretraining on every rerun."""
    preset = SMOKE.replace(pretrain_chars=16 * 4 * 20, pretrain_seq_len=4, pretrain_batch_size=16)
    recipe = {"filters": ((1, 32), (2, 64)), "cutoffs": (5, 10)}
    assert not pretraining.pretrain(ToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-tuples", recipe=recipe))["cached"]
    again = pretraining.pretrain(ToyLM(), toy_datamodule(), preset, pretraining.PretrainingRun("toy-tuples", recipe=recipe))
    assert again["cached"] and again["recipe"] == {"filters": [[1, 32], [2, 64]], "cutoffs": [5, 10]}
