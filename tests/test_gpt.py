"""Tests for nblib.models.gpt: the causal mask, equivalence with Hugging Face GPT-2, checkpoint loading,
generation with and without the key/value cache, padding, the LM loss and pretraining."""

import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from nblib.data.text import CharTokenizer
from nblib.models.gpt import GPT, GPTConfig, collate_causal_lm, filter_logits
from nblib.models.hf_io import CheckpointMismatchError

torch.set_num_threads(1)

SEP, PAD = 3, 0


def _model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.tiny(vocab_size=40, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            **overrides)
    return GPT(config).eval()


def _scramble(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Replace every weight (LayerNorms included) by larger random values so that a wrong
    transpose, split, eps or GELU shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = p.ndim == 1 and name.endswith("weight")  # LayerNorm gains stay near 1
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if is_norm_scale else 0.0))


def _ids(batch: int, length: int, seed: int = 0, vocab: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (batch, length), generator=g)


# ----------------------------------------------------------------------------------------------
# Configuration and initialisation


def test_config_defaults_and_errors() -> None:
    config = GPTConfig(vocab_size=100, n_embd=64, n_head=4)
    assert config.inner_size == 256  # n_inner None → 4·n_embd
    assert config.layer_norm_epsilon == 1e-5 and config.activation_function == "gelu_new"
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation_function="relu")


def test_residual_projections_have_scaled_init() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_embd=64, n_head=4, n_layer=8))
    residual_std = 0.02 / (2 * 8) ** 0.5
    for block in model.blocks:
        assert abs(block.attn.out.weight.std().item() - residual_std) < 0.15 * residual_std
        assert abs(block.ffn.fc2.weight.std().item() - residual_std) < 0.15 * residual_std
        assert abs(block.attn.query.weight.std().item() - 0.02) < 0.15 * 0.02
    assert model.hidden_size == 64


# ----------------------------------------------------------------------------------------------
# (1) The causal mask: no position sees the future


@pytest.mark.parametrize("t", [0, 5, 10])
def test_changing_later_tokens_changes_no_earlier_output(t: int) -> None:
    model = _model()
    _scramble(model)
    ids = _ids(2, 12)
    changed = ids.clone()
    changed[:, t + 1:] = _ids(2, 12 - t - 1, seed=1)
    a, b = model(ids), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)  # later positions did change
    # Every layer, not just the logits.
    for ha, hb in zip(model.encode(ids), model.encode(changed), strict=True):
        assert torch.allclose(ha[:, : t + 1], hb[:, : t + 1], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# (2) Equivalence with Hugging Face GPT-2 (a tiny random model, built offline)


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=2, eos_token_id=3, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    _scramble(model, std=0.3)
    return model


def _ours_from(hf_model) -> GPT:
    return GPT.from_hf(hf_model.state_dict(), GPTConfig.from_hf_config(hf_model.config.to_dict())).eval()


def test_logits_and_hidden_states_match_hf(hf_model) -> None:
    ours = _ours_from(hf_model)
    ids = _ids(3, 20)
    with torch.no_grad():
        theirs = hf_model(ids, output_hidden_states=True)
        mine = ours(ids)
        hidden = ours.encode(ids)
    assert theirs.logits.abs().max() > 1.0  # not a trivially small comparison
    torch.testing.assert_close(mine, theirs.logits, atol=1e-5, rtol=0)
    assert len(hidden) == len(theirs.hidden_states) == 3
    for h_mine, h_theirs in zip(hidden, theirs.hidden_states, strict=True):
        torch.testing.assert_close(h_mine, h_theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_matches_hf_at_real_positions(hf_model, side: str) -> None:
    ours = _ours_from(hf_model)
    lengths = [20, 13, 7]
    ids = _ids(3, 20)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    for row, n in enumerate(lengths):
        if side == "right":
            mask[row, :n] = True
        else:
            mask[row, 20 - n:] = True
    ids = ids.masked_fill(~mask, PAD)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask.long(), position_ids=positions).logits
        mine = ours(ids, attention_mask=mask)
    torch.testing.assert_close(mine[mask], theirs[mask], atol=1e-5, rtol=0)


def test_greedy_generation_matches_hf(hf_model) -> None:
    ours = _ours_from(hf_model)
    prompt = _ids(2, 5)
    theirs = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=20, min_new_tokens=20, pad_token_id=0, eos_token_id=None)
    mine = ours.generate(prompt, 20, greedy=True)
    assert mine.shape == (2, 25)
    assert torch.equal(mine, theirs)


