"""BERT: a bidirectional Transformer encoder pretrained by masked language modelling (+ NSP).

Introduced in notebook 03_bert; loading public checkpoints (``from_hf``) in notebook
07_pretrained_checkpoints. Contents, in reading order:

1. ``BertConfig``: the sizes, with Hugging Face's field names.
2. ``BertEmbeddings``, ``BertModel`` (encoder + tanh pooler), ``BertForPreTraining`` (MLM and
   NSP heads, ``pretraining_step``), built on ``nblib.models.layers.TransformerBlock``.
3. Pretraining data as plain functions: ``mask_tokens`` (15%, 80/10/10, whole words),
   ``make_nsp_pairs``, ``collate_mlm`` / ``make_collate``.
4. Hugging Face weights: ``from_hf`` / ``to_hf`` with an explicit key map.

Long because it is one family's whole story in one file, as the course's design asks (a learner
reads it in one sitting, beside lesson 03): the model, its pretraining data and its checkpoint names.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# CheckpointMismatchError and LoadReport are re-exported: lessons catch bert.CheckpointMismatchError
from nblib.data.text import characters_in_window
from nblib.models.hf_io import CheckpointMismatchError as CheckpointMismatchError
from nblib.models.hf_io import (
    KeyMap,
    LoadReport,
    activation_from_hf,
    activation_to_hf,
    config_from_hf,
    export_hf_weights,
    load_hf_weights,
    read_hf_checkpoint,
)
from nblib.models.layers import TransformerBlock

IGNORE_INDEX = -100  # label of positions that carry no MLM prediction (PyTorch's CE default)
FIRST_REGULAR_ID = 5  # ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]; random replacements start here

# ---------------------------------------------------------------------------------------------
# 1. Configuration


@dataclass
class BertConfig:
    """BERT sizes. Field names follow Hugging Face's ``BertConfig`` so configs convert 1:1."""

    vocab_size: int = 4000  # tokens in the vocabulary (CharTokenizer.vocab_size)
    hidden_size: int = 256  # width H of every hidden state
    num_hidden_layers: int = 4  # Transformer blocks L
    num_attention_heads: int = 4  # heads per block; H must be divisible by it
    intermediate_size: int = 1024  # feed-forward width I (4·H in the paper)
    hidden_act: str = "gelu"  # "gelu" (exact erf, as HF) or "gelu_tanh" (the TF original)
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and residual branches
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights
    max_position_embeddings: int = 512  # longest input, [CLS]/[SEP] included
    type_vocab_size: int = 2  # segment ids: 0 = sentence A, 1 = sentence B
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon
    initializer_range: float = 0.02  # std of the N(0, σ) weight init
    pre_ln: bool = False  # course option: pre-LN blocks + a final LayerNorm (not BERT's layout)
    # width E of the embedding tables; None = hidden_size. When E differs from H, a Linear
    # `embeddings_project` maps E → H after the embedding LayerNorm, as HF's ElectraModel does
    # (ELECTRA-small: E = 128, H = 256), and the MLM head maps back to E (notebook 03b_electra).
    embedding_size: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ("gelu", "gelu_tanh"):
            raise ValueError(f"hidden_act must be 'gelu' or 'gelu_tanh', got {self.hidden_act!r}")
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1 or None, got {self.embedding_size}")

    @property
    def embedding_width(self) -> int:
        """E: the width of the embedding tables (``embedding_size``, or H when it is None)."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def factorised(self) -> bool:
        """True when the embeddings are E wide and projected to H (``embeddings_project``)."""
        return self.embedding_width != self.hidden_size

    @classmethod
    def tiny(cls, vocab_size: int = 100, **changes: Any) -> BertConfig:
        """2 layers × 32 wide: for tests and the smoke preset."""
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
        return cls(vocab_size=vocab_size, **{**sizes, **changes})

    @classmethod
    def small(cls, vocab_size: int = 4000, **changes: Any) -> BertConfig:
        """4 layers × 256 wide (4.45M parameters with V=4000, 3.3M outside the embeddings)."""
        return cls(vocab_size=vocab_size, **changes)

    @classmethod
    def from_preset(cls, preset: Any, vocab_size: int, pretraining: bool = False,
                    **changes: Any) -> BertConfig:
        """The Transformer size of an ``nblib.presets.Preset`` (shared with GPT); ``pretraining``
        sets both dropouts to the preset's ``pretrain_dropout`` (the weights are the same)."""
        sizes = dict(hidden_size=preset.hidden_size, num_hidden_layers=preset.num_layers,
                     num_attention_heads=preset.num_heads, intermediate_size=preset.intermediate_size,
                     max_position_embeddings=max(512, preset.max_len, preset.pretrain_seq_len))
        if pretraining:
            sizes.update(hidden_dropout_prob=preset.pretrain_dropout,
                         attention_probs_dropout_prob=preset.pretrain_dropout)
        return cls(vocab_size=vocab_size, **{**sizes, **changes})

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> BertConfig:
        """From a Hugging Face ``config.json`` dict; unknown fields are ignored
        (:func:`nblib.models.hf_io.config_from_hf`). Relative position embeddings, which the course's
        encoder does not have, are refused rather than loaded as absolute ones."""
        kind = hf.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"position_embedding_type {kind!r} is not supported (absolute only)")
        return config_from_hf(cls, hf, skip=("pre_ln",),
                              hidden_act=activation_from_hf(hf.get("hidden_act", "gelu")))

    def to_hf_config(self) -> dict[str, Any]:
        """The matching Hugging Face ``BertConfig`` fields (post-LN models only)."""
        if self.pre_ln:
            raise ValueError("a pre-LN model has no Hugging Face BERT equivalent (HF BERT is post-LN)")
        if self.factorised:
            raise ValueError("factorised embeddings have no Hugging Face BERT equivalent (ELECTRA has them)")
        hf = dataclasses.asdict(self)
        del hf["pre_ln"], hf["embedding_size"]
        hf["hidden_act"] = activation_to_hf(self.hidden_act)
        return hf


