"""The browsable course in a real browser: the site ``make site`` builds from the executed lessons of both editions,
opened from disk in headless Chromium. Every lesson of every edition is linked from the index, no picture is
broken, Chinese is drawn with a real font, and one page of each language is kept as a screenshot in
``build/browser/``.

Like the playground's browser test, this file is also the driver the browser-tools venv runs::

    $BROWSER_TOOLS/bin/python tests/test_browser_site.py SITE_DIR SCREENSHOT_DIR
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import pytest
except ImportError:  # running as the driver inside the browser-tools venv
    pytest = None

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = PROJECT_ROOT / "build" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Without a font for them, two different CJK characters are drawn as the same "missing glyph" box.
DRAWN_WITH_A_FONT = """([first, second]) => {
    const font = getComputedStyle(document.body).fontFamily;
    const draw = (t) => {
        const canvas = document.createElement('canvas'); canvas.width = 40; canvas.height = 40;
        const context = canvas.getContext('2d'); context.font = '32px ' + font; context.fillText(t, 2, 34);
        return canvas.toDataURL();
    };
    return draw(first) !== draw(second);
}"""


def drive(site: str, screenshots: str) -> dict:
    """Open the index, then every lesson page it links; report links, broken pictures and CJK rendering."""
    from playwright.sync_api import sync_playwright

    report = {"pages": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        index = Path(site).resolve() / "index.html"
        page.goto(index.as_uri())
        report["links"] = page.eval_on_selector_all("section a", "links => links.map(a => a.getAttribute('href'))")
        report["index_cjk_drawn"] = page.evaluate(DRAWN_WITH_A_FONT, "课程")
        for link in report["links"]:
            page.goto((index.parent / link).as_uri())
            page.wait_for_load_state("load")
            edition = link.split("/")[0]
            report["pages"][link] = {
                "title": page.title(),
                "images": page.eval_on_selector_all("img", "images => images.length"),
                "broken_images": page.eval_on_selector_all(
                    "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).length"),
                "cells": page.eval_on_selector_all(".jp-Cell", "cells => cells.length"),
                "cjk_drawn": page.evaluate(DRAWN_WITH_A_FONT, "菜系"),
                "navigation": page.eval_on_selector_all("nav.course.top a", "links => links.map(a => a.innerText)"),
            }
            if link.endswith("03_foodieqa_data.html"):
                page.screenshot(path=str(Path(screenshots) / f"site-{edition}-03.png"))
        browser.close()
    return report


if __name__ == "__main__":
    print(json.dumps(drive(*sys.argv[1:3]), ensure_ascii=False))
    sys.exit(0)


if pytest is not None:
    from test_browser_playground import browser_tools_or_skip

    from course_utils.course_run import list_notebooks
    from course_utils.paths import EDITIONS

    def test_the_site_of_both_editions_opens_in_a_browser(executed_notebook, tmp_path):
        from course_utils.site import build_site

        for edition in EDITIONS:
            for lesson in list_notebooks(edition):
                executed_notebook(lesson.name[:2], edition)
        python = browser_tools_or_skip()
        site = build_site(executed_notebook.out_dir, tmp_path / "site")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver = subprocess.run([python, __file__, str(site), str(SCREENSHOTS)], capture_output=True, text=True,
                                timeout=600)
        assert driver.returncode == 0, driver.stderr[-3000:]
        report = json.loads(driver.stdout.splitlines()[-1])

        expected = [f"{edition}/{lesson.stem}.html" for edition in EDITIONS for lesson in list_notebooks(edition)]
        assert report["links"] == expected
        assert report["index_cjk_drawn"]
        for link, page in report["pages"].items():
            assert page["cells"] >= 4 and page["broken_images"] == 0, (link, page)
            assert page["cjk_drawn"], f"{link}: Chinese drawn as empty boxes"
        assert sum(page["images"] for page in report["pages"].values()) > 20  # the lessons' figures are there
        chinese = report["pages"]["zh-CN/03_foodieqa_data.html"]
        assert "全部课程" in chinese["navigation"] and "English" in chinese["navigation"]
        for edition in EDITIONS:
            assert (SCREENSHOTS / f"site-{edition}-03.png").stat().st_size > 50_000