def test_to_hf_round_trip(hf_model) -> None:
    transformers = pytest.importorskip("transformers")
    ours = _model(seed=3)
    _scramble(ours, seed=3)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**ours.hf_config())).eval()
    hf.load_state_dict(ours.to_hf(), strict=True)
    ids = _ids(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# (3) Loading checkpoints: folders, files, key errors


def test_from_hf_folder_and_file(hf_model, tmp_path) -> None:
    ids = _ids(1, 8)
    expected = _ours_from(hf_model)(ids)
    hf_model.save_pretrained(tmp_path / "st")  # config.json + model.safetensors
    from_folder = GPT.from_hf(tmp_path / "st").eval()
    assert from_folder.config.n_head == 4 and from_folder.config.layer_norm_epsilon == 1e-5
    torch.testing.assert_close(from_folder(ids), expected)
    # An old-style folder: pytorch_model.bin with the causal-mask buffers older versions saved.
    old = tmp_path / "bin"
    old.mkdir()
    state = dict(hf_model.state_dict())
    for i in range(2):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, old / "pytorch_model.bin")
    (old / "config.json").write_text(json.dumps(hf_model.config.to_dict()))
    torch.testing.assert_close(GPT.from_hf(old).eval()(ids), expected)
    torch.testing.assert_close(GPT.from_hf(old / "pytorch_model.bin").eval()(ids), expected)


def test_from_hf_names_missing_and_unexpected_keys(hf_model) -> None:
    config = GPTConfig.from_hf_config(hf_model.config.to_dict())
    state = dict(hf_model.state_dict())
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as err:  # the same error and report as BERT's
        GPT.from_hf(state, config)
    assert "transformer.h.1.mlp.c_fc.weight" in str(err.value)
    assert "transformer.h.0.attn.rotary.weight" in str(err.value)
    assert err.value.report.missing == ["transformer.h.1.mlp.c_fc.weight"]
    assert err.value.report.unexpected == ["transformer.h.0.attn.rotary.weight"]
    loose = GPT.from_hf(state, config, strict=False)  # loads what fits, says what it left out
    assert loose.load_report.missing == ["transformer.h.1.mlp.c_fc.weight"]
    assert loose.load_report.unexpected == ["transformer.h.0.attn.rotary.weight"]
    torch.testing.assert_close(loose.blocks[0].ffn.fc1.weight, state["transformer.h.0.mlp.c_fc.weight"].t())
    with pytest.raises(ValueError, match="config"):
        GPT.from_hf(hf_model.state_dict())  # a bare state dict needs a config


def test_from_hf_names_a_key_with_the_wrong_shape(hf_model) -> None:
    config = GPTConfig.from_hf_config(hf_model.config.to_dict())
    state = dict(hf_model.state_dict())
    state["transformer.h.0.mlp.c_fc.weight"] = state["transformer.h.0.mlp.c_fc.weight"].t()
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight"):
        GPT.from_hf(state, config)


def test_from_hf_refuses_an_untied_head(hf_model) -> None:
    config = GPTConfig.from_hf_config(hf_model.config.to_dict())
    state = dict(hf_model.state_dict())
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(CheckpointMismatchError, match="lm_head"):
        GPT.from_hf(state, config)


# ----------------------------------------------------------------------------------------------
# (4) Generation: the cache, stopping, top-k / top-p


@pytest.mark.parametrize("n_positions", [64, 12])  # 12: the context outgrows the table, cropping
def test_cached_and_uncached_generation_agree(n_positions: int) -> None:
    model = _model(n_positions=n_positions)
    _scramble(model, std=0.2)
    prompt = _ids(3, 6)
    fast = model.generate(prompt, 16, greedy=True, use_cache=True)
    slow = model.generate(prompt, 16, greedy=True, use_cache=False)
    assert fast.shape == (3, 22) and torch.equal(fast, slow)
    sampled = [model.generate(prompt, 16, top_k=10, top_p=0.9, use_cache=cache,
                              generator=torch.Generator().manual_seed(7)) for cache in (True, False)]
    assert torch.equal(sampled[0], sampled[1])


def test_left_padded_batch_generates_like_single_prompts() -> None:
    model = _model()
    _scramble(model, std=0.2)
    prompts = [_ids(1, 7, seed=1)[0], _ids(1, 4, seed=2)[0]]
    batch = torch.full((2, 7), PAD)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    for row, p in enumerate(prompts):
        batch[row, 7 - len(p):] = p
        mask[row, 7 - len(p):] = True
    out = model.generate(batch, 8, greedy=True, attention_mask=mask)
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], 8, greedy=True)
        assert torch.equal(out[row, 7:], alone[0, len(p):])


