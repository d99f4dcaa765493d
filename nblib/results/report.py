"""The main job's runner: run the lessons with papermill, then have the comparison written.

``python -m nblib.results.report run --preset small`` (what ``make report`` calls) executes every lesson
notebook in order in one preset, keeps the executed copies under ``runs/<preset>/notebooks/``,
and ends by writing ``figures/comparison.md`` from the results records (:mod:`nblib.results.comparison`,
which reads records only); ``--resume`` continues an interrupted run (a laptop that slept, a closed
terminal) where it stopped; ``ablations`` runs the lessons' ablations (``make ablations``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from nblib.presets import PRESETS, get_preset
from nblib.results.comparison import FIGURES_DIR, write_comparison, write_readme_block
from nblib.results.records import REPO_ROOT, RUN_ID_ENV, RecordError, git_revision, runs_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "nblib"
# Lesson 07 downloads and fine-tunes bert-base-chinese: hours on a GPU-less laptop, so the main job
# runs it only when asked (`make report WITH_CHECKPOINTS=1`).
CHECKPOINT_LESSONS = ("07_",)
COMPARE_LESSON = "05_compare.ipynb"
README = REPO_ROOT / "README.md"
README_PRESET = "small"  # the preset whose run writes the README's results block


def lesson_notebooks(directory: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The lessons in course order: ``NN_name.ipynb`` and short follow-ups ``NNb_name.ipynb``
    (03b_electra sorts after 03_bert)."""
    return sorted(p for p in directory.glob("[0-9][0-9]*_*.ipynb"))


def report_order(notebooks: Sequence[Path], with_checkpoints: bool = False) -> list[Path]:
    """The main job's order: every lesson, the comparison last (it reads what the others wrote)."""
    chosen = [nb for nb in notebooks if with_checkpoints or not nb.name.startswith(CHECKPOINT_LESSONS)]
    return sorted(chosen, key=lambda nb: (nb.name == COMPARE_LESSON, nb.name))


def check_parameters(notebook: Path, parameters: dict) -> None:
    """Refuse parameters the notebook does not declare (papermill would only warn)."""
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(
            f"{notebook.name} does not declare parameter(s) {unknown}; it declares {sorted(declared)}"
        )


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: dict,
    *,
    timeout_s: int | None = None,
    kernel_name: str = KERNEL_NAME,
    progress: bool = True,
) -> None:
    """Run one notebook with papermill from its own folder; raise naming the failing cell."""
    import papermill

    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    # nobody watches an executed copy: one progress line per epoch, no bar debris (nblib.training.progress)
    os.environ.setdefault("NBLIB_PROGRESS", "lines")
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(notebook.parent),
            execution_timeout=timeout_s,
            progress_bar=progress,
            log_output=False,
        )
    except papermill.PapermillExecutionError as err:
        raise RuntimeError(
            f"{notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
            f"{err.ename}: {err.evalue}\nThe executed copy with the traceback is {output}"
        ) from None


RUN_STATE = "run_state.json"  # under runs/<preset>/: what an interrupted run had finished


