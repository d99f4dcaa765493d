"""Fine-tuned classifiers that describe themselves: saved beside their run, loaded by its folder.

Introduced in notebook 01_baselines (the static model's and TF-IDF's runs) and used by every
fine-tuning lesson; ``python -m nblib.predict RUN_DIR TEXT…`` (:mod:`nblib.predict`) and lesson 06
load runs with :func:`load_classifier`.

A run folder (``runs/<preset>/<model>-<variant>/<seed>/``, beside ``result.json``) gets
``classifier.json`` when :func:`nblib.training.finetuning.fit_classifier` finishes: the encoder's class and
config, the classifier's settings (pooling, layer, ...), the collate's settings, and the names of
the files beside it: the tokenizer(s) and the weights (the best epoch). A collate can be described
when it is a :class:`TokenCollate` (characters, as BERT, GPT and the static model read them), an
:class:`ElmoCollate`, or ``functools.partial`` of ``elmo.collate_elmo`` / a tokenizer's
``batch_encode``. TF-IDF's scikit-learn pipeline is saved with :func:`save_sklearn`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nblib.data.text import (
    SPECIAL_TOKENS,
    WORD_SPECIAL_TOKENS,
    CharTokenizer,
    TruncationStrategy,
    Vocabulary,
    WordTokenizer,
)
from nblib.training.classifier import SentimentClassifier, predict

DESCRIPTION = "classifier.json"  # the file that makes a run folder loadable
FORMAT = 1
LABELS = {0: "negative", 1: "positive"}


class RunNotLoadableError(FileNotFoundError):
    """A run folder without a loadable classifier; the message says what is there and why."""


# ---------------------------------------------------------------------------------------------
# Collates that can be written down


@dataclass
class TokenCollate:
    """``[CLS] review [SEP]`` as character ids, cut at ``max_len`` (specials included) and
    right-padded: what BERT, GPT and the static model read. Introduced in notebook 01_baselines."""

    tokenizer: CharTokenizer
    max_len: int
    truncation: TruncationStrategy = "head"

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer.batch_encode(texts, self.max_len, truncation=self.truncation)


@dataclass
class ElmoCollate:
    """jieba words spelled in characters, as lesson 02's biLM reads them (``elmo.collate_elmo``)."""

    word_tokenizer: WordTokenizer
    char_tokenizer: CharTokenizer
    max_words: int
    max_chars_per_word: int

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        from nblib.models import (
            elmo,  # here, not at the top: a BERT or GPT run does not depend on elmo.py
        )

        return elmo.collate_elmo(texts, self.word_tokenizer, self.char_tokenizer, self.max_words,
                                 self.max_chars_per_word)


def describable(collate: Any) -> TokenCollate | ElmoCollate | None:
    """``collate`` as a :class:`TokenCollate` / :class:`ElmoCollate` when it is one, or a
    ``functools.partial`` of ``elmo.collate_elmo`` or of a ``CharTokenizer.batch_encode``; else None."""
    if isinstance(collate, (TokenCollate, ElmoCollate)):
        return collate
    if isinstance(collate, functools.partial) and not collate.args:
        kw = collate.keywords
        if getattr(collate.func, "__module__", None) == "nblib.models.elmo" and collate.func.__name__ == "collate_elmo":
            try:
                return ElmoCollate(kw["word_tokenizer"], kw["char_tokenizer"], kw["max_words"],
                                   kw["max_chars_per_word"])
            except KeyError:
                return None
        owner = getattr(collate.func, "__self__", None)
        if isinstance(owner, CharTokenizer) and collate.func.__name__ == "batch_encode" and "max_len" in kw \
                and set(kw) <= {"max_len", "truncation"}:
            return TokenCollate(owner, kw["max_len"], kw.get("truncation", "head"))
    return None


# ---------------------------------------------------------------------------------------------
# Saving