def post_ln_config(config: BertConfig | Mapping[str, Any] | None, hf_config: Mapping[str, Any] | None,
                   family: str) -> BertConfig:
    """The ``BertConfig`` for a Hugging Face checkpoint of a post-LN ``family`` (BERT, ELECTRA):
    ``config`` as given (a ``BertConfig`` or an HF dict), else the ``config.json`` beside the weights."""
    if config is None:
        if hf_config is None:
            raise ValueError("no config.json found beside the weights: pass config=BertConfig(...) "
                             "or the HF config dict (the number of attention heads and the embedding "
                             "size cannot be read from the weights)")
        config = hf_config
    if not isinstance(config, BertConfig):
        config = BertConfig.from_hf_config(config)
    if config.pre_ln:
        raise ValueError(f"Hugging Face {family} is post-LN: load it with pre_ln=False")
    return config


# ---------------------------------------------------------------------------------------------
# 2. The model


class BertEmbeddings(nn.Module):
    """token + position + segment embeddings, then LayerNorm and dropout (notebook 03_bert)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.embedding_width  # = H unless the embeddings are factorised (ELECTRA)
        self.word_embeddings = nn.Embedding(config.vocab_size, E)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"input of {T} tokens is longer than max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}; truncate it")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)  # right padding: real tokens at 0..n-1
        x = (self.word_embeddings(input_ids)  # (B, T, H)
             + self.position_embeddings(positions)[None]  # (1, T, H)
             + self.token_type_embeddings(token_type_ids))  # (B, T, H)
        return self.dropout(self.layer_norm(x))


class BertModel(nn.Module):
    """Embeddings, L Transformer blocks (padding mask only, no causal mask), and the pooler.

    Introduced in notebook 03_bert. ``encode`` returns every layer's hidden states.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        # Factorised embeddings (ELECTRA): E → H after the embeddings' LayerNorm; None otherwise.
        self.embeddings_project = (nn.Linear(config.embedding_width, config.hidden_size)
                                   if config.factorised else None)
        self.layers = nn.ModuleList(
            TransformerBlock(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                             pre_ln=config.pre_ln, activation=config.hidden_act,
                             dropout=config.hidden_dropout_prob,
                             attention_dropout=config.attention_probs_dropout_prob,
                             layer_norm_eps=config.layer_norm_eps)
            for _ in range(config.num_hidden_layers)
        )
        # Pre-LN blocks leave the residual stream un-normalised: normalise the last layer once.
        self.final_ln = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                         if config.pre_ln else None)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
        """L+1 hidden states (B, T, H), embeddings first. ``attention_mask`` (B, T): True = real."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None \
            else attention_mask.bool()
        h = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        if self.embeddings_project is not None:
            h = self.embeddings_project(h)  # (B, T, H)
        states = [h]
        for layer in self.layers:
            h, _ = layer(h, key_padding_mask=mask)  # (B, T, H)
            states.append(h)
        if self.final_ln is not None:
            states[-1] = self.final_ln(h)
        return states

    def pool(self, h_cls: Tensor) -> Tensor:
        """BERT's pooler: tanh(W h_[CLS] + b), (B, H) → (B, H)."""
        return torch.tanh(self.pooler(h_cls))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        return self.encode(input_ids, attention_mask, token_type_ids)[-1]  # (B, T, H)


