"""Figures show Chinese characters with the shipped font, and carry the run that drew them."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nblib.results import plotting  # noqa: E402

REVIEW = "早餐不好，服务不到位"


def test_attention_map_renders_chinese_without_missing_glyphs(tmp_path: Path) -> None:
    assert plotting.use_course_style() == plotting.CJK_FONT_NAME
    fig, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((len(REVIEW), len(REVIEW))))
    ax.set_xticks(range(len(REVIEW)), list(REVIEW))
    ax.set_yticks(range(len(REVIEW)), list(REVIEW))
    ax.set_title("注意力：" + REVIEW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would fail the test
        path = plotting.save_figure(fig, "attention", tmp_path)
    plt.close(fig)
    assert path.stat().st_size > 0
    # the font matplotlib picks for the tick labels is the CJK one and covers every character
    label = ax.get_xticklabels()[0]
    picked = matplotlib.font_manager.findfont(label.get_fontproperties())
    assert Path(picked).name == plotting.CJK_FONT_FILE
    assert plotting.covers(REVIEW + "好差酒店")


def test_default_font_would_have_failed() -> None:
    # the check above can fail: DejaVu Sans has no Chinese glyphs
    from matplotlib.ft2font import FT2Font

    dejavu = FT2Font(matplotlib.font_manager.findfont("DejaVu Sans"))
    assert dejavu.get_char_index(ord("好")) == 0


def test_figure_carries_its_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plotting.RUN_ID_ENV, "run-123")
    fig, _ = plt.subplots()
    path = plotting.save_figure(fig, "x", tmp_path)
    plt.close(fig)
    assert plotting.figure_run_id(path) == "run-123"


def test_twins_share_a_hue_and_models_differ() -> None:
    import colorsys

    hue = lambda c: colorsys.rgb_to_hls(*c[:3])  # noqa: E731
    dark, light = plotting.twin_color("bert"), plotting.twin_color("bert", "random")
    assert dark != light and abs(hue(dark)[0] - hue(light)[0]) < 0.05  # one hue, two shades
    assert hue(light)[1] > hue(dark)[1]  # the random-init twin is the lighter one
    assert plotting.twin_color("bert", "random-frozen") == light  # ablations keep their twin's shade
    models = ["elmo", "bert", "electra", "gpt", "static", "tfidf"]
    assert len({plotting.twin_color(m) for m in models}) == len(models)
