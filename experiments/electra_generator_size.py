"""ELECTRA's generator width, 1/4 or 1/2 of the discriminator's: which is better on validation?

Pretrains ELECTRA exactly as lesson 03b does (``small``: the corpus, vocabulary, budget of characters, pre-LN,
lambda = 50), with the generator ``SIZE`` wide, into the runs folder ``NBLIB_RUNS_DIR`` (use a scratch folder:
the checkpoint is ``<runs>/small/pretrain/electra.pt``), then fine-tunes the discriminator once (seed 0, all
labels, lesson 03b's recipe) and prints the held-out pretraining metrics and validation accuracy / macro-F1
(never test: the choice is made on validation). Lesson 03b's own run gives the 1/4 row.

Run: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> \
     .venv/bin/python experiments/electra_generator_size.py 0.5
(see docs/experiments.md, lesson 03b).
"""

from __future__ import annotations

import sys
import time

import torch
from electra_lesson import pretraining_parts

from nblib import data
from nblib.data import datamodules
from nblib.models import bert, electra
from nblib.presets import get_preset
from nblib.results import records
from nblib.training import classifier, finetuning, pretraining, saved_runs


def main(generator_size: float, seed: int = 0) -> None:
    preset = get_preset("small")
    preset.configure_torch()
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    tokenizer, lm_data, config = pretraining_parts(preset, seed=seed, generator_size=generator_size)
    torch.manual_seed(seed)
    model = electra.ElectraForPreTraining(config)
    recipe = {"objective": "electra", "pre_ln": True, "generator_size": generator_size, "rtd_weight": 50.0}
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun("electra", seed=seed, recipe=recipe))
    print(f"generator {generator_size:g}: {info['steps']} steps, {info['seconds']} s; held-out {info['val']}",
          flush=True)

    finetune_config = bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pre_ln=True)
    torch.manual_seed(seed)
    encoder = electra.ElectraDiscriminator(finetune_config)
    encoder.load_state_dict(model.discriminator.state_dict())
    collate = saved_runs.TokenCollate(tokenizer, preset.max_len)
    clf = classifier.SentimentClassifier(encoder, pooling="cls", lr=preset.finetune_lr)
    datamodule = datamodules.ClassificationDataModule(split.train, split.val, split.test, collate,
                                                      preset.finetune_batch_size, ood=split.ood)
    started = time.time()
    _, results = finetuning.fit_classifier(clf, datamodule, collate, preset,
                                           records.runs_dir() / "small" / "electra-generator-probe" / str(seed),
                                           seed=seed)
    print(f"generator {generator_size:g}, seed {seed}, all labels: val accuracy {results['val']['accuracy']:.3f}, "
          f"val macro-F1 {results['val']['macro_f1']:.3f} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]))