class MaskedLMHead(nn.Module):
    """Linear → GELU → LayerNorm → logits = h Eᵀ + bias, with E the (tied) word embeddings."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # H → E: back to the width of the tied embeddings (E = H unless factorised)
        self.dense = nn.Linear(config.hidden_size, config.embedding_width)
        self.approximate = "tanh" if config.hidden_act == "gelu_tanh" else "none"
        self.layer_norm = nn.LayerNorm(config.embedding_width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: Tensor, word_embeddings: Tensor) -> Tensor:
        h = self.layer_norm(F.gelu(self.dense(h), approximate=self.approximate))  # (..., E)
        return F.linear(h, word_embeddings, self.bias)  # (..., V)


class BertForPreTraining(nn.Module):
    """BERT with its two pretraining heads: masked LM (tied decoder) and next-sentence prediction.

    Introduced in notebook 03_bert. Exposes the encoder protocol (``encode``, ``pool``,
    ``hidden_size``) so ``nblib.training.classifier.SentimentClassifier`` can fine-tune it directly.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm_head = MaskedLMHead(config)
        self.nsp_head = nn.Linear(config.hidden_size, 2)  # 0 = B follows A, 1 = B is random (HF)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # --- the encoder protocol
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
        return self.bert.encode(input_ids, attention_mask, token_type_ids)

    def pool(self, h_cls: Tensor) -> Tensor:
        return self.bert.pool(h_cls)

    # --- heads
    def mlm_logits(self, h: Tensor) -> Tensor:
        """Vocabulary logits (..., V) for hidden states (..., H)."""
        return self.mlm_head(h, self.bert.embeddings.word_embeddings.weight)

    def nsp_logits(self, h_cls: Tensor) -> Tensor:
        """(B, 2) logits from the [CLS] hidden state, through the pooler."""
        return self.nsp_head(self.pool(h_cls))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """MLM logits at every position (B, T, V) and NSP logits (B, 2)."""
        h = self.encode(input_ids, attention_mask, token_type_ids)[-1]  # (B, T, H)
        return self.mlm_logits(h), self.nsp_logits(h[:, 0])

    def pretraining_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """MLM (+ NSP when the batch has ``next_sentence_label``) loss and accuracies.

        The MLM head runs only at the selected positions (labels != -100): about 15% of the
        tokens, which saves most of the (N, V) logits work.
        """
        h = self.encode(batch["input_ids"], batch["attention_mask"],
                        batch.get("token_type_ids"))[-1]  # (B, T, H)
        labels = batch["labels"]  # (B, T), -100 where nothing is predicted
        picked = labels != IGNORE_INDEX
        targets = labels[picked]  # (N,)
        if targets.numel() == 0:  # nothing to predict (only empty texts): a zero loss, no NaN
            mlm_loss = h.sum() * 0.0
            mlm_acc = torch.zeros((), device=h.device)
        else:
            logits = self.mlm_logits(h[picked])  # (N, V)
            mlm_loss = F.cross_entropy(logits.float(), targets)
            mlm_acc = (logits.argmax(-1) == targets).float().mean()
        out = {"loss": mlm_loss, "mlm_loss": mlm_loss.detach(), "mlm_acc": mlm_acc}
        if "next_sentence_label" in batch:
            nsp = self.nsp_logits(h[:, 0])  # (B, 2)
            nsp_targets = batch["next_sentence_label"]
            nsp_loss = F.cross_entropy(nsp.float(), nsp_targets)
            out["loss"] = mlm_loss + nsp_loss
            out["nsp_loss"] = nsp_loss.detach()
            out["nsp_acc"] = (nsp.argmax(-1) == nsp_targets).float().mean()
        return out

    # --- Hugging Face weights
    @classmethod
    def from_hf(cls, source: str | Path | Mapping[str, Tensor],
                config: BertConfig | Mapping[str, Any] | None = None,
                strict: bool = True) -> BertForPreTraining:
        """Build a model from Hugging Face BERT weights (notebook 07_pretrained_checkpoints).

        ``source``: a folder with ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``
        (or a sharded ``*.index.json``), a single weights file, or a state dict. ``config``: a
        ``BertConfig`` or an HF config dict; needed when no ``config.json`` lies beside the weights.
        ``strict=False`` loads what fits and leaves the rest randomly initialised; the
        ``LoadReport`` (missing / unexpected keys by name) is kept in ``model.load_report``.
        """
        state, hf_config = read_hf_checkpoint(source)
        model = cls(post_ln_config(config, hf_config, "BERT"))
        model.load_report = load_hf_state_dict(model, state, strict=strict)
        return model

    def to_hf(self) -> dict[str, Tensor]:
        """The weights under Hugging Face ``BertForPreTraining`` names (tied copies included)."""
        if self.config.pre_ln:
            raise ValueError("a pre-LN model has no Hugging Face BERT equivalent (HF BERT is post-LN)")
        return export_hf_weights(self, hf_keys(self.config))


