"""Tests for nblib.models.layers: attention masks, the fast path, pre/post-LN blocks, the KV cache."""

import pytest
import torch
import torch.nn.functional as F

from nblib.models.layers import (
    FeedForward,
    KVCache,
    MultiHeadAttention,
    TransformerBlock,
    attention,
    attention_weights,
)

torch.set_num_threads(1)

B, NH, T, D = 3, 2, 6, 8


def _qkv(seed: int = 0, tq: int = T, tk: int = T) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, NH, tq, D, generator=g), torch.randn(B, NH, tk, D, generator=g),
            torch.randn(B, NH, tk, D, generator=g))


def _padding_mask(tk: int = T) -> torch.Tensor:
    mask = torch.ones(B, tk, dtype=torch.bool)
    mask[1, tk - 2:] = False  # right padding
    mask[2, :2] = False  # left padding
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fast", [False, True])
def test_attention_matches_sdpa(causal: bool, fast: bool) -> None:
    q, k, v = _qkv()
    mask = _padding_mask()
    ours = attention(q, k, v, key_padding_mask=mask, causal=causal, fast=fast)
    allowed = mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    # Compare rows that have at least one allowed key (SDPA gives NaN on the others).
    has_key = allowed.expand(B, 1, T, T).any(-1)[..., None].expand_as(reference)
    assert torch.allclose(ours[has_key], reference[has_key], atol=1e-6)


def test_fast_and_written_out_paths_agree_with_cache_offset() -> None:
    q, k, v = _qkv(tq=2, tk=T)  # two new queries after four cached keys
    mask = _padding_mask()
    slow = attention(q, k, v, key_padding_mask=mask, causal=True)
    fast = attention(q, k, v, key_padding_mask=mask, causal=True, fast=True)
    assert torch.allclose(slow, fast, atol=1e-6)


def test_unpadded_causal_fast_path_matches_written_out() -> None:
    # No padding mask: the fast path hands the causal pattern to the kernel (is_causal=True).
    q, k, v = _qkv()
    slow = attention(q, k, v, causal=True)
    fast = attention(q, k, v, causal=True, fast=True)
    assert torch.allclose(slow, fast, atol=1e-6)
    changed = v.clone()
    changed[:, :, -1] += 1.0  # the last key's value may only reach the last query
    moved = attention(q, k, changed, causal=True, fast=True)
    assert torch.equal(moved[:, :, :-1], fast[:, :, :-1])


@pytest.mark.parametrize("fast", [False, True])
def test_one_cached_query_sees_every_key_like_the_last_row_of_a_full_pass(fast: bool) -> None:
    q, k, v = _qkv()
    full = attention(q, k, v, causal=True, fast=fast)  # (B, nh, T, d)
    newest = attention(q[:, :, -1:], k, v, causal=True, fast=fast)  # a generation step with a cache
    assert torch.allclose(newest, full[:, :, -1:], atol=1e-6)
    first = attention(q[:, :, :1], k[:, :, :1], v[:, :, :1], causal=True, fast=fast)
    assert torch.allclose(first, full[:, :, :1], atol=1e-6)


def test_masked_keys_get_zero_weight() -> None:
    q, k, _ = _qkv()
    mask = _padding_mask()
    w = attention_weights(q, k, key_padding_mask=mask, causal=True)  # (B, nh, T, T)
    assert torch.allclose(w.sum(-1), torch.ones(B, NH, T))
    assert (w[1, :, :, T - 2:] == 0).all()  # padded keys
    assert (w[2][:, 2:, :2] == 0).all()  # left padding seen from real queries
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (w[:2][..., future] == 0).all()
    assert (w[2][:, 2:][..., future[2:]] == 0).all()
    # Queries 0 and 1 of row 2 have no allowed key: finite (uniform) weights, never NaN.
    assert torch.allclose(w[2, :, :2], torch.full((NH, 2, T), 1 / T))


def test_attention_rejects_a_wrong_mask_shape() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, k, v, key_padding_mask=torch.ones(B, T + 1, dtype=torch.bool))


def test_block_shapes_and_pre_post_ln_switch() -> None:
    torch.manual_seed(0)
    post = TransformerBlock(16, 2, 32, pre_ln=False, dropout=0.0, attention_dropout=0.0).eval()
    pre = TransformerBlock(16, 2, 32, pre_ln=True, dropout=0.0, attention_dropout=0.0).eval()
    pre.load_state_dict(post.state_dict())  # same weights, only the LN placement differs
    x = torch.randn(2, 5, 16)
    y_post, cache = post(x)
    y_pre, _ = pre(x)
    assert y_post.shape == y_pre.shape == (2, 5, 16)
    assert cache is None
    assert not torch.allclose(y_post, y_pre, atol=1e-3)
    # Post-LN ends with a LayerNorm (with unit weight, zero bias at init): rows have mean 0.
    assert torch.allclose(y_post.mean(-1), torch.zeros(2, 5), atol=1e-5)


def test_feed_forward_activations_differ() -> None:
    torch.manual_seed(0)
    erf = FeedForward(8, 16, "gelu")
    tanh = FeedForward(8, 16, "gelu_tanh")
    tanh.load_state_dict(erf.state_dict())
    x = 3 * torch.randn(4, 8)
    assert not torch.equal(erf(x), tanh(x))
    assert torch.allclose(erf(x), tanh(x), atol=1e-2)
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, "relu6")


@pytest.mark.parametrize("pre_ln", [False, True])
def test_kv_cache_equals_full_causal_pass(pre_ln: bool) -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, pre_ln=pre_ln, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(2, 7, 16)
    full, _ = block(x, causal=True)
    # Feed the prefix, then one token at a time reusing the cached keys and values.
    out, cache = block(x[:, :4], causal=True, use_cache=True)
    pieces = [out]
    for t in range(4, 7):
        out, cache = block(x[:, t:t + 1], causal=True, past_kv=cache, use_cache=True)
        pieces.append(out)
    assert cache.keys.shape == cache.values.shape == (2, 4, 7, 4)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_kv_cache_grows_and_keeps_what_it_stored() -> None:
    torch.manual_seed(0)
    cache = KVCache()
    with pytest.raises(ValueError, match="empty"):
        _ = cache.keys
    chunks = [torch.randn(2, 3, n, 5) for n in (10, 60, 1, 100)]  # past 64, then past 128
    for chunk in chunks:
        k, v = cache.append(chunk, -chunk)
    everything = torch.cat(chunks, dim=2)
    assert cache.length == 171
    assert torch.equal(k, everything) and torch.equal(v, -everything)
    assert torch.equal(cache.keys, everything)


def test_multi_head_attention_keeps_weights_when_asked() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    y_fast, _ = mha(x, key_padding_mask=mask)
    mha.keep_weights = True
    y_slow, _ = mha(x, key_padding_mask=mask)
    assert mha.weights.shape == (2, 4, 5, 5)
    assert (mha.weights[1, :, :, 3:] == 0).all()
    assert torch.allclose(y_fast, y_slow, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
