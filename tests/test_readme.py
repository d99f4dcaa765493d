"""One run, one story: the README's results block, figures/comparison.md and the figures agree."""

from __future__ import annotations

import re
from pathlib import Path

from nblib import comparison, plotting

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
        "(or python -m nblib.report readme) instead of editing either by hand")


def test_every_figure_comes_from_the_comparisons_run():
    run = _run_id(COMPARISON.read_text(encoding="utf-8"))
    ids = {png.name: plotting.figure_run_id(png) for png in sorted((ROOT / "figures").glob("*.png"))}
    others = {name: i for name, i in ids.items() if i != run}
    assert not others, f"figures from another run than comparison.md's ({run}): {others}"


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
