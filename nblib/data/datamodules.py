"""Data modules: hotel reviews for fine-tuning, unlabelled text for pretraining, length-grouped batches.

Introduced in notebook 01_baselines (:class:`ClassificationDataModule`, used by every fine-tuning
run) and 02_elmo (:class:`LanguageModelDataModule` for pretraining).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

Collate = Callable[[list[str]], dict[str, torch.Tensor]]


class _TextDataset(torch.utils.data.Dataset):
    def __init__(self, texts: Sequence[str], labels: Sequence[int] | None = None):
        self.texts = list(texts)
        self.labels = None if labels is None else [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], (-1 if self.labels is None else self.labels[i])


def _labelled_collate(collate: Collate) -> Callable[[list[tuple[str, int]]], dict[str, torch.Tensor]]:
    def fn(items: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        batch = collate([text for text, _ in items])
        batch["labels"] = torch.tensor([label for _, label in items], dtype=torch.long)
        return batch

    return fn


class LengthGroupedSampler(Sampler[int]):
    """A shuffled order of review indices in which each run of ``batch_size`` has similar lengths.

    A batch is padded to its longest review, and with random batches of 32 hotel reviews that is
    almost always the 128-token cap (a third of the reviews reach it): ~1/3 of every fine-tuning
    step is padding. Like Hugging Face's ``group_by_length``: shuffle, cut into "mega-batches" of
    ``group_batches`` batches, sort each by length, then shuffle the batches. Randomness comes from
    ``generator`` when given (pretraining: its own seeded stream, so the batch order, and with it
    the steps a character budget takes, is known before training starts), else from torch's global
    generator (as ``RandomSampler``'s), so ``seed_everything`` fixes it. Each epoch differs. The
    padded width of a batch falls from ~128 to ~86 tokens on the hotel reviews.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = 50,
                 generator: torch.Generator | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.group_size = batch_size * group_batches
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for start in range(0, len(order), self.group_size):
            group = order[start : start + self.group_size]
            group = group[torch.argsort(self.lengths[group], descending=True, stable=True)]
            batches += list(group.split(self.batch_size))
        # The one short batch (the last of the last group) stays last, so the DataLoader, which cuts
        # this order every `batch_size` indices, cuts exactly these batches.
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) != self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=self.generator).tolist()] + rest
        for batch in shuffled:
            yield from batch.tolist()


