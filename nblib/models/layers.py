"""Transformer building blocks shared by BERT and GPT: attention, feed-forward, the block.

Introduced in notebook 03_bert (attention, padding mask, post-LN block) and reused in notebook
04_gpt (causal mask, key/value cache, pre-LN block). Everything here is plain PyTorch so that a
learner can read the whole Transformer layer in one sitting.

Shapes: B batch, T (or Tq/Tk) sequence length, H hidden size, nh heads, d = H / nh head size.
Masks are bool with True meaning "real token, may be attended to".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """One attention layer's keys and values of the tokens seen so far: ``keys`` and ``values``,
    each (B, nh, T_past, d). Introduced in notebook 04_gpt.

    ``append`` writes the new keys and values into buffers allocated ahead (doubling when full)
    and returns views of everything stored. Appending with ``torch.cat`` would copy the whole cache
    into a fresh tensor at every generated token; on a CPU those allocations were a third of a
    cached generation step (``torch.profiler`` on benchmarks/bench_gpt.py's model). The cache is
    updated in place, so it is for inference (``generate`` runs under ``no_grad``).
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None  # (B, nh, capacity, d)
        self._v: Tensor | None = None
        self.length = 0  # T_past: positions stored

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, nh, T, d) after the cached positions; return all keys and values."""
        end = self.length + k.shape[2]
        if self._k is None or end > self._k.shape[2]:
            capacity = max(end, 64, 0 if self._k is None else 2 * self._k.shape[2])
            B, nh, _, d = k.shape
            grown_k, grown_v = k.new_empty(B, nh, capacity, d), v.new_empty(B, nh, capacity, d)
            if self._k is not None:
                grown_k[:, :, : self.length] = self.keys
                grown_v[:, :, : self.length] = self.values
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        self.length = end
        return self.keys, self.values

    @property
    def keys(self) -> Tensor:
        if self._k is None:
            raise ValueError("the cache is empty: append keys and values first")
        return self._k[:, :, : self.length]  # (B, nh, T_past, d)

    @property
    def values(self) -> Tensor:
        if self._v is None:
            raise ValueError("the cache is empty: append keys and values first")
        return self._v[:, :, : self.length]  # (B, nh, T_past, d)


def attention_allowed(
    batch_size: int,
    tq: int,
    tk: int,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    device: torch.device | None = None,
) -> Tensor | None:
    """Which keys each query may look at: bool (B or 1, 1, Tq, Tk), True = allowed; None = all.

    With ``causal``, query i sees key j only if ``j <= i + (Tk - Tq)``: the queries are the last
    Tq positions of the Tk keys, which is what a key/value cache needs during generation.
    """
    allowed = None
    if causal:
        offset = tk - tq  # number of cached keys before the first query
        q_pos = torch.arange(tq, device=device)[:, None] + offset  # (Tq, 1)
        k_pos = torch.arange(tk, device=device)[None, :]  # (1, Tk)
        allowed = (k_pos <= q_pos)[None, None]  # (1, 1, Tq, Tk)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch_size, tk):
            raise ValueError(
                f"key_padding_mask must have shape (B, Tk) = {(batch_size, tk)}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        pad = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
        allowed = pad if allowed is None else allowed & pad
    return allowed


def attention_weights(
    q: Tensor, k: Tensor, *, key_padding_mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """softmax(Q Kᵀ / √d) with masked keys at zero weight: (B, nh, Tq, Tk). Rows sum to 1."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    allowed = attention_allowed(q.size(0), q.size(-2), k.size(-2), key_padding_mask=key_padding_mask,
                                causal=causal, device=q.device)
    if allowed is not None:
        # The dtype's smallest number rather than -inf: a row with no allowed key (a padding query
        # in a left-padded causal batch) then gets uniform weights instead of NaN.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    training: bool = False,
    fast: bool = False,
) -> Tensor:
    """Scaled dot-product attention: softmax(Q Kᵀ / √d) V, written out.

    q (B, nh, Tq, d); k, v (B, nh, Tk, d); ``key_padding_mask`` (B, Tk) bool, True = real token.
    ``causal``: query i sees key j only if ``j <= i + (Tk - Tq)``. Returns (B, nh, Tq, d).

    ``fast=True`` computes the same thing with ``F.scaled_dot_product_attention`` (a fused kernel,
    quicker and lighter on memory); tests check that both paths agree.
    """
    if causal and q.size(-2) == 1:
        # One query, the newest position (a cached generation step): it may see every key, so the
        # causal mask has nothing to hide and building it would be pure overhead per token.
        causal = False
    if fast and q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # Under bf16 autocast on a CPU, attention stays in fp32: torch's bf16 CPU attention kernel
        # made a BERT training step slower than all-fp32 (benchmarks/bench_pretraining.py).
        with torch.autocast("cpu", enabled=False):
            return attention(q.float(), k.float(), v.float(), key_padding_mask=key_padding_mask,
                             causal=causal, dropout_p=dropout_p, training=training, fast=True)
    if fast:
        if causal and key_padding_mask is None and q.size(-2) == k.size(-2):
            # A plain causal pattern: let the kernel build it (its fused causal path skips the
            # masked half instead of adding a (T, T) mask), the GPT training case.
            return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=dropout_p if training else 0.0)
        allowed = attention_allowed(q.size(0), q.size(-2), k.size(-2), key_padding_mask=key_padding_mask,
                                    causal=causal, device=q.device)
        mask = None
        if allowed is not None:
            # An additive float mask (not bool) so that fully masked rows stay finite, as above.
            mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(~allowed, torch.finfo(q.dtype).min)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              dropout_p=dropout_p if training else 0.0)
    weights = attention_weights(q, k, key_padding_mask=key_padding_mask, causal=causal)
    if training and dropout_p > 0:
        weights = F.dropout(weights, dropout_p)  # BERT drops whole attention links
    return weights @ v  # (B, nh, Tq, d)