def model_spec(encoder: nn.Module) -> dict[str, Any]:
    """An nblib model written down: its class and its config (or, for the static model, its
    arguments). :func:`build_model` makes a fresh one from it; pretraining checkpoints keep it too."""
    cls = type(encoder)
    spec: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    config = getattr(encoder, "config", None)
    if dataclasses.is_dataclass(config):
        spec["config_class"] = f"{type(config).__module__}.{type(config).__qualname__}"
        spec["config"] = dataclasses.asdict(config)
    elif cls.__name__ == "StaticEmbedding":  # no config object: its three arguments
        spec["kwargs"] = {"vocab_size": encoder.embedding.num_embeddings,
                          "hidden_size": encoder.hidden_size, "pad_id": encoder.embedding.padding_idx}
    else:
        raise ValueError(f"cannot describe an encoder of class {cls.__qualname__}: it has no config")
    return spec


def save_classifier(run_dir: str | Path, model: SentimentClassifier, collate: Any,
                    weights: str | Path | None = None) -> Path | None:
    """Write ``classifier.json`` (and the tokenizer files) into ``run_dir`` so that
    :func:`load_classifier` can rebuild ``model`` with its collate. ``weights``: a Lightning
    checkpoint that holds the weights (the best epoch); without one they are saved as
    ``classifier.pt``. Returns the description's path, or None when the collate cannot be
    described (a plain function): then the run is not loadable and nothing is written."""
    spec = describable(collate)
    if spec is None:
        return None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, TokenCollate):
        spec.tokenizer.save(run_dir / "tokenizer.json")
        collate_spec = {"kind": "tokens", "tokenizer": "tokenizer.json", "max_len": spec.max_len,
                        "truncation": spec.truncation}
    else:
        spec.char_tokenizer.save(run_dir / "tokenizer.json")
        spec.word_tokenizer.save(run_dir / "word_tokenizer.json")
        collate_spec = {"kind": "elmo", "tokenizer": "tokenizer.json", "word_tokenizer": "word_tokenizer.json",
                        "max_words": spec.max_words, "max_chars_per_word": spec.max_chars_per_word}
    if weights is None or not Path(weights).exists():
        torch.save(model.state_dict(), run_dir / "classifier.pt")
        weights_spec = {"file": "classifier.pt", "kind": "state_dict"}
    else:
        weights = Path(weights)
        rel = weights.relative_to(run_dir) if weights.is_relative_to(run_dir) else weights
        weights_spec = {"file": str(rel), "kind": "lightning"}
    description = {
        "format": FORMAT, "kind": "torch", "labels": LABELS,
        "encoder": model_spec(model.encoder),
        "classifier": {k: v for k, v in dict(model.hparams).items()},
        "collate": collate_spec, "weights": weights_spec,
    }
    path = run_dir / DESCRIPTION
    path.write_text(json.dumps(description, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def save_sklearn(run_dir: str | Path, pipeline: Any) -> Path:
    """Save a fitted scikit-learn text classifier (TF-IDF + LR, lesson 01) so that
    :func:`load_classifier` reads it back. The pipeline is pickled (joblib): load only runs you made."""
    import joblib

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, run_dir / "pipeline.joblib")
    path = run_dir / DESCRIPTION
    path.write_text(json.dumps({"format": FORMAT, "kind": "sklearn", "labels": LABELS,
                                "weights": {"file": "pipeline.joblib", "kind": "joblib"}}, indent=1),
                    encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Loading


def _config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)``, nested config dataclasses (ELECTRA's discriminator) rebuilt from their dicts."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind = hints.get(name)
        if isinstance(value, dict) and dataclasses.is_dataclass(kind):
            value = _config_from_dict(kind, value)
        kwargs[name] = value
    return cls(**kwargs)


def build_model(spec: dict[str, Any], where: str | Path = "model spec") -> nn.Module:
    """A fresh (randomly initialised) model from :func:`model_spec`'s description."""
    encoder_cls = _nblib_class(spec["class"], where)
    if "config" in spec:
        return encoder_cls(_config_from_dict(_nblib_class(spec["config_class"], where), spec["config"]))
    return encoder_cls(**spec["kwargs"])


def tokenizer_vocabulary(tokenizer: Any) -> dict[str, Any] | None:
    """``{"kind": "char" | "word", "tokens": [...]}`` for nblib's tokenizers (what their ``save``
    writes), None for anything else; :func:`tokenizer_from_vocabulary` reads it back."""
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "tokens": list(tokenizer.id_to_token)}
    if isinstance(tokenizer, WordTokenizer):
        return {"kind": "word", "tokens": list(tokenizer.id_to_word)}
    return None


def tokenizer_from_vocabulary(vocabulary: dict[str, Any]) -> CharTokenizer | WordTokenizer:
    """The tokenizer :func:`tokenizer_vocabulary` wrote down."""
    if vocabulary["kind"] == "char":
        return CharTokenizer(Vocabulary(vocabulary["tokens"], SPECIAL_TOKENS))
    return WordTokenizer(Vocabulary(vocabulary["tokens"], WORD_SPECIAL_TOKENS))


def _nblib_class(name: str, where: str | Path) -> type:
    module, _, qualname = name.rpartition(".")
    if not module.startswith("nblib."):
        raise RunNotLoadableError(f"{where}: class {name!r} is not an nblib class; refusing to import it")
    return getattr(importlib.import_module(module), qualname)


@dataclass
class LoadedClassifier:
    """A classifier read back from a run folder: ``predict(texts) -> (labels, P(positive))``."""

    run_dir: Path
    kind: str  # "torch" or "sklearn"
    model: Any  # SentimentClassifier (eval mode) or a scikit-learn pipeline
    collate: Any = None  # TokenCollate / ElmoCollate for torch models

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[list[int], list[float]]:
        texts = list(texts)
        if not texts:
            return [], []
        if self.kind == "sklearn":
            proba = self.model.predict_proba(texts)[:, 1]
            return [int(p > 0.5) for p in proba], [float(p) for p in proba]
        labels, probs, _ = predict(self.model, texts, self.collate, batch_size=batch_size)
        return labels, probs


def _record_model(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def load_classifier(run_dir: str | Path) -> LoadedClassifier:
    """The fine-tuned classifier of a run folder (``runs/<preset>/<model>-<variant>/<seed>``),
    ready to predict, with its collate: what ``python -m nblib.predict`` uses. Introduced in
    notebook 06_inside_the_models. Raises :class:`RunNotLoadableError` naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotLoadableError(f"{run_dir}: no such run folder (runs are runs/<preset>/<model>-<variant>/<seed>)")
    path = run_dir / DESCRIPTION
    if not path.is_file():
        has = sorted(p.name for p in run_dir.iterdir())
        if "result.json" in has and _record_model(run_dir / "result.json") == "majority":
            raise RunNotLoadableError(f"{run_dir}: the majority baseline has no classifier to load (it "
                                      "answers its training set's larger class for every review)")
        hint = ("it holds a results record but no saved classifier: it was made before classifiers "
                "described themselves, or with a collate nblib cannot write down; rerun its lesson"
                if "result.json" in has else "is it a run folder? (runs/<preset>/<model>-<variant>/<seed>)")
        raise RunNotLoadableError(f"{run_dir}: no {DESCRIPTION} ({hint}); it holds {has}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunNotLoadableError(f"{path}: not valid JSON ({err})") from None
    if spec.get("format") != FORMAT:
        raise RunNotLoadableError(f"{path}: format {spec.get('format')!r}, this nblib reads {FORMAT}")
    weights = run_dir / spec["weights"]["file"]
    if not weights.exists():
        raise RunNotLoadableError(f"{path} names weights {weights}, which do not exist")
    if spec["kind"] == "sklearn":
        import joblib

        return LoadedClassifier(run_dir, "sklearn", joblib.load(weights))
    model = SentimentClassifier(build_model(spec["encoder"], path), **spec["classifier"])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if spec["weights"]["kind"] == "lightning":
        state = state["state_dict"]
    model.load_state_dict(state)
    c = spec["collate"]
    chars = CharTokenizer.load(run_dir / c["tokenizer"])
    if c["kind"] == "tokens":
        collate: Any = TokenCollate(chars, c["max_len"], c.get("truncation", "head"))
    else:
        collate = ElmoCollate(WordTokenizer.load(run_dir / c["word_tokenizer"]), chars, c["max_words"],
                              c["max_chars_per_word"])
    return LoadedClassifier(run_dir, "torch", model.eval(), collate)
