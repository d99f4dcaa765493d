"""ELECTRA: lesson 03's BERT encoder pretrained as a *discriminator* of replaced characters.

Introduced in notebook 03b_electra (Clark et al., ICLR 2020, "Pre-training Text Encoders as
Discriminators Rather Than Generators"). Masked-LM (notebook 03_bert) learns from the ~15% of
positions it masks. ELECTRA lets a small *generator* (a masked LM) fill those positions with
characters sampled from its softmax, and trains the encoder, the *discriminator*, to tell at
**every** real position whether the character is the original or a replacement. There is no second
Transformer here: generator and discriminator are both ``nblib.models.bert.BertModel``. Long because it
is one family's whole story in one file (a learner reads it in one sitting, beside lesson 03b), with
the diagnostics its lesson tracks.

Contents, in reading order:

1. ``ElectraConfig``: the discriminator's ``BertConfig``, the generator's width, λ.
2. ``ElectraDiscriminator`` (the encoder that is fine-tuned: the encoder protocol ``encode`` /
   ``pool`` / ``hidden_size``, plus the replaced-token head), ``ElectraGenerator`` (a narrower
   ``BertModel`` with a tied masked-LM head) and ``ElectraForPreTraining`` (both, sharing their
   embeddings, with ``pretraining_step``: loss = MLM + λ·RTD). ``nblib``'s ``Pretrainer`` trains it
   like any other model: it only calls ``pretraining_step``.
3. The pieces of a step as plain functions: ``generator_input`` (the selected positions 85%
   ``[MASK]``, 15% kept), ``sample_replacements``, ``replace_tokens`` (the replaced-token labels,
   with the equal-sample rule), ``share_of_positions_with_a_loss``; and the discriminator's
   diagnostics on *replaced* characters (precision, recall, ROC-AUC: accuracy only restates the
   ~86/14 imbalance): ``replaced_token_scores`` per batch (``pretraining_step`` returns them) and
   ``replaced_token_metrics`` over held-out batches.
4. Hugging Face weights: ``ElectraDiscriminator.from_hf`` / ``to_hf`` for ``ElectraForPreTraining``
   and bare ``ElectraModel`` checkpoints (factorised embeddings included);
   ``nblib.hub.checkpoints.load_electra`` finds a checkpoint by folder or hub name and loads it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nblib.data.text import SPECIAL_TOKENS
from nblib.models.bert import (
    HF_LAYER_MAP,
    IGNORE_INDEX,
    BertConfig,
    BertModel,
    MaskedLMHead,
    post_ln_config,
)
from nblib.models.hf_io import (
    CheckpointMismatchError,
    KeyMap,
    LoadReport,
    export_hf_weights,
    load_hf_weights,
    read_hf_checkpoint,
)

MASK_ID = SPECIAL_TOKENS.index("[MASK]")  # nblib.data.text's fixed id of [MASK] (4)
# Clark et al.'s optimisation besides the model: after the warm-up the learning rate falls in a straight line
# to 0 (lr_decay_power 1), and the global gradient norm is clipped at 1. Keyword arguments of
# nblib.training.pretraining.pretrain, which lesson 03b passes (the shared loop's defaults are a cosine and no clipping).
PUBLISHED_OPTIMISATION = {"lr_decay": "linear", "clip_grad_norm": 1.0}

# ---------------------------------------------------------------------------------------------
# 1. Configuration


@dataclass
class ElectraConfig:
    """ELECTRA's sizes (notebook 03b_electra): the discriminator is a BERT; the generator is the
    same BERT, narrower."""

    discriminator: BertConfig  # the encoder that is pretrained and then fine-tuned (lesson 03's sizes)
    # generator width as a share of the discriminator's: its hidden size, feed-forward width and
    # number of heads (head size kept); same number of layers. Clark et al. 2020 found 1/4-1/2 best
    # and 1/4 for ELECTRA-Small; on our validation split (small preset, seed 0) 1/2 fine-tuned to 0.814
    # accuracy, 1/4 to 0.686 (experiments/electra_generator_size.py; docs/experiments.md, lesson 03b).
    generator_size: float = 0.5
    rtd_weight: float = 50.0  # λ in loss = MLM (generator) + λ · RTD (discriminator), Clark et al.
    # The generator's input at the selected positions: this share becomes [MASK], the rest keeps its
    # original character, none gets a random one (Clark et al.'s code, pretrain_helpers.mask: 85/15).
    # The course's masked-LM batches (bert.collate_mlm) come with BERT's 80/10/10, so the step
    # re-masks them from their labels (``generator_input``); None feeds the batch's input as it comes.
    generator_mask_share: float | None = 0.85
    mask_token_id: int = MASK_ID  # the tokenizer's [MASK] (CharTokenizer.mask_id)

    def __post_init__(self) -> None:
        if not 0 < self.generator_size <= 1:
            raise ValueError(f"generator_size must be in (0, 1], got {self.generator_size}")
        if self.rtd_weight < 0:
            raise ValueError(f"rtd_weight must be >= 0, got {self.rtd_weight}")
        if self.generator_mask_share is not None and not 0 <= self.generator_mask_share <= 1:
            raise ValueError(f"generator_mask_share must be in [0, 1] or None, got {self.generator_mask_share}")

    @classmethod
    def from_preset(cls, preset: Any, vocab_size: int, *, generator_size: float = 0.5,
                    rtd_weight: float = 50.0, generator_mask_share: float | None = 0.85,
                    pretraining: bool = False, **changes: Any) -> ElectraConfig:
        """The discriminator is ``BertConfig.from_preset`` (lesson 03's BERT; ``changes`` go to it,
        e.g. ``pre_ln``); the generator ``generator_size`` of its width."""
        return cls(BertConfig.from_preset(preset, vocab_size, pretraining=pretraining, **changes),
                   generator_size=generator_size, rtd_weight=rtd_weight,
                   generator_mask_share=generator_mask_share)

    def generator_config(self) -> BertConfig:
        """The generator's ``BertConfig``: width, heads and feed-forward scaled by ``generator_size``,
        its embeddings those of the discriminator (E wide, so ``embeddings_project`` maps E → its H)."""
        d = self.discriminator
        head_size = d.hidden_size // d.num_attention_heads
        hidden = max(1, round(d.hidden_size * self.generator_size))
        heads = max(1, hidden // head_size)
        hidden = heads * max(1, round(hidden / heads))  # divisible by the number of heads
        return dataclasses.replace(
            d, hidden_size=hidden, num_attention_heads=heads,
            intermediate_size=max(1, round(d.intermediate_size * self.generator_size)),
            embedding_size=d.embedding_width)


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's init: N(0, std) for Linear and Embedding weights, zero biases (LayerNorms at 1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# 2. The models


class DiscriminatorHead(nn.Module):
    """Per position: Linear H → H, the model's GELU, Linear H → 1: the logit of "replaced"
    (HF's ``discriminator_predictions``; notebook 03b_electra)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.approximate = "tanh" if config.hidden_act == "gelu_tanh" else "none"
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, h: Tensor) -> Tensor:
        h = F.gelu(self.dense(h), approximate=self.approximate)  # (..., H)
        return self.dense_prediction(h).squeeze(-1)  # (...,)


