"""The opt-in pretraining speed-ups (benchmarks/bench_pretraining.py measures them): bf16 autocast,
AdamW's foreach/fused implementations, lean logging. Each must do what it says and nothing else."""

import pytest
import torch
from test_train import toy_datamodule
from torch import nn

from nblib.models import bert, layers
from nblib.presets import get_preset
from nblib.training import pretraining

PRESET = get_preset("smoke").replace(pretrain_chars=16 * 4 * 12, pretrain_seq_len=4, pretrain_batch_size=16,
                                     pretrain_lr=3e-2, warmup_steps=2)


class ProbeLM(nn.Module):
    """A bigram LM that records, at each step, whether it ran under CPU autocast and in what dtype."""

    def __init__(self, vocab: int = 20):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.out = nn.Linear(16, vocab)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def pretraining_step(self, batch):
        ids = batch["input_ids"]
        logits = self.out(self.emb(ids[:, :-1]))
        self.seen.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        return {"loss": loss, "double": 2 * loss.detach()}


def trained(name: str, **speed) -> tuple[ProbeLM, dict]:
    torch.manual_seed(0)
    model = ProbeLM()
    return model, pretraining.pretrain(model, toy_datamodule(), PRESET, pretraining.PretrainingRun(name, **speed))


def test_bf16_runs_every_step_under_autocast_and_is_its_own_cache_key(runs_tmp):
    fp32, info = trained("probe")
    assert fp32.seen and all(seen == (False, torch.float32) for seen in fp32.seen)
    bf16, bf16_info = trained("probe", precision="bf16-mixed")
    steps = bf16_info["steps"]
    assert steps > 5 and all(seen == (True, torch.bfloat16) for seen in bf16.seen[:steps])
    # held-out evaluation (after the last step) is in fp32 either way
    assert bf16.seen[steps:] and all(seen == (False, torch.float32) for seen in bf16.seen[steps:])
    assert not bf16_info["cached"] and bf16_info["settings"]["precision"] == "bf16-mixed"
    assert "precision" not in info["settings"]  # the default keeps today's cache key
    # other numbers, but the same learning: the losses agree to bf16's precision
    fp32_losses = torch.tensor([h["loss"] for h in info["history"]])
    bf16_losses = torch.tensor([h["loss"] for h in bf16_info["history"]])
    assert not torch.equal(fp32_losses, bf16_losses)
    torch.testing.assert_close(bf16_losses, fp32_losses, rtol=5e-2, atol=5e-2)


def test_adamw_implementations_give_the_same_weights(runs_tmp):
    loop, loop_info = trained("loop")
    foreach, foreach_info = trained("foreach", adamw="foreach")
    fused, fused_info = trained("fused", adamw="fused")
    assert loop_info["steps"] == foreach_info["steps"] == fused_info["steps"] > 5
    assert foreach_info["settings"]["adamw"] == "foreach" and "adamw" not in loop_info["settings"]
    for name, p in loop.named_parameters():
        torch.testing.assert_close(dict(foreach.named_parameters())[name], p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dict(fused.named_parameters())[name], p, rtol=1e-5, atol=1e-6)
    # and the optimiser really is the one asked for
    module, trainer = pretraining.pretraining_trainer(ProbeLM(), PRESET, runs_tmp / "x", max_steps=2,
                                                      adamw="fused")
    trainer.fit(module, datamodule=toy_datamodule())
    group = trainer.optimizers[0].param_groups[0]
    assert group["fused"] is True and not group["foreach"]
    with pytest.raises(ValueError, match="adamw='fast'"):
        pretraining.Pretrainer(ProbeLM(), adamw="fast")


def test_lean_logging_changes_no_number_and_logs_the_same_rows(runs_tmp):
    logged = {}
    for lean in (False, True):
        calls = []
        module, trainer = pretraining.pretraining_trainer(ProbeLM(), PRESET, runs_tmp / str(lean), max_steps=25,
                                                          lean_logging=lean)
        module.log = lambda name, value, _calls=calls, _log=module.log, **kw: (_calls.append(name),
                                                                               _log(name, value, **kw))
        torch.manual_seed(0)
        module.model.load_state_dict(ProbeLM().state_dict())
        trainer.fit(module, datamodule=toy_datamodule())
        metrics = (runs_tmp / str(lean) / "logs" / "version_0" / "metrics.csv").read_text()
        logged[lean] = (calls, metrics, [h["loss"] for h in module.history], float(trainer.callback_metrics["train_loss"]))
    (full_calls, full_csv, full_history, full_last), (lean_calls, lean_csv, lean_history, lean_last) = logged[False], logged[True]
    assert len(full_calls) == 2 * 25
    assert len(lean_calls) == 2 * 3  # steps 10, 20 (the logger's) and 25 (the last)
    assert lean_csv == full_csv and lean_history == full_history and lean_last == full_last
    # the lean flag is no cache key: a rerun with it reuses the checkpoint
    trained("reuse")
    assert trained("reuse", lean_logging=True)[1]["cached"]


def test_attention_under_cpu_autocast_runs_in_fp32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    for causal, padding in ((False, mask), (True, None)):
        reference = layers.attention(q, k, v, key_padding_mask=padding, causal=causal, fast=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layers.attention(q, k, v, key_padding_mask=padding, causal=causal, fast=True)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, reference)


def test_bert_mlm_loss_under_bf16_is_close_to_fp32():
    torch.manual_seed(0)
    config = bert.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=16, pre_ln=True,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = bert.BertForPreTraining(config)
    ids = torch.randint(5, 50, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, 8:] = False
    labels = torch.full_like(ids, -100)
    labels[:, 2:7] = ids[:, 2:7]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    fp32 = model.pretraining_step(batch)["loss"].detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.pretraining_step(batch)["loss"].detach()
    assert bf16.dtype == torch.float32 and float(bf16) != float(fp32)
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=2e-2)