def run_all(preset_name: str, only: Sequence[str] = (), with_checkpoints: bool = False,
            resume: bool = False) -> Path:
    """Execute every lesson (or those whose name starts with one of ``only``) and write the table.

    After each lesson the run notes its id and the lessons done in ``runs/<preset>/run_state.json``;
    ``resume=True`` (``make report RESUME=1``) continues an interrupted run of the same commit where it
    stopped, under the same run id, so its figures and table still name one run.
    """
    preset = get_preset(preset_name)
    out_dir = runs_dir() / preset.name / "notebooks"
    notebooks = [nb for nb in report_order(lesson_notebooks(), with_checkpoints or bool(only))
                 if not only or nb.name.startswith(tuple(only))]
    if not notebooks:
        raise SystemExit(f"no lesson notebook matches {list(only)} in {NOTEBOOKS_DIR}")
    state_path = runs_dir() / preset.name / RUN_STATE
    state = read_run_state(state_path, [nb.stem for nb in notebooks]) if resume else None
    state = state or {"run_id": run_id(preset.name), "commit": git_revision(),
                      "lessons": [nb.stem for nb in notebooks], "lesson_seconds": {}, "wall_seconds": 0.0}
    # one id for everything this run draws: figures carry it in their metadata, the table in its header
    os.environ[RUN_ID_ENV] = state["run_id"]
    if not only and not state["lesson_seconds"]:
        clear_figures()
    lesson_seconds: dict[str, float] = state["lesson_seconds"]
    if lesson_seconds:
        print(f"[{preset.name}] resuming run {state['run_id']}: {', '.join(lesson_seconds)} done", flush=True)
    start = time.perf_counter()
    for nb in notebooks:
        if nb.stem in lesson_seconds:
            continue
        t0 = time.perf_counter()
        print(f"[{preset.name}] {nb.name} ...", flush=True)
        execute_notebook(nb, out_dir / nb.name, lesson_parameters(nb, preset.name, ablations=False),
                         timeout_s=preset.notebook_timeout_s)
        lesson_seconds[nb.stem] = time.perf_counter() - t0
        print(f"[{preset.name}] {nb.name} done in {lesson_seconds[nb.stem]:.0f} s", flush=True)
        write_run_state(state_path, state, time.perf_counter() - start)
    wall = state["wall_seconds"] + time.perf_counter() - start
    path = write_comparison(preset.name, wall_seconds=wall, lesson_seconds=lesson_seconds)
    print(f"wrote {path}")
    if preset.name == README_PRESET and not only:
        README.write_text(write_readme_block(README.read_text(encoding="utf-8"),
                                             path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote the results block of {README}")
    return path


ABLATIONS_PARAMETER = "ABLATIONS"  # a lesson's switch for its ablations (frozen ELMo, GPT λ = 0, truncation, the ablation label counts)
FULL_PARAMETER = "FULL"  # a lesson's switch between a learner's sitting (False) and the whole grid (course.lesson_preset)


def lesson_parameters(notebook: Path, preset_name: str, ablations: bool) -> dict:
    """The papermill parameters of one lesson: the preset, ``FULL = True`` (the whole grid, not a
    learner's sitting) and ``ABLATIONS`` where the lesson has them (the main job runs without
    ablations; ``make ablations`` runs only them)."""
    import papermill

    parameters: dict = {"PRESET": preset_name}
    declared = papermill.inspect_notebook(str(notebook))
    if FULL_PARAMETER in declared:
        parameters[FULL_PARAMETER] = True
    if ABLATIONS_PARAMETER in declared:
        parameters[ABLATIONS_PARAMETER] = ablations
    return parameters


def run_ablations(preset_name: str, only: Sequence[str] = ()) -> Path:
    """``make ablations``: the lessons that have ablations, with them on (executed copies under
    ``runs/<preset>/ablations/``), then the table again: the ablation rows join it from their records.
    The lessons' main runs come from the run cache when ``make report`` made them (same inputs, same key).
    After a complete ``make report`` of this commit the ablations are named after it (``<its run
    id>-ablations``) and the table keeps its header and minutes, the ablations' minutes added; each call
    (``--only 03``, then ``--only 03b``) adds its lessons to ``runs/<preset>/ablations/run_state.json``."""
    import papermill

    preset = get_preset(preset_name)
    out_dir = runs_dir() / preset.name / "ablations"
    notebooks = [nb for nb in lesson_notebooks() if ABLATIONS_PARAMETER in papermill.inspect_notebook(str(nb))
                 and (not only or nb.name.startswith(tuple(only)))]
    main_run = complete_main_run(preset.name)
    this_id = f"{main_run['run_id'] if main_run else run_id(preset.name)}-ablations"
    state_path = out_dir / RUN_STATE
    state = load_run_state(state_path)
    if not state or state.get("run_id") != this_id:  # another main run's ablations: start a new list
        state = {"run_id": this_id, "commit": git_revision(), "lesson_seconds": {}, "wall_seconds": 0.0}
    os.environ.setdefault(RUN_ID_ENV, this_id)
    start = time.perf_counter()
    for nb in notebooks:
        t0 = time.perf_counter()
        print(f"[{preset.name}] {nb.name} with its ablations ...", flush=True)
        execute_notebook(nb, out_dir / nb.name, lesson_parameters(nb, preset.name, ablations=True),
                         timeout_s=preset.notebook_timeout_s)
        state["lesson_seconds"][nb.stem] = time.perf_counter() - t0
        write_run_state(state_path, state, time.perf_counter() - start)
        print(f"[{preset.name}] {nb.name} done in {state['lesson_seconds'][nb.stem]:.0f} s", flush=True)
    return write_table(preset.name)


def load_run_state(path: Path) -> dict | None:
    """A run's state file (:func:`write_run_state`), or None when there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def complete_main_run(preset_name: str) -> dict | None:
    """The state of the last ``make report`` in ``runs/<preset>/`` when it ran every lesson it named and
    is of this checkout's commit (its records are then the table's main rows), else None."""
    state = load_run_state(runs_dir() / preset_name / RUN_STATE)
    if state is None:
        return None
    done = state.get("commit") == git_revision() and set(state.get("lessons", [])) <= set(state.get("lesson_seconds", {}))
    return state if done else None


def write_table(preset_name: str) -> Path:
    """``figures/comparison.md`` from the records, with the run that made them: the complete ``make report``
    of this commit (its id, wall time and lesson minutes) and its ablations when they ran; else the
    table alone, named by ``NBLIB_RUN_ID`` when set (``report table``, ``make ablations`` alone)."""
    main_run = complete_main_run(preset_name)
    if main_run is None:
        return write_comparison(preset_name)
    label = main_run["run_id"]
    lesson_seconds = dict(main_run["lesson_seconds"])
    ablations = load_run_state(runs_dir() / preset_name / "ablations" / RUN_STATE)
    extra = None
    if ablations and ablations.get("run_id") == f"{label}-ablations" and ablations["lesson_seconds"]:
        label += f"` and its ablations `{ablations['run_id']}"
        lesson_seconds.update({f"{name} (ablations)": s for name, s in ablations["lesson_seconds"].items()})
        extra = ablations["wall_seconds"]
    return write_comparison(preset_name, wall_seconds=main_run["wall_seconds"], lesson_seconds=lesson_seconds,
                            run_label=label, ablations_seconds=extra)


def clear_figures() -> None:
    """Remove the main job's figures (``figures/*.png``) before a whole run draws them again, so that every
    figure left is this run's: one a lesson no longer draws does not survive from an older run. The
    ablations' figures (``figures/ablations/``, ``make ablations``) are left alone."""
    from nblib.results import comparison

    stale = sorted(comparison.FIGURES_DIR.glob("*.png"))
    for png in stale:
        png.unlink()
    if stale:
        print(f"removed the {len(stale)} figures of the last run from {comparison.FIGURES_DIR}", flush=True)


def write_run_state(path: Path, state: dict, seconds_this_time: float) -> None:
    """Save what the run has finished (atomically: a kill mid-write leaves the last good state)."""
    saved = dict(state, wall_seconds=state["wall_seconds"] + seconds_this_time)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    tmp.replace(path)


def read_run_state(path: Path, lessons: list[str]) -> dict | None:
    """The interrupted run to continue, or None when there is none; refuse one that another commit
    or another choice of lessons started (its figures would then mix two codes under one id)."""
    state = load_run_state(path)
    if state is None:
        print(f"no interrupted run in {path.parent}: starting a new one", flush=True)
        return None
    if state["commit"] != git_revision():
        raise RuntimeError(f"{path} is a run of commit {state['commit']}, this checkout is {git_revision()}: "
                           "run without --resume (RESUME=1) to start afresh")
    if state["lessons"] != lessons:
        raise RuntimeError(f"{path} ran lessons {state['lessons']}, this call asks for {lessons}: "
                           "ask for the same lessons, or run without --resume to start afresh")
    return state


def run_id(preset_name: str) -> str:
    """``<preset>-<UTC time>-<git revision>``: what ties a run's figures and table together."""
    return f"{preset_name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{git_revision()}"


def save_figure(fig, name: str, figures_dir: str | Path = FIGURES_DIR) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` with the run id in its metadata
    (:func:`nblib.results.plotting.save_figure`; stable names, so reports can link them)."""
    from nblib.results.plotting import save_figure as save

    return save(fig, name, figures_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nblib.results.report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute every lesson with papermill, then write the table")
    run.add_argument("--preset", default="small", choices=list(PRESETS))
    run.add_argument("--only", nargs="*", default=[], help="lesson prefixes, e.g. 00 01")
    run.add_argument("--with-checkpoints", action="store_true",
                     help="also run lesson 07 (downloads bert-base-chinese; a GPU is advised)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run of this commit where it stopped, under its run id")
    abl = sub.add_parser("ablations", help="run the lessons' ablations (frozen ELMo, GPT without its "
                         "auxiliary LM loss, BERT's truncation study, the 300-label runs of `small`), then rewrite the table")
    abl.add_argument("--preset", default="small", choices=list(PRESETS))
    abl.add_argument("--only", nargs="*", default=[], help="lesson prefixes, e.g. 02 04")
    table = sub.add_parser("table", help="only (re)write figures/comparison.md from the records")
    table.add_argument("--preset", default="small", choices=list(PRESETS))
    sub.add_parser("readme", help="copy figures/comparison.md into the README's results block")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            run_all(args.preset, args.only, args.with_checkpoints, args.resume)
        elif args.command == "ablations":
            print(run_ablations(args.preset, args.only))
        elif args.command == "readme":
            comparison_md = (FIGURES_DIR / "comparison.md").read_text(encoding="utf-8")
            README.write_text(write_readme_block(README.read_text(encoding="utf-8"), comparison_md),
                              encoding="utf-8")
            print(f"wrote the results block of {README}")
        else:
            print(write_table(args.preset))
    except (RuntimeError, RecordError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
