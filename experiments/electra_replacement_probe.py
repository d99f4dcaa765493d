"""Is lesson 03b's discriminator stuck because of the code or because of what it must detect?

Trains ELECTRA's discriminator at the ``small`` size (4 x 128, pre-LN, lr 1e-3, no warm-up, batches of 12
reviews of the pretraining corpus drawn with a seeded generator) in a plain torch loop for ``STEPS`` steps,
with the replaced characters coming from one of three sources:

- ``uniform``: characters drawn uniformly from the vocabulary (a rare character betrays itself);
- ``unigram``: characters drawn by their corpus frequency (only the context can betray them);
- ``generator``: ELECTRA itself (``ElectraForPreTraining.pretraining_step``: the generator's samples,
  loss = MLM + lambda * RTD), with ``--generator-size``, ``--unshared`` (the generator gets its own copy
  of the embeddings) and ``--generator-lr-scale`` (its own parameters at a smaller rate) as variants.

Every 100 steps it prints the mean over those steps of H(replaced share) - RTD loss: how many nats per
position the discriminator knows beyond the base rate (0 = the base rate; a learning discriminator climbs).

Run: NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/electra_replacement_probe.py uniform 400
(see docs/experiments.md, lesson 03b: "Which replacements the discriminator can learn from").
"""

from __future__ import annotations

import argparse
import copy
import math
from collections import Counter

import torch
import torch.nn.functional as F

from nblib import data
from nblib.data import text
from nblib.models import bert, electra
from nblib.presets import get_preset
from nblib.training import pretraining, saved_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=("uniform", "unigram", "generator"))
    parser.add_argument("steps", type=int)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--generator-size", type=float, default=0.25)
    parser.add_argument("--unshared", action="store_true")
    parser.add_argument("--generator-lr-scale", type=float, default=1.0)
    parser.add_argument("--init-from-mlm", action="store_true",
                        help="start the discriminator's encoder from lesson 03's MLM-pretrained BERT "
                             "(runs/small/pretrain/bert.pt; its vocabulary): does an encoder that already "
                             "reads context learn to detect replacements?")
    args = parser.parse_args()

    preset = get_preset("small")
    preset.configure_torch()
    corpus = data.pretraining_corpus(max_texts=20_000, seed=0)  # a fixed 20k-text part: the probe's data
    tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
    if args.init_from_mlm:
        mlm_bert, info = pretraining.load_pretrained(preset, "bert")
        tokenizer = saved_runs.tokenizer_from_vocabulary(next(iter(info["tokenizers"].values())))
    config = electra.ElectraConfig.from_preset(preset, tokenizer.vocab_size, pretraining=True, pre_ln=True,
                                               generator_size=args.generator_size)
    collate = bert.make_collate(tokenizer, preset.pretrain_seq_len)
    torch.manual_seed(0)
    model = electra.ElectraForPreTraining(config)
    if args.init_from_mlm:
        model.discriminator.bert.load_state_dict(mlm_bert.bert.state_dict())  # embeddings shared with the generator
    if args.unshared:
        model.generator.bert.embeddings = copy.deepcopy(model.discriminator.bert.embeddings)
    shared = {id(p) for p in model.discriminator.parameters()}
    generator_own = [p for p in model.generator.parameters() if id(p) not in shared]
    optimizer = torch.optim.AdamW([{"params": list(model.discriminator.parameters())},
                                   {"params": generator_own, "lr": args.lr * args.generator_lr_scale}], lr=args.lr)
    counts = Counter(ch for t in corpus for ch in t)  # corpus frequency of each vocabulary character
    unigram = torch.tensor([float(counts.get(tok, 0)) for tok in tokenizer.id_to_token])
    draws = torch.Generator().manual_seed(0)
    gaps: list[float] = []
    mlm_losses: list[float] = []  # the generator's, with the generator source
    for step in range(args.steps):
        batch = collate([corpus[i] for i in torch.randint(len(corpus), (12,), generator=draws).tolist()])
        if args.source == "generator":
            out = model.pretraining_step(batch)
            loss, rtd_loss, share = out["loss"], out["rtd_loss"], float(out["replaced_share"])
            mlm_losses.append(float(out["mlm_loss"]))
        else:
            masked, labels = batch["input_ids"], batch["labels"]
            real, selected = batch["attention_mask"].bool(), labels != bert.IGNORE_INDEX
            original = torch.where(selected, labels, masked)
            n = int(selected.sum())
            sampled = (torch.randint(len(text.SPECIAL_TOKENS), tokenizer.vocab_size, (n,), generator=draws)
                       if args.source == "uniform" else torch.multinomial(unigram, n, True, generator=draws))
            corrupted, is_replaced = electra.replace_tokens(original, selected, sampled)
            logits = model.discriminator(corrupted, real)  # (B, T)
            loss = rtd_loss = F.binary_cross_entropy_with_logits(logits[real], is_replaced[real])
            share = float(is_replaced[real].mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        entropy = -(share * math.log(share) + (1 - share) * math.log(1 - share))
        gaps.append(entropy - float(rtd_loss.detach()))
        if args.source == "generator" and step + 1 in (1, 25, 50):
            print(f"generator MLM loss at step {step + 1}: {mlm_losses[-1]:.2f} nats", flush=True)
        if (step + 1) % 100 == 0:
            print(f"{args.source} steps {step - 98}-{step + 1}: mean H(share) - RTD loss = "
                  f"{sum(gaps[-100:]) / 100:+.4f} nats", flush=True)


if __name__ == "__main__":
    main()
