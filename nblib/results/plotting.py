"""Figures that speak Chinese: one font set-up every lesson calls, and figures saved with their run id.

matplotlib's default font (DejaVu Sans) has no Chinese glyphs, so a character on an axis becomes an
empty box and a "Glyph missing" warning. The course ships Noto Sans CJK SC through the ``mplfonts``
package (a pip dependency, so it is on every learner's laptop, not only on machines with apt fonts);
:func:`use_course_style` registers it with matplotlib once and makes it the first sans-serif font,
with DejaVu Sans behind it for Latin text and symbols.

:func:`save_figure` writes ``figures/<name>.png`` with a stable name and records, in the PNG's text
metadata, the run that drew it (``NBLIB_RUN_ID``, set by ``python -m nblib.results.report run``), so a test
can tell when figures come from different runs. Long because every figure of the comparison is drawn
here, beside the colours, hatches and font they share.

Lesson 05's figures are drawn here from plain data (results records, or the frames built from them):
:func:`accuracy_chart`, :func:`gains_chart`, :func:`label_efficiency`, :func:`in_vs_out` and
:func:`long_vs_short` (both :func:`dumbbell`), :func:`confusion_grid`. Each returns the figure, or None
after printing why when there is nothing to draw; the lesson saves it with ``report.save_figure``. Rows
are named by :func:`name_of` and ordered by :func:`sort_key`: the models in ``comparison.KNOWN_MODELS``
order, each model's variants in ``comparison.VARIANTS`` order.

Introduced in notebook 00_data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.font_manager as font_manager
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nblib.results import comparison
from nblib.results.records import RUN_ID_ENV

CJK_FONT_FILE = "NotoSansCJKsc-Regular.otf"
CJK_FONT_NAME = "Noto Sans CJK SC"
RUN_ID_KEY = "nblib-run"  # the PNG text chunk that holds the run id
FIGURES_DIR = Path(__file__).resolve().parents[2] / "figures"  # nblib/<room>/ is two below the checkout
# One hue per model, the same in every figure: the pretrained model dark, its random-init twin the light
# shade of the same hue (matplotlib's "tab20" pairs), so a twin is found by its colour.
_TAB20_PAIR = {"bert": 0, "static": 2, "elmo": 4, "gpt": 6, "electra": 8, "tfidf": 10,
               "bert-base-chinese": 18, "majority": 14}
BASELINE_COLOR = "#555555"  # the majority-class line
PART_TITLES = {"test": "in domain (hotel test)", "ood": "out of domain (waimai)"}  # how lesson 05 names each part


def twin_color(model: str, variant: str = "pretrained") -> tuple[float, float, float, float]:
    """The colour of ``model`` (dark) or of its random-init twin (``variant`` "random…": light).

    Introduced in notebook 05_compare; lessons 04 and 06 draw their twins with it too.
    """
    from matplotlib import colormaps

    index = _TAB20_PAIR.get(model, 16) + (1 if str(variant).startswith("random") else 0)
    return colormaps["tab20"](index)


def cjk_font_path() -> Path:
    """The Noto Sans CJK SC file that ``mplfonts`` installs (a clear error if it is missing)."""
    try:
        import mplfonts
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the Chinese font package is missing: pip install mplfonts") from err
    path = Path(mplfonts.__file__).parent / "fonts" / CJK_FONT_FILE
    if not path.is_file():  # pragma: no cover
        raise RuntimeError(f"{path} is missing: reinstall mplfonts")
    return path


def use_course_style() -> str:
    """Register the Chinese font and the course's figure defaults; return the font's name.

    Safe to call many times (every lesson's first code cell does).
    """
    path = str(cjk_font_path())
    if not any(f.fname == path for f in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(path)
    rc = matplotlib.rcParams
    rc["font.family"] = "sans-serif"
    rc["font.sans-serif"] = [CJK_FONT_NAME, "DejaVu Sans"]
    rc["axes.unicode_minus"] = False  # CJK fonts often lack U+2212; use the ASCII hyphen-minus
    rc["figure.dpi"] = 100
    rc["savefig.dpi"] = 120
    rc["axes.spines.top"] = False
    rc["axes.spines.right"] = False
    return CJK_FONT_NAME


def covers(text: str, font_name: str = CJK_FONT_NAME) -> bool:
    """Whether the font matplotlib resolves for ``font_name`` has a glyph for every character."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family=font_name),
                                         fallback_to_default=False))
    return all(font.get_char_index(ord(ch)) != 0 for ch in text if not ch.isspace())


