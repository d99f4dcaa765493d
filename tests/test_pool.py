"""The pool of worker processes (nblib.training.pool): a job's result does not depend on where it runs.

A smoke grid of fine-tuning runs (two seeds × two label counts) runs in this process (1 worker), on 2
loky worker processes and on a local Dask cluster; the records (times aside) and the fine-tuned weights
must be equal bit for bit. The job is defined here, so the workers receive it by value (cloudpickle).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from nblib import course, data
from nblib.data import datamodules, text
from nblib.models.static import StaticEmbedding
from nblib.presets import get_preset
from nblib.results.records import without_times
from nblib.training import pool, saved_runs

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

GRID = [{"seed": seed, "n_labels": n} for seed in (0, 1) for n in (40, 80)]


def finetune_static(seed: int, n_labels: int, run_root: str) -> tuple[dict, str, int]:
    """One smoke fine-tuning run: its record without times, a hash of its weights, its thread count."""
    preset = get_preset("smoke")
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    tokenizer = text.CharTokenizer.build(split.train["text"].tolist(), min_count=1)
    collate = saved_runs.TokenCollate(tokenizer, preset.max_len)
    torch.manual_seed(seed)
    encoder = StaticEmbedding(tokenizer.vocab_size, 16)
    clf, record = course.finetune_variant(
        encoder, model="static", variant="baseline", preset=preset, split=split, collate=collate,
        pooling="mean", seed=seed, frame=datamodules.subsample(split.train, n_labels, seed=0),
        label_count=n_labels, lr=3e-3, max_epochs=2, run_dir=Path(run_root) / f"{seed}-{n_labels}")
    weights = hashlib.sha256(b"".join(t.numpy().tobytes() for t in clf.state_dict().values())).hexdigest()
    return without_times(record), weights, torch.get_num_threads()


def run_grid(tmp_path: Path, name: str, **options) -> list[tuple[dict, str, int]]:
    jobs = [dict(job, run_root=str(tmp_path / name)) for job in GRID]
    return pool.run_jobs(finetune_static, jobs, threads=1, desc=name, cache=False, **options)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    return run_grid(tmp_path_factory.mktemp("pool"), "one worker", workers=1)


@pytest.mark.slow
def test_two_workers_give_the_records_of_one(one_worker, tmp_path):
    assert [threads for *_, threads in one_worker] == [1] * len(GRID)  # the job's count, not the caller's
    assert len({weights for _, weights, _ in one_worker}) == len(GRID)  # four different runs
    two = run_grid(tmp_path, "two workers", workers=2, backend="loky")
    for job, (record, weights, threads), (record_1, weights_1, _) in zip(GRID, two, one_worker, strict=True):
        assert (record["seed"], record["label_count"]) == (job["seed"], job["n_labels"])  # order kept
        assert threads == 1
        assert weights == weights_1
        assert record == record_1


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_records(one_worker, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        on_dask = run_grid(tmp_path, "dask", workers=2, backend="dask")
    assert [(r, w) for r, w, _ in on_dask] == [(r, w) for r, w, _ in one_worker]


def test_the_comparison_can_fail(one_worker):
    (record, weights, _), other = one_worker[0], one_worker[1]
    assert record != other[0] and weights != other[1]  # another seed or label count: another run


def test_unknown_backend_and_bad_worker_count_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown pool backend"):
        pool.run_jobs(finetune_static, [], backend="spark")
    monkeypatch.setenv(pool.WORKERS_ENV, "0")
    with pytest.raises(ValueError, match="at least 1"):
        pool.default_workers(1)
    monkeypatch.setenv(pool.WORKERS_ENV, "3")
    assert pool.default_workers(1) == 3


def test_workers_times_threads_fill_the_cores(monkeypatch):
    monkeypatch.delenv(pool.WORKERS_ENV, raising=False)
    monkeypatch.setattr(pool, "cores", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [pool.default_workers(t) for t in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
