"""Hugging Face checkpoints in and out of nblib's models: one convention for every model family.

Introduced in notebook 07_pretrained_checkpoints (03_bert loads a tiny random checkpoint with it).
BERT (``nblib.models.bert``), GPT-2 (``nblib.models.gpt``) and ELECTRA (``nblib.models.electra``) all go through here:

- :func:`find_weights` / :func:`read_hf_checkpoint`: the weights file of a folder (safetensors
  first, sharded ``*.index.json`` checkpoints included) and its ``config.json``;
- :func:`config_from_hf`: a config dataclass from a ``config.json`` dict (its own field names,
  unknown fields ignored), with the activation names of :data:`HF_ACTIVATIONS`;
- :class:`KeyMap` and :func:`load_hf_weights`: a family says how Hugging Face's names map to its
  own (renamed, transposed, split, tied, ignored); one function checks every key and shape, loads
  the weights and returns one :class:`LoadReport`, or raises :class:`CheckpointMismatchError`
  carrying it. :func:`export_hf_weights` is the same map backwards (``to_hf``).

A new family plugs in by writing its :class:`KeyMap` (see ``bert.hf_keys`` and ``gpt.hf_keys``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

# The weight files of a checkpoint folder, in the order they are preferred.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# Hugging Face's activation names -> the names nblib.models.layers.FeedForward knows (exact GELU or its
# tanh approximation). BERT's "gelu" is exact; GPT-2's "gelu_new" is the tanh one.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh"}


def activation_from_hf(name: str) -> str:
    """nblib's name for Hugging Face activation ``name``; an unknown one is an error naming the known."""
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; nblib knows {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def activation_to_hf(name: str) -> str:
    """The Hugging Face name of nblib activation ``name`` (``gelu`` or ``gelu_tanh``)."""
    return {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[name]


# ---------------------------------------------------------------------------------------------
# Files


def find_weights(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder (:data:`WEIGHT_FILES`, safetensors first)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weights in {folder}: looked for {list(WEIGHT_FILES)}")


def shard_files(index: str | Path) -> list[str]:
    """The shard file names a sharded checkpoint's ``*.index.json`` lists (its ``weight_map``)."""
    index = Path(index)
    try:
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError) as err:
        raise ValueError(f"{index}: not a sharded-checkpoint index with a weight_map ({err})") from None


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from one weights file: ``.safetensors``, a torch ``.bin``, or an
    ``*.index.json`` whose shards (beside it) are read and merged."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        state: dict[str, Tensor] = {}
        for name in shard_files(path):
            shard = path.parent / name
            if not shard.is_file():
                raise FileNotFoundError(f"{path} names shard {name}, which is not in {path.parent}")
            state.update(read_weights(shard))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return dict(state)


def read_hf_checkpoint(source: str | Path | Mapping[str, Tensor]
                       ) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(state dict, ``config.json`` contents or None) from a Hugging Face folder, a weights file
    (.safetensors, .bin, or a sharded index) or a state dict."""
    if isinstance(source, Mapping):
        return dict(source), None
    path = Path(source)
    if path.is_dir():
        folder, path = path, find_weights(path)
    elif path.exists():
        folder = path.parent
    else:
        raise FileNotFoundError(f"no such checkpoint: {path}")
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else None
    return read_weights(path), config


# ---------------------------------------------------------------------------------------------
# Configs

C = TypeVar("C")


def config_from_hf(cls: type[C], hf: Mapping[str, Any], *, skip: Sequence[str] = (),
                   **fixed: Any) -> C:
    """``cls`` (a dataclass with Hugging Face's field names) from a ``config.json`` dict.

    The convention every family follows: the fields ``cls`` shares with the dict are taken, unknown
    fields are ignored, ``skip`` names fields never read from the dict, ``fixed`` sets fields
    outright (e.g. a converted activation name)."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip) - set(fixed)  # type: ignore[arg-type]
    return cls(**{k: v for k, v in hf.items() if k in names}, **fixed)


# ---------------------------------------------------------------------------------------------
# Key maps, loading and exporting


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model; the message names them and
    ``report`` holds the :class:`LoadReport` (None when the mismatch is not about keys)."""

    def __init__(self, message: str, report: LoadReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What :func:`load_hf_weights` did, key by key (Hugging Face names)."""

    missing: list[str] = field(default_factory=list)  # expected by nblib, absent from the file
    unexpected: list[str] = field(default_factory=list)  # in the file, unknown to nblib
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (old, new): gamma/beta, prefix
    ignored: list[str] = field(default_factory=list)  # buffers and tied copies dropped

    def __str__(self) -> str:
        return (f"missing keys {self.missing}, unexpected keys {self.unexpected}, "
                f"{len(self.renamed)} renamed, ignored {self.ignored}")


Target = str | tuple[str, ...]


@dataclass
class KeyMap:
    """How one family's Hugging Face state dict maps onto an nblib model.

    ``names``: HF key -> nblib key, or a tuple of nblib keys the HF tensor is split into along
    its first dimension (GPT-2's ``c_attn`` packs query, key and value). ``transposed(hf_key)``:
    keys stored (in, out) (GPT-2's Conv1D) rather than nn.Linear's (out, in). ``tied``: alias ->
    HF key it must equal (dropped on load, written back on export). ``ignored``: suffixes of keys
    that are buffers, not weights (dropped). ``prefix`` / ``bare_roots``: a checkpoint of the bare
    encoder (no ``prefix`` on any key) gets ``prefix`` added to the keys starting with a root.
    ``model_name`` names the model in errors.
    """

    names: dict[str, Target]
    model_name: str
    tied: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    prefix: str = ""
    bare_roots: tuple[str, ...] = ()
    transposed: Callable[[str], bool] = lambda hf_key: False

    def normalise(self, state: Mapping[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
        """Current HF names (LayerNorm gamma/beta -> weight/bias, the prefix of a bare encoder);
        buffers dropped; tied copies checked against their target and dropped."""
        bare = bool(self.prefix) and not any(k.startswith(self.prefix) for k in state)
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            new = key
            if new.endswith("LayerNorm.gamma"):
                new = new[: -len("gamma")] + "weight"
            elif new.endswith("LayerNorm.beta"):
                new = new[: -len("beta")] + "bias"
            if bare and new.startswith(self.bare_roots):
                new = self.prefix + new
            if new != key:
                report.renamed.append((key, new))
            if new.endswith(self.ignored) and self.ignored:
                report.ignored.append(key)
                continue
            out[new] = value
        for alias, target in self.tied.items():
            if alias not in out:
                continue
            if target not in out:
                out[target] = out[alias]
            elif out[alias].shape != out[target].shape or not torch.equal(out[alias], out[target]):
                raise CheckpointMismatchError(
                    f"{alias} differs from {target}: {self.model_name} ties them, this checkpoint "
                    "does not (its head would be lost)")
            report.ignored.append(alias)
            del out[alias]
        return out

    def expected_shape(self, hf_key: str, own: Mapping[str, Tensor]) -> tuple[int, ...]:
        """The shape ``hf_key`` must have in the file for this model."""
        target = self.names[hf_key]
        parts = target if isinstance(target, tuple) else (target,)
        shape = tuple(own[parts[0]].shape)
        if isinstance(target, tuple):
            shape = (len(parts) * shape[0], *shape[1:])
        return shape[::-1] if self.transposed(hf_key) else shape


def load_hf_weights(model: nn.Module, state: Mapping[str, Tensor], key_map: KeyMap,
                    strict: bool = True) -> LoadReport:
    """Copy Hugging Face-named weights into ``model`` through ``key_map``; the one loader.

    Raises :class:`CheckpointMismatchError` (with the :class:`LoadReport`) naming every missing
    and unexpected key when ``strict``, and any key whose shape disagrees whatever ``strict``.
    With ``strict=False`` what fits is loaded and the rest keeps its initialisation; the report
    says what was left out."""
    report = LoadReport()
    state = key_map.normalise(state, report)
    report.missing = [k for k in key_map.names if k not in state]
    report.unexpected = sorted(k for k in state if k not in key_map.names)
    if strict and (report.missing or report.unexpected):
        raise CheckpointMismatchError(
            f"checkpoint does not fit {key_map.model_name}: missing keys {report.missing}; "
            f"unexpected keys {report.unexpected}. Use strict=False to load what fits "
            "(e.g. a checkpoint without its pretraining heads).", report)
    own = model.state_dict()
    bad = [f"{hf}: checkpoint {tuple(state[hf].shape)} vs model {key_map.expected_shape(hf, own)}"
           for hf in key_map.names
           if hf in state and tuple(state[hf].shape) != key_map.expected_shape(hf, own)]
    if bad:
        raise CheckpointMismatchError("shapes disagree (check the config): " + "; ".join(bad), report)
    loaded: dict[str, Tensor] = {}
    for hf, target in key_map.names.items():
        if hf not in state:
            continue
        w = state[hf].t() if key_map.transposed(hf) else state[hf]
        parts = target if isinstance(target, tuple) else (target,)
        for name, part in zip(parts, w.split(w.shape[0] // len(parts), dim=0), strict=True):
            loaded[name] = part.contiguous()
    model.load_state_dict(loaded, strict=False)
    return report


def export_hf_weights(model: nn.Module, key_map: KeyMap) -> dict[str, Tensor]:
    """``model``'s weights under Hugging Face names (tied aliases included): ``to_hf``."""
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    for hf, target in key_map.names.items():
        parts = target if isinstance(target, tuple) else (target,)
        w = torch.cat([own[name] for name in parts], dim=0)
        out[hf] = (w.t() if key_map.transposed(hf) else w).detach().clone().contiguous()
    for alias, target in key_map.tied.items():
        out[alias] = out[target].clone()
    return out