def save_figure(fig, name: str, figures_dir: str | Path = FIGURES_DIR) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` with the run id in its metadata; return the path."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {RUN_ID_KEY: os.environ.get(RUN_ID_ENV, "interactive")}
    fig.savefig(path, bbox_inches="tight", metadata=metadata)
    return path


def figure_run_id(path: str | Path) -> str | None:
    """The run id a PNG written by :func:`save_figure` carries (None if it has none)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get(RUN_ID_KEY) if hasattr(image, "text") else None


# ---------------------------------------------------------------------------------------------
# Lesson 05's figures: the comparison, drawn from results records (plain dicts) and frames of them


def name_of(record: Mapping) -> str:
    """A record's row name in the figures: ``"<model> (<variant>)"``."""
    return f"{record['model']} ({record['variant']})"


def sort_key(name: str) -> tuple[int, int]:
    """Where a row named by :func:`name_of` goes: by model (``comparison.KNOWN_MODELS``), then by variant
    (``comparison.VARIANTS``); a name outside them goes last."""
    model, variant = name[:-1].split(" (")
    return (comparison.KNOWN_MODELS.index(model) if model in comparison.KNOWN_MODELS else 99,
            comparison.VARIANTS.index(variant) if variant in comparison.VARIANTS else 99)


def style(model: str, variant: str) -> tuple[tuple[float, float, float, float], str | None]:
    """Bar colour and hatch: one hue per model, dark = pretrained, light = random twin, hatched = the others
    (``comparison.HATCHES``: "//" an ablation, "xx" zero-shot)."""
    hatch = "//" if variant in comparison.ABLATIONS else "xx" if variant == "zero-shot" else None
    return twin_color(model, variant), hatch


def score_frame(records: Sequence[Mapping]) -> pd.DataFrame:
    """One row per record: its name, model, variant and seed; accuracy, macro-F1 and each class's recall in
    domain ("test …") and out of domain ("ood …"); accuracy on short and long test reviews (NaN: not scored)."""
    rows = []
    for r in records:
        row = {"name": name_of(r), "model": r["model"], "variant": r["variant"], "seed": r["seed"]}
        for part in ("test", "ood"):
            m = r.get(part) or {}
            recall = m.get("recall") or {}
            row.update({f"{part} accuracy": m.get("accuracy", np.nan), f"{part} macro-F1": m.get("macro_f1", np.nan),
                        f"{part} recall negative": recall.get("0", np.nan),
                        f"{part} recall positive": recall.get("1", np.nan)})
        row["short"] = (r.get("test_short") or {}).get("accuracy", np.nan)
        row["long"] = (r.get("test_long") or {}).get("accuracy", np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _over_seeds(frame: pd.DataFrame) -> tuple[list[str], pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(row names in order, means and standard deviations over seeds by name, each name's model and variant)."""
    if not len(frame):
        return [], pd.DataFrame(), pd.DataFrame(), None
    order = sorted(frame["name"].unique(), key=sort_key)
    means = frame.groupby("name").mean(numeric_only=True).reindex(order)
    stds = frame.groupby("name").std(numeric_only=True).reindex(order).fillna(0)
    kinds = frame.drop_duplicates("name").set_index("name")[["model", "variant"]].reindex(order)
    return order, means, stds, kinds


def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """The means over seeds of a :func:`score_frame`, one row per name in :func:`sort_key` order."""
    return _over_seeds(frame)[1]


def _legend_handles(kinds: pd.DataFrame, models_shown: Sequence[str], hatches: Sequence = (),
                    extra: Sequence = ()) -> tuple[list, list[str]]:
    """Legend entries: each model (its two shades when it has twins), the hatches used, then ``extra``."""
    handles, names = [], []
    for model in models_shown:
        variants = set(kinds[kinds["model"] == model]["variant"])
        if variants & {"pretrained", "random"}:
            handles.append((Patch(color=twin_color(model, "pretrained")), Patch(color=twin_color(model, "random"))))
            names.append(f"{model}: pretrained / random-init twin")
        else:
            handles.append(Patch(color=twin_color(model)))
            names.append(f"{model} (baseline)")
    for hatch in dict.fromkeys(h for h in hatches if h):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=hatch))
        names.append(comparison.HATCHES[hatch])
    for h, n in extra:
        handles.append(h)
        names.append(n)
    return handles, names


def accuracy_chart(frame: pd.DataFrame, majority: Mapping[str, float]):
    """Lesson 05's ``05_accuracy``: one bar per model and variant (not the majority baseline), in domain and out
    of domain, from the majority-class accuracy (``majority``: part → accuracy, NaN: unknown, bars from 0) to
    the mean over seeds, ± one standard deviation. ``frame``: a :func:`score_frame`."""
    order, means, stds, kinds = _over_seeds(frame)
    bars = [n for n in order if not n.startswith("majority")]
    if not bars:
        print("no model trained on all labels has a record yet")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(bars) + 2.6), sharey=True, constrained_layout=True)
    y = np.arange(len(bars))
    for ax, part in zip(axes, ("test", "ood"), strict=True):
        col = f"{part} accuracy"
        base = majority[part] if not np.isnan(majority[part]) else 0.0
        for k, name in enumerate(bars):
            mean, std = means.loc[name, col], stds.loc[name, col]
            if np.isnan(mean):
                ax.text(base + 0.01, k, "not scored", va="center", fontsize=8, color="grey")
                continue
            color, hatch = style(*kinds.loc[name])
            ax.barh(k, mean - base, left=base, xerr=std, color=color, hatch=hatch, edgecolor="white",
                    capsize=3, error_kw={"lw": 1})
            ax.plot(mean, k, "o", color=color, mec="black", ms=6, zorder=3)  # visible even at the baseline
            ax.text(max(mean, base) + std + 0.01, k, f"{mean:.3f}", va="center", fontsize=8)
        ax.axvline(base, color=BASELINE_COLOR, ls="--", lw=1.5)
        low = np.nanmin([base] + list(means.loc[bars, col] - stds.loc[bars, col]))
        ax.set_xlim(max(0.0, low - 0.03), 1.0)
        ax.set_xlabel(f"accuracy on the {'hotel test' if part == 'test' else 'waimai'} reviews "
                      "(fraction correct; mean ± 1 std over seeds)")
        ax.set_title(PART_TITLES[part])
    axes[0].set_yticks(y, bars)
    axes[0].invert_yaxis()
    handles, names = _legend_handles(kinds, list(dict.fromkeys(kinds.loc[bars, "model"])),
                                     [style(*kinds.loc[n])[1] for n in bars],
                                     [(Line2D([], [], color=BASELINE_COLOR, ls="--"), "majority class (bars start here)"),
                                      (Line2D([], [], color="grey", marker="o", mec="black", ls=""),
                                       "mean over seeds (value beside it)"),
                                      (Line2D([], [], color="black", marker="|", ls="", markersize=10),
                                       "error bar: ± 1 std over seeds")])
    fig.legend(handles, names, handler_map={tuple: HandlerTuple(ndivide=None)}, loc="outside lower center",
               ncol=3, fontsize=8)
    fig.suptitle("Test accuracy of every model trained on all labels, in domain and out of domain")
    return fig


def gains_chart(points: pd.DataFrame):
    """Lesson 05's ``05_gains``: the gain of pretraining over the random twin, one row per model and label
    count, in domain and out of domain, with its 95% interval; filled where the interval excludes 0, hollow
    where it holds it. ``points``: one row per model, labels ("all", "1,000"), part, gain, low, high, verdict."""
    if not len(points):
        print("no gain of pretraining to draw: no pretrained model has both twins recorded yet")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * points[["model", "labels"]].drop_duplicates().shape[0] + 2.6),
                             sharey=True, constrained_layout=True)
    rows_shown = list(dict.fromkeys(f"{m}, {n} labels" for m, n in zip(points["model"], points["labels"], strict=True)))
    for ax, part in zip(axes, ("test", "ood"), strict=True):
        one = points[points["part"] == part]
        for r in one.itertuples():
            k = rows_shown.index(f"{r.model}, {r.labels} labels")
            resolved = r.verdict != "not resolved"
            ax.errorbar(r.gain, k, xerr=[[r.gain - r.low], [r.high - r.gain]], fmt="o", capsize=4, ms=7,
                        color=twin_color(r.model), mfc=twin_color(r.model) if resolved else "white", mew=1.5)
        ax.axvline(0, color="black", lw=1)
        ax.set_title(PART_TITLES[part])
        ax.set_xlabel("gain of pretraining over the random twin (accuracy points, 95% interval)")
        if not len(one):
            ax.text(0.5, 0.5, "no out-of-domain predictions", transform=ax.transAxes, ha="center", color="grey")
    axes[0].set_yticks(range(len(rows_shown)), rows_shown)
    axes[0].invert_yaxis()
    models_shown = list(dict.fromkeys(points["model"]))
    handles = [Line2D([], [], color=twin_color(m), marker="o", ls="") for m in models_shown]
    handles += [Line2D([], [], color="grey", marker="o", ls=""), Line2D([], [], color="grey", marker="o", mfc="white", ls=""),
                Line2D([], [], color="black", lw=1)]
    names = models_shown + ["filled: the interval excludes 0 (pays or costs)", "hollow: it holds 0 (not resolved)",
                            "zero: no difference"]
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle("What pretraining adds, per model and number of labelled reviews (paired bootstrap, reviews × seeds)")
    return fig


def twinned_models(curve: pd.DataFrame) -> list[str]:
    """The models of ``curve`` (a frame with "model" and "variant") that have both twins, in
    ``comparison.KNOWN_MODELS`` order."""
    return [m for m in comparison.KNOWN_MODELS if len(curve) and
            {"pretrained", "random"} <= set(curve[curve["model"] == m]["variant"])]


def label_efficiency(curve: pd.DataFrame, majority: float):
    """Lesson 05's ``05_label_efficiency``: one panel per model with twins, test accuracy against the number of
    labelled reviews (log scale): the pretrained model and its twin (mean over seeds, band ± 1 std when there
    are several), TF-IDF + LR in grey and the majority-class accuracy ``majority``. ``curve``: one row per
    record with model, variant, seed, train_size, "all labels" (bool) and accuracy."""
    with_twins = twinned_models(curve)
    if not with_twins:
        print("no model has both twins recorded yet")
        return None
    fig, axes = plt.subplots(1, len(with_twins), figsize=(3.8 * len(with_twins) + 1, 5.0), sharey=True,
                             squeeze=False, constrained_layout=True)
    for ax, model in zip(axes[0], with_twins, strict=True):
        for variant, ls in (("pretrained", "-"), ("random", "--")):
            g = curve[(curve["model"] == model) & (curve["variant"] == variant)]
            s = g.groupby("train_size")["accuracy"].agg(["mean", "std", "count"]).reset_index()
            color = twin_color(model, variant)
            ax.plot(s["train_size"], s["mean"], ls, marker="o", color=color, lw=2,
                    label="pretrained" if variant == "pretrained" else "random-init twin")
            band = s["count"] > 1
            ax.fill_between(s["train_size"][band], (s["mean"] - s["std"])[band], (s["mean"] + s["std"])[band],
                            color=color, alpha=0.25, lw=0)
        tf = curve[curve["model"] == "tfidf"].groupby("train_size")["accuracy"].mean()
        if len(tf):
            ax.plot(tf.index, tf.to_numpy(), ":", marker=".", color="grey", label="TF-IDF + LR")
        ax.axhline(majority, color=BASELINE_COLOR, ls="--", lw=1.2, label="majority class")
        ax.set_xscale("log")
        sizes = sorted(curve[(curve["model"] == model) & curve["variant"].isin(["pretrained", "random"])]
                       ["train_size"].unique())
        every = set(curve[curve["all labels"]]["train_size"])
        ax.set_xticks(sizes, [f"{n:,}" + ("\n(all)" if n in every else "") for n in sizes])
        ax.minorticks_off()
        ax.set_title(model.upper())
        ax.set_xlabel("labelled training reviews (log scale)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    axes[0][0].set_ylabel("test accuracy (fraction correct)")
    drawn = curve[curve["model"].isin(with_twins + ["tfidf"]) & curve["variant"].isin(["pretrained", "random", "baseline"])]
    low = np.nanmin([majority, drawn["accuracy"].min()])
    axes[0][0].set_ylim(max(0.0, low - 0.03), 1.0)
    fig.suptitle("Label efficiency: test accuracy against the number of labelled reviews "
                 "(line: mean over seeds, band: ± 1 std)")
    return fig


def dumbbell(frame: pd.DataFrame, columns: Mapping[str, Sequence[str]], markers: Sequence[str],
             names: Sequence[str], title: str, xlabel: str, what: str = "this figure"):
    """One panel per entry of ``columns`` (panel title → the columns of the :func:`score_frame` compared), one
    row per model and variant with a score: a dot per column (``markers``, explained by ``names``) at the mean
    over seeds, whisker ± 1 std, joined by a line; x from 0 to 1 (no zoom). None, after saying so, when no row
    has a score (``what`` names the figure in that message)."""
    order, means, stds, kinds = _over_seeds(frame)
    flat = [c for cols in columns.values() for c in cols]
    shown = [n for n in order if not means.loc[n, flat].isna().all()]
    if not shown:
        print(f"nothing to draw for {what}")
        return None
    fig, axes = plt.subplots(1, len(columns), figsize=(max(7.0, 4.2 * len(columns)), 0.38 * len(shown) + 2.4),
                             sharey=True, squeeze=False, constrained_layout=True)
    for ax, (metric, cols) in zip(axes[0], columns.items(), strict=True):
        for k, name in enumerate(shown):
            color, _ = style(*kinds.loc[name])
            values = means.loc[name, cols].to_numpy(float)
            ax.plot(values, [k] * len(values), color=color, lw=2, zorder=1)
            for v, e, mk in zip(values, stds.loc[name, cols].to_numpy(float), markers, strict=True):
                ax.errorbar(v, k, xerr=e, fmt=mk, color=color, ms=7, mec="black", mew=0.6, capsize=2, zorder=2)
        ax.set_xlim(0, 1.02)
        ax.set_title(metric)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(shown)), shown)
    axes[0][0].invert_yaxis()
    handles, labels = _legend_handles(kinds, list(dict.fromkeys(kinds.loc[shown, "model"])), (),
                                      [(Line2D([], [], color="grey", marker=mk, ls="", mec="black"), nm)
                                       for mk, nm in zip(markers, names, strict=True)]
                                      + [(Line2D([], [], color="black", marker="|", ls="", markersize=9),
                                          "whisker: ± 1 std over seeds")])
    fig.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, loc="outside lower center",
               ncol=3, fontsize=8)
    fig.suptitle(title)
    return fig


def in_vs_out(frame: pd.DataFrame):
    """Lesson 05's ``05_in_vs_out``: per model, in domain against out of domain, for accuracy, macro-F1 and
    each class's recall (a :func:`dumbbell` of a :func:`score_frame`)."""
    return dumbbell(frame, {metric: [f"test {metric}", f"ood {metric}"]
                            for metric in ("accuracy", "macro-F1", "recall negative", "recall positive")},
                    ["o", "^"], ["in domain: hotel test reviews", "out of domain: waimai reviews"],
                    "In domain vs out of domain, per model: accuracy, macro-F1 and each class's recall (means over seeds)",
                    "score (fraction, 0 to 1)", what="in vs out of domain")


def long_vs_short(frame: pd.DataFrame):
    """Lesson 05's ``05_long_vs_short``: per model, test accuracy on reviews of at most 128 characters against
    the longer ones (a :func:`dumbbell` of a :func:`score_frame`)."""
    return dumbbell(frame, {"test accuracy": ["short", "long"]}, ["o", "s"],
                    ["reviews of at most 128 characters", "reviews longer than 128 characters"],
                    "Test accuracy on short and long hotel reviews (means over seeds)",
                    "test accuracy (fraction correct)", what="short vs long reviews")


def one_run_each(records: Sequence[Mapping], part: str, seed: int = 0) -> dict[str, Mapping]:
    """name → one record per baseline, pretrained model and random twin (not the majority, the ablations or
    zero-shot) with predictions on ``part``: the one of ``seed``, else its lowest seed; in :func:`sort_key`
    order."""
    field, pick = comparison.PARTS[part], {}
    for r in sorted(records, key=lambda r: (r["seed"] != seed, r["seed"])):
        if r.get(field) and r["model"] != "majority" and r["variant"] in ("baseline", "pretrained", "random"):
            pick.setdefault(name_of(r), r)
    order = sorted(dict.fromkeys(name_of(r) for r in records), key=sort_key)
    return {n: pick[n] for n in order if n in pick}


def confusion_grid(picked: Mapping[str, Mapping], labels: pd.Series, part: str, ncols: int = 4):
    """Lesson 05's ``05_confusion`` (``part`` "test") and ``05_confusion_ood`` ("ood"): one confusion matrix per
    record of ``picked`` (name → record, e.g. :func:`one_run_each`), counts and the share of each true class
    (``labels``: the part's true labels by review id)."""
    from sklearn.metrics import confusion_matrix

    if not picked:
        print(f"no predictions on the {PART_TITLES[part]} reviews yet")
        return None
    field = comparison.PARTS[part]
    nrows = -(-len(picked) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols + 1, 2.6 * nrows + 0.8), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[len(picked):]:
        ax.axis("off")
    for ax, (name, r) in zip(axes.flat, picked.items(), strict=False):
        pred = pd.Series(r[field]["pred"], index=r[field]["ids"])
        cm = confusion_matrix(labels.loc[pred.index], pred, labels=[0, 1])
        share = cm / cm.sum(axis=1, keepdims=True).clip(min=1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(cm):
            ax.text(j, i, f"{n}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
        ax.set_title(f"{name}, seed {r['seed']}", fontsize=9)
        ax.set_xticks([0, 1], ["negative", "positive"], fontsize=8)
        ax.set_yticks([0, 1], ["negative", "positive"], fontsize=8)
        ax.set_xlabel("predicted class", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class (row sums to 1)")
    fig.suptitle(f"Confusion matrices, {PART_TITLES[part]}: counts of reviews and share of each true class")
    return fig
