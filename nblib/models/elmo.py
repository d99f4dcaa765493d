"""ELMo: a character-aware bidirectional LSTM language model (Peters et al. 2018).

Introduced in notebook 02_elmo, which builds the pieces in this order:

1. :func:`collate_elmo`: texts → jieba words → word ids (the softmax targets) and each word spelt
   by its characters. Every text is wrapped as ``<S> words </S>``.
2. :class:`CharCNN`: the characters of one word → one vector (convolutions of several widths,
   max over the word, ReLU). A word never seen in training still gets a vector from its characters.
3. :class:`Highway`: a gated layer that carries its input by default.
4. :class:`TokenEncoder`: CharCNN → Highway → linear projection: layer 0, context-free.
5. :class:`BiLM`: a forward and a backward LSTM language model over layer 0, one softmax shared by
   both directions, loss ½(forward + backward). ``encode`` returns 3 layers for the scalar mix.

Shapes: B batch, T words (``<S>`` and ``</S>`` included), C character slots per word,
F char-CNN features, P projection size (every LSTM's output), V word vocabulary.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nblib.data.text import TruncationStrategy, truncate

# The character tokenizer's [CLS] and [SEP] ids double as begin/end-of-word marks, as in the
# original ELMo: a filter can then fire on "a word that starts with 不" or "ends with 店".
BOW_ID, EOW_ID = 2, 3
# The sentence marks are words too, so they need a spelling; no real word is spelt like these.
BOS_SPELLING = [BOW_ID, BOW_ID, EOW_ID]
EOS_SPELLING = [BOW_ID, EOW_ID, EOW_ID]
BOS_WORD, EOS_WORD = "<S>", "</S>"  # WordTokenizer ids 2 and 3

# torch's CPU LSTM falls back from oneDNN to its own kernel when proj_size > 0 and says so on the
# first call; the result is the same, so keep the lesson's output clean.
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")

TINY_CNN = dict(char_dim=8, filters=((1, 8), (2, 8), (3, 16)), n_highway=1)


@dataclass
class ElmoConfig:
    """ELMo hyper-parameters. The defaults are the CPU-size ELMo: 3.6M parameters with 5k characters
    and an adaptive softmax over 20k words, 5.6M with a full softmax. The original had 2048 CNN
    filters, LSTM cells of 4096 and projections of 512."""

    char_vocab_size: int  # characters the CNN knows (CharTokenizer.vocab_size); [PAD]=0, [UNK]=1
    word_vocab_size: int = 20_000  # words in the shared softmax (WordTokenizer.vocab_size)
    char_dim: int = 16  # width of one character embedding
    max_chars_per_word: int = 10  # character slots per word, begin/end-of-word marks included
    # (width, count) of each convolution: character n-gram detectors of 1 to 4 characters
    filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 64), (3, 128), (4, 128))
    n_highway: int = 2  # highway layers after the CNN (the original uses 2)
    projection_dim: int = 128  # P: the token layer and every LSTM output (so layer 0 can be [x, x])
    cell_size: int = 512  # LSTM memory cells, projected down to P at each step (an LSTMP)
    n_layers: int = 2  # LSTM layers per direction; layers 2.. add a residual from the layer below
    dropout: float = 0.1  # on each LSTM layer's input and on the states that reach the softmax
    softmax: Literal["adaptive", "full"] = "adaptive"  # adaptive: rare words in cheaper clusters
    adaptive_cutoffs: tuple[int, ...] | None = None  # cluster boundaries; None: (V // 10, V // 2)
    adaptive_div_value: float = 4.0  # each tail cluster projects P down by this factor again

    def __post_init__(self) -> None:
        self.filters = tuple((int(w), int(n)) for w, n in self.filters)  # lists from JSON → tuples
        if self.adaptive_cutoffs is not None:
            self.adaptive_cutoffs = tuple(int(c) for c in self.adaptive_cutoffs)
        if self.softmax not in ("adaptive", "full"):
            raise ValueError(f"softmax must be 'adaptive' or 'full', got {self.softmax!r}")
        if not self.filters:
            raise ValueError("the char-CNN needs at least one filter")
        widest = max(w for w, _ in self.filters)
        if widest > self.max_chars_per_word:
            raise ValueError(f"a filter of width {widest} does not fit in max_chars_per_word="
                             f"{self.max_chars_per_word}")
        if self.max_chars_per_word < 3:
            raise ValueError("max_chars_per_word must be >= 3 (begin mark, a character, end mark)")
        if self.n_layers < 1 or self.n_highway < 0:
            raise ValueError(f"need n_layers >= 1 and n_highway >= 0, "
                             f"got {self.n_layers} and {self.n_highway}")
        if self.softmax == "adaptive":
            cuts, vocab = self.cutoffs, self.word_vocab_size
            if list(cuts) != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= vocab:
                raise ValueError(f"adaptive_cutoffs must rise strictly within (0, {vocab}), got "
                                 f"{cuts}; use softmax='full' for a very small vocabulary")

    @property
    def cutoffs(self) -> tuple[int, ...]:
        """The adaptive softmax's cluster boundaries (the head holds the most frequent words)."""
        if self.adaptive_cutoffs is not None:
            return self.adaptive_cutoffs
        return (self.word_vocab_size // 10, self.word_vocab_size // 2)

    @classmethod
    def tiny(cls, char_vocab_size: int, word_vocab_size: int, **overrides: Any) -> ElmoConfig:
        """A few-thousand-parameter ELMo for tests and quick demos (full softmax)."""
        base = dict(char_vocab_size=char_vocab_size, word_vocab_size=word_vocab_size,
                    max_chars_per_word=6, projection_dim=16, cell_size=32, softmax="full",
                    **TINY_CNN)
        return cls(**{**base, **overrides})

    @classmethod
    def from_preset(cls, preset: Any, char_vocab_size: int, word_vocab_size: int,
                    pretraining: bool = False, **overrides: Any) -> ElmoConfig:
        """The size an :class:`nblib.presets.Preset` gives ELMo (a smaller CNN below P = 64);
        ``pretraining`` sets the dropout to the preset's ``pretrain_dropout``."""
        base: dict[str, Any] = dict(
            char_vocab_size=char_vocab_size, word_vocab_size=word_vocab_size,
            projection_dim=preset.elmo_projection, cell_size=preset.elmo_cell_size)
        if pretraining:
            base["dropout"] = preset.pretrain_dropout
        if preset.elmo_projection < 64:
            base.update(TINY_CNN)
        return cls(**{**base, **overrides})


# ---------------------------------------------------------------------------------------------
# Batches


def spell(word: str, char_tokenizer: Any, max_chars_per_word: int) -> list[int]:
    """Character ids of ``word`` as ``[bow] chars [eow]``, keeping its first ``max - 2`` chars."""
    lookup, unk = char_tokenizer.token_to_id, char_tokenizer.unk_id
    return [BOW_ID, *(lookup.get(c, unk) for c in word[: max_chars_per_word - 2]), EOW_ID]


def collate_elmo(
    texts: Sequence[str],
    word_tokenizer: Any,
    char_tokenizer: Any,
    max_words: int,
    max_chars_per_word: int,
    truncation: TruncationStrategy = "head",
) -> dict[str, Tensor]:
    """Encode and right-pad a batch of texts for ELMo (pretraining and fine-tuning alike).

    Each text becomes ``<S> w1 … wn </S>`` with at most ``max_words`` words in all (the review is
    cut by ``truncation``). Returns ``input_ids`` (B, T) word ids (the softmax targets; unknown
    words are [UNK]), ``attention_mask`` (B, T) bool, and ``char_ids`` (B, T, C) with
    C = ``max_chars_per_word`` always, so a word's vector never depends on its batch; 0 = padding.
    """
    if not texts:
        raise ValueError("cannot collate an empty batch")
    if max_words < 3:
        raise ValueError(f"max_words must be >= 3 (<S>, a word, </S>), got {max_words}")
    if max_chars_per_word < 3:
        raise ValueError(f"max_chars_per_word must be >= 3, got {max_chars_per_word}")
    sentences = [truncate(word_tokenizer.tokenize(text), max_words - 2, truncation)
                 for text in texts]
    width = max(len(words) for words in sentences) + 2
    input_ids = torch.zeros(len(texts), width, dtype=torch.long)
    attention_mask = torch.zeros(len(texts), width, dtype=torch.bool)
    char_ids = torch.zeros(len(texts), width, max_chars_per_word, dtype=torch.long)
    for row, words in enumerate(sentences):
        ids = word_tokenizer.encode([BOS_WORD, *words, EOS_WORD])
        input_ids[row, : len(ids)] = torch.as_tensor(ids)
        attention_mask[row, : len(ids)] = True
        spellings = [BOS_SPELLING, *(spell(w, char_tokenizer, max_chars_per_word) for w in words),
                     EOS_SPELLING]
        for t, chars in enumerate(spellings):
            char_ids[row, t, : len(chars)] = torch.as_tensor(chars)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "char_ids": char_ids}


