"""Tests for nblib.models.elmo: batches, the char-CNN token layer, highway, the biLM's two directions,
statelessness, padding, the joint loss, and the encoder protocol."""

import math

import pytest
import torch

from nblib.data.text import WORD_SPECIAL_TOKENS, CharTokenizer, Vocabulary, WordTokenizer
from nblib.models.elmo import (
    BOW_ID,
    EOW_ID,
    BiLM,
    CharCNN,
    ElmoConfig,
    Highway,
    TokenEncoder,
    collate_elmo,
    make_collate,
    reversed_positions,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

WORDS = ["房间", "干净", "服务", "很好", "早餐", "一般", "不", "错", "酒店", "位置", "前台", "热情"]
C = 6  # character slots per word in the tiny config


class SpaceWords(WordTokenizer):
    """The real WordTokenizer with words split on spaces instead of by jieba (exact, fast tests)."""

    tokenize = staticmethod(str.split)


@pytest.fixture(scope="module")
def toks() -> tuple[WordTokenizer, CharTokenizer]:
    word_tok = SpaceWords(Vocabulary(WORD_SPECIAL_TOKENS + WORDS, WORD_SPECIAL_TOKENS))
    char_tok = CharTokenizer.build(WORDS + ["外星人间"], min_count=1)
    return word_tok, char_tok


def _model(toks, seed: int = 0, **overrides) -> BiLM:
    torch.manual_seed(seed)
    word_tok, char_tok = toks
    config = ElmoConfig.tiny(char_tok.vocab_size, word_tok.vocab_size,
                             **{"dropout": 0.0, **overrides})
    return BiLM(config).eval()


def _batch(toks, texts, max_words: int = 12):
    return collate_elmo(texts, *toks, max_words=max_words, max_chars_per_word=C)


def _random_row(toks, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One all-real row of random words (random characters) as a batch of one."""
    g = torch.Generator().manual_seed(seed)
    word_tok, char_tok = toks
    char_ids = torch.zeros(1, length, C, dtype=torch.long)
    char_ids[..., 0], char_ids[..., 3] = BOW_ID, EOW_ID
    char_ids[..., 1:3] = torch.randint(5, char_tok.vocab_size, (1, length, 2), generator=g)
    return {"input_ids": torch.randint(4, word_tok.vocab_size, (1, length), generator=g),
            "attention_mask": torch.ones(1, length, dtype=torch.bool), "char_ids": char_ids}


# ---------------------------------------------------------------------------------------------
# Batches


def test_collate_wraps_spells_and_pads(toks):
    word_tok, char_tok = toks
    batch = _batch(toks, ["房间 干净", "酒店 人间 位置 外星人间人间"])
    ids, mask, chars = batch["input_ids"], batch["attention_mask"], batch["char_ids"]
    assert ids.shape == mask.shape == (2, 6) and chars.shape == (2, 6, C)
    w = word_tok.token_to_id
    assert ids[0].tolist() == [2, w["房间"], w["干净"], 3, 0, 0]  # <S> … </S>, then [PAD]
    assert ids[1].tolist() == [2, w["酒店"], 1, w["位置"], 1, 3]  # unknown words are [UNK] = 1
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    c = char_tok.token_to_id
    assert chars[0, 1].tolist() == [BOW_ID, c["房"], c["间"], EOW_ID, 0, 0]
    # a word longer than C − 2 characters keeps its first C − 2, between the marks
    assert chars[1, 4].tolist() == [BOW_ID, c["外"], c["星"], c["人"], c["间"], EOW_ID]
    assert chars[0, 0].tolist() != chars[0, 3].tolist()  # <S> and </S> are spelt differently
    assert (chars[0, 4:] == 0).all()  # padding words are all [PAD]


def test_collate_truncates_and_rejects_bad_settings(toks):
    batch = _batch(toks, ["房间 干净 服务 很好 早餐"], max_words=4)
    w = toks[0].token_to_id
    assert batch["input_ids"][0].tolist() == [2, w["房间"], w["干净"], 3]  # head kept, marks kept
    empty = _batch(toks, [""])  # the hotel data has an empty review
    assert empty["input_ids"].tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="empty batch"):
        _batch(toks, [])
    with pytest.raises(ValueError, match="max_words"):
        _batch(toks, ["房间"], max_words=2)
    collate = make_collate(*toks, max_words=12, max_chars_per_word=C)
    assert torch.equal(collate(["房间 干净"])["char_ids"], _batch(toks, ["房间 干净"])["char_ids"])


def test_config_validation():
    with pytest.raises(ValueError, match="does not fit"):
        ElmoConfig(char_vocab_size=50, max_chars_per_word=3)  # the width-4 filter needs 4 slots
    with pytest.raises(ValueError, match="adaptive_cutoffs"):
        ElmoConfig(char_vocab_size=50, word_vocab_size=100, adaptive_cutoffs=(50, 20))
    with pytest.raises(ValueError, match="adaptive_cutoffs"):
        ElmoConfig(char_vocab_size=50, word_vocab_size=100, adaptive_cutoffs=(10, 100))
    with pytest.raises(ValueError, match="softmax"):
        ElmoConfig(char_vocab_size=50, softmax="sampled")
    config = ElmoConfig(char_vocab_size=50, filters=[[1, 4], [2, 4]])  # as read back from JSON
    assert config.filters == ((1, 4), (2, 4)) and config.cutoffs == (2000, 10000)


def test_presets_give_the_intended_sizes():
    from nblib.presets import get_preset

    small = ElmoConfig.from_preset(get_preset("small"), char_vocab_size=5000, word_vocab_size=20000)
    assert (small.projection_dim, small.cell_size, small.filters) == (128, 256, ElmoConfig.filters)
    n_params = sum(p.numel() for p in BiLM(small).parameters())
    # the CPU-size ELMo lesson 02 pretrains (2.4 M in the complete run), within 2x of the Transformers' ~1.4 M
    assert 2e6 < n_params < 3e6
    smoke = ElmoConfig.from_preset(get_preset("smoke"), char_vocab_size=300, word_vocab_size=2000)
    assert smoke.projection_dim == 16 and sum(n for _, n in smoke.filters) < 100


# ---------------------------------------------------------------------------------------------
# The pieces


def test_shapes_of_every_piece(toks):
    model = _model(toks)
    cfg = model.config
    batch = _batch(toks, ["房间 干净 服务", "酒店"])
    B, T = batch["input_ids"].shape
    cnn = CharCNN(cfg.char_vocab_size, cfg.char_dim, cfg.filters)
    feats = cnn(batch["char_ids"])
    assert feats.shape == (B, T, cnn.output_size) and cnn.output_size == 32
    assert (feats >= 0).all()  # ReLU after the max
    assert Highway(32, 2)(feats).shape == feats.shape
    x = TokenEncoder(cfg)(batch["char_ids"])
    assert x.shape == (B, T, cfg.projection_dim)
    layers = model.encode(**batch)
    assert len(layers) == cfg.n_layers + 1 == 3
    assert model.hidden_size == 2 * cfg.projection_dim
    assert all(h.shape == (B, T, model.hidden_size) for h in layers)
    P = cfg.projection_dim
    assert torch.equal(layers[0][..., :P], layers[0][..., P:])  # layer 0 is [x, x]
    x = model.token_encoder(batch["char_ids"]) * batch["attention_mask"][..., None]
    assert torch.equal(layers[0][..., :P], x)


def test_highway_carries_its_input_at_init():
    torch.manual_seed(0)
    x = torch.rand(64, 128) * 2  # non-negative, like the char-CNN's ReLU features
    carry = Highway(128, n_layers=2)  # transform gate bias −2
    gate = torch.sigmoid(carry.gates[0](x))
    assert 0.05 < gate.mean() < 0.25  # σ(−2) ≈ 0.12 of the transform, the rest carried
    rel = ((carry(x) - x).norm() / x.norm()).item()
    assert rel < 0.3
    torch.manual_seed(0)
    transform = Highway(128, n_layers=2, gate_bias=2.0)  # the wrong sign for this form
    assert ((transform(x) - x).norm() / x.norm()).item() > 2 * rel


def test_residual_from_layer_1_to_layer_2_only(toks):
    model = _model(toks)
    P = model.config.projection_dim
    batch = _random_row(toks, 5)
    with torch.no_grad():
        x0, h1, h2 = (h[..., :P] for h in model.encode(**batch))  # forward halves
        lstm1, lstm2 = model.forward_lstms
        torch.testing.assert_close(h1, lstm1(x0)[0], rtol=0, atol=1e-6)  # no token-layer residual
        torch.testing.assert_close(h2, lstm2(h1)[0] + h1, rtol=0, atol=1e-6)


def test_reversed_positions_reverses_within_length():
    idx = reversed_positions(torch.tensor([3, 5, 0]), 5)
    assert idx.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]


# ---------------------------------------------------------------------------------------------
# The biLM: statelessness, directions, padding


def _real(layers, row, n):
    return [h[row, :n] for h in layers]


def test_same_sentence_same_vectors_whatever_the_batch(toks):
    model = _model(toks)
    alone = _batch(toks, ["房间 干净 服务 很好"])
    crowd = _batch(toks, ["酒店 位置 不 错 前台 热情 早餐 一般", "早餐", "房间 干净 服务 很好"])
    n = int(alone["attention_mask"].sum())
    with torch.no_grad():
        first = model.encode(**alone)
        model.encode(**crowd)  # would leave state behind in a stateful ELMo
        in_crowd = model.encode(**crowd)
        again = model.encode(**alone)
    for a, b, c in zip(_real(first, 0, n), _real(in_crowd, 2, n), _real(again, 0, n), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert torch.equal(a, c)


@pytest.mark.parametrize("t", [2, 5])
def test_forward_sees_the_past_backward_sees_the_future(toks, t):
    model = _model(toks)
    P = model.config.projection_dim
    batch = _random_row(toks, 9)
    later, earlier = dict(batch), dict(batch)
    later["char_ids"], earlier["char_ids"] = batch["char_ids"].clone(), batch["char_ids"].clone()
    later["char_ids"][0, t + 1:, 1:3] = 5  # change every word after t
    earlier["char_ids"][0, :t, 1:3] = 5  # change every word before t
    with torch.no_grad():
        base, h_later, h_earlier = (model.encode(**b) for b in (batch, later, earlier))
    for layer in (1, 2):
        fw, bw = base[layer][0, :, :P], base[layer][0, :, P:]
        # the forward LM at positions ≤ t ignores the future; the backward LM at t depends on it
        torch.testing.assert_close(h_later[layer][0, : t + 1, :P], fw[: t + 1], rtol=0, atol=1e-6)
        assert (h_later[layer][0, t, P:] - bw[t]).abs().max() > 1e-4
        # the backward LM at positions ≥ t ignores the past; the forward LM at t depends on it
        torch.testing.assert_close(h_earlier[layer][0, t:, P:], bw[t:], rtol=0, atol=1e-6)
        assert (h_earlier[layer][0, t, :P] - fw[t]).abs().max() > 1e-4


def test_padding_never_reaches_real_positions(toks):
    model = _model(toks)
    alone = _batch(toks, ["房间 干净 服务"])
    padded = _batch(toks, ["房间 干净 服务", "酒店 位置 不 错 前台 热情 早餐 一般"])
    n = int(alone["attention_mask"].sum())
    g = torch.Generator().manual_seed(1)
    junk = torch.randint(1, toks[1].vocab_size, padded["char_ids"][0, n:].shape, generator=g)
    padded["char_ids"][0, n:] = junk  # garbage in the padding: still must not leak
    padded["input_ids"][0, n:] = 7
    with torch.no_grad():
        a, b = model.encode(**alone), model.encode(**padded)
    for ha, hb in zip(a, b, strict=True):
        # both halves, so the backward LM at every real t saw the real words t..end only
        torch.testing.assert_close(hb[0, :n], ha[0], rtol=0, atol=1e-6)
        assert (hb[0, n:] == 0).all()


def test_oov_words_get_distinct_vectors_from_their_characters(toks):
    model = _model(toks)
    batch = _batch(toks, ["人间 外星 人间"])  # neither word is in the word vocabulary
    assert batch["input_ids"][0, 1:4].tolist() == [1, 1, 1]
    with torch.no_grad():
        x = model.encode(**batch)[0][0]  # layer 0, (T, 2P)
    assert (x[1] - x[2]).abs().max() > 1e-3  # two unknown words, two vectors
    assert torch.equal(x[1], x[3])  # the same word, the same context-free vector


def test_bad_inputs_are_clear_errors(toks):
    model = _model(toks)
    batch = _batch(toks, ["房间 干净", "酒店"])
    left = dict(batch, attention_mask=batch["attention_mask"].flip(1))
    with pytest.raises(ValueError, match="right padding"):
        model.encode(**left)
    with pytest.raises(ValueError, match="char id"):
        model.encode(**dict(batch, char_ids=batch["char_ids"] + 1000))
    with pytest.raises(ValueError, match="char_ids"):
        model.encode(**dict(batch, char_ids=batch["char_ids"][:, :-1]))
    with pytest.raises(ValueError, match="max_chars_per_word"):
        model.encode(**dict(batch, char_ids=batch["char_ids"][..., :-1]))
    with pytest.raises(ValueError, match="word id"):
        model.pretraining_step(dict(batch, input_ids=batch["input_ids"] + 1000))


# ---------------------------------------------------------------------------------------------
# The joint loss


def test_loss_counts_real_positions_only(toks):
    model = _model(toks)
    short = _batch(toks, ["房间 干净 服务"])
    wide = _batch(toks, ["房间 干净 服务", "酒店 位置 不 错 前台 热情 早餐 一般"])
    wide = {k: v[:1] for k, v in wide.items()}  # the same row, now with padding after it
    wide["input_ids"][0, 5:] = 9  # junk targets at padding positions
    wide["char_ids"][0, 5:] = 7
    with torch.no_grad():
        a, b = model.pretraining_step(short), model.pretraining_step(wide)
    for key in ("loss", "fw_ppl", "bw_ppl"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=0)
    torch.testing.assert_close(a["loss"], 0.5 * (a["fw_ppl"].log() + a["bw_ppl"].log()))


def test_neither_direction_sees_the_word_it_predicts(toks):
    model = _model(toks)
    batch = _batch(toks, ["房间 干净 服务 很好"])
    last = dict(batch, char_ids=batch["char_ids"].clone())
    last["char_ids"][0, -1, 1:3] = 5  # respell the final word (</S>)
    first = dict(batch, char_ids=batch["char_ids"].clone())
    first["char_ids"][0, 0, 1:3] = 5  # respell the first word (<S>)
    with torch.no_grad():
        base, l_out, f_out = (model.pretraining_step(b) for b in (batch, last, first))
    # no forward prediction reads the last word's state, none of the backward ones the first's
    assert torch.equal(l_out["fw_ppl"], base["fw_ppl"])
    assert not torch.equal(l_out["bw_ppl"], base["bw_ppl"])
    assert torch.equal(f_out["bw_ppl"], base["bw_ppl"])
    assert not torch.equal(f_out["fw_ppl"], base["fw_ppl"])


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_a_few_steps_reduce_the_loss(toks, softmax):
    extra = {"adaptive_cutoffs": (6, 10)} if softmax == "adaptive" else {}
    model = _model(toks, softmax=softmax, dropout=0.1, **extra).train()
    batch = _batch(toks, ["房间 干净 服务 很好", "酒店 位置 不 错", "前台 热情 早餐 一般"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = model.pretraining_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < 0.5 * losses[0]
    logp = model.word_log_probs(torch.randn(2, 3, model.config.projection_dim))
    assert logp.shape == (2, 3, model.config.word_vocab_size)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 3))


# ---------------------------------------------------------------------------------------------
# The encoder protocol with the real tokenizers


def test_with_jieba_words_and_the_shared_classifier():
    from nblib.training.classifier import SentimentClassifier

    texts = ["房间很干净，服务也很好。", "早餐一般，前台不热情。", "位置不错，下次还来！"]
    word_tok = WordTokenizer.build(texts, min_count=1)
    char_tok = CharTokenizer.build(texts, min_count=1)
    torch.manual_seed(0)
    model = BiLM(ElmoConfig.tiny(char_tok.vocab_size, word_tok.vocab_size))
    batch = collate_elmo(texts, word_tok, char_tok, max_words=16, max_chars_per_word=C)
    assert int(batch["input_ids"][0, 1]) > 3  # a real word id, not [UNK]
    assert set(model.pretraining_step(batch)) == {"loss", "fw_ppl", "bw_ppl"}
    clf = SentimentClassifier(model, pooling="mix", num_layers=model.config.n_layers + 1)
    logits = clf({**batch, "labels": torch.tensor([1, 0, 1])})
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
