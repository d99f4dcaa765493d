"""Run by test_train.py: fine-tune on 2 CPU processes with Lightning's DDP (gloo), write one record."""

import os
import sys
from pathlib import Path

os.environ["NBLIB_RUNS_DIR"] = sys.argv[1]
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from test_train import synthetic_frames  # noqa: E402

from nblib.data import datamodules
from nblib.data.text import CharTokenizer  # noqa: E402
from nblib.models.static import StaticEmbedding  # noqa: E402
from nblib.presets import get_preset  # noqa: E402
from nblib.results import records
from nblib.training import classifier  # noqa: E402

torch.set_num_threads(1)
preset = get_preset("smoke")
tok = CharTokenizer.build(["房间早餐服务位置前台设施好差"], min_count=1)
tr, va, te = synthetic_frames(128)


def collate(texts):
    return tok.batch_encode(texts, 16)


dm = datamodules.ClassificationDataModule(tr, va, te, collate, batch_size=16)
encoder = StaticEmbedding(tok.vocab_size, 8)
model = classifier.SentimentClassifier(encoder, "mean", lr=1e-2)
trainer = classifier.make_trainer(preset, Path(sys.argv[1]) / "ddp", max_epochs=1, accelerator="cpu", devices=2,
                             strategy="ddp", monitor=None)
trainer.fit(model, datamodule=dm)
results = trainer.validate(model, datamodule=dm, verbose=False)[0]
record = records.make_record(model="static", variant="baseline", preset=preset, seed=0, train_size=len(tr),
                             parameters=classifier.count_parameters(encoder),
                             results={"val": {"accuracy": results["val_accuracy"], "macro_f1": results["val_macro_f1"],
                                            "recall": {}},
                                    "test": {"accuracy": 0.0, "macro_f1": 0.0, "recall": {}}},
                             world_size=trainer.world_size)
records.write_record(record, trainer=trainer)