def length_sorted(lengths: Sequence[int]) -> list[int]:
    """Indices longest first: evaluation batches then pad little (metrics ignore the order)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class ClassificationDataModule(pl.LightningDataModule):
    """Hotel reviews for fine-tuning: train/val/test frames (``text``, ``label``) and a collate.

    ``collate`` turns a list of texts into the model's input dict (e.g. a tokenizer's
    ``batch_encode`` with a fixed ``max_len``); labels are added here. With ``group_by_length``
    (default) batches hold reviews of similar length in characters (:class:`LengthGroupedSampler`),
    which cuts the padding a batch carries by a third on the hotel reviews. ``ood``, when given
    (``split.ood``: waimai reviews), is scored after training like the test frame: the
    out-of-domain test.
    """

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
        collate: Collate,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = True,
        *,
        ood: pd.DataFrame | None = None,
    ):
        super().__init__()
        self.group_by_length = group_by_length
        self.frames = {"train": train, "val": val, "test": test}
        if ood is not None:
            self.frames["ood"] = ood
        for name, frame in self.frames.items():
            if not {"text", "label"} <= set(frame.columns):
                raise ValueError(f"{name} frame needs columns 'text' and 'label', has {list(frame.columns)}")
            if len(frame) == 0:
                raise ValueError(f"{name} frame is empty")
        self.collate = _labelled_collate(collate)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        frame = self.frames[name]
        dataset = _TextDataset(frame["text"].tolist(), frame["label"].tolist())
        size = self.batch_size if name == "train" else self.eval_batch_size
        if not self.group_by_length:
            return DataLoader(dataset, batch_size=size, shuffle=shuffle, collate_fn=self.collate)
        lengths = [len(t) for t in dataset.texts]
        sampler = LengthGroupedSampler(lengths, size) if shuffle else length_sorted(lengths)
        return DataLoader(dataset, batch_size=size, sampler=sampler, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class LanguageModelDataModule(pl.LightningDataModule):
    """Unlabelled text for pretraining; ``collate`` builds the objective's batch (masking, shifting).

    Training batches group texts of similar length (:class:`LengthGroupedSampler`): the corpus is
    mostly short reviews (45 characters on average, 8% over 128), so a random batch of 16 cut at
    128 would be ~62% padding, a grouped one ~3%. The held-out batches keep the corpus order.

    The batch order comes from its own generator seeded with ``seed``, so :meth:`plan` knows,
    before training, exactly which texts each step reads and how many steps a budget of
    characters takes. ``chars_read(text)`` is how many characters of a text the model reads (what
    fits in its window after ``collate`` truncates; default: all of them). Introduced in 03_bert.
    """

    def __init__(
        self,
        train_texts: Sequence[str],
        val_texts: Sequence[str],
        collate: Collate,
        batch_size: int = 32,
        *,
        seed: int = 0,
        chars_read: Callable[[str], int] | None = None,
    ):
        super().__init__()
        if not train_texts:
            raise ValueError("no pretraining text")
        if len(train_texts) < batch_size:
            raise ValueError(f"{len(train_texts)} pretraining texts do not fill one batch of {batch_size}")
        self.train_texts, self.val_texts = list(train_texts), list(val_texts)
        self.collate = collate
        self.batch_size = batch_size
        self.seed = seed
        self.chars_read = chars_read or len
        self._chars: np.ndarray | None = None

    def _sampler(self) -> LengthGroupedSampler:
        return LengthGroupedSampler([len(t) for t in self.train_texts], self.batch_size,
                                    generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_texts, batch_size=self.batch_size, sampler=self._sampler(),
                          collate_fn=self.collate, drop_last=True)

    def char_counts(self) -> np.ndarray:
        """(texts,) characters the model reads of each training text (computed once)."""
        if self._chars is None:
            self._chars = np.asarray([self.chars_read(t) for t in self.train_texts], dtype=np.int64)
        return self._chars

    def chars_per_step(self, max_steps: int) -> np.ndarray:
        """(steps,) characters read by each of the first ``max_steps`` training steps, in order.

        Replays the training order (a fresh sampler with the same seed, epoch after epoch; the short
        last batch of an epoch is dropped, as the DataLoader drops it): no text is collated.
        """
        chars = self.char_counts()
        sampler, out, left = self._sampler(), [], max_steps
        full = len(self.train_texts) // self.batch_size
        while left > 0:
            order = np.fromiter(iter(sampler), dtype=np.int64, count=len(self.train_texts))
            per_batch = chars[order[: full * self.batch_size]].reshape(full, self.batch_size).sum(1)
            out.append(per_batch[:left])
            left -= len(out[-1])
        return np.concatenate(out)

    def plan(self, budget_chars: int) -> dict[str, Any]:
        """The exact number of steps that reads ``budget_chars`` characters (the last step may pass it)."""
        if budget_chars < 1:
            raise ValueError(f"the character budget must be positive, got {budget_chars}")
        total = int(self.char_counts().sum())
        steps_per_epoch = len(self.train_texts) // self.batch_size
        # enough epochs to reach the budget, then cut at the first step that reaches it
        epochs = max(1, -(-budget_chars * 11 // (10 * max(1, total))) + 1)
        cumulative = np.cumsum(self.chars_per_step(epochs * steps_per_epoch))
        steps = int(np.searchsorted(cumulative, budget_chars) + 1)
        if steps > len(cumulative):  # pragma: no cover - the margin above makes this unreachable
            raise RuntimeError("character plan ran past its epochs")
        return {"budget_chars": budget_chars, "steps": steps, "chars": int(cumulative[steps - 1]),
                "epochs": round(steps / steps_per_epoch, 2), "corpus_chars": total}

    def heldout_dataloader(self) -> DataLoader:
        """Held-out text for :func:`evaluate_pretraining` (not a Lightning validation loop)."""
        return DataLoader(self.val_texts, batch_size=self.batch_size, collate_fn=self.collate)



def subsample(frame: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, stratified by label (a fixed seeded sample: the label-efficiency runs)."""
    if n is None or n >= len(frame):
        return frame
    share = frame["label"].value_counts(normalize=True)
    parts = [frame[frame["label"] == y].sample(n=max(1, round(n * share[y])), random_state=seed)
             for y in share.index]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)
