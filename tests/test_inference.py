"""Saved classifiers (nblib.training.saved_runs) and the predict command (nblib.predict)."""

import functools

import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from test_train import synthetic_frames

from nblib import predict
from nblib.data.datamodules import ClassificationDataModule
from nblib.data.text import CharTokenizer, WordTokenizer
from nblib.models import bert, elmo, gpt
from nblib.models.static import StaticEmbedding
from nblib.presets import get_preset
from nblib.training import saved_runs
from nblib.training.classifier import SentimentClassifier
from nblib.training.finetuning import fit_classifier

SMOKE = get_preset("smoke")
TEXTS = ["房间好早餐好", "服务差前台差", "位置好", "设施差"]


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.build(["房间早餐服务位置前台设施好差"], min_count=1)


@pytest.fixture(scope="module")
def trained_run(tokenizer, tmp_path_factory):
    """A static-embedding classifier fine-tuned on a learnable task, saved by fit_classifier."""
    run_dir = tmp_path_factory.mktemp("runs") / "static-baseline" / "0"
    tr, va, te = synthetic_frames(400)
    collate = saved_runs.TokenCollate(tokenizer, 16)
    torch.manual_seed(0)
    model = SentimentClassifier(StaticEmbedding(tokenizer.vocab_size, 16), "mean", lr=3e-2)
    _, results = fit_classifier(model, ClassificationDataModule(tr, va, te, collate, batch_size=16),
                                collate, SMOKE, run_dir, max_epochs=4)
    assert results["test"]["accuracy"] > 0.9
    return run_dir, model, collate, te


def test_fit_classifier_saves_what_load_classifier_needs(trained_run):
    run_dir, model, collate, te = trained_run
    assert (run_dir / "classifier.json").is_file() and (run_dir / "tokenizer.json").is_file()
    loaded = saved_runs.load_classifier(run_dir)
    texts = te["text"].tolist()
    labels, probs = loaded.predict(texts)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(collate(texts)), -1)[:, 1]
    torch.testing.assert_close(torch.tensor(probs), expected, atol=1e-6, rtol=1e-5)
    assert labels == [int(p > 0.5) for p in expected]
    assert sum(a == b for a, b in zip(labels, te["label"], strict=True)) / len(te) > 0.9  # the best epoch


def _round_trip(model: SentimentClassifier, collate, tmp_path) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_()  # a head that is not at its init: the weights must come back
    assert saved_runs.save_classifier(tmp_path, model, collate) is not None
    loaded = saved_runs.load_classifier(tmp_path)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(collate(TEXTS)).float(), -1)[:, 1]
    torch.testing.assert_close(torch.tensor(loaded.predict(TEXTS)[1]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_bert_and_gpt_classifiers_round_trip(family, tokenizer, tmp_path):
    torch.manual_seed(0)
    if family == "bert":
        encoder = bert.BertForPreTraining(bert.BertConfig.tiny(vocab_size=tokenizer.vocab_size, pre_ln=True))
        model = SentimentClassifier(encoder, "cls")
    else:
        encoder = gpt.GPT(gpt.GPTConfig.tiny(tokenizer.vocab_size))
        model = SentimentClassifier(encoder, "last", lm_loss_weight=0.5)
    _round_trip(model, functools.partial(tokenizer.batch_encode, max_len=12, truncation="tail"), tmp_path)
    saved = saved_runs.load_classifier(tmp_path)
    assert saved.collate.max_len == 12 and saved.collate.truncation == "tail"


def test_elmo_classifier_round_trips(tmp_path):
    chars = CharTokenizer.build(TEXTS, min_count=1)
    words = WordTokenizer.build(TEXTS, max_size=50)
    config = elmo.ElmoConfig.tiny(chars.vocab_size, words.vocab_size)
    torch.manual_seed(0)
    model = SentimentClassifier(elmo.BiLM(config), "mix", num_layers=config.n_layers + 1, mix_layer_norm=True)
    _round_trip(model, elmo.make_collate(words, chars, 20, config.max_chars_per_word), tmp_path)


def test_a_plain_function_collate_leaves_the_run_unloadable_and_says_why(tokenizer, tmp_path):
    model = SentimentClassifier(StaticEmbedding(tokenizer.vocab_size, 8), "mean")
    assert saved_runs.save_classifier(tmp_path, model, lambda texts: tokenizer.batch_encode(texts, 8)) is None
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(saved_runs.RunNotLoadableError, match="results record but no saved classifier"):
        saved_runs.load_classifier(tmp_path)
    with pytest.raises(saved_runs.RunNotLoadableError, match="no such run folder"):
        saved_runs.load_classifier(tmp_path / "nope")


def test_tfidf_pipelines_are_saved_and_loaded(tmp_path):
    tr, _, te = synthetic_frames(200)
    pipe = make_pipeline(TfidfVectorizer(analyzer="char"), LogisticRegression()).fit(tr["text"], tr["label"])
    saved_runs.save_sklearn(tmp_path, pipe)
    labels, probs = saved_runs.load_classifier(tmp_path).predict(te["text"].tolist())
    assert labels == pipe.predict(te["text"]).tolist()
    torch.testing.assert_close(torch.tensor(probs, dtype=torch.float64), torch.tensor(pipe.predict_proba(te["text"])[:, 1]))


def test_predict_command_texts_file_and_metrics(trained_run, tmp_path, capsys):
    run_dir, _, _, te = trained_run
    assert predict.main([str(run_dir), "房间好早餐好", "服务差前台差"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("1\tpositive\tP(positive)=") and lines[1].startswith("0\tnegative\t")
    csv = tmp_path / "reviews.csv"
    te.rename(columns={"text": "review"}).to_csv(csv, index=False)
    out = tmp_path / "predictions.csv"
    assert predict.main([str(run_dir), "--file", str(csv), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(te)} labelled reviews: accuracy" in printed and "macro-F1" in printed
    assert "recall negative" in printed and "positive" in printed
    written = pd.read_csv(out)
    assert len(written) == len(te) and {"pred", "prob_positive"} <= set(written.columns)
    assert (written["pred"] == te["label"].to_numpy()).mean() > 0.9


def test_predict_command_errors_are_clear(trained_run, tmp_path, capsys):
    run_dir, *_ = trained_run
    assert predict.main([str(tmp_path / "no-run"), "好"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert predict.main([str(run_dir), "好", "  "]) == 2
    assert "text 2: empty review" in capsys.readouterr().err
    csv = tmp_path / "r.csv"
    csv.write_text("text,label\n好,1\n", encoding="utf-8")
    assert predict.main([str(run_dir), "--file", str(csv)]) == 2
    assert "no column 'review'; its columns are ['text', 'label']" in capsys.readouterr().err
    csv.write_text("review,label\n好,1\n,0\n", encoding="utf-8")
    assert predict.main([str(run_dir), "--file", str(csv)]) == 2
    assert "r.csv, line 3: empty review" in capsys.readouterr().err
    assert predict.main([str(run_dir)]) == 2
    assert "give reviews" in capsys.readouterr().err


def test_model_specs_rebuild_every_family_with_nested_configs():
    from nblib.models import electra

    models = [electra.ElectraForPreTraining(electra.ElectraConfig(bert.BertConfig.tiny(vocab_size=50))),
              gpt.GPT(gpt.GPTConfig.tiny(30)), elmo.BiLM(elmo.ElmoConfig.tiny(30, 40)),
              bert.BertForPreTraining(bert.BertConfig.tiny(vocab_size=50, pre_ln=True))]
    for model in models:
        rebuilt = saved_runs.build_model(saved_runs.model_spec(model))
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()}
