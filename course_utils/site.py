"""A browsable course: the lessons that ``make course`` executed, as static HTML pages, both editions, one index.

``python -m course_utils build-site`` (``make site``) turns each executed lesson into a page with nbconvert's
JupyterLab look (figures, tables and printed text as the run left them; the cells that only record figures for the
tests are left out) and writes ``index.html`` linking every lesson of every edition. The pages fetch nothing from
the network, so the site opens offline and wherever CDNs are slow: ``build/site/index.html`` in a browser.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from .outputs import staged_output
from .paths import EDITIONS, LESSON_GLOB, edition_subfolder, notebook_build_dir, project_root

SITE_KIND = "course-site"
TEMPLATE_DIR = Path(__file__).resolve().parent / "site_template"
INDEX_LINK = {"en": "All lessons", "zh-CN": "全部课程"}


def site_dir() -> Path:
    return project_root() / "build" / "site"


def lesson_title(notebook, fallback: str) -> str:
    """The lesson's first heading (``# 03 · FoodieQA: ...``), without the ``#``."""
    for cell in notebook.cells:
        lines = cell.source.strip().splitlines() if cell.cell_type == "markdown" else []
        if lines and lines[0].startswith("# "):
            return lines[0][2:].strip()
    return fallback


def executed_lessons(executed_root: Path) -> dict[str, list[Path]]:
    """The executed lessons of each edition that has any, in lesson order."""
    found = {}
    for code in EDITIONS:
        lessons = sorted((executed_root / edition_subfolder(code)).glob(LESSON_GLOB))
        if lessons:
            found[code] = lessons
    return found


def navigation(code: str, lessons: list[Path], index: int, titles: dict[Path, str], editions: dict) -> str:
    """Links to the index, the previous and next lesson, and this lesson in the other editions."""
    links = [f'<a href="../index.html">{INDEX_LINK[code]}</a>']
    if index > 0:
        previous = lessons[index - 1]
        links.append(f'<a href="{previous.stem}.html">← {html.escape(titles[previous])}</a>')
    if index + 1 < len(lessons):
        following = lessons[index + 1]
        links.append(f'<a href="{following.stem}.html">{html.escape(titles[following])} →</a>')
    for other, name in EDITIONS.items():
        if other != code and lessons[index].name in {path.name for path in editions.get(other, [])}:
            links.append(f'<a href="../{other}/{lessons[index].stem}.html" hreflang="{other}">{name}</a>')
    return " ".join(links)


def index_page(titles_by_edition: dict[str, list[tuple[Path, str]]]) -> str:
    sections = []
    for code, name in EDITIONS.items():
        if code not in titles_by_edition:
            continue
        items = "\n".join(f'    <li><a href="{code}/{path.stem}.html">{html.escape(title)}</a></li>'
                          for path, title in titles_by_edition[code])
        sections.append(f'  <section lang="{code}">\n  <h2>{name}</h2>\n  <ol start="0">\n{items}\n  </ol>\n'
                        "  </section>")
    body = "\n".join(sections)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\" />\n"
            "<title>InternVL2 hands-on course · InternVL2 动手课程</title>\n"
            "<style>body { font-family: system-ui, \"Noto Sans CJK SC\", \"WenQuanYi Zen Hei\", sans-serif; "
            "max-width: 50em; margin: 2em auto; }</style>\n</head>\n<body>\n"
            "<h1>InternVL2 hands-on course · InternVL2 动手课程</h1>\n"
            "<p>Every lesson as <code>make course</code> executed it. · 每一课都是 <code>make course</code> 执行后的样子。</p>\n"
            f"{body}\n</body>\n</html>\n")


def build_site(executed_root: Path | None = None, out: Path | None = None) -> Path:
    """Write the site of the lessons executed under ``executed_root`` into ``out``; returns ``out``."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    from .errors import CourseError

    executed_root = Path(executed_root or notebook_build_dir())
    out = Path(out or site_dir())
    editions = executed_lessons(executed_root)
    if not editions:
        raise CourseError(f"no executed lessons in {executed_root}: run `make course` first")
    exporter = HTMLExporter(template_name=TEMPLATE_DIR.name, extra_template_basedirs=[str(TEMPLATE_DIR.parent)],
                            embed_images=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"record"}), enabled=True)
    titles_by_edition = {}
    with staged_output(out, SITE_KIND) as staging:
        for code, lessons in editions.items():
            notebooks = {path: nbformat.reads(path.read_text(encoding="utf-8"), as_version=4) for path in lessons}
            titles = {path: lesson_title(notebook, path.stem) for path, notebook in notebooks.items()}
            titles_by_edition[code] = [(path, titles[path]) for path in lessons]
            (staging / code).mkdir()
            for index, path in enumerate(lessons):
                resources = {"course_nav": navigation(code, lessons, index, titles, editions), "language_code": code,
                             "metadata": {"name": titles[path]}}
                body, _ = exporter.from_notebook_node(notebooks[path], resources=resources)
                (staging / code / f"{path.stem}.html").write_text(body, encoding="utf-8")
        (staging / "index.html").write_text(index_page(titles_by_edition), encoding="utf-8")
    return out


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build-site", help="turn the lessons `make course` executed into static HTML pages")
    parser.add_argument("--executed", type=Path, default=None, help=f"default: {notebook_build_dir()}")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {site_dir()}")
    parser.set_defaults(handler=lambda args: print(f"site: {build_site(args.executed, args.out) / 'index.html'}") or 0)
