"""One pretraining and one fine-tuning at smoke size, printed as hashes (tests/test_determinism.py).

Run in a fresh process: ``python tests/determinism_script.py RUNS_DIR THREADS``. Prints one JSON line
with the sha256 of the pretrained weights, of the fine-tuned weights and of the test predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

runs, threads = sys.argv[1], int(sys.argv[2])
os.environ["NBLIB_RUNS_DIR"] = runs
os.environ["NBLIB_PROGRESS"] = "lines"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(threads)

from nblib.data import datamodules, text  # noqa: E402
from nblib.models import bert  # noqa: E402
from nblib.presets import get_preset  # noqa: E402
from nblib.training import classifier, finetuning, pretraining  # noqa: E402


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


rng = np.random.RandomState(0)
alphabet = list("好差房间服务早餐干净安静位置方便不错一般失望满意推荐酒店前台设施老旧")
texts = ["".join(rng.choice(alphabet, size=rng.randint(3, 40))) for _ in range(400)]
tokenizer = text.CharTokenizer.build(texts, min_count=1)
preset = get_preset("smoke").replace(pretrain_chars=4_000, pretrain_seq_len=32, pretrain_batch_size=8)

torch.manual_seed(0)  # the model's initialisation (a fresh process is seeded at random)
model = bert.BertForPreTraining(bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pretraining=True))
lm = datamodules.LanguageModelDataModule(texts[:360], texts[360:], bert.make_collate(tokenizer, 32), 8,
                                         seed=0, chars_read=lambda t: min(len(t), 30))
info = pretraining.pretrain(model, lm, preset, pretraining.PretrainingRun("determinism", seed=0))
pretrained = digest(model.state_dict())

labels = [int(t.count("好") >= t.count("差")) for t in texts]
frame = pd.DataFrame({"text": texts, "label": labels})
dm = datamodules.ClassificationDataModule(frame.iloc[:240], frame.iloc[240:320], frame.iloc[320:],
                                          lambda b: tokenizer.batch_encode(b, 32), batch_size=16)
torch.manual_seed(0)  # the head's initialisation
config = bert.BertConfig.from_preset(preset, tokenizer.vocab_size)
encoder = bert.BertModel(config)
encoder.load_state_dict(model.bert.state_dict())
clf = classifier.SentimentClassifier(encoder, pooling="cls", lr=1e-3)
_, results = finetuning.fit_classifier(clf, dm, lambda b: tokenizer.batch_encode(b, 32), preset,
                                       f"{runs}/finetune", seed=0, max_epochs=2)
print(json.dumps({"pretrained": pretrained, "steps": info["steps"], "characters": info["characters"],
                  "finetuned": digest(clf.state_dict()),
                  "predictions": hashlib.sha256(json.dumps(results["predictions"]).encode()).hexdigest()}))
