"""Figures that speak Chinese: one font set-up every lesson calls, and figures saved with their run id.

matplotlib's default font (DejaVu Sans) has no Chinese glyphs, so a character on an axis becomes an
empty box and a "Glyph missing" warning. The course ships Noto Sans CJK SC through the ``mplfonts``
package (a pip dependency, so it is on every learner's laptop, not only on machines with apt fonts);
:func:`use_course_style` registers it with matplotlib once and makes it the first sans-serif font,
with DejaVu Sans behind it for Latin text and symbols.

:func:`save_figure` writes ``figures/<name>.png`` with a stable name and records, in the PNG's text
metadata, the run that drew it (``NBLIB_RUN_ID``, set by ``python -m nblib.results.report run``), so a test
can tell when figures come from different runs.

Introduced in notebook 00_data.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.font_manager as font_manager

from nblib.results.records import RUN_ID_ENV

CJK_FONT_FILE = "NotoSansCJKsc-Regular.otf"
CJK_FONT_NAME = "Noto Sans CJK SC"
RUN_ID_KEY = "nblib-run"  # the PNG text chunk that holds the run id
FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"
# One hue per model, the same in every figure: the pretrained model dark, its random-init twin the light
# shade of the same hue (matplotlib's "tab20" pairs), so a twin is found by its colour.
_TAB20_PAIR = {"bert": 0, "static": 2, "elmo": 4, "gpt": 6, "electra": 8, "tfidf": 10,
               "bert-base-chinese": 18, "majority": 14}
BASELINE_COLOR = "#555555"  # the majority-class line


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
