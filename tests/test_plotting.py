"""Figures show Chinese characters with the shipped font, and carry the run that drew them; lesson 05's
figures draw what the records hold, in the library's order."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from nblib.results import comparison, plotting  # noqa: E402

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


def test_figures_go_to_the_repositorys_figures_folder() -> None:
    assert plotting.FIGURES_DIR == Path(__file__).resolve().parents[1] / "figures"


def test_twins_share_a_hue_and_models_differ() -> None:
    import colorsys

    hue = lambda c: colorsys.rgb_to_hls(*c[:3])  # noqa: E731
    dark, light = plotting.twin_color("bert"), plotting.twin_color("bert", "random")
    assert dark != light and abs(hue(dark)[0] - hue(light)[0]) < 0.05  # one hue, two shades
    assert hue(light)[1] > hue(dark)[1]  # the random-init twin is the lighter one
    assert plotting.twin_color("bert", "random-frozen") == light  # ablations keep their twin's shade
    models = ["elmo", "bert", "electra", "gpt", "static", "tfidf"]
    assert len({plotting.twin_color(m) for m in models}) == len(models)


# ---------------------------------------------------------------------------------------------
# Lesson 05's figures, drawn from small synthetic records (no torch, no corpora)

IDS = list(range(100, 108))
TRUE = pd.Series([0, 0, 0, 0, 1, 1, 1, 1], index=IDS)


def _record(model: str, variant: str, seed: int = 0, acc: float = 0.8, ood: float | None = 0.7,
            label_count: int | None = None, short: float | None = None, long: float | None = None,
            pred: list[int] | None = None) -> dict:
    """A results record as lessons 01-04 write it, with only what the figures read."""
    metrics = lambda a: {"accuracy": a, "macro_f1": a - 0.05, "recall": {"0": a - 0.1, "1": a + 0.1}}  # noqa: E731
    pred = pred if pred is not None else [0, 0, 0, 1, 1, 1, 1, 0]
    r = {"model": model, "variant": variant, "seed": seed, "label_count": label_count,
         "train_size": label_count or 800, "test": metrics(acc),
         "predictions": {"ids": IDS, "pred": pred, "labels": TRUE.tolist()}}
    if ood is not None:
        r["ood"] = metrics(ood)
        r["ood_predictions"] = {"ids": IDS, "pred": pred, "labels": TRUE.tolist()}
    if short is not None:
        r["test_short"], r["test_long"] = {"accuracy": short}, {"accuracy": long}
    return r


RECORDS = [  # in a shuffled order: the figures put them in the library's
    _record("gpt", "random-lm0", acc=0.70),
    _record("bert", "random", acc=0.75, short=0.8, long=0.7),
    _record("bert", "pretrained", seed=1, acc=0.87, short=0.9, long=0.85),
    _record("bert", "pretrained", seed=0, acc=0.85, short=0.9, long=0.8),
    _record("majority", "baseline", acc=0.6, ood=0.4),
    _record("gpt", "zero-shot", acc=0.65, ood=None),
    _record("tfidf", "baseline", acc=0.82),
    _record("gpt", "pretrained", acc=0.80),
]
ORDER = ["tfidf (baseline)", "bert (pretrained)", "bert (random)", "gpt (pretrained)", "gpt (random-lm0)",
         "gpt (zero-shot)"]


@pytest.fixture(autouse=False)
def close_figures():
    yield
    plt.close("all")


def _ticks(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def test_variant_names_order_and_hatches_are_the_librarys() -> None:
    assert set(comparison.ABLATIONS) < set(comparison.VARIANTS) and set(comparison.HATCHES) == {"//", "xx"}
    names = [plotting.name_of(r) for r in RECORDS if r["model"] != "majority"]
    assert list(dict.fromkeys(sorted(names, key=plotting.sort_key))) == ORDER
    assert plotting.sort_key("new (odd)") == (99, 99)  # unknown names go last
    assert plotting.style("elmo", "random-frozen") == (plotting.twin_color("elmo", "random"), "//")
    assert plotting.style("gpt", "zero-shot")[1] == "xx" and plotting.style("bert", "random")[1] is None
    # one copy: lesson 05 reads them from the library and keeps none of its own
    lesson = (Path(__file__).resolve().parents[1] / "notebooks" / "05_compare.ipynb").read_text(encoding="utf-8")
    for own in ("VARIANTS = ", "ABLATIONS = ", "HATCHES = ", "def name_of", "def sort_key", "def style"):
        assert own not in lesson, own


def test_score_frame_and_seed_means() -> None:
    frame = plotting.score_frame(RECORDS)
    assert len(frame) == len(RECORDS) and frame.loc[1, "test recall positive"] == pytest.approx(0.85)
    assert np.isnan(frame.loc[5, "ood accuracy"]) and np.isnan(frame.loc[0, "short"])  # not scored: NaN
    means = plotting.seed_means(frame)
    assert list(means.index) == ["majority (baseline)", *ORDER]
    assert means.loc["bert (pretrained)", "test accuracy"] == pytest.approx(0.86)  # over its two seeds
    assert plotting.seed_means(plotting.score_frame([])).empty


def test_accuracy_chart_bars_ticks_and_hatches(close_figures) -> None:
    majority = {"test": 0.6, "ood": 0.4}
    fig = plotting.accuracy_chart(plotting.score_frame(RECORDS), majority)
    test, ood = fig.axes[:2]
    assert _ticks(test) == ORDER  # the majority is the line the bars start from, not a bar
    bars = sorted(test.patches, key=lambda p: p.get_y())
    assert len(bars) == len(ORDER)
    assert [b.get_hatch() for b in bars] == [None, None, None, None, "//", "xx"]
    assert all(b.get_x() == pytest.approx(0.6) for b in bars)  # each bar starts at the majority class
    assert bars[1].get_x() + bars[1].get_width() == pytest.approx(0.86)  # ends at the mean over seeds
    assert bars[1].get_facecolor() == plotting.twin_color("bert")
    assert bars[2].get_facecolor() == plotting.twin_color("bert", "random")
    assert len(ood.patches) == len(ORDER) - 1  # zero-shot has no out-of-domain score ...
    assert "not scored" in [t.get_text() for t in ood.texts]  # ... and says so
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert comparison.HATCHES["//"] in legend and comparison.HATCHES["xx"] in legend
    assert "bert: pretrained / random-init twin" in legend and "tfidf (baseline)" in legend


def test_accuracy_chart_with_nothing_to_draw(capsys) -> None:
    only_majority = plotting.score_frame([_record("majority", "baseline")])
    assert plotting.accuracy_chart(only_majority, {"test": 0.5, "ood": 0.5}) is None
    assert "no model trained on all labels" in capsys.readouterr().out
    assert plotting.accuracy_chart(plotting.score_frame([]), {"test": np.nan, "ood": np.nan}) is None
    assert plt.get_fignums() == []


def _points() -> pd.DataFrame:
    rows = [("bert", "all", "test", 5.0, 2.0, 8.0), ("bert", "all", "ood", 1.0, -2.0, 4.0),
            ("gpt", "100", "test", -3.0, -5.0, -1.0)]
    return pd.DataFrame([{"model": m, "labels": n, "part": p, "gain": g, "low": lo, "high": hi,
                          "verdict": comparison.verdict(lo, hi)} for m, n, p, g, lo, hi in rows])


def test_gains_chart_fills_resolved_intervals_only(close_figures) -> None:
    fig = plotting.gains_chart(_points())
    test, ood = fig.axes[:2]
    assert _ticks(test) == ["bert, all labels", "gpt, 100 labels"]
    dots = lambda ax: [ln for ln in ax.get_lines() if ln.get_marker() == "o"]  # noqa: E731
    assert [to_rgba(d.get_markerfacecolor()) for d in dots(test)] == [plotting.twin_color("bert"),
                                                                      plotting.twin_color("gpt")]  # pays, costs
    (hollow,) = dots(ood)
    assert to_rgba(hollow.get_markerfacecolor()) == to_rgba("white")  # holds zero: not resolved
    caps = sorted(x for ln in test.get_lines() if ln.get_marker() == "|" for x in ln.get_xdata())
    assert caps == [-5.0, -1.0, 2.0, 8.0]  # each interval from its low to its high end
    assert [list(ln.get_xdata()) for ln in test.get_lines() if ln.get_marker() == "None"] == [[0, 0]]  # zero


def test_gains_chart_with_nothing_to_draw(capsys) -> None:
    assert plotting.gains_chart(pd.DataFrame()) is None
    assert "no gain of pretraining to draw" in capsys.readouterr().out


def _curve(records) -> pd.DataFrame:
    return pd.DataFrame([{"model": r["model"], "variant": r["variant"], "seed": r["seed"],
                          "train_size": r["train_size"], "all labels": r.get("label_count") is None,
                          "accuracy": r["test"]["accuracy"]} for r in records])


def test_label_efficiency_one_panel_per_model_with_twins(close_figures) -> None:
    records = RECORDS + [_record("bert", v, seed=s, acc=a, label_count=100)
                         for v, s, a in (("pretrained", 0, 0.7), ("pretrained", 1, 0.72), ("random", 0, 0.6))]
    records += [_record("gpt", "random", acc=0.7), _record("tfidf", "baseline", acc=0.7, label_count=100)]
    curve = _curve(records)
    assert plotting.twinned_models(curve) == ["bert", "gpt"]  # KNOWN_MODELS order, not the records'
    fig = plotting.label_efficiency(curve, 0.6)
    bert, gpt = fig.axes[:2]
    assert [bert.get_title(), gpt.get_title()] == ["BERT", "GPT"]
    assert [t.get_text() for t in bert.get_xticklabels()] == ["100", "800\n(all)"]
    assert len(bert.collections) == 2  # pretrained: a band (two seeds), random: an empty one (one seed)
    assert [len(c.get_paths()) for c in bert.collections] != [0, 0]
    assert "TF-IDF + LR" in [t.get_text() for t in bert.get_legend().get_texts()]


def test_label_efficiency_with_nothing_to_draw(capsys) -> None:
    assert plotting.label_efficiency(_curve([_record("bert", "pretrained")]), 0.5) is None
    assert "no model has both twins" in capsys.readouterr().out
    assert plotting.label_efficiency(pd.DataFrame(), 0.5) is None


def test_in_vs_out_four_panels_one_row_per_model(close_figures) -> None:
    fig = plotting.in_vs_out(plotting.score_frame(RECORDS))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["accuracy", "macro-F1", "recall negative", "recall positive"]
    assert _ticks(panels[0]) == ["majority (baseline)", *ORDER]
    joined = [ln for ln in panels[0].get_lines() if ln.get_linewidth() == 2]
    assert [tuple(ln.get_xdata()) for ln in joined][1] == pytest.approx((0.82, 0.7))  # tfidf: in, out


def test_long_vs_short_rows_with_a_score_only(close_figures, capsys) -> None:
    fig = plotting.long_vs_short(plotting.score_frame(RECORDS))
    assert _ticks(fig.axes[0]) == ["bert (pretrained)", "bert (random)"]
    assert plotting.long_vs_short(plotting.score_frame([_record("bert", "random")])) is None
    assert "nothing to draw for short vs long reviews" in capsys.readouterr().out


def test_one_run_each_and_confusion_grid(close_figures, capsys) -> None:
    wrong = [1, 0, 0, 0, 1, 1, 1, 1]  # one negative called positive
    records = RECORDS + [_record("bert", "pretrained", seed=2, pred=wrong)]
    picked = plotting.one_run_each(records, "test", seed=2)
    assert list(picked) == ["tfidf (baseline)", "bert (pretrained)", "bert (random)", "gpt (pretrained)"]
    assert picked["bert (pretrained)"]["seed"] == 2  # the seed asked for, else the lowest
    assert plotting.one_run_each(records, "test", seed=5)["bert (pretrained)"]["seed"] == 0
    fig = plotting.confusion_grid(picked, TRUE, "test")
    grids = [ax for ax in fig.axes if ax.get_images()]
    assert len(grids) == 4 and grids[1].get_title() == "bert (pretrained), seed 2"
    assert [t.get_text() for t in grids[1].texts] == ["3\n75%", "1\n25%", "0\n0%", "4\n100%"]
    assert "in domain (hotel test)" in fig._suptitle.get_text()
    assert plotting.one_run_each([_record("gpt", "zero-shot", ood=None)], "ood") == {}
    assert plotting.confusion_grid({}, TRUE, "ood") is None
    assert "no predictions on the out of domain (waimai) reviews" in capsys.readouterr().out


def test_figures_need_no_deep_learning_code() -> None:
    import subprocess
    import sys

    code = "import sys, nblib.results.plotting; heavy = {'torch', 'nblib.data'} & set(sys.modules); assert not heavy, heavy"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