def make_collate(word_tokenizer: Any, char_tokenizer: Any, max_words: int,
                 max_chars_per_word: int) -> Callable[[list[str]], dict[str, Tensor]]:
    """``collate_elmo`` with its settings fixed: texts → batch, for the data modules."""
    return functools.partial(collate_elmo, word_tokenizer=word_tokenizer,
                             char_tokenizer=char_tokenizer, max_words=max_words,
                             max_chars_per_word=max_chars_per_word)


def _word_chars_read(text: str, word_tokenizer: Any, max_words: int) -> int:
    return sum(len(w) for w in truncate(word_tokenizer.tokenize(text), max_words - 2))


def characters_read(word_tokenizer: Any, max_words: int) -> Callable[[str], int]:
    """How many characters of a text ELMo's pretraining reads: those of its jieba words, cut to
    ``max_words`` with ``<S>`` and ``</S>`` (which are not counted): what the character budget counts
    (``LanguageModelDataModule(chars_read=...)``). Introduced in 02_elmo."""
    return functools.partial(_word_chars_read, word_tokenizer=word_tokenizer, max_words=max_words)


# ---------------------------------------------------------------------------------------------
# The token layer: characters → one context-free vector per word


class CharCNN(nn.Module):
    """Character embeddings → convolutions of several widths → max over the word → ReLU → concat.

    Each filter is a learned character n-gram detector; the max keeps how strongly it fires
    anywhere in the word. Introduced in notebook 02_elmo.
    """

    def __init__(self, char_vocab_size: int, char_dim: int, filters: Sequence[tuple[int, int]]):
        super().__init__()
        self.embed = nn.Embedding(char_vocab_size, char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, count, kernel_size=width)
                                   for width, count in filters)
        self.output_size = sum(count for _, count in filters)  # F

    def forward(self, char_ids: Tensor) -> Tensor:
        B, T, C = char_ids.shape
        # (B·T, D, C): one row per word, channels first as Conv1d wants
        x = self.embed(char_ids.reshape(B * T, C)).transpose(1, 2)
        features = [conv(x).amax(dim=-1) for conv in self.convs]  # each (B·T, count)
        return torch.relu(torch.cat(features, dim=-1)).view(B, T, -1)  # (B, T, F)