class ElectraDiscriminator(nn.Module):
    """The encoder ELECTRA pretrains: lesson 03's ``BertModel`` plus a replaced-token head.

    Introduced in notebook 03b_electra. It exposes the encoder protocol (``encode``, ``pool``,
    ``hidden_size``), so ``SentimentClassifier`` fine-tunes it exactly as BERT is fine-tuned: lesson 03b
    from the mean of the last layer (``bert.classification_pooling(nsp=False)``). ELECTRA has no pooler:
    ``pool`` (tanh(W h_[CLS] + b), for ``pooling="cls"``) starts at random init, as the dense layer of
    Hugging Face's ELECTRA classification head does.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.head = DiscriminatorHead(config)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    # --- the encoder protocol
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
        """L+1 hidden states (B, T, H), the (projected) embeddings first."""
        return self.bert.encode(input_ids, attention_mask, token_type_ids)

    def pool(self, h_cls: Tensor) -> Tensor:
        return self.bert.pool(h_cls)  # (B, H)

    # --- the replaced-token head
    def rtd_logits(self, h: Tensor) -> Tensor:
        """Logit of "this character was replaced", (B, T), from the last hidden states (B, T, H)."""
        return self.head(h)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """Replaced-token logits at every position, (B, T) (HF ``ElectraForPreTraining.logits``)."""
        return self.rtd_logits(self.encode(input_ids, attention_mask, token_type_ids)[-1])

    # --- Hugging Face weights
    @classmethod
    def from_hf(cls, source: str | Path | Mapping[str, Tensor],
                config: BertConfig | Mapping[str, Any] | None = None,
                strict: bool = True) -> ElectraDiscriminator:
        """A discriminator from Hugging Face ELECTRA weights (notebooks 03b_electra, 07).

        ``source``: a folder with ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``
        (e.g. ``hfl/chinese-electra-180g-small-discriminator`` downloaded), a weights file, or a state
        dict of ``ElectraForPreTraining`` or of a bare ``ElectraModel`` (keys without ``electra.``;
        its replaced-token head then stays at random init and is listed in ``load_report.missing``).
        ``config``: a ``BertConfig`` or an HF config dict, needed when no ``config.json`` lies
        beside the weights. Raises ``CheckpointMismatchError`` naming every missing and unexpected
        key (``strict=False`` loads what fits) and any shape that disagrees; the ``LoadReport`` is
        kept in ``model.load_report``.
        """
        state, hf_config = read_hf_checkpoint(source)
        model = cls(post_ln_config(config, hf_config, "ELECTRA"))
        model.load_report = load_hf_state_dict(model, state, strict=strict)
        return model

    def to_hf(self) -> dict[str, Tensor]:
        """The weights under Hugging Face ``ElectraForPreTraining`` names."""
        if self.config.pre_ln:
            raise ValueError("a pre-LN model has no Hugging Face ELECTRA equivalent (HF is post-LN)")
        return export_hf_weights(self, hf_keys(self.config))


class ElectraGenerator(nn.Module):
    """The generator: a narrower ``BertModel`` and a masked-LM head tied to the word embeddings.

    Introduced in notebook 03b_electra. Inside ``ElectraForPreTraining`` its embeddings *are* the
    discriminator's (one module, as in Hugging Face and the original code): E wide, projected to
    the generator's width by its own ``embeddings_project``. It needs no pooler.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        del self.bert.pooler  # never pooled: no [CLS] task for the generator
        self.mlm_head = MaskedLMHead(config)  # H_gen → E, GELU, LayerNorm, · word embeddingsᵀ + bias
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
        return self.bert.encode(input_ids, attention_mask, token_type_ids)  # (L+1) × (B, T, H_gen)

    def mlm_logits(self, h: Tensor) -> Tensor:
        """Vocabulary logits (..., V) from generator hidden states (..., H_gen)."""
        return self.mlm_head(h, self.bert.embeddings.word_embeddings.weight)


