"""GPT: a decoder-only Transformer language model (GPT-2 layout), its data and its sampler.

Introduced in notebook 04_gpt (the causal mask, the model, causal-LM pretraining, sampling,
last-token fine-tuning with the auxiliary LM loss); ``GPT.from_hf`` in notebook
07_pretrained_checkpoints. Modelled on nanoGPT's model.py, built from :mod:`nblib.models.layers`. Long because it is one family's
whole story in one file (a learner reads it in one sitting, beside lesson 04): the model and its KV
cache, its pretraining data, its sampler and its checkpoint names.

Conventions used throughout:
- ``attention_mask`` (B, T) bool is True at real tokens. Right padding is the default (the
  tokenizer's ``batch_encode``); left padding works too because position ids are counted from
  the mask, so a token's position is the number of real tokens before it.
- ``encode`` returns L+1 hidden states and the last one is *after* the final LayerNorm ``ln_f``,
  as in Hugging Face's ``output_hidden_states``. ``lm_loss`` takes exactly that tensor.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nblib.data.text import characters_in_window
from nblib.models.hf_io import (
    HF_ACTIVATIONS,
    KeyMap,
    activation_from_hf,
    config_from_hf,
    export_hf_weights,
    load_hf_weights,
    read_hf_checkpoint,
)
from nblib.models.layers import KVCache, TransformerBlock

Cache = list[KVCache]  # one per block: keys and values, each (B, n_head, T_past, head_dim)


@dataclass
class GPTConfig:
    """GPT-2 hyper-parameters, with Hugging Face's ``GPT2Config`` field names."""

    vocab_size: int = 6000  # tokens in the vocabulary (the character tokenizer's size)
    n_positions: int = 128  # longest sequence the learned position table covers
    n_embd: int = 256  # hidden size H
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads (H must divide evenly)
    n_inner: int | None = None  # feed-forward width; None means 4 * n_embd, as in GPT-2
    activation_function: str = "gelu_new"  # GPT-2's tanh approximation of GELU
    resid_pdrop: float = 0.1  # dropout on each sub-block's output before the residual add
    embd_pdrop: float = 0.1  # dropout on token + position embeddings
    attn_pdrop: float = 0.1  # dropout on attention probabilities
    layer_norm_epsilon: float = 1e-5  # LayerNorm eps (BERT uses 1e-12, GPT-2 1e-5)
    initializer_range: float = 0.02  # std of the normal init of weights and embeddings

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function not in HF_ACTIVATIONS:  # Hugging Face's names (nblib.models.hf_io)
            raise ValueError(f"unsupported activation_function {self.activation_function!r}; "
                             f"use one of {sorted(HF_ACTIVATIONS)}")

    @property
    def inner_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def tiny(cls, vocab_size: int, **overrides: Any) -> GPTConfig:
        """A 2-layer, 32-wide model for tests and quick demos (a few seconds on a CPU)."""
        base = dict(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64)
        return cls(**{**base, **overrides})

    @classmethod
    def from_preset(cls, preset: Any, vocab_size: int, pretraining: bool = False,
                    **overrides: Any) -> GPTConfig:
        """The size an :class:`nblib.presets.Preset` gives BERT too, so parameter counts match;
        ``pretraining`` sets the three dropouts to the preset's ``pretrain_dropout``."""
        base = dict(vocab_size=vocab_size, n_positions=max(preset.max_len, preset.pretrain_seq_len),
                    n_embd=preset.hidden_size, n_layer=preset.num_layers, n_head=preset.num_heads,
                    n_inner=preset.intermediate_size)
        if pretraining:
            drop = preset.pretrain_dropout
            base.update(resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop)
        return cls(**{**base, **overrides})

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> GPTConfig:
        """Read a GPT-2 ``config.json`` (:func:`nblib.models.hf_io.config_from_hf`: unknown fields are
        ignored); settings this model cannot reproduce are an error."""
        if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("only GPT-2's standard 1/sqrt(head_dim) attention scaling is supported")
        if hf.get("add_cross_attention", False):
            raise ValueError("checkpoints with cross-attention are not supported")
        return config_from_hf(cls, hf)


