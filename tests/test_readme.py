"""One run, one story: the README's results block, figures/comparison.md and the figures agree."""

from __future__ import annotations

import re
from pathlib import Path

from nblib.results import comparison, plotting

ROOT = Path(__file__).resolve().parents[1]
COMPARISON = ROOT / "figures" / "comparison.md"


def _run_id(markdown: str) -> str | None:
    found = re.search(r"; run `([^`]+)`;", markdown)
    return found.group(1) if found else None


def test_readme_results_block_equals_the_comparison_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    md = COMPARISON.read_text(encoding="utf-8")
    assert comparison.readme_results(readme) == comparison.readme_block(md), (
        "the README's results block differs from figures/comparison.md: run `make report` "
        "(or python -m nblib.results.report readme) instead of editing either by hand")


def test_every_figure_comes_from_the_comparisons_run():
    run = _run_id(COMPARISON.read_text(encoding="utf-8"))
    ids = {png.name: plotting.figure_run_id(png) for png in sorted((ROOT / "figures").glob("*.png"))}
    others = {name: i for name, i in ids.items() if i != run}
    assert not others, f"figures from another run than comparison.md's ({run}): {others}"


def committed_figures_problems(figures: Path, notebooks: Path) -> list[str]:
    """What keeps the committed figures from being one complete run: a figure without a run id (or one
    drawn interactively), a run id other than comparison.md's, a comparison without one, and a figure
    a lesson saves that is not committed."""
    problems = []
    run = _run_id((figures / "comparison.md").read_text(encoding="utf-8"))
    if run is None:
        problems.append("comparison.md names no run")
    for png in sorted(figures.glob("*.png")):
        found = plotting.figure_run_id(png)
        if found in (None, "interactive"):
            problems.append(f"{png.name} carries no run id")
        elif found != run:
            problems.append(f"{png.name} is from run {found}, comparison.md from {run}")
    saved = set()
    for nb in notebooks.glob("[0-9]*.ipynb"):
        if nb.name.startswith("07_"):
            continue  # lesson 07 runs only with `make report WITH_CHECKPOINTS=1`
        saved |= set(re.findall(r'save_figure\(fig, \\"([0-9][0-9a-z_]+)\\"', nb.read_text(encoding="utf-8")))
    problems += [f"{name}.png is saved by a lesson but not committed" for name in sorted(saved)
                 if not (figures / f"{name}.png").exists()]
    return problems


def test_the_committed_figures_are_one_complete_run():
    problems = committed_figures_problems(ROOT / "figures", ROOT / "notebooks")
    assert not problems, "\n".join(problems)


def test_the_run_id_check_can_fail(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(plotting.RUN_ID_ENV, "small-20261203T000000Z-abc1234")
    fig, _ = plt.subplots()
    png = plotting.save_figure(fig, "x", tmp_path)
    plt.close(fig)
    header = "Written … on 2026-12-03, commit abc; run `small-20261203T000000Z-abc1234`; torch …"
    assert plotting.figure_run_id(png) == _run_id(header)
    assert _run_id("no run here") is None
