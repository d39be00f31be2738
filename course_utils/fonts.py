"""A font with Chinese glyphs for matplotlib, so that figure titles like 川菜 render instead of empty boxes.

Matplotlib's default font (DejaVu Sans) has no CJK glyphs. :func:`use_cjk_font` finds Noto Sans CJK (shipped by
the ``mplfonts`` package, or installed system-wide), registers it with matplotlib and puts it first in the
sans-serif list, so every later figure can draw Chinese text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# Fonts tried first, in order, inside the mplfonts package: all cover simplified Chinese.
PACKAGED_CJK_FONTS = ("NotoSansCJKsc-Regular.otf", "SourceHanSerifSC-Regular.otf", "SimHei.ttf")
# File names of common system CJK fonts (Debian's fonts-noto-cjk, WenQuanYi, Source Han, Droid fallback, ...).
SYSTEM_CJK_FONT_PATTERN = re.compile(r"cjk|wqy|wenquanyi|sourcehan|simhei|droidsansfallback|notosanssc|msyh", re.I)
GLYPH_PROBE = "菜"

INSTALL_HINT = (
    "No font with Chinese glyphs was found for matplotlib. Install one with `pip install mplfonts` "
    "(ships Noto Sans CJK) or `apt-get install fonts-noto-cjk`, then restart the kernel."
)


class CJKFontNotFoundError(RuntimeError):
    """No installed font can draw Chinese characters."""


def font_has_glyphs(font_path: str | Path, text: str = GLYPH_PROBE) -> bool:
    """Whether the font file has a glyph for every character of ``text``."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path))
    return all(font.get_char_index(ord(char)) != 0 for char in text)


def packaged_cjk_fonts() -> list[Path]:
    """CJK fonts shipped by the ``mplfonts`` package, if it is installed (found without importing it)."""
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return []
    fonts_dir = Path(next(iter(spec.submodule_search_locations))) / "fonts"
    return [fonts_dir / name for name in PACKAGED_CJK_FONTS if (fonts_dir / name).is_file()]


def system_cjk_fonts() -> list[Path]:
    """System font files whose names mark them as CJK fonts."""
    from matplotlib import font_manager

    return sorted(Path(p) for p in font_manager.findSystemFonts() if SYSTEM_CJK_FONT_PATTERN.search(Path(p).name))


def find_cjk_font() -> Path:
    """The first available font file that draws Chinese; raises :class:`CJKFontNotFoundError` naming the fix."""
    for path in [*packaged_cjk_fonts(), *system_cjk_fonts()]:
        try:
            if font_has_glyphs(path):
                return path
        except (OSError, RuntimeError):  # unreadable or unsupported font file: try the next one
            continue
    raise CJKFontNotFoundError(INSTALL_HINT)


def use_cjk_font() -> str:
    """Register a CJK font with matplotlib, make it the first sans-serif font, and return its family name."""
    import matplotlib
    from matplotlib import font_manager

    path = find_cjk_font()
    font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(path)).get_name()
    sans = [name for name in matplotlib.rcParams["font.sans-serif"] if name != family]
    matplotlib.rcParams["font.sans-serif"] = [family, *sans]
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack the Unicode minus sign
    return family