class GPT(nn.Module):
    """GPT-2: embeddings, pre-LN causal Transformer blocks, final LayerNorm, tied LM head.

    Introduced in notebook 04_gpt.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.hidden_size = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings (V, H)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # position embeddings (P, H)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.n_embd, config.n_head, config.inner_size, pre_ln=True,
                             activation=activation_from_hf(config.activation_function),
                             dropout=config.resid_pdrop, attention_dropout=config.attn_pdrop,
                             layer_norm_eps=config.layer_norm_epsilon)
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        # The LM head has no weights of its own: logits = h · wteᵀ (weight tying, see logits()).
        self.apply(self._init_weights)
        # GPT-2: each residual branch ends in a projection scaled down by 1/sqrt(2·n_layer), so
        # the residual stream's variance does not grow with depth (2 branches per block).
        for block in self.blocks:
            for proj in (block.attn.out, block.ffn.fc2):
                nn.init.normal_(proj.weight, std=config.initializer_range / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------
    # The forward pass

    def _hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_kv: Cache | None = None,
        use_cache: bool = False,
    ) -> tuple[list[torch.Tensor], Cache | None]:
        """All L+1 hidden states of the new tokens (last one after ``ln_f``) and the new cache.

        With a cache, ``attention_mask`` covers past and new tokens: (B, T_past + T).
        """
        B, T = input_ids.shape
        past_len = 0 if past_kv is None else past_kv[0].length
        if past_len + T > self.config.n_positions:
            raise ValueError(f"sequence of {past_len + T} tokens is longer than n_positions="
                             f"{self.config.n_positions}; crop it (generate() does)")
        key_padding_mask = None
        if attention_mask is None:
            positions = torch.arange(past_len, past_len + T, device=input_ids.device).expand(B, T)
        else:
            mask = attention_mask.bool()
            if mask.shape != (B, past_len + T):
                raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected "
                                 f"{(B, past_len + T)} (past + new tokens)")
            # A token's position = the number of real tokens before it, whatever the padding side.
            positions = (mask.long().cumsum(1) - 1).clamp(min=0)[:, past_len:]  # (B, T)
            # Pads *after* the real tokens (right padding) are already hidden from every real token
            # by the causal mask, so the padding mask is only needed when a pad precedes a real
            # token. Skipping it leaves one (T, T) causal pattern shared by the whole batch.
            if (mask[:, 1:] & ~mask[:, :-1]).any():
                key_padding_mask = mask

        x = self.drop(self.wte(input_ids) + self.wpe(positions))  # (B, T, H)
        hidden, presents = [x], []
        for i, block in enumerate(self.blocks):
            x, present = block(x, key_padding_mask=key_padding_mask, causal=True,
                               past_kv=None if past_kv is None else past_kv[i], use_cache=use_cache)
            hidden.append(x)  # (B, T, H)
            presents.append(present)
        hidden[-1] = self.ln_f(x)  # the last layer is read after the final LayerNorm
        return hidden, (presents if use_cache else None)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> list[torch.Tensor]:
        """Every layer's hidden states: L+1 tensors (B, T, H); the last is after ``ln_f``.

        The encoder protocol of :class:`nblib.training.classifier.SentimentClassifier` (pooling ``last``).
        """
        hidden, _ = self._hidden_states(input_ids, attention_mask)
        return hidden

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The tied LM head: (…, H) states after ``ln_f`` → (…, V) next-token logits."""
        return F.linear(h, self.wte.weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_kv: Cache | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Cache]:
        """Next-token logits (B, T, V); with ``use_cache`` also the key/value cache to pass back."""
        hidden, present = self._hidden_states(input_ids, attention_mask, past_kv, use_cache)
        logits = self.logits(hidden[-1])  # (B, T, V)
        return (logits, present) if use_cache else logits

    # ------------------------------------------------------------------------------------------
    # The causal language-model loss

    def _next_token_logits(self, last_hidden: torch.Tensor, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) and targets (N,) for every real token that has a real next token."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        mask = attention_mask.bool()
        has_target = mask[:, :-1] & mask[:, 1:]  # (B, T-1): position t predicts token t+1
        h = last_hidden[:, :-1][has_target]  # (N, H): only these positions go through the head
        targets = input_ids[:, 1:][has_target]  # (N,)
        return self.logits(h), targets

    def lm_loss(self, last_hidden: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token cross-entropy averaged over real positions (GPT-1's auxiliary loss).

        ``last_hidden`` (B, T, H) is ``encode(...)[-1]``, i.e. already after ``ln_f``.
        """
        logits, targets = self._next_token_logits(last_hidden, input_ids, attention_mask)
        return F.cross_entropy(logits.float(), targets)

    def pretraining_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Causal-LM loss, next-token accuracy and perplexity on a :func:`collate_causal_lm` batch."""
        hidden, _ = self._hidden_states(batch["input_ids"], batch["attention_mask"])
        logits, targets = self._next_token_logits(hidden[-1], batch["input_ids"],
                                                  batch["attention_mask"])
        logits = logits.float()  # the softmax in fp32 even under bf16 autocast
        loss = F.cross_entropy(logits, targets)
        acc = (logits.argmax(-1) == targets).float().mean()
        return {"loss": loss, "acc": acc.detach(), "ppl": loss.detach().exp()}

    # ------------------------------------------------------------------------------------------
    # Generation

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        stop_id: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        pad_id: int = 0,
    ) -> torch.Tensor:
        """Continue the prompts ``idx`` (B, T) by up to ``max_new_tokens`` tokens → (B, T + n).

        ``greedy`` takes the most likely token; otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens and/or the smallest set whose probability
        reaches ``top_p`` (nucleus). A row that produces ``stop_id`` ([SEP]) is finished: later
        slots hold ``pad_id``, and generation ends when every row is finished. Prompts of
        different lengths are left-padded with an ``attention_mask``. The key/value cache makes
        each step cost one token; once the context reaches ``n_positions`` it is cropped to the
        last ``n_positions`` tokens and the cache rebuilt, which gives the same tokens as the
        uncached path.
        """
        if not greedy and temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        was_training = self.training
        self.eval()
        P = self.config.n_positions
        mask = None if attention_mask is None else attention_mask.bool()
        if mask is not None and not mask[:, -1].all():
            raise ValueError("generate() continues after the last column: pad prompts on the left "
                             "(attention_mask[:, -1] must be True)")
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        cache = None
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= P:
                # Only the newest token goes in; the cache holds every earlier key and value.
                hidden, cache = self._hidden_states(idx[:, -1:], mask, cache, use_cache=True)
            else:
                # First step, no cache, or the context outgrew n_positions: positions are absolute,
                # so a cropped context needs fresh keys and values. Run the last P tokens.
                window = None if mask is None else mask[:, -P:]
                hidden, cache = self._hidden_states(idx[:, -P:], window, use_cache=use_cache)
            logits = self.logits(hidden[-1][:, -1])  # (B, V): only the last position is needed
            next_id = self._pick(logits, temperature, top_k, top_p, greedy, generator)  # (B,)
            next_id = next_id.masked_fill(finished, pad_id)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            if stop_id is not None:
                finished |= next_id == stop_id
                if finished.all():
                    break
        self.train(was_training)
        return idx

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
              greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
        """One token id per row from next-token ``logits`` (B, V)."""
        if greedy:
            return logits.argmax(-1)
        logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)

    # ------------------------------------------------------------------------------------------
    # Hugging Face GPT-2 checkpoints (notebook 07_pretrained_checkpoints)

    @classmethod
    def from_hf(
        cls,
        path_or_state_dict: str | Path | dict[str, torch.Tensor],
        config: GPTConfig | None = None,
        strict: bool = True,
    ) -> GPT:
        """Build a GPT from a ``GPT2LMHeadModel`` (or ``GPT2Model``) checkpoint.

        Accepts a folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), a
        weights file (its folder's ``config.json`` is used when ``config`` is None) or a state
        dict (then ``config`` is required). As for BERT (:mod:`nblib.models.hf_io`): missing or
        unexpected keys raise ``CheckpointMismatchError`` naming them (``strict=False`` loads what
        fits, missing weights keep their random init); a wrong shape always raises and names the
        key; the ``LoadReport`` is kept in ``model.load_report``.
        """
        state, hf_config = read_hf_checkpoint(path_or_state_dict)
        if config is None:
            if hf_config is None:
                raise ValueError("no config.json found: pass config=GPTConfig(...) for this checkpoint")
            config = GPTConfig.from_hf_config(hf_config)
        model = cls(config)
        model.load_report = load_hf_weights(model, state, hf_keys(config), strict=strict)
        return model

    def to_hf(self) -> dict[str, torch.Tensor]:
        """This model's weights under ``GPT2LMHeadModel`` names, for
        ``GPT2LMHeadModel(GPT2Config(**model.hf_config())).load_state_dict(model.to_hf())``."""
        return export_hf_weights(self, hf_keys(self.config))

    def hf_config(self) -> dict[str, Any]:
        """The ``GPT2Config`` keyword arguments for this model."""
        return asdict(self.config)


