"""Lesson 03's masked LM with one recipe change: a higher masking rate, or a last phase on the hotel reviews alone.

Pretrains BERT exactly as lesson 03 does (``small``: its corpus and vocabulary, 5 M characters, pre-LN, no NSP,
character masking, seed 0) with one change, into the runs folder ``NBLIB_RUNS_DIR`` under lesson 03's name
(``<runs>/small/pretrain/bert.pt``: use a scratch folder), so that ``experiments/pooling_probe.py`` run with the
same ``NBLIB_RUNS_DIR`` fine-tunes it as lesson 03 does, on validation only:

- ``--mlm 0.4``: mask 40% of the characters instead of 15% (Wettig et al., 2023, "Should you mask 15% in masked
  language modeling?"; 80/10/10 as before).
- ``--hotel-phase 0.2``: the first 80% of the character budget as lesson 03 (the whole corpus), then the last
  20% on the hotel train split's reviews alone (domain-adaptive pretraining, Gururangan et al., 2020: a second
  run from the first one's weights, with its own warm-up and decay). Never validation or test text. Same budget.

Prints the held-out masked-LM loss and accuracy, always scored at lesson 03's 15% masking (so that the rows
compare), and the seconds.

Run: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/bert_pretraining_probe.py --mlm 0.4
then: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/pooling_probe.py \
      --counts 100 1000 all --seeds 0 1 --inits pretrained --poolings mean
"""

from __future__ import annotations

import argparse
import json

import torch

from nblib import data
from nblib.data import datamodules, text
from nblib.models import bert
from nblib.presets import get_preset
from nblib.training import pretraining

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm", type=float, default=0.15, help="masking rate while pretraining (lesson 03: 0.15)")
    parser.add_argument("--hotel-phase", type=float, default=0.0,
                        help="share of the character budget read last, from the hotel train reviews alone")
    parser.add_argument("--preset", default="small", help="smoke: a quick check that the probe runs")
    args = parser.parse_args()
    if not 0 <= args.hotel_phase < 1:
        raise SystemExit("--hotel-phase is a share of the budget in [0, 1)")
    preset = get_preset(args.preset)
    preset.configure_torch()
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=SEED)
    tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)  # lesson 03's vocabulary
    n_heldout = max(1, len(corpus) // 100)
    train_texts, heldout_texts = corpus[:-n_heldout], corpus[-n_heldout:]

    def lm_data(texts: list[str], mlm: float) -> datamodules.LanguageModelDataModule:
        collate = bert.make_collate(tokenizer, preset.pretrain_seq_len, mlm_probability=mlm)
        return datamodules.LanguageModelDataModule(
            texts, heldout_texts, collate, preset.pretrain_batch_size, seed=SEED,
            chars_read=bert.characters_read(preset.pretrain_seq_len))

    torch.manual_seed(SEED)
    model = bert.BertForPreTraining(bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pre_ln=True,
                                                                pretraining=True))
    recipe = {"pre_ln": True, "nsp": False, "whole_word": False, "mlm_probability": args.mlm,
              "hotel_phase": args.hotel_phase}
    phases = []
    hotel_chars = round(args.hotel_phase * preset.pretrain_chars)
    if hotel_chars:
        first = preset.replace(pretrain_chars=preset.pretrain_chars - hotel_chars)
        phases.append(pretraining.pretrain(model, lm_data(train_texts, args.mlm), first, pretraining.PretrainingRun("bert-general", seed=SEED, recipe=recipe)))
        hotel = [t for t in split.train["text"] if t.strip()]  # the train split only: never val or test
        print(f"hotel phase: {len(hotel):,} train reviews, {sum(map(len, hotel)):,} characters per pass", flush=True)
        phases.append(pretraining.pretrain(model, lm_data(hotel, args.mlm), preset.replace(pretrain_chars=hotel_chars), pretraining.PretrainingRun("bert", seed=SEED, recipe=recipe)))
    else:
        phases.append(pretraining.pretrain(model, lm_data(train_texts, args.mlm), preset, pretraining.PretrainingRun("bert", seed=SEED, recipe=recipe)))
    at_15 = pretraining.evaluate_pretraining(model, lm_data(train_texts, 0.15).heldout_dataloader())
    print(json.dumps({"recipe": recipe, "phases": [{k: p[k] for k in ("characters", "steps", "seconds", "val")}
                                                   for p in phases],
                      "heldout_at_15_percent": at_15}, indent=1), flush=True)


if __name__ == "__main__":
    main()
