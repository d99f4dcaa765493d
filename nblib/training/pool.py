"""Independent runs on a pool of worker processes: ``run_jobs(job, [kwargs, ...], threads=1)``.

Introduced in notebook 02_elmo, where the fine-tuning grid (inits × seeds × label counts) is a list of
runs that do not depend on each other. On a CPU one big run cannot use every core well, while several
one-thread runs side by side can: on 2 cores two one-thread BERT fine-tunings took 81 s together
against 111 s one after the other at two threads (docs/experiments.md). So a grid runs as jobs of a
fixed number of torch threads (``Preset.job_threads``) on ``cores // threads`` workers.

A job's result never depends on where it runs or how many run beside it: it sets its own thread count
(CPU kernels split their sums by thread, so the count is part of the recipe) and seeds itself, and the
results come back in the order of the jobs. One worker runs the jobs in this process, one after the
other; ``tests/test_pool.py`` checks that 1 worker, 2 workers and a Dask cluster give the same records.

The pool is joblib's (loky processes by default), so the same grid can spread over many machines with
no code change: start a Dask cluster and set ``NBLIB_POOL_BACKEND=dask`` (and
``NBLIB_DASK_SCHEDULER=tcp://host:8786``), or ``NBLIB_POOL_BACKEND=ray`` with a Ray cluster
(``ray.util.joblib``). ``NBLIB_WORKERS`` overrides the number of workers.

A job that already ran with the same inputs is not run again: :mod:`nblib.training.runcache` keys it by content.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import joblib

from nblib.training import runcache

WORKERS_ENV = "NBLIB_WORKERS"  # workers of the pool (default: cores // threads per job)
BACKEND_ENV = "NBLIB_POOL_BACKEND"  # "loky" (default), "dask" or "ray"
DASK_SCHEDULER_ENV = "NBLIB_DASK_SCHEDULER"  # a Dask scheduler's address, e.g. tcp://10.0.0.5:8786
BACKENDS = ("loky", "dask", "ray")

T = TypeVar("T")


def cores() -> int:
    """CPU cores this process may use (its affinity where the OS tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(threads: int) -> int:
    """``NBLIB_WORKERS`` when set; else one worker beside a GPU (the runs share it better one after
    the other), else as many as fit on the CPU: workers × threads = cores."""
    if os.environ.get(WORKERS_ENV):
        workers = int(os.environ[WORKERS_ENV])
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV} must be at least 1, got {workers}")
        return workers
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, cores() // max(1, threads))


def _with_threads(job: Callable[..., T], threads: int, kwargs: dict[str, Any]) -> T:
    """Run ``job(**kwargs)`` at ``threads`` torch threads, restoring the caller's count after
    (in a worker process that changes nothing; in this process it keeps the lesson's count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return job(**kwargs)
    finally:
        torch.set_num_threads(before)


def _backend(name: str | None) -> str:
    name = name or os.environ.get(BACKEND_ENV) or "loky"
    if name not in BACKENDS:
        raise ValueError(f"unknown pool backend {name!r} ({BACKEND_ENV}); choose one of {BACKENDS}")
    if name == "ray":
        from ray.util.joblib import register_ray  # a researcher's cluster; not a course dependency

        register_ray()
    return name


def run_jobs(
    job: Callable[..., T],
    jobs: Sequence[dict[str, Any]],
    *,
    threads: int = 1,
    workers: int | None = None,
    backend: str | None = None,
    desc: str = "runs",
    cache: bool = True,
) -> list[T]:
    """``[job(**kwargs) for kwargs in jobs]``, each at ``threads`` torch threads, on a pool of
    ``workers`` processes (default :func:`default_workers`), results in the order of ``jobs``.

    ``job`` may be a function defined in a notebook: joblib sends it by value (cloudpickle), with the
    globals it reads. With ``cache`` (the default) a job whose key (:func:`nblib.training.runcache.job_key`:
    its code, the values it reads, its arguments, its threads, the library modules it reaches) matches
    a finished run is not run again: its result comes from ``runs/cache/`` (``NBLIB_FRESH=1`` ignores
    it). Prints one line as each job finishes (what a papermill run keeps).
    """
    jobs = list(jobs)
    backend = _backend(backend)  # an unknown one is refused before anything runs or is read
    keys = runcache.job_keys(job, jobs, threads) if cache else [None] * len(jobs)
    results: list[Any] = [runcache.load(key) if key else runcache.MISSING for key in keys]
    todo = [k for k, result in enumerate(results) if result is runcache.MISSING]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} {desc} unchanged since they ran: taken from "
              f"{runcache.cache_dir()}", flush=True)
    if not todo:
        return results
    workers = default_workers(threads) if workers is None else workers
    if backend == "loky" and (workers == 1 or len(todo) <= 1):
        workers = 1  # no pool: the jobs run here, one after the other
    calls = [joblib.delayed(_with_threads)(job, threads, jobs[k]) for k in todo]
    client = None
    if backend == "dask" and os.environ.get(DASK_SCHEDULER_ENV):
        from distributed import Client

        client = Client(os.environ[DASK_SCHEDULER_ENV])
    try:
        where = "this process" if workers == 1 else f"{workers} {backend} workers"
        print(f"{len(todo)} {desc} on {where}, {threads} thread{'s' if threads > 1 else ''} each", flush=True)
        options = {"inner_max_num_threads": threads} if backend == "loky" and workers > 1 else {}
        with joblib.parallel_config(backend=backend, n_jobs=workers, **options):
            outputs = joblib.Parallel(return_as="generator")(calls)
            for done, (k, result) in enumerate(zip(todo, outputs, strict=True), start=1):
                results[k] = result
                if keys[k]:
                    runcache.store(keys[k], result)  # here, not in the worker: one writer per entry
                print(f"  {desc}: {done}/{len(todo)} done", flush=True)
        return results
    finally:
        if client is not None:
            client.close()
