"""Finding a Hugging Face checkpoint: a local folder, the Hugging Face cache, then the hub.

Introduced in notebook 07_pretrained_checkpoints (``resolve_checkpoint``); ``nblib.hub.checkpoints``'s
loaders and ``load_electra`` find their checkpoints here. Offline
(``HF_HUB_OFFLINE``) nothing touches the network; a checkpoint that cannot be found is a
:class:`CheckpointNotFoundError` that says how to download it. Reading the weights once found is
:mod:`nblib.models.hf_io`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

from nblib.models.hf_io import WEIGHT_FILES, find_weights, shard_files

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HUB_TIMEOUT_S = 10  # seconds to wait for the hub to answer before giving up


class CheckpointNotFoundError(FileNotFoundError):
    """No usable checkpoint; the message says how to download one or where to point."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) forbids the network."""
    return any(os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def how_to_download(name: str) -> str:
    """The commands that put checkpoint ``name`` in a local folder, and how to use that folder."""
    folder = f"checkpoints/{name.rstrip('/').split('/')[-1]}"
    return (
        "To get it, on a machine with network access run\n"
        f"    hf download {name} --local-dir {folder}\n"
        f"  (huggingface_hub < 1.0: huggingface-cli download {name} --local-dir {folder})\n"
        "or\n"
        f"    git lfs install && git clone https://huggingface.co/{name} {folder}\n"
        f"then point at the folder: --model_name_or_path {folder} "
        f"(lesson 07: MODEL_NAME_OR_PATH = \"{folder}\"), or copy the Hugging Face cache "
        "(~/.cache/huggingface/hub) to this machine."
    )


def _looks_like_path(name: str) -> bool:
    """A name the hub cannot hold: absolute, relative with dots, home-based, or nested deeper."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def check_checkpoint_folder(folder: Path) -> Path:
    """``folder`` if it holds config.json and weights; otherwise an error naming what is missing."""
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(f"{folder} has no config.json: it is not a Hugging Face "
                                      "checkpoint folder (save_pretrained writes one)")
    try:
        find_weights(folder)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{folder} holds no weights: looked for {list(WEIGHT_FILES)}") from None
    if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        raise CheckpointNotFoundError(f"{folder} holds no tokenizer: looked for vocab.txt and "
                                      "tokenizer.json")
    return folder


def _download(name: str, local_files_only: bool) -> Path:
    """The snapshot folder of hub checkpoint ``name``: config, weights and tokenizer files.

    ``hf_hub_download`` writes each file to a temporary name and renames it when complete,
    so an interrupted transfer never leaves a half-written file in the cache.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    # "This file is not there": not in the cache (offline), or not in the repository (online).
    # Online, a LocalEntryNotFoundError means the hub could not be reached: that propagates.
    absent = LocalEntryNotFoundError if local_files_only else RemoteEntryNotFoundError

    def get(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(name, filename, local_files_only=local_files_only,
                                        etag_timeout=HUB_TIMEOUT_S))
        except absent:
            return None

    config = get("config.json")
    if config is None:
        raise CheckpointNotFoundError(f"{name}: no config.json")
    for weights in WEIGHT_FILES:  # the first format the repository has, safetensors first
        path = get(weights)
        if path is None:
            continue
        if weights.endswith(".index.json"):  # sharded: fetch every shard the index names
            for shard in shard_files(path):
                if get(shard) is None:
                    raise CheckpointNotFoundError(f"{name}: shard {shard} is missing")
        break
    else:
        raise CheckpointNotFoundError(f"{name}: no weights ({list(WEIGHT_FILES)})")
    for tokenizer_file in TOKENIZER_FILES:
        get(tokenizer_file)  # optional files: a repository has some of them
    return check_checkpoint_folder(config.parent)  # e.g. a cache that holds only some files


def _probe_hub(name: str) -> None:
    """One HEAD request for the checkpoint's config.json, ``HUB_TIMEOUT_S`` at most.

    ``hf_hub_download`` retries unreachable hosts with back-off (minutes behind a firewall that
    drops packets); this single request decides first whether the hub answers at all.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=HUB_TIMEOUT_S)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A local folder holding checkpoint ``name_or_path`` (a folder, or a Hugging Face hub name).

    Order: an existing folder; the Hugging Face cache (``local_files_only=True``, no network);
    then, only when ``HF_HUB_OFFLINE`` is not set, the hub with a ``HUB_TIMEOUT_S`` timeout.
    Any failure becomes a ``CheckpointNotFoundError`` that says how to download the checkpoint.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return check_checkpoint_folder(path)
    name = str(name_or_path)
    if _looks_like_path(name):
        raise CheckpointNotFoundError(f"no checkpoint folder at {path}. Point at a folder that "
                                      "holds config.json and model.safetensors (or pytorch_model.bin)")
    from huggingface_hub.errors import HFValidationError

    try:
        return _download(name, local_files_only=True)
    except HFValidationError as err:
        raise CheckpointNotFoundError(f"{name!r} is neither a folder nor a valid Hugging Face "
                                      f"model name ({err})") from None
    except (CheckpointNotFoundError, OSError):
        pass  # not (completely) in the cache
    if hub_offline():
        raise CheckpointNotFoundError(
            f"checkpoint {name!r} is not a local folder ({path.resolve()} does not exist) and not in "
            "the Hugging Face cache, and HF_HUB_OFFLINE is set, so nothing was downloaded.\n"
            + how_to_download(name))
    try:
        _probe_hub(name)  # one request with a short timeout, no retries: fail fast without network
        return _download(name, local_files_only=False)
    except Exception as err:  # no network, a timeout, an unknown or gated repository
        raise CheckpointNotFoundError(
            f"could not get checkpoint {name!r} from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); there is no "
            f"local folder {path.resolve()} either. Without network, set HF_HUB_OFFLINE=1 to fail "
            "at once.\n" + how_to_download(name)) from err