class MultiHeadAttention(nn.Module):
    """Project to queries, keys and values, attend in ``num_heads`` heads, project back.

    Introduced in notebook 03_bert. Set ``keep_weights = True`` to store the last attention
    weights (B, nh, Tq, Tk) in ``.weights`` (notebook 06 draws them; uses the written-out path).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 fast: bool = True):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout  # on the attention weights
        self.fast = fast  # use F.scaled_dot_product_attention
        self.keep_weights = False
        self.weights: Tensor | None = None

    def _split_heads(self, x: Tensor) -> Tensor:
        B, T, H = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, d)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        past_kv: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[Tensor, KVCache | None]:
        """x (B, T, H) → (out (B, T, H), the :class:`KVCache` if ``use_cache`` else None).

        With ``past_kv`` the new keys/values are appended to the cached ones (in place), and
        ``key_padding_mask`` must cover all keys: (B, T_past + T).
        """
        B, T, H = x.shape
        q = self._split_heads(self.query(x))  # (B, nh, T, d)
        k = self._split_heads(self.key(x))  # (B, nh, T, d)
        v = self._split_heads(self.value(x))  # (B, nh, T, d)
        cache = past_kv
        if cache is not None or use_cache:
            cache = KVCache() if cache is None else cache
            k, v = cache.append(k, v)  # (B, nh, T_past + T, d)
        present = cache if use_cache else None
        if self.keep_weights:
            self.weights = attention_weights(q, k, key_padding_mask=key_padding_mask,
                                             causal=causal).detach()
        y = attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                      dropout_p=self.dropout, training=self.training,
                      fast=self.fast and not self.keep_weights)  # (B, nh, T, d)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H): heads side by side again
        return self.out(y), present


class FeedForward(nn.Module):
    """Position-wise MLP: fc2(act(fc1(x))), H → I → H. Introduced in notebook 03_bert.

    ``activation``: "gelu" (exact, erf; HF BERT) or "gelu_tanh" (the tanh approximation; GPT-2).
    ``dropout`` acts on the intermediate activations (the block adds its own residual dropout).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "gelu",
                 dropout: float = 0.0):
        super().__init__()
        if activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"unknown activation {activation!r}; use 'gelu' or 'gelu_tanh'")
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.fc1(x), approximate=self.approximate)  # (B, T, I)
        return self.fc2(self.dropout(h))  # (B, T, H)


class TransformerBlock(nn.Module):
    """One Transformer layer: self-attention then feed-forward, each with a residual connection.

    Introduced in notebook 03_bert (post-LN, as BERT) and notebook 04_gpt (pre-LN, as GPT-2):
      post-LN: x = ln_attn(x + drop(attn(x)));  x = ln_ffn(x + drop(ffn(x)))
      pre-LN:  x = x + drop(attn(ln_attn(x)));  x = x + drop(ffn(ln_ffn(x)))
    Pre-LN keeps an un-normalised residual stream, so a pre-LN model adds a final LayerNorm.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        pre_ln: bool,
        activation: str = "gelu",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = MultiHeadAttention(hidden_size, num_heads, dropout=attention_dropout)
        self.ln_attn = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = FeedForward(hidden_size, intermediate_size, activation)
        self.ln_ffn = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.drop = nn.Dropout(dropout)  # residual dropout (HF BERT's hidden_dropout_prob)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        past_kv: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[Tensor, KVCache | None]:
        """x (B, T, H) → (x (B, T, H), the attention's :class:`KVCache` if ``use_cache`` else None)."""
        if self.pre_ln:
            a, present = self.attn(self.ln_attn(x), key_padding_mask, causal, past_kv, use_cache)
            x = x + self.drop(a)
            x = x + self.drop(self.ffn(self.ln_ffn(x)))
        else:
            a, present = self.attn(x, key_padding_mask, causal, past_kv, use_cache)
            x = self.ln_attn(x + self.drop(a))
            x = self.ln_ffn(x + self.drop(self.ffn(x)))
        return x, present  # (B, T, H)