class Highway(nn.Module):
    """``n_layers`` highway layers (Srivastava et al. 2015) of width ``size``.

    We use bilm-tf's form: ``out = t·relu(W x) + (1 − t)·x`` with the transform gate
    ``t = σ(W_t x + b_t)`` and ``b_t = −2``, so at initialisation t ≈ 0.12 and the layer carries its
    input almost unchanged (the network starts near the identity and learns how much to transform).
    allennlp writes ``out = g·x + (1 − g)·f(W x)``: its gate g = 1 − t is the carry gate and carries
    by default with a *positive* bias. Converting weights between the two swaps g and 1 − g.
    Introduced in notebook 02_elmo.
    """

    def __init__(self, size: int, n_layers: int, gate_bias: float = -2.0):
        super().__init__()
        self.transforms = nn.ModuleList(nn.Linear(size, size) for _ in range(n_layers))
        self.gates = nn.ModuleList(nn.Linear(size, size) for _ in range(n_layers))
        for gate in self.gates:
            nn.init.constant_(gate.bias, gate_bias)

    def forward(self, x: Tensor) -> Tensor:
        for transform, gate in zip(self.transforms, self.gates, strict=True):
            t = torch.sigmoid(gate(x))  # (..., size): how much to transform; ≈ 0.12 at init
            x = t * torch.relu(transform(x)) + (1 - t) * x
        return x


