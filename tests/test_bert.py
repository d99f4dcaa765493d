"""Tests for nblib.models.bert: equivalence with Hugging Face, checkpoint loading, masking, NSP, training."""

import random

import pytest
import torch
from tiny_checkpoints import scramble

from nblib.data.text import CharTokenizer
from nblib.models.bert import (
    IGNORE_INDEX,
    BertConfig,
    BertForPreTraining,
    CheckpointMismatchError,
    _trim_pair,
    collate_mlm,
    make_nsp_pairs,
    mask_tokens,
    split_in_two,
)

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

REVIEWS = [
    "房间很干净，服务也很热情。早餐种类丰富，下次还会再来！",
    "位置不好，离地铁太远了。隔音很差，晚上吵得睡不着。",
    "性价比高,前台小姐态度好.就是停车不太方便!",
    "总体来说还可以，就是空调有点旧。",
    "酒店设施陈旧，卫生间有异味，不推荐。",
    "环境优雅，床很舒服？值得推荐",
]


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.build(REVIEWS, min_count=1)


def _hf_pair(seed: int = 0) -> tuple[object, BertForPreTraining]:
    """A tiny HF BertForPreTraining with every weight random, and the same weights in nblib (both
    eval mode)."""
    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, hidden_act="gelu")
    hf = transformers.BertForPreTraining(hf_config).eval()
    scramble(hf, seed)
    norms = [p for name, p in hf.named_parameters() if "LayerNorm" in name]
    assert all(not torch.equal(p, torch.ones_like(p)) and not torch.equal(p, torch.zeros_like(p))
               for p in norms), "every LayerNorm must differ from its default init"
    ours = BertForPreTraining.from_hf(hf.state_dict(), config=hf_config.to_dict()).eval()
    return hf, ours


def _padded_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 50, (3, 12), generator=g)
    attention_mask = torch.ones(3, 12, dtype=torch.bool)
    attention_mask[1, 8:] = False
    attention_mask[2, 5:] = False
    input_ids[~attention_mask] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 4:] = 1
    token_type_ids[~attention_mask] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


# --- equivalence with Hugging Face


def test_matches_hugging_face_on_a_padded_batch() -> None:
    hf, ours = _hf_pair()
    batch = _padded_batch()
    real = batch["attention_mask"]
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=real.long(),
                 token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        states = ours.encode(**batch)
        mlm, nsp = ours(**batch)
    assert len(states) == len(ref.hidden_states) == 3
    for layer, (a, b) in enumerate(zip(states, ref.hidden_states, strict=True)):
        assert torch.allclose(a[real], b[real], atol=1e-5), f"hidden state {layer} differs"
    assert torch.allclose(mlm[real], ref.prediction_logits[real], atol=1e-5)
    assert torch.allclose(nsp, ref.seq_relationship_logits, atol=1e-5)
    assert ours.load_report.missing == [] and ours.load_report.unexpected == []


def test_to_hf_round_trip() -> None:
    hf, ours = _hf_pair()
    exported = ours.to_hf()
    original = hf.state_dict()
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)
    # A fresh HF model loads the export strictly and computes the same logits.
    torch.manual_seed(123)
    fresh = transformers.BertForPreTraining(hf.config).eval()
    fresh.load_state_dict(exported, strict=True)
    batch = _padded_batch()
    with torch.no_grad():
        a = fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long())
        b = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long())
    assert torch.allclose(a.prediction_logits, b.prediction_logits)


@pytest.mark.parametrize("safe", [True, False])
def test_from_hf_folder(tmp_path, safe: bool) -> None:
    hf, ours = _hf_pair()
    hf.save_pretrained(tmp_path, safe_serialization=safe)
    loaded = BertForPreTraining.from_hf(tmp_path).eval()
    assert loaded.config == ours.config
    batch = _padded_batch()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch)[0], ours(**batch)[0])