@dataclass
class ElectraPass:
    """What one ELECTRA forward pass computes (notebook 03b_electra): the tensors behind
    ``pretraining_step``'s numbers, kept for the diagnostics (``replaced_token_metrics``)."""

    real: Tensor  # (B, T) bool: not padding
    selected: Tensor  # (B, T) bool: the positions the generator predicts
    generator_input: Tensor  # (B, T) ids: the original, selected positions [MASK] or kept
    targets: Tensor  # (N,) the original characters at the selected positions
    gen_logits: Tensor | None  # (N, V) the generator's logits there; None when nothing is selected
    corrupted: Tensor  # (B, T) ids: the discriminator's input
    is_replaced: Tensor  # (B, T) float: 1.0 where corrupted differs from the original
    logits: Tensor  # (B, T) the discriminator's "replaced" logits
    mlm_loss: Tensor  # () the generator's cross-entropy over the selected positions
    rtd_loss: Tensor  # () the discriminator's binary cross-entropy over the real positions


class ElectraForPreTraining(nn.Module):
    """Generator + discriminator with shared embeddings, and ELECTRA's loss (notebook 03b_electra).

    ``pretraining_step`` takes the course's masked-LM batch (``bert.collate_mlm``: 15% selected)
    and returns ``loss`` = generator MLM loss + λ · discriminator RTD loss with the parts beside
    it and the discriminator's replaced-token precision, recall and ROC-AUC on the batch, so
    ``train.Pretrainer`` / ``train.pretrain`` run it like BERT's MLM and log the curves.
    Fine-tune ``model.discriminator``; the generator is thrown away after pretraining.
    """

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.discriminator = ElectraDiscriminator(config.discriminator)
        self.generator = ElectraGenerator(config.generator_config())
        # Token, position and segment embeddings (and their LayerNorm) shared: one module, two parents.
        self.generator.bert.embeddings = self.discriminator.bert.embeddings

    def forward_pass(self, batch: Mapping[str, Tensor]) -> ElectraPass:
        """One ELECTRA pass on a masked-LM batch (labels -100 off the selection), as the paper's code:

        1. the selected positions are re-masked for the generator: ``generator_mask_share`` (85%)
           ``[MASK]``, the rest their original character (``generator_input``);
        2. the generator predicts the selected characters (MLM loss on them only);
        3. each selected position gets a character *sampled* from the generator's softmax (no
           gradient flows through the sampling); a sample equal to the original counts as original;
        4. the discriminator reads the corrupted text and, at every real position ([CLS] and [SEP]
           included, padding not), predicts replaced / original (binary cross-entropy averaged
           over the real positions).
        """
        labels = batch["labels"]  # (B, T)
        real = batch["attention_mask"].bool()  # (B, T)
        token_type_ids = batch.get("token_type_ids")
        selected = (labels != IGNORE_INDEX) & real  # (B, T)
        original = torch.where(selected, labels, batch["input_ids"])  # (B, T): the text before masking
        share = self.config.generator_mask_share
        masked = (batch["input_ids"] if share is None
                  else generator_input(original, selected, self.config.mask_token_id, share))  # (B, T)

        h_gen = self.generator.encode(masked, real, token_type_ids)[-1]  # (B, T, H_gen)
        targets = original[selected]  # (N,)
        gen_logits = None
        if targets.numel():
            gen_logits = self.generator.mlm_logits(h_gen[selected])  # (N, V)
            mlm_loss = F.cross_entropy(gen_logits.float(), targets)
            sampled = sample_replacements(gen_logits)  # (N,), no gradient
        else:  # nothing selected (empty texts only): no MLM loss, nothing replaced
            mlm_loss = h_gen.sum() * 0.0
            sampled = targets
        corrupted, is_replaced = replace_tokens(original, selected, sampled)  # (B, T) each

        h = self.discriminator.encode(corrupted, real, token_type_ids)[-1]  # (B, T, H)
        logits = self.discriminator.rtd_logits(h)  # (B, T)
        # mean over the real positions only: padding is no evidence either way (Clark et al.)
        rtd_loss = F.binary_cross_entropy_with_logits(logits[real].float(), is_replaced[real])
        return ElectraPass(real=real, selected=selected, generator_input=masked, targets=targets,
                           gen_logits=gen_logits, corrupted=corrupted, is_replaced=is_replaced,
                           logits=logits, mlm_loss=mlm_loss, rtd_loss=rtd_loss)

    def pretraining_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """One ELECTRA step (``forward_pass``): ``loss`` = MLM + λ · RTD, its parts, and per-batch
        diagnostics of the discriminator on the replaced characters (``replaced_token_scores``:
        ``rtd_precision``, ``rtd_recall`` at logit 0, ``rtd_auc``), which the pretraining loop logs
        so that lesson 03b can plot them over the steps."""
        out = self.forward_pass(batch)
        loss = out.mlm_loss + self.config.rtd_weight * out.rtd_loss
        scores = out.logits[out.real].detach().float()  # (n,) over the real positions
        truth = out.is_replaced[out.real].bool()  # (n,)
        if out.gen_logits is None:
            mlm_acc = torch.zeros((), device=scores.device)
        else:
            mlm_acc = (out.gen_logits.argmax(-1) == out.targets).float().mean()
        return {
            "loss": loss,
            "mlm_loss": out.mlm_loss.detach(),
            "mlm_acc": mlm_acc,
            "rtd_loss": out.rtd_loss.detach(),
            "rtd_acc": ((scores > 0) == truth).float().mean(),  # over every real position
            "replaced_share": truth.float().mean(),  # share of real positions that differ
            **replaced_token_scores(scores, truth),
        }


