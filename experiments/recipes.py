"""Recipe experiments behind the `small` preset: pretrain BERT or GPT with the preset's settings, then
fine-tune several variants on seed 0 and print validation and test metrics (one JSON line per run).

Not part of the tests or of `make report`: this is how the pretraining and fine-tuning choices in
``nblib/presets.py`` were measured (numbers in docs/experiments.md). Runs are kept in the system's
temporary folder (``--out``); the pretraining checkpoint goes to ``runs/<preset>/pretrain/<name>.pt`` through ``pretraining.pretrain``, so
with ``--name bert`` / ``--name gpt`` lessons 03 and 04 reuse it (same settings, same seed).

    .venv/bin/python experiments/recipes.py --model bert --name bert \\
        --jobs '[{"variant": "pretrained"}, {"variant": "random"}, {"variant": "pretrained", "pooling": "mix"}]'
    .venv/bin/python experiments/recipes.py --model bert --name bert_nsp --nsp --jobs '[{"variant": "pretrained"}]'
    .venv/bin/python experiments/recipes.py --model gpt --name gpt --pre '{"pretrain_chars": 4000000}' \\
        --jobs '[{"variant": "pretrained", "lm": 0.5}, {"variant": "random", "lm": 0.5}]'

A job is a dict: variant (pretrained | random), pooling (cls | last | mean | mix), lr, lm (GPT's λ),
freeze (train the head only), fdrop (fine-tuning dropout), epochs, n (labelled reviews), seed.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

from nblib import course, data
from nblib.data import datamodules, text
from nblib.models import bert, gpt
from nblib.presets import get_preset
from nblib.training import pretraining, saved_runs

JOB_KEYS = {"variant", "pooling", "lr", "lm", "freeze", "fdrop", "epochs", "n", "seed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert", "gpt"), default="bert")
    parser.add_argument("--name", required=True, help="pretraining cache name (bert/gpt: the lessons')")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--pre", default="{}", help="preset overrides as JSON, e.g. pretrain_chars")
    parser.add_argument("--mlm", type=float, default=0.15, help="BERT's masking rate while pretraining")
    parser.add_argument("--nsp", action="store_true", help="BERT: add next-sentence prediction (lesson 03's NSP)")
    parser.add_argument("--whole-word", action="store_true",
                        help="BERT: mask whole jieba words (lesson 03's WHOLE_WORD)")
    parser.add_argument("--hotel-repeats", type=int, default=1,
                        help="read the hotel train reviews this many times per pass (task-adaptive)")
    parser.add_argument("--jobs", default='[{"variant": "pretrained"}, {"variant": "random"}]')
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "nblib-recipes" / "results.jsonl"))
    args = parser.parse_args()
    jobs = json.loads(args.jobs)
    for job in jobs:
        if unknown := set(job) - JOB_KEYS:
            raise SystemExit(f"unknown job key(s) {sorted(unknown)}; known: {sorted(JOB_KEYS)}")

    changed = args.mlm != 0.15 or args.hotel_repeats != 1 or args.nsp or args.whole_word
    if changed and args.name in ("bert", "gpt"):
        # the cache's settings hold neither the masking rate nor the corpus mix (a lesson would reuse
        # the checkpoint), and a changed recipe retrains into the lesson's file (it would be replaced)
        raise SystemExit(f"--mlm/--hotel-repeats/--nsp/--whole-word with --name {args.name} would replace "
                         "the lessons' checkpoint; pick another --name")
    preset = get_preset(args.preset).replace(**json.loads(args.pre))
    preset.configure_torch()
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=0)
    tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
    n_heldout = max(1, len(corpus) // 100)

    def make_model(pretraining: bool, **changes: float) -> torch.nn.Module:
        if args.model == "bert":  # lesson 03's recipe: pre-LN, no NSP, character masking
            config = bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pretraining, pre_ln=True)
            if "dropout" in changes:
                config.hidden_dropout_prob = config.attention_probs_dropout_prob = changes["dropout"]
            return bert.BertForPreTraining(config)
        config = gpt.GPTConfig.from_preset(preset, tokenizer.vocab_size, pretraining)
        if "dropout" in changes:
            config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = changes["dropout"]
        return gpt.GPT(config)

    torch.manual_seed(0)
    model = make_model(pretraining=True)
    if args.model == "bert":
        collate = bert.make_collate(tokenizer, preset.pretrain_seq_len, mlm_probability=args.mlm,
                                    nsp=args.nsp, whole_word=args.whole_word)
    else:
        collate = functools.partial(gpt.collate_causal_lm, tokenizer=tokenizer, max_len=preset.pretrain_seq_len)
    train_texts = corpus[:-n_heldout]
    if args.hotel_repeats > 1:  # TAPT (Gururangan et al. 2020): more of the task's own unlabelled text
        hotel = set(split.train["text"])
        train_texts = train_texts + [t for t in train_texts if t in hotel] * (args.hotel_repeats - 1)
    lm_data = datamodules.LanguageModelDataModule(train_texts, corpus[-n_heldout:], collate,
                                                  preset.pretrain_batch_size)
    # lesson 03's recipe dict is part of its cache key: with --name bert the lesson reuses this checkpoint
    recipe = {"pre_ln": True, "nsp": args.nsp, "whole_word": args.whole_word} if args.model == "bert" else None
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun(args.name, seed=0, recipe=recipe))
    pretrained_state = {k: v.clone() for k, v in model.state_dict().items()}
    print("pretraining", {k: v for k, v in info.items() if k != "history"}, flush=True)

    classify_collate = saved_runs.TokenCollate(tokenizer, preset.max_len)  # [CLS] review [SEP], right-padded

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for number, job in enumerate(jobs):
        seed = job.get("seed", 0)
        torch.manual_seed(seed)
        encoder = make_model(pretraining=False, **({"dropout": job["fdrop"]} if "fdrop" in job else {}))
        if job["variant"] == "pretrained":
            encoder.load_state_dict(pretrained_state)
        pooling = job.get("pooling", "cls" if args.model == "bert" else "last")
        frame = datamodules.subsample(split.train, job.get("n"), seed=0)
        started = time.time()
        # the course's one fine-tuning run; its record goes into this job's folder, not runs/<preset>/
        _, record = course.finetune_variant(
            encoder, model=args.model, variant=job["variant"], preset=preset, split=split, frame=frame,
            collate=classify_collate, pooling=pooling, seed=seed, lr=job.get("lr", preset.finetune_lr),
            max_epochs=job.get("epochs"), run_dir=out.parent / args.name / str(number),
            pretraining=info if job["variant"] == "pretrained" else None,
            classifier_options={"lm_loss_weight": job.get("lm", 0.0), "freeze_encoder": job.get("freeze", False),
                                "num_layers": preset.num_layers + 1, "mix_layer_norm": True},
            job=job)
        row = {"model": args.model, "name": args.name, "pre": json.loads(args.pre), "mlm": args.mlm,
               "hotel_repeats": args.hotel_repeats, "nsp": args.nsp, "whole_word": args.whole_word, **job,
               "val_acc": round(record["val"]["accuracy"], 4), "val_f1": round(record["val"]["macro_f1"], 4),
               "test_acc": round(record["test"]["accuracy"], 4), "test_f1": round(record["test"]["macro_f1"], 4),
               "seconds": round(time.time() - started, 1), "pretraining_val": info.get("val")}
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
