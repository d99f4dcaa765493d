"""BERT's other three uses (lesson 08): tagging, sentence pairs, span extraction, and their plumbing."""

import random

import pytest
import torch

from nblib import tasks
from nblib.data import text
from nblib.data.task_data import BIO_TAGS, QAExample, TaggedSentence
from nblib.models import bert
from nblib.models.electra import ElectraDiscriminator
from nblib.presets import get_preset
from nblib.tasks import pairs, spans, tagging

CHARS = "北京上海是中国的首都城市大学我在工作小明和华去了公司"


@pytest.fixture(scope="module")
def tokenizer():
    return text.CharTokenizer.build([CHARS, "，。？ab12"], min_count=1)


def tiny_encoder(tokenizer, seed=0):
    torch.manual_seed(seed)
    return bert.BertForPreTraining(bert.BertConfig.tiny(tokenizer.vocab_size, max_position_embeddings=64))


# --- tagging

def test_repair_bio_turns_orphan_inside_tags_into_beginnings():
    assert tagging.repair_bio(["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "O"]) == \
        ["O", "B-PER", "I-PER", "B-LOC", "B-ORG", "O"]
    assert tagging.repair_bio(["B-LOC", "I-LOC"]) == ["B-LOC", "I-LOC"]
    assert tagging.bio_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"]) == \
        [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)]


def test_entity_scores_agree_with_our_own_entity_sets_and_ignore_repair():
    rng = random.Random(0)
    gold = [[rng.choice(BIO_TAGS) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(BIO_TAGS) for t in g] for g in gold]
    scores = tagging.entity_scores(gold, pred)
    # our own count, from bio_entities, must give seqeval's micro F1
    g_set = {(i, *e) for i, g in enumerate(gold) for e in tagging.bio_entities(g)}
    p_set = {(i, *e) for i, p in enumerate(pred) for e in tagging.bio_entities(p)}
    tp = len(g_set & p_set)
    assert scores["entity_precision"] == pytest.approx(tp / len(p_set))
    assert scores["entity_recall"] == pytest.approx(tp / len(g_set))
    assert scores["entity_f1"] == pytest.approx(2 * tp / (len(g_set) + len(p_set)))
    # seqeval reads an orphan I- as a beginning, so the repair changes no score
    repaired = tagging.entity_scores(gold, [tagging.repair_bio(p) for p in pred])
    assert {k: v for k, v in repaired.items() if k != "accuracy"} == \
        {k: v for k, v in scores.items() if k != "accuracy"}  # (character accuracy does change)
    perfect = tagging.entity_scores(gold, gold)
    assert perfect["entity_f1"] == 1.0 and perfect["accuracy"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        tagging.entity_scores([["O"]], [["O", "O"]])


def test_tagging_batch_aligns_characters_and_tags(tokenizer):
    s = TaggedSentence("小明在北京", ("B-PER", "I-PER", "O", "B-LOC", "I-LOC"), 1)
    batch = tagging.collate_tagged([s, TaggedSentence("我", ("O",), 7)], tokenizer, max_len=6)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id and len(ids) == 6  # cut to max_len
    assert tokenizer.decode(ids) == "小明在北"
    assert labels == [-100, 1, 2, 0, 3, -100]
    assert batch["labels"][1].tolist() == [-100, 0, -100, -100, -100, -100]
    logits = torch.full((1, 6, len(BIO_TAGS)), -5.0)
    logits[0, 1, BIO_TAGS.index("I-PER")] = 5  # an orphan I- is repaired; cut characters get O
    assert tagging.decode_tags(logits, [5]) == [["B-PER", "O", "O", "O", "O"]]


def test_tagger_learns_a_tiny_set(tokenizer, runs_tmp):
    sentences = [TaggedSentence("小明在北京工作", ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"), 1),
                 TaggedSentence("华去了上海", ("B-PER", "O", "O", "B-LOC", "I-LOC"), 9)] * 24
    model = tagging.TokenTagger(tiny_encoder(tokenizer), lr=3e-3, warmup_ratio=0.05)
    dm = tasks.TaskDataModule({"train": sentences, "val": sentences[:2]},
                              lambda b: tagging.collate_tagged(b, tokenizer, 32), batch_size=4,
                              length=lambda s: len(s.text))
    fin = tasks.fit_task(model, dm, get_preset("smoke"), runs_tmp / "tag", seed=0,
                         monitor="val_entity_f1", max_epochs=5)
    assert fin["best_val_entity_f1"] == 1.0 and fin["best_checkpoint"]
    pred = tagging.predict_tags(model, sentences[:2], tokenizer, 32)
    assert pred == [list(s.tags) for s in sentences[:2]]


# --- pairs

def test_pair_budget_cuts_the_longer_side_first(tokenizer):
    assert pairs.pair_lengths(10, 3, 8) == (5, 3)
    assert pairs.pair_lengths(10, 9, 8) == (4, 4)
    assert pairs.pair_lengths(2, 3, 8) == (2, 3)
    ids, seg = pairs.encode_pair("北京是中国的首都城市", "上海", tokenizer, max_len=10)
    assert len(ids) == 10 and tokenizer.decode(ids) == "北京是中国上海"
    assert seg == [0] * 7 + [1] * 3
    assert ids[6] == tokenizer.sep_id and ids[-1] == tokenizer.sep_id
    for a, b in [("", "上海"), ("北京", "  ")]:
        with pytest.raises(ValueError, match="two non-empty sentences"):
            pairs.encode_pair(a, b, tokenizer, 10)


def test_pair_batch_reaches_the_segment_embeddings(tokenizer):
    batch = pairs.collate_pairs([("北京", "上海", 2), ("我在工作", "小明", 0)], tokenizer, 16)
    assert batch["labels"].tolist() == [2, 0]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0]  # padded to 9
    model = pairs.pair_classifier(tiny_encoder(tokenizer)).eval()
    with torch.no_grad():
        logits = model(batch)
        flipped = model({**batch, "token_type_ids": 1 - batch["token_type_ids"]})
    assert logits.shape == (2, 3) and not torch.allclose(logits, flipped)
    preds = pairs.predict_pairs(model, [("北京", "上海"), ("我在工作", "小明")], tokenizer, 16)
    assert preds == logits.argmax(-1).tolist()
    assert pairs.pair_scores([0, 1, 2], [0, 1, 1])["accuracy"] == pytest.approx(2 / 3)


# --- spans

def _example(context, question, answer, qid="Q"):
    start = context.index(answer)
    return QAExample(qid, "A", context, question, (answer,), ((start, answer),), 1)


def test_windows_overlap_cover_the_passage_and_point_at_the_answer(tokenizer):
    context = "我在北京工作小明和华去了上海大学的公司工作北京是中国的首都城市"
    ex = _example(context, "首都？", "首都城市")
    feats = spans.make_features([ex], tokenizer, max_len=16, doc_stride=5)
    room = 16 - 3 - 3
    assert [f.offset for f in feats] == list(range(0, len(context) - room + 5, 5))[: len(feats)]
    assert feats[-1].offset + feats[-1].length == len(context)
    assert all(f.length == room for f in feats[:-1])
    holding = [f for f in feats if f.start]
    assert holding, "some window holds the answer"
    for f in holding:
        assert context[f.offset + f.start - f.passage_start : f.offset + f.end - f.passage_start + 1] == "首都城市"
    assert all(f.start == f.end == 0 for f in feats if f not in holding)
    batch = spans.collate_features(feats)
    assert batch["passage_mask"][0].sum() == room and not batch["passage_mask"][0, :feats[0].passage_start].any()
    assert (batch["token_type_ids"][0, feats[0].passage_start:] == 1).all()


@pytest.mark.parametrize("name", ["smoke", "small", "full"])
def test_preset_windows_overlap_by_more_than_the_longest_answer(name, tokenizer):
    """Two windows overlap by (room - stride) characters: any answer of up to max_answer_len
    characters then lies whole inside some window, so it can be found and trained on."""
    p = get_preset(name)
    room = p.qa_max_len - 3 - 32  # the longest question make_features keeps is 32 tokens
    assert room - p.qa_doc_stride >= p.qa_max_answer_len
    context = "我在北京工作小明和华去了上海大学的公司工作" * 40
    for start in range(0, len(context) - p.qa_max_answer_len, 37):
        answer = context[start : start + p.qa_max_answer_len]
        ex = QAExample("q", "a", context, "问" * 40, (answer,), ((start, answer),), 1)
        assert any(f.start for f in spans.make_features([ex], tokenizer, p.qa_max_len, p.qa_doc_stride))


def test_best_span_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        T = 12
        s, e = torch.randn(T, generator=g), torch.randn(T, generator=g)
        allowed = torch.rand(T, generator=g) > 0.3
        allowed[5] = True
        best = max((float(s[i] + e[j]), i, j) for i in range(T) for j in range(i, min(T, i + 4))
                    if allowed[i] and allowed[j])
        i, j, score = spans.best_span(s, e, allowed, max_answer_len=4)
        assert (i, j) == best[1:] and score == pytest.approx(best[0])
    with pytest.raises(ValueError, match="no allowed span"):
        spans.best_span(s, e, torch.zeros(T, dtype=torch.bool), 4)


def test_decode_picks_the_best_window(tokenizer):
    context = "我在北京工作小明和华去了上海大学的公司工作"
    ex = _example(context, "哪里？", "上海")
    feats = spans.make_features([ex], tokenizer, max_len=14, doc_stride=4)
    starts = [torch.zeros(len(f.input_ids)) for f in feats]
    ends = [torch.zeros(len(f.input_ids)) for f in feats]
    k = next(i for i, f in enumerate(feats) if f.start)
    starts[k][feats[k].start], ends[k][feats[k].end] = 9.0, 9.0
    assert spans.decode_answers([ex], feats, starts, ends, max_answer_len=5) == ["上海"]


def test_cmrc_metrics_follow_the_official_script():
    assert spans.mixed_segmentation("Nexon公司（韩国）", remove_punctuation=True) == ["nexon", "公", "司", "韩", "国"]
    # non-Chinese runs: split at spaces and edge punctuation (as nltk.word_tokenize does for these)
    assert spans.mixed_segmentation("iPhone 5s (2013)售价1.7万") == ["iphone", "5s", "(", "2013", ")", "售", "价",
                                                                   "1.7", "万"]
    assert spans.cmrc_em(["北京"], "北京。") == 1.0 and spans.cmrc_em(["北京"], "北京市") == 0.0
    assert spans.cmrc_em(["光荣和ω-force"], "光荣和ω force") == 0.0  # only listed marks are removed
    assert spans.cmrc_f1(["北京大学"], "大学北京") == pytest.approx(0.5)  # a common *substring*, not a bag
    assert spans.cmrc_f1(["北京大学"], "北京") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert spans.cmrc_f1(["上海", "北京大学"], "北京大学") == 1.0 and spans.cmrc_f1(["上海"], "") == 0.0
    ex = [_example("北京是首都", "?", "北京"), _example("上海很大", "?", "上海")]
    scores = spans.span_scores(ex, ["北京", "上"])
    assert scores["em"] == 0.5 and scores["f1"] == pytest.approx((1 + 2 / 3) / 2) and scores["accuracy"] == 0.5


def test_span_extractor_learns_and_predicts_substrings(tokenizer, runs_tmp):
    ex = [_example("我在北京工作小明去了上海", "小明去了哪里？", "上海", "q1"),
          _example("华在公司工作我在大学", "华在哪里工作？", "公司", "q2")]
    feats = spans.make_features(ex, tokenizer, max_len=24, doc_stride=6)
    model = spans.SpanExtractor(tiny_encoder(tokenizer), lr=3e-3, warmup_ratio=0.05, max_answer_len=4,
                                val_examples=ex, val_features=feats)
    items = list(enumerate(feats))
    dm = tasks.TaskDataModule({"train": items * 24, "val": items}, spans.collate_indexed, batch_size=4,
                              length=lambda x: len(x[1].input_ids))
    fin = tasks.fit_task(model, dm, get_preset("smoke"), runs_tmp / "qa", seed=0, monitor="val_f1", max_epochs=6)
    answers = spans.predict_answers(model, ex, feats, max_answer_len=4)
    assert fin["best_val_f1"] == 1.0 and answers == ["上海", "公司"]


# --- any encoder, records, the course encoder

def test_heads_take_any_encoder(tokenizer):
    config = bert.BertConfig.tiny(tokenizer.vocab_size, max_position_embeddings=64)
    encoders = [tiny_encoder(tokenizer), ElectraDiscriminator(config),
                bert.BertForPreTraining.from_hf(tiny_encoder(tokenizer).to_hf(), config=config)]
    s = TaggedSentence("小明在北京", ("B-PER", "I-PER", "O", "B-LOC", "I-LOC"), 1)
    for encoder in encoders:
        assert tagging.TokenTagger(encoder)(tagging.collate_tagged([s], tokenizer, 16)).shape == (1, 7, 7)
        assert pairs.pair_classifier(encoder)(pairs.collate_pairs([("北京", "上海")], tokenizer, 16)).shape == (1, 3)
        feats = spans.make_features([_example("我在北京", "哪里", "北京")], tokenizer, 16, 8)
        start, end = spans.SpanExtractor(encoder)(spans.collate_features(feats))
        assert start.shape == end.shape == (1, len(feats[0].input_ids))


def test_task_records_carry_the_task_and_stay_out_of_the_sentiment_runs(runs_tmp):
    preset = get_preset("smoke")
    path = tasks.write_task_record(task="ner", model="bert", variant="random", preset=preset, seed=1,
                                   train_size=10, parameters=123, val={"accuracy": 0.5, "macro_f1": 0.1, "recall": {}},
                                   test={"accuracy": 0.4, "macro_f1": 0.2, "recall": {}, "entity_f1": 0.3},
                                   finetuning={"seconds": 1.0}, pretraining=None, started=0.0)
    assert path == runs_tmp / "tasks" / "smoke" / "ner" / "bert-random" / "1" / "result.json"
    (record,) = tasks.read_task_records(preset, "ner")
    assert record["task"] == "ner" and record["test"]["entity_f1"] == 0.3
    assert tasks.read_task_records(preset, "qa") == []
    assert not (runs_tmp / "smoke").exists()


def test_course_encoder_pretrains_when_missing_then_loads(runs_tmp, capsys):
    preset = get_preset("smoke")
    corpus = [(CHARS * 3)[i : i + 60] for i in range(len(CHARS))] * 10  # long texts: few steps
    first = tasks.course_encoder(preset, corpus=corpus)
    assert "missing: pretraining BERT here" in capsys.readouterr().out
    assert (runs_tmp / "smoke" / "pretrain" / "bert.pt").exists() and first.info["steps"] > 0
    second = tasks.course_encoder(preset, corpus=corpus)
    assert "missing" not in capsys.readouterr().out
    pre, rnd = second.build("pretrained", seed=3), second.build("random", seed=3)
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(pre.state_dict()[key], first.state[key])
    assert not torch.equal(rnd.state_dict()[key], first.state[key])
    assert torch.equal(rnd.state_dict()[key], second.build("random", seed=3).state_dict()[key])
    with pytest.raises(ValueError, match="init must be"):
        second.build("frozen")