class TokenEncoder(nn.Module):
    """CharCNN → Highway → Linear(F → P): ELMo's layer 0, one vector per word from its chars."""

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.char_cnn = CharCNN(config.char_vocab_size, config.char_dim, config.filters)
        self.highway = Highway(self.char_cnn.output_size, config.n_highway)
        self.projection = nn.Linear(self.char_cnn.output_size, config.projection_dim)

    def forward(self, char_ids: Tensor) -> Tensor:
        return self.projection(self.highway(self.char_cnn(char_ids)))  # (B, T, P)


# ---------------------------------------------------------------------------------------------
# The bidirectional language model


def reversed_positions(lengths: Tensor, width: int) -> Tensor:
    """(B, T) index that reverses each row within its real length and leaves the padding in place.

    Gathering with it turns ``a b c PAD`` into ``c b a PAD``; gathering twice gives the original.
    """
    t = torch.arange(width, device=lengths.device)[None, :]  # (1, T)
    n = lengths[:, None]  # (B, 1)
    return torch.where(t < n, n - 1 - t, t)  # (B, T)


def _gather_time(h: Tensor, index: Tensor) -> Tensor:
    """h (B, T, P) rearranged along time by index (B, T)."""
    return h.gather(1, index[..., None].expand_as(h))


class BiLM(nn.Module):
    """ELMo's biLM: the token layer, a forward and a backward LSTM stack, one shared softmax.

    - The two directions are separate stacks of ``n_layers`` LSTMs with projection (LSTMP, one
      ``nn.LSTM(proj_size=P)`` per layer), joined only at the output: the forward LM predicts word
      t+1 from words ≤ t, the backward LM word t−1 from words ≥ t, and the loss is ½(fw + bw).
    - Layers 2.. add a residual connection from the layer below (never from the token layer into
      layer 1). ``nn.LSTM`` has no cell/projection clipping (the original clipped at 3).
    - Right padding only. The backward LM reads each sequence reversed *within its real length*,
      so at position t it sees the real words t..end and never the padding, which stays at the end.
    - Stateless: every sequence starts from a zero LSTM state. allennlp's ELMo carried the state
      over from the previous batch, so the same sentence got different vectors depending on what
      came before it (its most reported bug). Here a sentence's vectors depend on it alone.

    ``encode`` returns ``n_layers + 1`` tensors (B, T, 2P): layer 0 = token layer duplicated
    ``[x, x]``, then ``cat(forward, backward)`` of each LSTM layer. Introduced in notebook 02_elmo.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.config = config
        P = config.projection_dim
        self.hidden_size = 2 * P  # width of every tensor encode() returns
        self.token_encoder = TokenEncoder(config)

        def lstm_stack() -> nn.ModuleList:
            return nn.ModuleList(nn.LSTM(P, config.cell_size, proj_size=P, batch_first=True)
                                 for _ in range(config.n_layers))

        self.forward_lstms = lstm_stack()
        self.backward_lstms = lstm_stack()
        self.dropout = nn.Dropout(config.dropout)
        if config.softmax == "adaptive":
            self.softmax: nn.Module = nn.AdaptiveLogSoftmaxWithLoss(
                P, config.word_vocab_size, cutoffs=list(config.cutoffs),
                div_value=config.adaptive_div_value)
        else:
            self.softmax = nn.Linear(P, config.word_vocab_size)

    # -- running the two directions

    def _lstm_stack(self, lstms: nn.ModuleList, x: Tensor) -> list[Tensor]:
        """x (B, T, P) → each layer's output (B, T, P), reading left to right."""
        outputs, h = [], x
        for i, lstm in enumerate(lstms):
            out, _ = lstm(self.dropout(h))  # no initial state passed: zeros for every sequence
            if i > 0:
                out = out + h  # residual from layer 1 upwards
            outputs.append(out)
            h = out
        return outputs

    def _check_inputs(self, attention_mask: Tensor, char_ids: Tensor) -> Tensor:
        """Validate shapes and right padding; return each row's length (B,)."""
        if char_ids.ndim != 3 or char_ids.shape[:2] != attention_mask.shape:
            raise ValueError(f"expected attention_mask (B, T) and char_ids (B, T, C), got "
                             f"{tuple(attention_mask.shape)} and {tuple(char_ids.shape)}")
        if char_ids.shape[2] != self.config.max_chars_per_word:
            raise ValueError(f"char_ids has {char_ids.shape[2]} character slots per word, the "
                             f"model max_chars_per_word={self.config.max_chars_per_word}")
        if char_ids.numel() and int(char_ids.max()) >= self.config.char_vocab_size:
            raise ValueError(f"char id {int(char_ids.max())} is outside the char vocabulary "
                             f"({self.config.char_vocab_size}): built for another tokenizer?")
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
        if not torch.equal(mask, positions < lengths[:, None]):
            raise ValueError("ELMo expects right padding: attention_mask rows are True, then False")
        return lengths

    def directions(self, attention_mask: Tensor, char_ids: Tensor
                   ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The token layer x (B, T, P) and each LSTM layer's forward and backward states, each
        (B, T, P). Padding positions hold values that encode() zeroes and the loss ignores."""
        lengths = self._check_inputs(attention_mask, char_ids)
        x = self.token_encoder(char_ids)  # (B, T, P)
        fw = self._lstm_stack(self.forward_lstms, x)
        flip = reversed_positions(lengths, x.shape[1])  # (B, T)
        bw_reversed = self._lstm_stack(self.backward_lstms, _gather_time(x, flip))
        bw = [_gather_time(h, flip) for h in bw_reversed]  # back into reading order
        return x, fw, bw

    def encode(self, input_ids: Tensor, attention_mask: Tensor, char_ids: Tensor) -> list[Tensor]:
        """Every layer's states: ``n_layers + 1`` tensors (B, T, 2P), zero at padding positions.

        ``input_ids`` is not needed (words are read through their characters); it is accepted so
        the classifier can pass the whole batch.
        """
        if input_ids.shape != attention_mask.shape:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                             f"{tuple(attention_mask.shape)} differ in shape")
        x, fw, bw = self.directions(attention_mask, char_ids)
        layers = [torch.cat([x, x], dim=-1)]  # (B, T, 2P): layer 0 has no direction
        layers += [torch.cat([f, b], dim=-1) for f, b in zip(fw, bw, strict=True)]
        keep = attention_mask[..., None].to(x.dtype)  # (B, T, 1)
        return [h * keep for h in layers]

    forward = encode

    # -- the language-model loss

    def _nll(self, h: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood of ``targets`` (N,) given the top states h (N, P)."""
        h = self.dropout(h)
        if isinstance(self.softmax, nn.AdaptiveLogSoftmaxWithLoss):
            return self.softmax(h, targets).loss
        return F.cross_entropy(self.softmax(h), targets)

    def word_log_probs(self, h: Tensor) -> Tensor:
        """log p(word) over the vocabulary for top states h (..., P) → (..., V); for demos."""
        flat = h.reshape(-1, h.shape[-1])
        if isinstance(self.softmax, nn.AdaptiveLogSoftmaxWithLoss):
            logp = self.softmax.log_prob(flat)
        else:
            logp = F.log_softmax(self.softmax(flat), dim=-1)
        return logp.view(*h.shape[:-1], -1)

    def pretraining_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Joint biLM loss ½(forward CE + backward CE) over real positions, and each direction's
        perplexity. Position t's top forward state predicts word t+1; its backward state word t−1.
        With ``<S> w1 … wn </S>`` each direction predicts every word once (the forward LM also
        predicts ``</S>``, the backward LM ``<S>``); padding positions take no part."""
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        if ids.numel() and int(ids.max()) >= self.config.word_vocab_size:
            raise ValueError(f"word id {int(ids.max())} is outside the softmax vocabulary "
                             f"({self.config.word_vocab_size})")
        _, fw, bw = self.directions(mask, batch["char_ids"])
        # Right padding: a real target always has a real neighbour, so one mask serves both.
        real = mask[:, 1:]  # (B, T−1)
        fw_loss = self._nll(fw[-1][:, :-1][real], ids[:, 1:][real])  # states 0..T−2 → words 1..T−1
        bw_loss = self._nll(bw[-1][:, 1:][real], ids[:, :-1][real])  # states 1..T−1 → words 0..T−2
        return {"loss": 0.5 * (fw_loss + bw_loss),
                "fw_ppl": fw_loss.detach().exp(), "bw_ppl": bw_loss.detach().exp()}
