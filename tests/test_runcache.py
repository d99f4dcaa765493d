"""The content-addressed cache of runs (nblib.training.runcache, used by nblib.training.pool.run_jobs).

A job is rerun only when something that fixes its result changed: its code, a value it reads, an
argument, its threads, or the source of a library module it reaches; a change to one model family's file
reruns that family's jobs alone. Entries are written whole or not at all, and FRESH ignores them.
"""

from __future__ import annotations

import types

import pandas as pd
import torch

from nblib.models import bert, elmo, gpt
from nblib.training import pool, runcache

# What the job below really ran (in this process: one worker). Kept in a module object, which a key
# names but does not read: the list itself changes with every call.
STATE = types.ModuleType("runcache_test_state")
STATE.calls = []
CALLS = STATE.calls
SCALE = 2.0  # a global the job reads: part of its key by value


def double_sum(frame: pd.DataFrame, offset: int) -> float:
    STATE.calls.append((len(frame), offset))
    return float(frame["x"].sum() * SCALE + offset)


def run(jobs):
    return pool.run_jobs(double_sum, jobs, threads=1, workers=1, desc="sums")


def test_an_unchanged_job_is_not_run_again_and_a_changed_one_is(runs_tmp, monkeypatch):
    CALLS.clear()
    frame = pd.DataFrame({"x": [1, 2, 3]})
    jobs = [{"frame": frame, "offset": 0}, {"frame": frame, "offset": 1}]
    assert run(jobs) == [12.0, 13.0] and len(CALLS) == 2
    assert run(jobs) == [12.0, 13.0] and len(CALLS) == 2  # both from the cache
    changed = pd.DataFrame({"x": [1, 2, 4]})  # the data changed: that job reruns, the other does not
    assert run([{"frame": changed, "offset": 0}, jobs[1]]) == [14.0, 13.0] and len(CALLS) == 3
    monkeypatch.setattr(__import__(__name__), "SCALE", 3.0)  # a global the job reads changed: both rerun
    assert run(jobs) == [18.0, 19.0] and len(CALLS) == 5
    monkeypatch.setenv(runcache.FRESH_ENV, "1")  # FRESH: nothing is read from the cache
    assert run(jobs) == [18.0, 19.0] and len(CALLS) == 7
    assert sorted(p.suffix for p in runcache.cache_dir().iterdir()) == [".pkl"] * 5  # no temporary left


def test_the_key_follows_threads_code_and_arguments():
    frame = pd.DataFrame({"x": [1, 2, 3]})
    key = runcache.job_key(double_sum, {"frame": frame, "offset": 0}, threads=1)
    assert key == runcache.job_key(double_sum, {"frame": frame.copy(), "offset": 0}, threads=1)
    assert key != runcache.job_key(double_sum, {"frame": frame, "offset": 0}, threads=2)
    assert key != runcache.job_key(double_sum, {"frame": frame, "offset": 5}, threads=1)
    assert key != runcache.job_key(run, {"frame": frame, "offset": 0}, threads=1)
    # a grid's keys, computed together, are each job's own
    grid = [{"frame": frame, "offset": 0}, {"frame": frame, "offset": 5}]
    assert runcache.job_keys(double_sum, grid, threads=1) == [runcache.job_key(double_sum, g, threads=1) for g in grid]
    weights = {"w": torch.ones(3)}
    assert runcache.job_key(double_sum, {"frame": frame, "offset": weights}, threads=1) != \
        runcache.job_key(double_sum, {"frame": frame, "offset": {"w": torch.tensor([1.0, 1.0, 1.5])}}, threads=1)


def finetune_bert_like(seed: int) -> object:
    return bert.BertConfig, seed


def finetune_gpt_like(seed: int) -> object:
    return gpt.GPTConfig, seed


def finetune_elmo_like(seed: int) -> object:
    return elmo.ElmoConfig, seed


def test_a_change_to_one_model_file_reruns_that_family_alone():
    families = {"bert": finetune_bert_like, "gpt": finetune_gpt_like, "elmo": finetune_elmo_like}
    before = {name: runcache.job_key(job, {"seed": 0}, 1) for name, job in families.items()}
    assert len(set(before.values())) == 3
    modules = {name: runcache.job_modules(job, {"seed": 0}) for name, job in families.items()}
    assert "nblib.models.layers" in modules["bert"] and "nblib.models.layers" in modules["gpt"]  # the shared block
    assert "nblib.models.elmo" not in modules["bert"] and "nblib.models.gpt" not in modules["bert"]

    def gpt_file_changed(name: str) -> bytes:
        return runcache._source_bytes(name) + (b"\n# a change\n" if name == "nblib.models.gpt" else b"")

    after = {name: runcache.job_key(job, {"seed": 0}, 1, source_of=gpt_file_changed)
             for name, job in families.items()}
    assert [name for name in families if after[name] != before[name]] == ["gpt"]

    def layers_changed(name: str) -> bytes:
        return runcache._source_bytes(name) + (b"\n# a change\n" if name == "nblib.models.layers" else b"")

    shared = {name: runcache.job_key(job, {"seed": 0}, 1, source_of=layers_changed)
              for name, job in families.items()}
    assert [name for name in families if shared[name] != before[name]] == ["bert", "gpt"]


def test_a_half_written_or_damaged_entry_is_never_read(runs_tmp, capsys):
    CALLS.clear()
    frame = pd.DataFrame({"x": [1]})
    key = runcache.job_key(double_sum, {"frame": frame, "offset": 0}, threads=1)
    runcache.cache_dir().mkdir(parents=True)
    (runcache.cache_dir() / f"{key}.pkl.123.tmp").write_bytes(b"half an entry")  # a killed writer's
    assert run([{"frame": frame, "offset": 0}]) == [2.0] and len(CALLS) == 1
    (runcache.cache_dir() / f"{key}.pkl").write_bytes(b"\x80\x05not a pickle")  # damaged on disk
    assert run([{"frame": frame, "offset": 0}]) == [2.0] and len(CALLS) == 2
    assert "unreadable" in capsys.readouterr().out
    assert run([{"frame": frame, "offset": 0}]) == [2.0] and len(CALLS) == 2  # rewritten whole


def test_a_presets_grid_fields_leave_the_key_and_its_recipe_fields_do_not():
    """A learner's sitting (one seed, other label counts) keys each run as `make report` did, so it finds
    the report's runs; a change to how a run goes (its learning rate) is a new key."""
    from nblib.presets import get_preset

    small = get_preset("small")
    frame = pd.DataFrame({"x": [1, 2, 3]})
    key = runcache.job_key(double_sum, {"frame": frame, "offset": small}, threads=1)
    assert key == runcache.job_key(double_sum, {"frame": frame, "offset": small.sitting(0)}, threads=1)
    assert key == runcache.job_key(double_sum, {"frame": frame, "offset": small.replace(label_counts=(50,))},
                                   threads=1)
    assert key != runcache.job_key(double_sum, {"frame": frame, "offset": small.replace(finetune_lr=1e-3)},
                                   threads=1)
    short = small.sitting(0, short_pretraining=True)  # another name: its own runs folder, its own keys
    assert key != runcache.job_key(double_sum, {"frame": frame, "offset": short}, threads=1)