def test_generation_stops_at_sep() -> None:
    model = _model()
    _scramble(model, std=0.2)
    prompt = _ids(2, 4)
    free = model.generate(prompt, 12, greedy=True)[:, 4:]  # no stop token
    stop = int(free[0, 3])  # a token row 0 produces: make it the stop token
    out = model.generate(prompt, 12, greedy=True, stop_id=stop, pad_id=PAD)[:, 4:]
    for row in range(2):
        hits = (free[row] == stop).nonzero()
        if len(hits) == 0:
            assert torch.equal(out[row], free[row, : out.shape[1]])
            continue
        first = int(hits[0])
        assert torch.equal(out[row, : first + 1], free[row, : first + 1])  # up to and incl. stop
        assert (out[row, first + 1:] == PAD).all()  # nothing generated after the stop token
    if all((free[row] == stop).any() for row in range(2)):
        assert out.shape[1] < 12  # every row finished: generation ended early


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 3.0]]).log_softmax(-1)
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, False, False, False, True]]
    probs = logits.softmax(-1)  # sorted: 4 (0.64), 0 (0.24), 2 (0.09), 1, 3
    p01 = float(probs[0, 4] + probs[0, 0])
    kept = torch.isfinite(filter_logits(logits, top_p=p01 - 1e-3))
    assert kept.tolist() == [[True, False, False, False, True]]
    kept = torch.isfinite(filter_logits(logits, top_p=p01 + 1e-3))
    assert kept.tolist() == [[True, False, True, False, True]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.01))
    assert kept.tolist() == [[False, False, False, False, True]]  # the top token always stays


def test_sampling_stays_inside_top_k_and_top_p() -> None:
    model = _model()
    _scramble(model, std=0.05)  # a flat distribution: unrestricted samples spread widely
    prompt = _ids(1, 5).expand(400, 5)
    with torch.no_grad():
        probs = model(prompt[:1])[0, -1].softmax(-1)
    order = probs.argsort(descending=True)

    def support(**kw) -> set[int]:
        out = model.generate(prompt, 1, generator=torch.Generator().manual_seed(0), **kw)
        return set(out[:, -1].tolist())

    free = support()
    assert len(free) > 10
    assert support(top_k=3) <= set(order[:3].tolist())
    n_nucleus = int((probs[order].cumsum(0) < 0.3).sum()) + 1
    assert support(top_p=0.3) <= set(order[:n_nucleus].tolist())
    assert len(support(top_p=0.3)) < len(free)


# ----------------------------------------------------------------------------------------------
# (5) Padding side