# ----------------------------------------------------------------------------------------------
# Sampling filters


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
                  ) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and/or the top-p nucleus. (B, V) → (B, V)."""
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# ----------------------------------------------------------------------------------------------
# Causal-LM pretraining data


def collate_causal_lm(texts: Sequence[str], tokenizer: Any, max_len: int) -> dict[str, torch.Tensor]:
    """A causal-LM batch: each text as ``[CLS] text [SEP]``, right-padded.

    Returns ``input_ids`` (B, T) and ``attention_mask`` (B, T) bool; the model shifts the targets
    itself (position t predicts token t+1, real tokens only). A text longer than ``max_len``
    keeps ``[CLS]`` and its first ``max_len - 1`` characters and loses the ``[SEP]``: a cut text
    has no end, so the model is not taught that reviews stop mid-sentence. Use with
    ``functools.partial(collate_causal_lm, tokenizer=tok, max_len=128)``.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 ([CLS] and one token), got {max_len}")
    rows = []
    for text in texts:
        ids = tokenizer.encode(text, add_special=True)  # [CLS] text [SEP]
        rows.append(ids[:max_len])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def characters_read(seq_len: int) -> Callable[[str], int]:
    """How many characters of a text GPT's pretraining reads in a window of ``seq_len`` tokens (``[CLS]``
    takes one; a cut text loses its ``[SEP]``, see :func:`collate_causal_lm`): what the character
    budget counts (``LanguageModelDataModule(chars_read=...)``). Introduced in 04_gpt."""
    return functools.partial(characters_in_window, room=seq_len - 1)