def test_missing_and_unexpected_keys_are_named() -> None:
    hf, _ = _hf_pair()
    state = hf.state_dict()
    del state["bert.encoder.layer.1.output.dense.bias"]
    state["bert.encoder.layer.7.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as err:
        BertForPreTraining.from_hf(state, config=hf.config.to_dict())
    assert "bert.encoder.layer.1.output.dense.bias" in str(err.value)
    assert "bert.encoder.layer.7.extra.weight" in str(err.value)
    # Non-strict loading keeps going and reports the same keys.
    model = BertForPreTraining.from_hf(state, config=hf.config.to_dict(), strict=False)
    assert model.load_report.missing == ["bert.encoder.layer.1.output.dense.bias"]
    assert model.load_report.unexpected == ["bert.encoder.layer.7.extra.weight"]


def test_wrong_shape_names_the_key() -> None:
    hf, _ = _hf_pair()
    state = hf.state_dict()
    state["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(65, 32)
    with pytest.raises(CheckpointMismatchError, match=r"layer\.0\.intermediate\.dense\.weight.*65"):
        BertForPreTraining.from_hf(state, config=hf.config.to_dict())


def test_old_names_buffers_and_bare_bert_model_load() -> None:
    hf, ours = _hf_pair()
    old = {}
    for key, value in hf.state_dict().items():
        if key.startswith("cls."):
            continue  # a bare BertModel checkpoint: no heads, no "bert." prefix
        key = key.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma")
        old[key.replace("LayerNorm.bias", "LayerNorm.beta")] = value
    old["embeddings.position_ids"] = torch.arange(40)[None]
    model = BertForPreTraining.from_hf(old, config=hf.config.to_dict(), strict=False).eval()
    report = model.load_report
    assert ("embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.weight") in report.renamed
    assert "embeddings.position_ids" in report.ignored
    assert report.unexpected == []
    assert report.missing and all(k.startswith("cls.") for k in report.missing)
    batch = _padded_batch()
    with torch.no_grad():
        a, b = model.encode(**batch), ours.encode(**batch)
    assert torch.allclose(a[-1], b[-1])


def test_untied_decoder_is_an_error() -> None:
    hf, _ = _hf_pair()
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["cls.predictions.decoder.weight"] += 1.0
    with pytest.raises(CheckpointMismatchError, match="cls.predictions.decoder.weight"):
        BertForPreTraining.from_hf(state, config=hf.config.to_dict())


def test_from_hf_without_config_asks_for_one() -> None:
    hf, _ = _hf_pair()
    with pytest.raises(ValueError, match="config"):
        BertForPreTraining.from_hf(hf.state_dict())


# --- pre-LN BERT (lesson 03's default), which has no Hugging Face twin: a forward pass by hand


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _pre_ln_reference(sd: dict, config: BertConfig, batch: dict) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Pre-LN BERT written out op by op from the state dict (no nblib module is called):
    x = LN(word + position + segment); per layer x += attn(LN(x)), x += ffn(LN(x)); a final LN."""
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    B, T = ids.shape
    H, nh, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
    d = H // nh

    def linear(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    emb = (sd["bert.embeddings.word_embeddings.weight"][ids]
           + sd["bert.embeddings.position_embeddings.weight"][torch.arange(T)]
           + sd["bert.embeddings.token_type_embeddings.weight"][types])
    x = _layer_norm(emb, sd["bert.embeddings.layer_norm.weight"], sd["bert.embeddings.layer_norm.bias"], eps)
    states = [x]
    for i in range(config.num_hidden_layers):
        p = f"bert.layers.{i}"
        h = _layer_norm(x, sd[f"{p}.ln_attn.weight"], sd[f"{p}.ln_attn.bias"], eps)
        q, k, v = (linear(h, f"{p}.attn.{n}").view(B, T, nh, d).transpose(1, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / d ** 0.5  # (B, nh, T, T)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))  # padding keys
        heads = torch.softmax(scores, dim=-1) @ v  # (B, nh, T, d)
        x = x + linear(heads.transpose(1, 2).reshape(B, T, H), f"{p}.attn.out")
        h = _layer_norm(x, sd[f"{p}.ln_ffn.weight"], sd[f"{p}.ln_ffn.bias"], eps)
        x = x + linear(torch.nn.functional.gelu(linear(h, f"{p}.ffn.fc1")), f"{p}.ffn.fc2")
        states.append(x)
    states[-1] = _layer_norm(x, sd["bert.final_ln.weight"], sd["bert.final_ln.bias"], eps)
    h = states[-1]
    t = _layer_norm(torch.nn.functional.gelu(linear(h, "mlm_head.dense")),
                    sd["mlm_head.layer_norm.weight"], sd["mlm_head.layer_norm.bias"], eps)
    mlm = t @ sd["bert.embeddings.word_embeddings.weight"].T + sd["mlm_head.bias"]
    nsp = linear(torch.tanh(linear(h[:, 0], "bert.pooler")), "nsp_head")
    return states, mlm, nsp


def test_pre_ln_bert_matches_a_forward_pass_written_by_hand() -> None:
    config = BertConfig.tiny(vocab_size=50, pre_ln=True, num_attention_heads=4)
    model = scramble(BertForPreTraining(config), seed=5).eval()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    assert not torch.equal(sd["bert.layers.0.ln_attn.weight"], sd["bert.layers.0.ln_ffn.weight"])
    batch = _padded_batch()
    real = batch["attention_mask"]
    with torch.no_grad():
        states = model.encode(**batch)
        mlm, nsp = model(**batch)
    ref_states, ref_mlm, ref_nsp = _pre_ln_reference(sd, config, batch)
    assert len(states) == len(ref_states) == config.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(states, ref_states, strict=True)):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5, msg=f"hidden state {layer}")
    torch.testing.assert_close(mlm[real], ref_mlm[real], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(nsp, ref_nsp, atol=1e-5, rtol=1e-5)


# --- the model itself


@pytest.mark.parametrize("pre_ln", [False, True])
def test_encoder_protocol(pre_ln: bool) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=50, pre_ln=pre_ln)).eval()
    batch = _padded_batch()
    states = model.encode(**batch)
    assert len(states) == model.config.num_hidden_layers + 1
    assert all(h.shape == (3, 12, model.hidden_size) for h in states)
    assert model.pool(states[-1][:, 0]).abs().max() <= 1  # tanh
    assert ("bert.final_ln.weight" in model.state_dict()) == pre_ln
    # Padding positions do not change the real positions' states.
    changed = dict(batch, input_ids=batch["input_ids"].masked_fill(~batch["attention_mask"], 7))
    real = batch["attention_mask"]
    assert torch.allclose(model.encode(**changed)[-1][real], states[-1][real], atol=1e-5)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.encode(torch.zeros(1, 200, dtype=torch.long), torch.ones(1, 200, dtype=torch.bool))


def test_init_is_normal_002() -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.small(vocab_size=2000))
    std = model.bert.embeddings.word_embeddings.weight.std().item()
    assert abs(std - 0.02) < 0.001
    assert model.bert.layers[0].attn.query.bias.abs().max() == 0


def test_pretraining_steps_reduce_the_loss(tokenizer: CharTokenizer) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=tokenizer.vocab_size))
    batch = collate_mlm(REVIEWS, tokenizer, max_len=32, nsp=True, seed=0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = model.pretraining_step(batch)
    assert set(before) == {"loss", "mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc"}
    model.train()
    for _ in range(15):
        loss = model.pretraining_step(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        after = model.pretraining_step(batch)
    assert after["loss"] < before["loss"] - 0.5
    # Without next_sentence_label the step is MLM only.
    mlm_only = {k: v for k, v in batch.items() if k != "next_sentence_label"}
    with torch.no_grad():
        out = model.pretraining_step(mlm_only)
    assert "nsp_loss" not in out and torch.equal(out["loss"], out["mlm_loss"])


def test_mlm_logits_only_at_selected_positions_match_full_logits(tokenizer: CharTokenizer) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=tokenizer.vocab_size)).eval()
    batch = collate_mlm(REVIEWS, tokenizer, max_len=32, seed=3)
    with torch.no_grad():
        full, _ = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        picked = batch["labels"] != IGNORE_INDEX
        expected = torch.nn.functional.cross_entropy(full[picked], batch["labels"][picked])
        assert torch.allclose(model.pretraining_step(batch)["mlm_loss"], expected, atol=1e-5)


def test_bf16_autocast_is_finite(tokenizer: CharTokenizer) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=tokenizer.vocab_size))
    batch = collate_mlm(REVIEWS, tokenizer, max_len=32, nsp=True, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.pretraining_step(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


# --- masking


class _Vocab:
    """The attributes mask_tokens reads, for a synthetic batch."""

    pad_id, unk_id, cls_id, sep_id, mask_id = range(5)
    vocab_size = 1000


def _synthetic_batch(rows: int = 400, width: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, width + 1, (rows,), generator=g)
    input_ids = torch.randint(5, 1000, (rows, width), generator=g)
    attention_mask = torch.arange(width)[None] < lengths[:, None]
    input_ids[:, 0] = _Vocab.cls_id
    input_ids[torch.arange(rows), lengths - 1] = _Vocab.sep_id
    input_ids[~attention_mask] = _Vocab.pad_id
    return input_ids, attention_mask


def test_masking_proportions() -> None:
    input_ids, attention_mask = _synthetic_batch()
    masked, labels = mask_tokens(input_ids, attention_mask, _Vocab,
                                 generator=torch.Generator().manual_seed(0))
    selected = labels != IGNORE_INDEX
    candidates = attention_mask & (input_ids > _Vocab.sep_id)
    assert not (selected & ~candidates).any()  # never [PAD], [CLS], [SEP]
    assert torch.equal(labels[selected], input_ids[selected])
    assert torch.equal(masked[~selected], input_ids[~selected])  # nothing else changes
    assert abs(selected.sum() / candidates.sum() - 0.15) < 0.005
    assert (selected.sum(1) >= 1).all()
    n = selected.sum()
    as_mask = (masked[selected] == _Vocab.mask_id).sum() / n
    unchanged = (masked[selected] == input_ids[selected]).sum() / n
    replaced = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.02 and abs(replaced - 0.1) < 0.015 and abs(unchanged - 0.1) < 0.015
    assert (masked[selected] >= 4).all()  # random replacements are regular tokens (or [MASK])


def test_masking_is_reproducible_with_a_generator() -> None:
    input_ids, attention_mask = _synthetic_batch(rows=8)
    a = mask_tokens(input_ids, attention_mask, _Vocab, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(input_ids, attention_mask, _Vocab, generator=torch.Generator().manual_seed(5))
    c = mask_tokens(input_ids, attention_mask, _Vocab, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_whole_word_masking_selects_whole_words() -> None:
    input_ids, attention_mask = _synthetic_batch(rows=300)
    g = torch.Generator().manual_seed(0)
    word_len = torch.randint(1, 4, input_ids.shape, generator=g)  # words of 1-3 pieces
    starts = torch.cumsum(word_len, 1) - word_len
    word_ids = torch.zeros_like(input_ids)
    for r in range(len(input_ids)):
        for w, (s, n) in enumerate(zip(starts[r].tolist(), word_len[r].tolist(), strict=True)):
            if s >= input_ids.shape[1]:
                break
            word_ids[r, s:s + n] = w
    specials = ~attention_mask | (input_ids <= _Vocab.sep_id)
    word_ids[specials] = -1
    _, labels = mask_tokens(input_ids, attention_mask, _Vocab, word_ids=word_ids,
                            generator=torch.Generator().manual_seed(1))
    selected = labels != IGNORE_INDEX
    for r in range(len(input_ids)):
        for w in word_ids[r].unique().tolist():
            if w < 0:
                continue
            pieces = selected[r][(word_ids[r] == w) & ~specials[r]]
            assert pieces.all() or not pieces.any(), f"row {r}: word {w} partly selected"
    fraction = selected.sum() / (~specials).sum()
    assert 0.12 < fraction < 0.16


def test_collate_whole_word_uses_jieba_words(tokenizer: CharTokenizer) -> None:
    import jieba

    batch = collate_mlm(REVIEWS * 20, tokenizer, max_len=64, whole_word=True, seed=0)
    selected = batch["labels"] != IGNORE_INDEX
    for r, text in enumerate(REVIEWS * 20):
        start = 1  # after [CLS]
        for word in jieba.lcut(text):
            pieces = selected[r, start:start + len(word)]
            assert pieces.all() or not pieces.any(), f"{word!r} in {text!r} partly selected"
            start += len(word)


# --- NSP pairs


def test_split_in_two_prefers_punctuation_near_the_middle() -> None:
    assert split_in_two("房，服务也很热情。早餐丰富好") == ("房，服务也很热情。", "早餐丰富好")
    assert split_in_two("房间很干净，服务也很热情。早餐丰富") == ("房间很干净，", "服务也很热情。早餐丰富")
    assert split_in_two("没有标点的评论") == ("没有标", "点的评论")  # 7 // 2 = 3
    assert split_in_two("好") == ("", "好")


def test_nsp_pairs_are_half_real_half_random() -> None:
    texts = [f"第{i}条评论，内容{i}。" for i in range(2000)]
    pairs = make_nsp_pairs(texts, random.Random(0))
    labels = [label for _, _, label in pairs]
    assert abs(sum(labels) / len(labels) - 0.5) < 0.04
    for text, (a, b, label) in zip(texts, pairs, strict=True):
        assert a + b == text if label == 0 else (text.startswith(a) and a + b != text)


@pytest.mark.parametrize("whole_word", [False, True])
def test_collate_nsp_segments(tokenizer: CharTokenizer, whole_word: bool) -> None:
    batch = collate_mlm(REVIEWS, tokenizer, max_len=20, nsp=True, whole_word=whole_word, seed=2)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    real = batch["attention_mask"]
    assert ids.shape[1] <= 20
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels",
                          "next_sentence_label"}
    # The labels hold the original ids; [SEP] is never selected, so it survives masking.
    for r in range(len(REVIEWS)):
        n = int(real[r].sum())
        seps = (ids[r, :n] == tokenizer.sep_id).nonzero().flatten().tolist()
        assert len(seps) == 2 and seps[1] == n - 1 and ids[r, 0] == tokenizer.cls_id
        assert (types[r, : seps[0] + 1] == 0).all() and (types[r, seps[0] + 1:n] == 1).all()
        assert (types[r, n:] == 0).all()


def test_trim_pair_cuts_the_longer_side() -> None:
    assert _trim_pair(10, 3, 20) == (10, 3)
    assert _trim_pair(30, 5, 20) == (15, 5)
    assert _trim_pair(12, 12, 20) == (10, 10)
    la, lb = _trim_pair(101, 7, 17)
    assert la + lb == 17 and lb == 7


def test_an_encoder_pretrained_without_nsp_is_classified_from_the_mean() -> None:
    from nblib.models.bert import classification_pooling
    from nblib.training.classifier import SentimentClassifier

    assert classification_pooling(nsp=True) == "cls"  # NSP trained [CLS] and the pooler
    assert classification_pooling(nsp=False) == "mean"  # masked LM / ELECTRA: they stay untrained
    encoder = BertForPreTraining(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=16, max_position_embeddings=16))
    clf = SentimentClassifier(encoder, pooling=classification_pooling(nsp=False))
    assert clf.hparams.pooling == "mean"
