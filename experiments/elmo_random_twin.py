"""Lesson 02's random-init biLM and its learning rate: the features a random biLM hands the
classifier, then fine-tuning runs at several learning rates, poolings and inits (one JSON line per
run). Lesson 02's grid, from which each init's learning rate was chosen by validation macro-F1:

    NBLIB_RUNS_DIR=<scratch> .venv/bin/python experiments/elmo_random_twin.py --epochs 2 \\
        --runs '[[1e-3, "mix", true], [3e-3, "mix", true], [1e-2, "mix", true], [3e-2, "mix", true],
                 [1e-3, "mix", true, "pretrained"], [3e-3, "mix", true, "pretrained"]]'

(2e-4 for both inits is lesson 02's earlier run.) Not part of the tests or of `make report`;
``NBLIB_RUNS_DIR`` keeps these runs out of the lessons' folder.

A run is [learning rate, pooling (mix | mean), layer-normalise each layer before the mix], and an
optional fourth item "pretrained" to start from lesson 02's cached biLM instead (``--checkpoint``,
by default ``runs/small/pretrain/elmo.pt`` of this checkout): the same runs for both inits, to pick
each one's learning rate on validation.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from nblib import course, data
from nblib.data import text
from nblib.models import elmo
from nblib.presets import get_preset
from nblib.results import records
from nblib.training import classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--cell", type=int, default=256, help="LSTM cells (the small preset's elmo_cell_size, lesson 02's biLM)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", default='[[2e-4, "mix", true]]')
    parser.add_argument("--checkpoint", default="runs/small/pretrain/elmo.pt",
                        help="lesson 02's pretrained biLM, for runs marked \"pretrained\"")
    args = parser.parse_args()

    preset = get_preset(args.preset)
    preset.configure_torch()
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=0)
    chars = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
    words = text.WordTokenizer.build(corpus, max_size=preset.elmo_word_vocab)
    config = elmo.ElmoConfig.from_preset(preset, chars.vocab_size, words.vocab_size, cell_size=args.cell)
    collate = elmo.make_collate(words, chars, preset.max_words, config.max_chars_per_word)

    # The features a random biLM hands the classifier, on 64 training reviews: how much each layer
    # varies from word to word, and how much its review average varies from review to review.
    torch.manual_seed(0)
    batch = collate(split.train["text"].tolist()[:64])
    mask = batch["attention_mask"]
    with torch.no_grad():
        layers = elmo.BiLM(config).eval().encode(batch["input_ids"], mask, batch["char_ids"])
    for number, h in enumerate(layers):
        pooled = classifier.masked_mean(h, mask)
        print(json.dumps({"layer": number, "per_word_std": round(float(h[mask.bool()].std()), 4),
                          "pooled_std_across_reviews": round(float(pooled.std(0).mean()), 4),
                          "pooled_mean_abs": round(float(pooled.abs().mean()), 4)}), flush=True)

    for lr, pooling, layer_norm, *init in json.loads(args.runs):
        init = init[0] if init else "random"
        torch.manual_seed(0)
        encoder = elmo.BiLM(config)
        if init == "pretrained":
            encoder.load_state_dict(torch.load(args.checkpoint, map_location="cpu",
                                               weights_only=True)["state_dict"])
        elif init != "random":
            raise ValueError(f"unknown init {init!r}: 'random' or 'pretrained'")
        started = time.time()
        # the course's one fine-tuning run; its record goes into this run's folder, not runs/<preset>/
        _, record = course.finetune_variant(
            encoder, model="elmo", variant=init, preset=preset, split=split, collate=collate, pooling=pooling,
            seed=0, lr=lr, max_epochs=args.epochs,
            run_dir=records.runs_dir() / "elmo-twin" / f"{init}-{lr}-{pooling}-{layer_norm}-{args.epochs}",
            classifier_options={"num_layers": config.n_layers + 1, "mix_layer_norm": layer_norm})
        print(json.dumps({"init": init, "lr": lr, "pooling": pooling, "mix_layer_norm": layer_norm, "epochs": args.epochs,
                          "val_acc": round(record["val"]["accuracy"], 4),
                          "val_macro_f1": round(record["val"]["macro_f1"], 4),
                          "test_acc": round(record["test"]["accuracy"], 4),
                          "seconds": round(time.time() - started)}), flush=True)


if __name__ == "__main__":
    main()