def classification_pooling(nsp: bool) -> Literal["cls", "mean"]:
    """Which vector of the last layer a review is classified from (notebooks 03_bert, 03b_electra):
    ``"cls"`` (``[CLS]`` through the tanh pooler) for an encoder pretrained with next-sentence prediction,
    ``"mean"`` (the mean over the real positions) for one pretrained without it.

    Only NSP trains the ``[CLS]`` output and the pooler. Masked LM (lesson 03's default) and ELECTRA's
    replaced-token detection train the other positions, so without NSP a fine-tuning from ``[CLS]``
    starts from an untrained pooler while the mean reads positions the pretraining did train. On
    validation (``small``, lesson 03's BERT, seed 0; experiments/pooling_probe.py, docs/experiments.md,
    lesson 03), pretrained ``[CLS]`` → mean: 100 labels 0.646 → 0.772, 1,000 0.822 → 0.834, all
    0.857 → 0.866; its random twin, which gets the same pooling: 0.731 → 0.722, 0.836 → 0.840,
    0.863 → 0.854.
    """
    return "cls" if nsp else "mean"


# ---------------------------------------------------------------------------------------------
# 3. Pretraining data: masking, NSP pairs, collation

SENTENCE_ENDS = set("，。！？,.!?；;")


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    tokenizer: Any,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    word_ids: Tensor | None = None,
    max_predictions: int | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: (masked input_ids, labels), both (B, T); labels are -100 off the selection.

    Per sequence, select ``max(1, round(n · mlm_probability))`` of its n real, non-special tokens
    ([PAD], [CLS], [SEP] are never selected); then 80% → [MASK], 10% → a random regular token
    (id ≥ 5), 10% unchanged. With ``word_ids`` (B, T) (word index per token, < 0 for specials)
    whole words are selected: words are taken in random order while they fit in the budget
    (the first word is always taken). ``tokenizer`` needs ``pad_id``, ``cls_id``, ``sep_id``,
    ``mask_id`` and ``vocab_size``. Tensors and ``generator`` live on the CPU.
    """
    if tokenizer.vocab_size <= FIRST_REGULAR_ID:
        raise ValueError(f"vocabulary of {tokenizer.vocab_size} has no regular tokens (ids >= 5)")
    B, T = input_ids.shape
    specials = torch.tensor([tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id])
    candidate = attention_mask.bool() & ~torch.isin(input_ids, specials)  # (B, T)
    if word_ids is not None:
        candidate &= word_ids >= 0
    n_real = candidate.sum(1)  # (B,)
    budget = (n_real * mlm_probability).round().long().clamp(min=1)
    budget = torch.minimum(budget, n_real)
    if max_predictions is not None:
        budget = budget.clamp(max=max_predictions)

    # A random order of the candidates: rank[b, t] = place of token t in sequence b's order.
    if word_ids is None:
        scores = torch.rand(B, T, generator=generator)
    else:  # one score per word, so the pieces of a word sit next to each other in the order
        word = torch.where(word_ids >= 0, word_ids + 1, 0)  # 0 = "no word" (specials, padding)
        scores = torch.rand(B, int(word.max()) + 1, generator=generator).gather(1, word)
    scores = scores.masked_fill(~candidate, 2.0)  # non-candidates last
    order = scores.argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T).expand(B, T))

    if word_ids is None:
        selected = candidate & (rank < budget[:, None])
    else:
        n_words = int(word.max()) + 1
        last = torch.full((B, n_words), -1).scatter_reduce(
            1, word, torch.where(candidate, rank, -1), "amax")  # last place of each word
        first = torch.full((B, n_words), T).scatter_reduce(
            1, word, torch.where(candidate, rank, T), "amin")  # first place of each word
        word_selected = (last >= 0) & ((last < budget[:, None]) | (first == 0))
        selected = candidate & word_selected.gather(1, word)

    # 80% [MASK], 10% a random regular token, 10% unchanged (decided per token).
    action = torch.rand(B, T, generator=generator)
    random_ids = torch.randint(FIRST_REGULAR_ID, tokenizer.vocab_size, (B, T), generator=generator)
    masked = input_ids.clone()
    masked[selected & (action < 0.8)] = tokenizer.mask_id
    to_random = selected & (action >= 0.8) & (action < 0.9)
    masked[to_random] = random_ids[to_random]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


def split_in_two(text: str) -> tuple[str, str]:
    """Cut a review into two parts after the sentence punctuation nearest its middle
    (or at the middle when there is none)."""
    cuts = [i + 1 for i, ch in enumerate(text[:-1]) if ch in SENTENCE_ENDS]
    middle = len(text) / 2
    cut = min(cuts, key=lambda c: abs(c - middle)) if cuts else len(text) // 2
    return text[:cut], text[cut:]


def make_nsp_pairs(texts: Sequence[str], rng: random.Random,
                   random_next_prob: float = 0.5) -> list[tuple[str, str, int]]:
    """(A, B, label) per text: A = first part; B = its own second part (label 0, "is next") or,
    with probability ``random_next_prob``, the second part of another text (label 1, HF's labels)."""
    halves = [split_in_two(t) for t in texts]
    pairs = []
    for i, (a, b) in enumerate(halves):
        if len(texts) > 1 and rng.random() < random_next_prob:
            j = rng.randrange(len(texts) - 1)
            j += j >= i  # any text but this one
            other = halves[j][1] or halves[j][0]  # a one-character text has no second part
            pairs.append((a, other, 1))
        else:
            pairs.append((a, b, 0))
    return pairs


def _word_ids(text: str) -> list[int]:
    """Index of the jieba word each character belongs to."""
    import jieba

    jieba.setLogLevel(60)
    ids: list[int] = []
    for w, word in enumerate(jieba.lcut(text)):
        ids.extend([w] * len(word))
    return ids


def _trim_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """New lengths of A and B that fit ``budget``: cut the longer side first, then both."""
    excess = la + lb - budget
    if excess <= 0:
        return la, lb
    cut = min(excess, abs(la - lb))
    la, lb = (la - cut, lb) if la > lb else (la, lb - cut)
    excess -= cut
    return la - (excess + 1) // 2, lb - excess // 2


def characters_read(seq_len: int) -> Callable[[str], int]:
    """How many characters of a text BERT's pretraining reads in a window of ``seq_len`` tokens
    (``[CLS]`` and ``[SEP]`` take two): what the character budget counts
    (``LanguageModelDataModule(chars_read=...)``). ELECTRA reads the same. Introduced in 03_bert."""
    return functools.partial(characters_in_window, room=seq_len - 2)


def collate_mlm(
    texts: Sequence[str],
    tokenizer: Any,
    max_len: int = 128,
    *,
    nsp: bool = False,
    whole_word: bool = False,
    mlm_probability: float = 0.15,
    seed: int | None = None,
) -> dict[str, Tensor]:
    """A pretraining batch from raw texts (notebook 03_bert).

    Without NSP each text becomes ``[CLS] text [SEP]`` (head-truncated to ``max_len``); with NSP
    ``[CLS] A [SEP] B [SEP]`` with segment ids 0/1, the longer side trimmed away from the A|B
    junction. Returns input_ids, attention_mask (bool), token_type_ids, labels
    (+ next_sentence_label with NSP). ``seed=None`` draws one from torch's global generator, so
    ``pl.seed_everything`` makes a run reproducible while every batch is masked differently.
    Whole-word masking segments with jieba and needs one token per character (CharTokenizer).
    """
    if max_len < (3 if nsp else 2):
        raise ValueError(f"max_len {max_len} leaves no room for text and the special tokens")
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)

    def pieces(text: str) -> tuple[list[int], list[int]]:
        ids = tokenizer.encode(text, add_special=False)
        words = _word_ids(text) if whole_word else [0] * len(ids)
        if len(words) != len(ids):
            raise ValueError("whole-word masking needs one token per character (a CharTokenizer)")
        return ids, words

    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    rows: list[tuple[list[int], list[int], list[int]]] = []  # (ids, segment ids, word ids)
    nsp_labels: list[int] = []
    if nsp:
        for a, b, label in make_nsp_pairs(texts, rng):
            (a_ids, a_words), (b_ids, b_words) = pieces(a), pieces(b)
            la, lb = _trim_pair(len(a_ids), len(b_ids), max_len - 3)
            a_ids, a_words = a_ids[len(a_ids) - la:], a_words[len(a_words) - la:]  # keep A's end
            b_ids, b_words = b_ids[:lb], b_words[:lb]  # keep B's start
            offset = max(a_words, default=-1) + 1  # B's words are numbered after A's
            rows.append(([cls_id, *a_ids, sep_id, *b_ids, sep_id],
                          [0] * (la + 2) + [1] * (lb + 1),
                          [-1, *a_words, -1, *[w + offset for w in b_words], -1]))
            nsp_labels.append(label)
    else:
        for text in texts:
            ids, words = pieces(text)
            ids, words = ids[: max_len - 2], words[: max_len - 2]
            rows.append(([cls_id, *ids, sep_id], [0] * (len(ids) + 2), [-1, *words, -1]))

    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    word_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, types, words) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        token_type_ids[r, : len(ids)] = torch.tensor(types)
        word_ids[r, : len(ids)] = torch.tensor(words)
        attention_mask[r, : len(ids)] = True
    masked, labels = mask_tokens(input_ids, attention_mask, tokenizer, mlm_probability, generator,
                                 word_ids if whole_word else None)
    batch = {"input_ids": masked, "attention_mask": attention_mask,
             "token_type_ids": token_type_ids, "labels": labels}
    if nsp:
        batch["next_sentence_label"] = torch.tensor(nsp_labels, dtype=torch.long)
    return batch