# ---------------------------------------------------------------------------------------------
# 3. The pieces of a step


def generator_input(original: Tensor, selected: Tensor, mask_token_id: int = MASK_ID,
                    mask_share: float = 0.85, generator: torch.Generator | None = None) -> Tensor:
    """The generator's input (notebook 03b_electra): ``original`` (B, T) with each ``selected``
    (B, T) position ``[MASK]`` with probability ``mask_share`` and left as it is otherwise.

    Clark et al.'s code masks 85% and keeps 15%, with none of BERT's random replacements: the
    generator's samples are the replacements, and a random character in its input would only be
    noise it must learn to see through. Draws one uniform number per position (torch's global
    generator unless ``generator``, a CPU one, is given)."""
    draw = torch.rand(original.shape, generator=generator).to(original.device)  # (B, T)
    return torch.where(selected & (draw < mask_share), torch.full_like(original, mask_token_id), original)


@torch.no_grad()
def sample_replacements(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One character id per row of ``logits`` (N, V), drawn from softmax(logits) (temperature 1;
    notebook 03b_electra).

    Sampling, not argmax: the discriminator must see plausible but imperfect replacements. Runs
    under ``no_grad``: the generator learns from its MLM loss only (the sampling is not
    differentiable, and Clark et al. found the adversarial alternative worse).
    """
    probs = logits.detach().float().softmax(-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)


def replace_tokens(original: Tensor, selected: Tensor, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's input and labels (notebook 03b_electra's exercise).

    ``original`` (B, T) ids, ``selected`` (B, T) bool, ``sampled`` (N,) with N = selected.sum(),
    in row-major order of the selected positions. Returns ``corrupted`` (B, T): the original with
    the selected positions replaced by the samples, and ``is_replaced`` (B, T) float: 1.0 where
    the corrupted character differs from the original, else 0.0. A sampled character equal to the
    original is labelled original (Clark et al.): nothing was replaced there.
    """
    if sampled.numel() != int(selected.sum()):
        raise ValueError(f"{sampled.numel()} samples for {int(selected.sum())} selected positions")
    corrupted = original.clone()
    corrupted[selected] = sampled
    return corrupted, (corrupted != original).float()


def share_of_positions_with_a_loss(batch: Mapping[str, Tensor]) -> dict[str, float]:
    """Of a masked-LM batch's real positions, the share each objective puts a loss on: masked-LM
    (BERT, and ELECTRA's generator) the selected ones; ELECTRA's discriminator all of them
    (notebook 03b_electra, section 1)."""
    real = batch["attention_mask"].bool()
    selected = (batch["labels"] != IGNORE_INDEX) & real
    return {"real positions": int(real.sum()),
            "masked LM": float(selected.sum() / real.sum()),
            "ELECTRA discriminator": 1.0}


def roc_auc(scores: Tensor, truth: Tensor) -> Tensor:
    """ROC-AUC of ``scores`` (n,) for the positives ``truth`` (n,) bool, as a 0-d tensor (notebook
    03b_electra): the chance that a random positive scores above a random negative, ties counting
    half (Mann-Whitney U from average ranks). One sort of the raw scores: no sigmoid that would
    tie saturated logits. 0.5 when either class is empty (no ranking to judge)."""
    scores = scores.detach().float().reshape(-1)  # (n,)
    truth = truth.detach().reshape(-1).bool()  # (n,)
    n_pos = int(truth.sum())
    n_neg = truth.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(0.5, device=scores.device)
    order = scores.argsort()
    sorted_scores = scores[order]  # (n,)
    starts = torch.ones_like(truth)  # (n,): True where a group of equal scores begins
    starts[1:] = sorted_scores[1:] != sorted_scores[:-1]
    group = starts.long().cumsum(0) - 1  # (n,): group index of each sorted score
    first = torch.nonzero(starts).squeeze(-1).double()  # (groups,): 0-based place of each group's first
    last = torch.cat([first[1:], first.new_tensor([scores.numel()])]) - 1  # and of its last
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = ((first + last) / 2 + 1)[group]  # (n,): 1-based average rank, in the input order
    u = ranks[truth].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).float()