# ----------------------------------------------------------------------------------------------
# Reading Hugging Face checkpoints

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older files


def _is_conv1d(hf_name: str) -> bool:
    """HF's Conv1D stores weights (in, out); nn.Linear wants (out, in): transpose exactly these."""
    return hf_name.endswith(_CONV1D)


def hf_key_map(config: GPTConfig) -> dict[str, str | tuple[str, ...]]:
    """HF ``GPT2LMHeadModel`` name → nblib name (or the three names c_attn splits into)."""
    m: dict[str, str | tuple[str, ...]] = {
        "transformer.wte.weight": "wte.weight",
        "transformer.wpe.weight": "wpe.weight",
        "transformer.ln_f.weight": "ln_f.weight",
        "transformer.ln_f.bias": "ln_f.bias",
    }
    for i in range(config.n_layer):
        hf, me = f"transformer.h.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            m[hf + f"ln_1.{p}"] = me + f"ln_attn.{p}"
            # c_attn packs [query | key | value] along its outputs
            m[hf + f"attn.c_attn.{p}"] = tuple(me + f"attn.{n}.{p}" for n in ("query", "key", "value"))
            m[hf + f"attn.c_proj.{p}"] = me + f"attn.out.{p}"
            m[hf + f"ln_2.{p}"] = me + f"ln_ffn.{p}"
            m[hf + f"mlp.c_fc.{p}"] = me + f"ffn.fc1.{p}"
            m[hf + f"mlp.c_proj.{p}"] = me + f"ffn.fc2.{p}"
    return m


def hf_keys(config: GPTConfig) -> KeyMap:
    """GPT-2's :class:`nblib.models.hf_io.KeyMap`: the names above, Conv1D weights transposed, the head
    tied to ``wte``, the causal-mask buffers dropped, and the ``transformer.`` prefix a bare
    ``GPT2Model`` checkpoint lacks."""
    return KeyMap(hf_key_map(config), model_name=f"GPT({config})",
                  tied={"lm_head.weight": "transformer.wte.weight"}, ignored=_IGNORED_SUFFIXES,
                  prefix="transformer.", bare_roots=("wte.", "wpe.", "h.", "ln_f."), transposed=_is_conv1d)
