"""Public Chinese checkpoints in nblib: find, load, tokenize, fine-tune, and a command line.

Introduced in notebook 07_pretrained_checkpoints. The command line works in the spirit of
transformers' ``run_glue.py``::

    python -m nblib.finetune --model_name_or_path bert-base-chinese --output_dir out/bbc \\
        --max_seq_length 128 --learning_rate 2e-5 --num_train_epochs 2

The checkpoint's weights go into nblib's own ``BertForPreTraining`` (``from_hf``) and are
fine-tuned by the course's ``classifier.SentimentClassifier`` through ``classifier.fit_classifier``: the
same classifier, optimiser schedule, model selection (best validation macro-F1) and metrics as
every model of the course. Only the tokenizer is the checkpoint's own (Hugging Face's
``BertTokenizer`` over its vocab.txt).

Contents, in reading order:

1. Finding a checkpoint (:mod:`nblib.hub`): a local folder, then the Hugging Face cache, then
   (unless ``HF_HUB_OFFLINE`` is set) the hub with a short timeout; ``resolve_checkpoint`` and
   ``CheckpointNotFoundError`` are used here and imported from there.
2. Loading: ``load_bert`` → (HF tokenizer, nblib ``BertForPreTraining``); ``load_gpt2`` → (HF
   tokenizer, nblib ``GPT``) for a GPT-2 with a BERT vocabulary (UER's Chinese GPT-2).
3. Tokenizer gaps: the characters Chinese BERT vocabularies lack, ``normalize_text``, ``count_unk``.
4. ``HFCollate``: a fine-tuning batch from the HF tokenizer.
5. A Chinese GPT-2 as a zero-shot classifier: ``label_score``, ``zero_shot_scores``, ``decode``.
6. Fine-tuning, metrics and the results record; 7. the command line.

Heavy libraries (Lightning, transformers) are imported inside the functions that need them, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nblib.bert import BertForPreTraining
from nblib.gpt import GPT
from nblib.hf_io import CheckpointMismatchError
from nblib.hub import CheckpointNotFoundError, resolve_checkpoint
from nblib.presets import PRESETS

RECORD_MODEL = "bert-base-chinese"  # the model name results records carry (lesson 05's table)
# The record's model name by the checkpoint's model_type: a BERT (bert-base-chinese, hfl/*-wwm) or
# an ELECTRA discriminator (hfl/chinese-electra-180g-small-discriminator: 12 M parameters, minutes
# of fine-tuning on a CPU where BERT-base takes hours).
RECORD_MODELS = {"bert": RECORD_MODEL, "electra": "chinese-electra"}
OUTPUTS = ("all_results.json", "result.json", "checkpoints", "logs")  # what a run writes


# ---------------------------------------------------------------------------------------------
# 2. Loading into nblib's models


def _model_type(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text()).get("model_type", "")


def load_bert(name_or_path: str | Path) -> tuple[Any, BertForPreTraining]:
    """(Hugging Face tokenizer, nblib ``BertForPreTraining``) from a BERT checkpoint.

    The encoder's weights must all be there (a missing one raises ``CheckpointMismatchError``
    naming it); pretraining heads or a pooler the file lacks stay randomly initialised and are
    listed in ``model.load_report`` (fine-tuning trains the pooler and a new head anyway).
    """
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name_or_path)
    if _model_type(folder) != "bert":
        raise CheckpointMismatchError(f"{folder} holds a {_model_type(folder)!r} model; nblib's BERT loads "
                         "model_type 'bert' checkpoints (bert-base-chinese, hfl/chinese-*-wwm-*)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForPreTraining.from_hf(folder, strict=False)
    report = model.load_report
    encoder_missing = [k for k in report.missing
                       if k.startswith("bert.") and not k.startswith("bert.pooler.")]
    if encoder_missing:
        raise CheckpointMismatchError(f"{folder} lacks encoder weights {encoder_missing}")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model's embedding table "
                         f"{model.config.vocab_size} rows")
    return tokenizer, model


def load_gpt2(name_or_path: str | Path) -> tuple[Any, GPT]:
    """(Hugging Face ``BertTokenizer``, nblib ``GPT``) from a GPT-2 with a BERT vocabulary.

    UER's Chinese GPT-2 (uer/gpt2-chinese-cluecorpussmall) is a ``GPT2LMHeadModel`` trained on
    ``[CLS] text [SEP]`` with Google's Chinese BERT vocabulary, so it is read with a
    ``BertTokenizer``, not GPT-2's byte-level BPE. Missing or unexpected keys raise, naming them.
    """
    from transformers import BertTokenizerFast

    folder = resolve_checkpoint(name_or_path)
    if _model_type(folder) != "gpt2":
        raise CheckpointMismatchError(f"{folder} holds a {_model_type(folder)!r} model, not 'gpt2'")
    if not (folder / "vocab.txt").is_file():
        raise CheckpointMismatchError(f"{folder} has no vocab.txt: nblib reads Chinese GPT-2 checkpoints with "
                         "a BERT vocabulary (like uer/gpt2-chinese-cluecorpussmall)")
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    return tokenizer, GPT.from_hf(folder)


# ---------------------------------------------------------------------------------------------
# 3. Tokenizer gaps

# Characters missing from Google's Chinese BERT vocab.txt (shared by bert-base-chinese, the hfl
# models and UER's GPT-2), each mapped to characters the vocabulary has.
GAP_REPLACEMENTS = {
    "“": '"', "”": '"', "‘": "'", "’": "'",  # curly quotes
    "…": "...",  # ellipsis
    "—": "-", "–": "-", "―": "-",  # dashes
    "～": "~", "＊": "*",  # full-width symbols that BERT's tokenizer does not split off as punctuation
}


def normalization_table(vocab: Mapping[str, int] | None = None) -> dict[int, str]:
    """A ``str.translate`` table: curly quotes, ellipses, dashes, ～ and ＊ to ASCII, full-width
    Latin letters and digits to ASCII, uppercase Latin to lowercase.

    With a ``vocab`` (``tokenizer.get_vocab()``) a character is left alone when the vocabulary
    has it both as a token and as a word-inner piece (``x`` and ``##x``: WordPiece needs the
    second inside words such as ``３０``), and a replacement is used only when the vocabulary has
    every character it produces.
    """
    pairs = dict(GAP_REPLACEMENTS)
    for offset in range(26):
        lower = chr(ord("a") + offset)
        pairs[chr(ord("A") + offset)] = lower
        pairs[chr(0xFF21 + offset)] = lower  # Ａ..Ｚ
        pairs[chr(0xFF41 + offset)] = lower  # ａ..ｚ
    for digit in range(10):
        pairs[chr(0xFF10 + digit)] = str(digit)  # ０..９
    if vocab is not None:
        pairs = {src: dst for src, dst in pairs.items()
                 if not (src in vocab and f"##{src}" in vocab) and all(ch in vocab for ch in dst)}
    return {ord(src): dst for src, dst in pairs.items()}


DEFAULT_TABLE = normalization_table()


def normalize_text(text: str, table: Mapping[int, str] | None = None) -> str:
    """``text`` with the characters of ``table`` (default: ``DEFAULT_TABLE``) replaced."""
    return text.translate(DEFAULT_TABLE if table is None else table)


@dataclass
class UnkReport:
    """How often a tokenizer falls back to [UNK] on a set of texts."""

    texts: int  # texts looked at
    texts_with_unk: int  # texts with at least one [UNK]
    tokens: int  # tokens produced (specials excluded)
    unk_tokens: int  # of which [UNK]
    top: list[tuple[str, int]] = field(default_factory=list)  # strings read as [UNK], most frequent first


def count_unk(texts: Sequence[str], tokenizer: Any, top: int = 15, batch_size: int = 512) -> UnkReport:
    """Count [UNK] tokens over ``texts`` and collect the strings behind them (offset mapping)."""
    unk = tokenizer.unk_token_id
    with_unk = n_tokens = n_unk = 0
    culprits: Counter[str] = Counter()
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"], strict=True):
            hits = [text[a:b] for i, (a, b) in zip(ids, offsets, strict=True) if i == unk]
            with_unk += bool(hits)
            n_tokens += len(ids)
            n_unk += len(hits)
            culprits.update(hits)
    return UnkReport(len(texts), with_unk, n_tokens, n_unk, culprits.most_common(top))


# ---------------------------------------------------------------------------------------------
# 4. Collate with the checkpoint's tokenizer


class HFCollate:
    """Texts → a batch for nblib's BERT: input_ids, attention_mask (bool), token_type_ids.

    ``[CLS] text [SEP]`` with the checkpoint's tokenizer, the text cut after its first
    ``max_length - 2`` tokens (head truncation, as the course's character tokenizer), padded to
    the longest text of the batch. ``table`` normalises the tokenizer gaps first (None: don't).
    """

    def __init__(self, tokenizer: Any, max_length: int = 128, table: Mapping[int, str] | None = None):
        if max_length < 3:
            raise ValueError(f"max_length {max_length} leaves no room for text between [CLS] and [SEP]")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.table = table

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.table is not None:
            texts = [t.translate(self.table) for t in texts]
        enc = self.tokenizer(list(texts), max_length=self.max_length, truncation=True,
                             padding=True, return_token_type_ids=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"],  # (B, T)
                "attention_mask": enc["attention_mask"].bool(),  # (B, T), True at real tokens
                "token_type_ids": enc["token_type_ids"]}  # (B, T), all 0: one segment


# ---------------------------------------------------------------------------------------------
# 5. A Chinese GPT-2 as a zero-shot classifier


def label_score(next_token_logits: Tensor, positive_ids: Sequence[int],
                negative_ids: Sequence[int]) -> Tensor:
    """log P(a positive label word) − log P(a negative one), from next-token logits (B, V) → (B,).

    The softmax's normaliser cancels in the difference, so logsumexp over raw logits suffices.
    """
    logits = next_token_logits.float()
    return (logits[:, list(positive_ids)].logsumexp(-1)
            - logits[:, list(negative_ids)].logsumexp(-1))


def token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The id of each single-token word; a word the vocabulary lacks is an error."""
    ids = tokenizer.convert_tokens_to_ids(list(words))
    missing = [w for w, i in zip(words, ids, strict=True) if i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"label words {missing} are not single tokens of this vocabulary")
    return ids


@torch.no_grad()
def zero_shot_scores(model: GPT, tokenizer: Any, texts: Sequence[str], suffix: str,
                     positive: Sequence[str], negative: Sequence[str], max_length: int = 128,
                     batch_size: int = 32, table: Mapping[int, str] | None = None) -> Tensor:
    """``label_score`` of the word after ``[CLS] text suffix`` for every text → (N,).

    The text is cut (head kept) so the prompt fits ``max_length`` tokens and the suffix is always
    whole; no [SEP]: for UER's GPT-2 it means "end of text". Batches are right-padded and the
    next-token logits are read at each row's last real token.
    """
    model.eval()
    pos, neg = token_ids(tokenizer, positive), token_ids(tokenizer, negative)
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    budget = max_length - 1 - len(suffix_ids)
    if budget < 1:
        raise ValueError(f"suffix of {len(suffix_ids)} tokens leaves no room in {max_length}")
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(texts), batch_size):
        chunk = [t if table is None else t.translate(table) for t in texts[start:start + batch_size]]
        bodies = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        rows = [[tokenizer.cls_token_id, *ids[:budget], *suffix_ids] for ids in bodies]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = True
        input_ids, mask = input_ids.to(device), mask.to(device)
        last_hidden = model.encode(input_ids, mask)[-1]  # (B, T, H), after ln_f
        last = mask.sum(1) - 1  # (B,) right padding: the last real token
        h = last_hidden[torch.arange(len(rows), device=device), last]  # (B, H)
        scores.append(label_score(model.logits(h), pos, neg).cpu())
    return torch.cat(scores)


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Token ids → Chinese text: specials dropped, no spaces between characters, ## pieces joined."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in special])
    return "".join(t[2:] if t.startswith("##") else t for t in tokens)


# ---------------------------------------------------------------------------------------------
# 6. Fine-tuning, metrics and the record


def flat_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """run_glue-style flat metrics: val/test accuracy, macro-F1, per-class recall, sizes, time."""
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        metrics = results[part]
        out[f"{part}_accuracy"] = metrics["accuracy"]
        out[f"{part}_macro_f1"] = metrics["macro_f1"]
        for label, recall in metrics["recall"].items():
            out[f"{part}_recall_{label}"] = recall
        out[f"{part}_samples"] = metrics["n"]
    fine = results.get("finetuning") or {}
    out["epochs"] = fine.get("epochs")
    out["train_runtime_s"] = fine.get("seconds")
    out["inference_reviews_per_s"] = results.get("inference_reviews_per_s")
    return out


def load_encoder(name_or_path: str | Path) -> tuple[Any, Any, str]:
    """(tokenizer, model, model_type) for a BERT or an ELECTRA-discriminator checkpoint.

    Both load into the course's own BERT encoder (``model.bert``) and fine-tune the same way,
    through ``[CLS]`` (lesson 03b: ELECTRA's discriminator is a BERT). Another model type raises.
    """
    folder = resolve_checkpoint(name_or_path)
    kind = _model_type(folder)
    if kind == "electra":
        from nblib.electra import load_electra

        tokenizer, model = load_electra(folder)
        return tokenizer, model, kind
    tokenizer, model = load_bert(folder)  # raises for anything but model_type 'bert'
    return tokenizer, model, "bert"


def fine_tune_bert(
    model: BertForPreTraining,
    collate: HFCollate,
    frames: tuple[Any, Any, Any],
    preset: Any,
    run_dir: str | Path,
    *,
    learning_rate: float = 2e-5,
    epochs: int = 2,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[Any, Any, dict]:
    """The course's protocol on a loaded checkpoint: ``SentimentClassifier`` (pooling ``cls``
    through BERT's pooler) + ``fit_classifier``. Returns (classifier, trainer, results)."""
    from nblib.classifier import SentimentClassifier, fit_classifier
    from nblib.datamodules import ClassificationDataModule

    train_frame, val_frame, test_frame = frames
    datamodule = ClassificationDataModule(train_frame, val_frame, test_frame, collate, batch_size)
    torch.manual_seed(seed)  # the new head's initialisation
    classifier = SentimentClassifier(model, pooling="cls", lr=learning_rate)
    trainer, results = fit_classifier(classifier, datamodule, collate, preset, run_dir,
                                      seed=seed, max_epochs=epochs)
    return classifier, trainer, results


# ---------------------------------------------------------------------------------------------
# 7. The command line


class FinetuneError(ValueError):
    """A refused command line (e.g. a non-empty output directory); nothing was changed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nblib.finetune",
        description="Fine-tune a Hugging Face BERT checkpoint on the hotel reviews (or your CSVs) "
                    "with the course's classifier, and write metrics and a results record.")
    arg = parser.add_argument
    arg("--model_name_or_path", required=True,
        help="a BERT or ELECTRA-discriminator checkpoint folder, or a hub name such as "
             "bert-base-chinese or hfl/chinese-electra-180g-small-discriminator")
    arg("--output_dir", required=True, help="where all_results.json, result.json, logs go")
    arg("--overwrite_output_dir", action="store_true", help="allow a non-empty output_dir")
    arg("--max_seq_length", type=int, default=128, help="tokens per review, [CLS]/[SEP] included")
    arg("--learning_rate", type=float, default=2e-5)
    arg("--num_train_epochs", type=int, default=1)
    arg("--per_device_train_batch_size", type=int, default=32)
    arg("--seed", type=int, default=0)
    arg("--max_train_samples", type=int, default=None,
        help="fine-tune on a stratified sample of this many training reviews")
    arg("--train_file", help="CSV with columns label,review (with --validation_file, --test_file)")
    arg("--validation_file")
    arg("--test_file")
    arg("--preset", default="small", choices=list(PRESETS),
        help="preset of the hotel split (smoke: its small prefix) and the record's preset name")
    arg("--normalize_text", action=argparse.BooleanOptionalAction, default=True,
        help="map characters the vocabulary lacks (curly quotes, …, uppercase Latin) first")
    arg("--add_to_comparison", action="store_true",
        help="also write the record under runs/<preset>/ so lesson 05's table includes it "
             "(hotel split only)")
    return parser


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FinetuneError(f"--output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        entries = sorted(p.name for p in output_dir.iterdir())
        raise FinetuneError(
            f"output directory {output_dir} exists and is not empty ({len(entries)} entries: "
            f"{', '.join(entries[:5])}{', …' if len(entries) > 5 else ''}). Use "
            "--overwrite_output_dir to write into it anyway, or choose another --output_dir. "
            "Nothing was changed.")


def _frames(args: argparse.Namespace, preset: Any) -> tuple[tuple[Any, Any, Any], str]:
    """(train, val, test) frames and a description of where they came from."""
    from nblib import data

    files = (args.train_file, args.validation_file, args.test_file)
    if any(files):
        if not all(files):
            raise FinetuneError("pass --train_file, --validation_file and --test_file together "
                                "(CSV files with columns label,review)")
        frames = tuple(data.read_labelled_csv(f)[0] for f in files)
        source = "files " + ", ".join(str(f) for f in files)
    else:
        split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
        frames = (split.train, split.val, split.test)
        source = f"hotel split ({preset.name} preset)"
    for name, frame in zip(("train", "validation", "test"), frames, strict=True):
        if frame.empty:
            raise FinetuneError(f"the {name} data is empty")
    if args.max_train_samples is not None:
        from nblib.datamodules import subsample

        frames = (subsample(frames[0], args.max_train_samples, seed=args.seed), *frames[1:])
    return frames, source


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything that can be checked cheaply, then load, fine-tune and write the outputs."""
    from nblib.presets import get_preset

    output_dir = Path(args.output_dir).expanduser()
    _check_output_dir(output_dir, args.overwrite_output_dir)
    if args.max_seq_length < 3 or args.num_train_epochs < 1 or args.per_device_train_batch_size < 1:
        raise FinetuneError("--max_seq_length must be >= 3, --num_train_epochs and "
                            "--per_device_train_batch_size >= 1")
    custom = any((args.train_file, args.validation_file, args.test_file))
    if args.add_to_comparison and (custom or args.max_train_samples is not None):
        raise FinetuneError("--add_to_comparison needs the full hotel split of the preset "
                            "(no CSV files, no --max_train_samples)")
    preset = get_preset(args.preset)
    frames, source = _frames(args, preset)
    started = time.time()
    tokenizer, model, kind = load_encoder(args.model_name_or_path)
    # Lightning: imported once the cheap checks have passed
    from nblib.classifier import count_parameters
    from nblib.records import make_record, write_record

    if args.max_seq_length > model.config.max_position_embeddings:
        raise FinetuneError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                            f"{model.config.max_position_embeddings} positions")

    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # an earlier run's outputs (only with --overwrite_output_dir)
        old = output_dir / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    table = normalization_table(tokenizer.get_vocab()) if args.normalize_text else None
    collate = HFCollate(tokenizer, args.max_seq_length, table)
    _, trainer, results = fine_tune_bert(
        model, collate, frames, preset, output_dir, learning_rate=args.learning_rate,
        epochs=args.num_train_epochs, batch_size=args.per_device_train_batch_size, seed=args.seed)

    metrics = {"model_name_or_path": str(args.model_name_or_path), "data": source,
               "train_samples": len(frames[0]), **flat_metrics(results)}
    record = make_record(
        model=RECORD_MODELS[kind], variant="pretrained", preset=preset, seed=args.seed,
        train_size=len(frames[0]), parameters=count_parameters(model.bert), results=results,
        started=started, checkpoint=str(args.model_name_or_path), data=source,
        max_seq_length=args.max_seq_length, learning_rate=args.learning_rate,
        normalize_text=args.normalize_text)
    write_record(record, output_dir / "result.json", trainer=trainer)
    if args.add_to_comparison:
        metrics["comparison_record"] = str(write_record(record, trainer=trainer))
    (output_dir / "all_results.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False),
                                                 encoding="utf-8")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nblib.data import DataError

    try:
        metrics = run(args)
    except (FinetuneError, CheckpointNotFoundError, CheckpointMismatchError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("_samples")}, indent=2,
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