def test_left_and_right_padding_give_the_same_states() -> None:
    model = _model()
    _scramble(model)
    rows = [_ids(1, 9, seed=1)[0], _ids(1, 5, seed=2)[0]]
    right = torch.full((2, 9), PAD)
    left = torch.full((2, 9), PAD)
    right_mask = torch.zeros(2, 9, dtype=torch.bool)
    left_mask = torch.zeros(2, 9, dtype=torch.bool)
    for i, r in enumerate(rows):
        right[i, : len(r)], right_mask[i, : len(r)] = r, True
        left[i, 9 - len(r):], left_mask[i, 9 - len(r):] = r, True
    h_right = model.encode(right, right_mask)
    h_left = model.encode(left, left_mask)
    for layer_r, layer_l in zip(h_right, h_left, strict=True):
        torch.testing.assert_close(layer_r[right_mask], layer_l[left_mask], atol=1e-5, rtol=0)
        assert torch.isfinite(layer_l).all()  # pads with no visible key stay finite
    # And each row as if alone (no padding at all).
    for i, r in enumerate(rows):
        alone = model.encode(r[None])[-1][0]
        torch.testing.assert_close(h_right[-1][i, : len(r)], alone, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# (6) The LM loss and pretraining


def test_lm_loss_ignores_padding() -> None:
    model = _model()
    _scramble(model, std=0.1)
    ids = _ids(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    loss = model.lm_loss(model.encode(ids, mask)[-1], ids, mask)
    # Whatever the pads hold, the loss is the same.
    other = ids.clone()
    other[1, 6:] = _ids(1, 4, seed=5)[0]
    assert torch.allclose(loss, model.lm_loss(model.encode(other, mask)[-1], other, mask))
    # It is the mean next-token CE over the 9 + 5 real targets.
    logits = model(ids)
    ce0 = F.cross_entropy(logits[0, :9], ids[0, 1:], reduction="sum")
    ce1 = F.cross_entropy(logits[1, :5], ids[1, 1:6], reduction="sum")
    torch.testing.assert_close(loss, (ce0 + ce1) / 14)
    # Counting the pads as targets would give another number.
    assert not torch.allclose(loss, F.cross_entropy(logits[:, :-1].reshape(-1, 40), ids[:, 1:].reshape(-1)))


def _tokenizer() -> CharTokenizer:
    return CharTokenizer.build(["房间很干净，服务很好", "位置不错，早餐一般", "房间太小了，不推荐"],
                               min_count=1)


def test_collate_causal_lm() -> None:
    tok = _tokenizer()
    batch = collate_causal_lm(["房间很干净", "早餐", "房间很干净，服务很好"], tok, max_len=8)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 8) and mask.dtype == torch.bool
    assert ids[:, 0].tolist() == [tok.cls_id] * 3
    assert ids[0, :7].tolist() == tok.encode("房间很干净") and mask[0].sum() == 7
    assert ids[1, 3] == tok.sep_id and (ids[1, 4:] == tok.pad_id).all() and mask[1].sum() == 4
    assert tok.sep_id not in ids[2].tolist() and mask[2].all()  # a cut text has no [SEP]


def test_pretraining_reduces_loss_on_a_fixed_batch() -> None:
    tok = _tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(tok.vocab_size))
    batch = collate_causal_lm(["房间很干净，服务很好", "位置不错，早餐一般", "房间太小了"], tok, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.pretraining_step(batch)
    assert set(first) >= {"loss", "acc", "ppl"}
    torch.testing.assert_close(first["ppl"], first["loss"].exp())
    for _ in range(30):
        loss = model.pretraining_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    last = model.pretraining_step(batch)
    assert last["loss"] < 0.5 * first["loss"]
    assert last["acc"] > first["acc"]


def test_generate_from_a_tokenizer_prompt_decodes() -> None:
    tok = _tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(tok.vocab_size))
    prompt = torch.tensor([tok.encode("房间", add_special=True)[:-1]])  # [CLS] 房 间
    out = model.generate(prompt, 5, top_k=5, stop_id=tok.sep_id, generator=torch.Generator().manual_seed(0))
    assert out.shape[0] == 1 and 3 < out.shape[1] <= 8  # the prompt, then 1 to 5 new tokens
    assert torch.equal(out[:, :3], prompt)  # the prompt is kept as it was
    new = out[0, 3:].tolist()
    assert tok.sep_id not in new[:-1]  # generation stops at the first [SEP]
    model.eval()  # generate samples without dropout; so must the check
    with torch.no_grad():  # top_k=5: each new token is among the 5 likeliest after its prefix
        for t in range(3, out.shape[1]):
            logits = model.logits(model.encode(out[:, :t])[-1])[0, -1]
            assert int(out[0, t]) in logits.topk(5).indices.tolist(), f"token {t} outside the top 5"
    text = tok.decode(out[0].tolist())
    assert text == "房间" + tok.decode(new) and len(text) <= 2 + len(new)  # [CLS]/[SEP] not shown


def test_encode_rejects_too_long_input_and_bad_mask() -> None:
    model = _model()
    with pytest.raises(ValueError, match="n_positions"):
        model(_ids(1, 65))
    with pytest.raises(ValueError, match="attention_mask"):
        model(_ids(1, 5), attention_mask=torch.ones(1, 4, dtype=torch.bool))


def test_config_survives_asdict() -> None:
    config = GPTConfig.tiny(40)
    assert GPTConfig(**asdict(config)) == config


def test_generate_refuses_right_padded_prompts() -> None:
    model = _model()
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with pytest.raises(ValueError, match="left"):
        model.generate(_ids(2, 3), 2, attention_mask=mask)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_works_as_the_classifier_encoder_with_auxiliary_lm_loss() -> None:
    from nblib.training.classifier import SentimentClassifier, last_real_token

    model = _model()
    clf = SentimentClassifier(model, pooling="last", lm_loss_weight=0.5, dropout=0.0).eval()
    ids = _ids(2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    loss = clf.training_step(batch, 0)
    hidden = model.encode(ids, mask)
    assert len(hidden) == model.config.n_layer + 1 and hidden[-1].shape == (2, 6, model.hidden_size)
    expected = (F.cross_entropy(clf.head(last_real_token(hidden[-1], mask)), batch["labels"])
                + 0.5 * model.lm_loss(hidden[-1], ids, mask))
    torch.testing.assert_close(loss, expected)