def replaced_token_scores(logits: Tensor, is_replaced: Tensor) -> dict[str, Tensor]:
    """The discriminator on one batch's *replaced* characters (notebook 03b_electra): precision
    and recall of "replaced" at logit 0 (P = 0.5), and the ROC-AUC of the logits (``roc_auc``).

    ``logits`` and ``is_replaced`` (n,) cover the real positions only (padding dropped). Accuracy
    hides a discriminator that answers "original" everywhere (it scores 1 − the replaced share,
    ~0.86); recall shows it (0) and the AUC says whether its logits rank replaced characters above
    original ones at all (0.5: chance, 1: perfectly). Cheap (one sort), so ``pretraining_step``
    returns them every step. Conventions where a value is undefined: precision 0 when nothing is
    flagged, recall 0 when nothing was replaced, AUC 0.5 when the batch holds one class only.
    """
    scores = logits.detach().float().reshape(-1)  # (n,)
    truth = is_replaced.detach().reshape(-1).bool()  # (n,)
    flagged = scores > 0
    hits = (flagged & truth).sum().float()
    return {"rtd_precision": hits / flagged.sum().clamp(min=1),
            "rtd_recall": hits / truth.sum().clamp(min=1),
            "rtd_auc": roc_auc(scores, truth)}


@torch.no_grad()
def replaced_token_metrics(model: ElectraForPreTraining, batches: Iterable[Mapping[str, Tensor]], *,
                           max_batches: int | None = None, seed: int | None = 0) -> dict[str, float]:
    """The discriminator and generator measured over held-out masked-LM ``batches`` (notebook
    03b_electra): every real position of every batch pooled, not a mean of per-batch values.

    Returns ``precision``, ``recall`` (of "replaced", logit > 0) and ``roc_auc`` on the replaced
    characters, ``average_precision`` (area under precision-recall; a guessing discriminator
    scores the replaced share), ``replaced_share`` (replaced / real positions),
    ``rtd_acc``, ``rtd_loss`` and ``base_rate_entropy`` (the RTD loss of always answering the
    replaced share: a discriminator at its base rate has ``rtd_loss`` ≈ this), the generator's
    ``generator_mlm_acc`` (argmax = original at the selected positions) and ``generator_mlm_loss``,
    ``sampled_original_share`` (selected positions where the sample equals the original) and the
    counts ``positions``, ``replaced``, ``batches``. The model runs in eval mode (restored
    after); with ``seed`` the generator's masking and samples, and a collate that draws its masks
    from torch's generator, are the same on every call (torch's random state is restored after).
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores, truths = [], []
    mlm_hits = mlm_total = sampled_equal = 0
    mlm_loss_sum = 0.0
    n_batches = 0
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if seed is not None:
            torch.manual_seed(seed)
        for batch in batches:
            if max_batches is not None and n_batches >= max_batches:
                break
            out = model.forward_pass({k: v.to(device) for k, v in batch.items()})
            scores.append(out.logits[out.real].float().cpu())  # (n,)
            truths.append(out.is_replaced[out.real].bool().cpu())  # (n,)
            if out.gen_logits is not None:
                n = out.targets.numel()
                mlm_hits += int((out.gen_logits.argmax(-1) == out.targets).sum())
                mlm_loss_sum += float(out.mlm_loss) * n
                sampled_equal += n - int(out.is_replaced[out.selected].sum())
                mlm_total += n
            n_batches += 1
    model.train(was_training)
    if not scores:
        raise ValueError("replaced_token_metrics needs at least one batch")
    score, truth = torch.cat(scores), torch.cat(truths)  # (n,) each
    y, s = truth.numpy(), score.double().numpy()  # raw logits: ranking them needs no sigmoid
    flagged = s > 0  # logit 0 = P(replaced) 0.5
    share = float(y.mean())
    one_class = share in (0.0, 1.0)
    base_rate = 0.0 if one_class else -(share * math.log(share) + (1 - share) * math.log(1 - share))
    return {
        "precision": float(precision_score(y, flagged, zero_division=0)),
        "recall": float(recall_score(y, flagged, zero_division=0)),
        "roc_auc": 0.5 if one_class else float(roc_auc_score(y, s)),
        "average_precision": share if one_class else float(average_precision_score(y, s)),
        "replaced_share": share,
        "rtd_acc": float(((score > 0) == truth).float().mean()),
        "rtd_loss": float(F.binary_cross_entropy_with_logits(score, truth.float())),
        "base_rate_entropy": base_rate,
        "generator_mlm_acc": mlm_hits / max(1, mlm_total),
        "generator_mlm_loss": mlm_loss_sum / max(1, mlm_total),
        "sampled_original_share": sampled_equal / max(1, mlm_total),
        "positions": int(truth.numel()),
        "replaced": int(truth.sum()),
        "batches": n_batches,
    }


# ---------------------------------------------------------------------------------------------
# 4. Hugging Face weights

# Buffers (not weights) some HF files hold: dropped on load.
HF_IGNORED = ("electra.embeddings.position_ids", "electra.embeddings.token_type_ids")
HF_HEAD = ("discriminator_predictions.",)  # the replaced-token head: absent from a bare ElectraModel


def hf_key_map(config: BertConfig) -> dict[str, str]:
    """Hugging Face ``ElectraForPreTraining`` state-dict name -> ``ElectraDiscriminator`` name
    (notebook 07_pretrained_checkpoints loads real checkpoints through it)."""
    names = {
        "electra.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "electra.embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
        "electra.embeddings.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
        "electra.embeddings.LayerNorm.weight": "bert.embeddings.layer_norm.weight",
        "electra.embeddings.LayerNorm.bias": "bert.embeddings.layer_norm.bias",
    }
    if config.factorised:
        names["electra.embeddings_project.weight"] = "bert.embeddings_project.weight"
        names["electra.embeddings_project.bias"] = "bert.embeddings_project.bias"
    for i in range(config.num_hidden_layers):
        for hf, ours in HF_LAYER_MAP.items():
            for p in ("weight", "bias"):
                names[f"electra.encoder.layer.{i}.{hf}.{p}"] = f"bert.layers.{i}.{ours}.{p}"
    for hf, ours in (("dense", "dense"), ("dense_prediction", "dense_prediction")):
        for p in ("weight", "bias"):
            names[f"discriminator_predictions.{hf}.{p}"] = f"head.{ours}.{p}"
    return names


def hf_keys(config: BertConfig) -> KeyMap:
    """ELECTRA's :class:`nblib.models.hf_io.KeyMap`: the names above, the dropped buffers, and the
    ``electra.`` prefix a bare ``ElectraModel`` checkpoint lacks."""
    return KeyMap(hf_key_map(config), model_name=f"ElectraDiscriminator({config})", ignored=HF_IGNORED,
                  prefix="electra.", bare_roots=("embeddings.", "embeddings_project.", "encoder."))


def load_hf_state_dict(model: ElectraDiscriminator, state: Mapping[str, Tensor],
                       strict: bool = True) -> LoadReport:
    """Copy HF ELECTRA discriminator weights into ``model`` (:func:`nblib.models.hf_io.load_hf_weights`
    with ELECTRA's key map).

    Raises ``CheckpointMismatchError`` naming every missing and unexpected key (when ``strict``)
    and any key whose shape disagrees. A checkpoint with no replaced-token head at all (a bare
    ``ElectraModel``) is accepted in strict mode: the head's keys are listed as missing in the
    report and the head keeps its random init (fine-tuning does not use it).
    """
    key_map = hf_keys(model.config)
    present = set(key_map.normalise(state, LoadReport()))  # current HF names, buffers dropped
    headless = not any(k.startswith(HF_HEAD) for k in present)
    missing = [k for k in key_map.names if k not in present and not (headless and k.startswith(HF_HEAD))]
    unexpected = sorted(present - set(key_map.names))
    if strict and (missing or unexpected):
        hint = ""
        if any(k.startswith(("generator_predictions.", "generator_lm_head.")) for k in unexpected):
            hint = (" This looks like a generator (ElectraForMaskedLM) checkpoint: load the "
                    "'-discriminator' one.")
        raise CheckpointMismatchError(
            f"checkpoint does not fit {key_map.model_name}: missing keys {missing}; unexpected keys "
            f"{unexpected}.{hint} Use strict=False to load what fits.",
            LoadReport(missing=missing, unexpected=unexpected))
    return load_hf_weights(model, state, key_map, strict=False)  # shapes are checked there