def make_collate(tokenizer: Any, max_len: int = 128, **options: Any) -> Callable[[list[str]], dict]:
    """``collate_mlm`` with the tokenizer and options bound: the DataModule's ``collate``."""
    return functools.partial(collate_mlm, tokenizer=tokenizer, max_len=max_len, **options)


# ---------------------------------------------------------------------------------------------
# 4. Hugging Face weights

# Aliases HF keeps in its state dict for tied weights: alias -> the key it shares storage with.
HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# Buffers (not weights) found in some HF files: dropped on load.
HF_IGNORED = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
# One encoder layer: HF module name -> nblib module name (each with .weight and .bias).
HF_LAYER_MAP = {
    "attention.self.query": "attn.query",
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "ln_attn",
    "intermediate.dense": "ffn.fc1",
    "output.dense": "ffn.fc2",
    "output.LayerNorm": "ln_ffn",
}


def hf_key_map(config: BertConfig) -> dict[str, str]:
    """Hugging Face ``BertForPreTraining`` state-dict name -> nblib name (tied aliases excluded)."""
    names = {
        "bert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight": "bert.embeddings.layer_norm.weight",
        "bert.embeddings.LayerNorm.bias": "bert.embeddings.layer_norm.bias",
    }
    for i in range(config.num_hidden_layers):
        for hf, ours in HF_LAYER_MAP.items():
            for p in ("weight", "bias"):
                names[f"bert.encoder.layer.{i}.{hf}.{p}"] = f"bert.layers.{i}.{ours}.{p}"
    names.update({
        "bert.pooler.dense.weight": "bert.pooler.weight",
        "bert.pooler.dense.bias": "bert.pooler.bias",
        "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
        "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "mlm_head.layer_norm.weight",
        "cls.predictions.transform.LayerNorm.bias": "mlm_head.layer_norm.bias",
        "cls.predictions.bias": "mlm_head.bias",
        "cls.seq_relationship.weight": "nsp_head.weight",
        "cls.seq_relationship.bias": "nsp_head.bias",
    })
    return names


def hf_keys(config: BertConfig) -> KeyMap:
    """BERT's :class:`nblib.models.hf_io.KeyMap`: the names above, the tied decoder, the dropped buffers,
    and the ``bert.`` prefix a bare ``BertModel`` checkpoint lacks."""
    return KeyMap(hf_key_map(config), model_name=f"BertForPreTraining({config})", tied=HF_TIED,
                  ignored=HF_IGNORED, prefix="bert.", bare_roots=("embeddings.", "encoder.", "pooler."))


def load_hf_state_dict(model: BertForPreTraining, state: Mapping[str, Tensor],
                       strict: bool = True) -> LoadReport:
    """Copy HF-named weights into ``model`` (:func:`nblib.models.hf_io.load_hf_weights` with BERT's key
    map). Raises ``CheckpointMismatchError`` naming every missing and unexpected key (when
    ``strict``) and any key whose shape disagrees."""
    return load_hf_weights(model, state, hf_keys(model.config), strict=strict)
