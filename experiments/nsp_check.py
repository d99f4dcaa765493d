"""Does next-sentence prediction learn at all? A quick check behind lesson 03's "What else was measured".

In the lesson's 13-minute pretraining with ``NSP = True`` the NSP loss stayed at ln 2 for every step. This trains
a 2-layer, 128-wide pre-LN BERT on MLM + NSP for 600 steps of 32 texts drawn at random from the corpus (20-120
characters, *not* length-grouped) and prints the NSP loss and accuracy per 100 steps (about a minute on 2 cores).
Not part of the tests or of ``make report``.

    NBLIB_DATA_MIRROR=../shared/data .venv/bin/python experiments/nsp_check.py
"""

from __future__ import annotations

import random
import time

import torch

from nblib import data
from nblib.data import text
from nblib.models import bert


def main(steps: int = 600, batch_size: int = 32) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    corpus = data.pretraining_corpus(seed=0)
    tokenizer = text.CharTokenizer.build(corpus, min_count=3)
    texts = [t for t in corpus if 20 <= len(t) <= 120]
    random.Random(0).shuffle(texts)
    config = bert.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=256, max_position_embeddings=128,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pre_ln=True)
    model = bert.BertForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    started, losses, accuracies = time.time(), [], []
    for step in range(steps):
        batch = bert.collate_mlm(texts[step * batch_size:(step + 1) * batch_size], tokenizer, 128, nsp=True,
                                 seed=step)
        out = model.pretraining_step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["nsp_loss"].item())
        accuracies.append(out["nsp_acc"].item())
        if (step + 1) % 100 == 0:
            print(f"steps {step - 98}-{step + 1}: NSP loss {sum(losses[-100:]) / 100:.3f}, "
                  f"accuracy {sum(accuracies[-100:]) / 100:.3f}; masked-LM loss {out['mlm_loss'].item():.2f}; "
                  f"{time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
