"""Lesson 06 in a real browser: JupyterLab on 127.0.0.1, headless Chromium runs the notebook, picks a gallery dish,
clicks Ask and watches both answer panes fill as they stream; a screenshot is saved in ``build/browser/``.

The browser is Debian's ``chromium`` driven by Playwright, which lives in a venv of its own (``make browser-tools``
installs both; ``BROWSER_TOOLS`` names the venv). This file is also the driver that venv runs::

    $BROWSER_TOOLS/bin/python tests/test_browser_playground.py URL NOTEBOOK SCREENSHOT

which is why pytest is imported only when it is there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

try:
    import pytest
except ImportError:  # running as the driver inside the browser-tools venv, which has Playwright and not pytest
    pytest = None

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = PROJECT_ROOT / "build" / "browser" / "06_playground.png"
BROWSER_TOOLS = Path(os.environ.get("BROWSER_TOOLS") or Path.home() / ".cache" / "internvl2-course" / "browser-tools")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SIDES = ("base", "finetuned")
MINUTE = 60_000  # Playwright timeouts are in milliseconds
BROWSER_ATTEMPTS = 3
WIDGET_MISSED = ".jp-OutputArea-output:has-text('Error displaying widget')"


def failed_screenshot(screenshot: Path, session) -> Path:
    """Where failed browser session ``session`` (1, 2, ... or a glob's ``*``) leaves what its page showed."""
    return screenshot.with_name(f"{screenshot.stem}-failed-{session}.png")


# ---- the driver (runs in the browser-tools venv) ------------------------------------------------------------------


def drive(url: str, notebook: str, screenshot: str) -> dict:
    """Open ``notebook`` in JupyterLab at ``url``, run it, pick a gallery dish, Ask, and report what the panes did."""
    from playwright.sync_api import sync_playwright

    failed = next(path for n in range(1, 100)  # each failed session keeps its own, to compare
                  if not (path := failed_screenshot(Path(screenshot), n)).exists())
    failed.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 2200})
        try:
            return run_the_lesson(page, url, notebook, screenshot)
        except Exception:
            page.screenshot(path=str(failed))  # what the page showed when it failed
            raise
        finally:
            browser.close()


def run_all_cells(page, tries: int = 5) -> None:
    """Run > Run All Cells, again until a cell starts: a click before the new kernel is connected runs nothing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))"
    kernel_dialog = ".jp-Dialog .jp-mod-accept"  # "Select Kernel", should Lab ask: its choice is python3
    for _ in range(tries):
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=2 * MINUTE)
        if page.locator(kernel_dialog).is_visible():
            page.click(kernel_dialog)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-item[data-command='runmenu:run-all']")
        try:
            page.wait_for_function(started, timeout=20_000)
            return
        except PlaywrightTimeout:
            if page.locator(kernel_dialog).is_visible():
                page.click(kernel_dialog)
    raise RuntimeError(f"no cell started after {tries} tries of Run All Cells")


def run_the_lesson(page, url: str, notebook: str, screenshot: str) -> dict:
    """The steps a learner takes, each waited for; the panes' contents and their growth while streaming."""
    page.goto(f"{url}/lab/tree/{notebook}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=2 * MINUTE)
    run_all_cells(page)
    # The notebook's own question is answered from code; then every cell has run and the kernel is idle. The lesson
    # runs in about 15 s on 2 cores: a session that has not got there in 2 minutes is retried rather than waited on.
    # A front end that missed the widget's model (its comm message came before the widget manager listened; seen on
    # a loaded machine) shows "Error displaying widget: model not found" for good: that session is retried at once.
    page.wait_for_selector(f".course-playground-stats-base:has-text('tokens/s'), {WIDGET_MISSED}", timeout=2 * MINUTE)
    if page.locator(WIDGET_MISSED).count():
        raise RuntimeError(f"JupyterLab's front end missed the playground's widget model: "
                           f"{page.inner_text(WIDGET_MISSED)!r}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=2 * MINUTE)

    playground = page.locator(".course-playground")
    playground.scroll_into_view_if_needed()
    page.locator(".course-playground-gallery-item").nth(1).click()  # a new dish: new conversations
    page.wait_for_function(
        "() => [...document.querySelectorAll('[class*=course-playground-stats-]')].every(e => !e.innerText.trim())"
    )
    page.evaluate("""() => {
        window.courseUpdates = {};
        for (const side of ['base', 'finetuned']) {
            const pane = document.querySelector('.course-playground-answer-' + side);
            window.courseUpdates[side] = [];
            new MutationObserver(() => window.courseUpdates[side].push(pane.innerText.length))
                .observe(pane, {subtree: true, childList: true, characterData: true});
        }
    }""")
    page.click(".course-playground-ask")
    for side in SIDES:
        page.wait_for_selector(f".course-playground-stats-{side}:has-text('tokens/s')", timeout=2 * MINUTE)
    page.wait_for_selector(".course-playground-ask:not([disabled])")
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=screenshot)
    return {
        "answers": {side: page.inner_text(f".course-playground-answer-{side}") for side in SIDES},
        "stats": {side: page.inner_text(f".course-playground-stats-{side}") for side in SIDES},
        "updates": page.evaluate("() => window.courseUpdates"),
        "tiles": page.inner_text(".course-playground-tiles"),
        "tracebacks": page.locator(".jp-OutputArea-output:has-text('Traceback')").count(),
    }


if __name__ == "__main__":
    print(json.dumps(drive(*sys.argv[1:4]), ensure_ascii=False))
    sys.exit(0)


# ---- the test (runs in the course environment) --------------------------------------------------------------------


def browser_tools_or_skip() -> Path:
    """The browser-tools venv's python; skipped (failed under CI) with how to install it when it is missing."""
    python = BROWSER_TOOLS / "bin" / "python"
    missing = [] if shutil.which("chromium") else ["chromium (Debian: apt-get install chromium)"]
    has_playwright = python.is_file() and subprocess.run([python, "-c", "import playwright"], capture_output=True).returncode == 0
    if not has_playwright:
        missing.append(f"Playwright in {BROWSER_TOOLS}")
    if missing:
        message = f"browser test needs {' and '.join(missing)}: run `make browser-tools` to enable it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_jupyterlab(notebook_dir: Path, env: dict, log_path: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab from the course environment, bound to 127.0.0.1, with a token; ready when its API answers."""
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebook_dir}",
        "--ServerApp.terminals_enabled=False",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    server = subprocess.Popen(command, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(1)
    server.terminate()
    raise RuntimeError(f"JupyterLab did not start; its log ends:\n{log_path.read_text()[-3000:]}")


if pytest is not None:

    @pytest.fixture(scope="module")
    def lesson_in_a_lab(tmp_path_factory, session_run_dir, tiny_model_path):
        """A parameterised copy of lesson 06 (a second InternVL2 folder in the fine-tuned pane), run in the session's
        RUN_DIR, where the tiny model is built already."""
        import nbformat
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook

        from course_utils.course_run import find_notebook, kernel_environment
        from course_utils.tiny_model import build_model_dir

        work = tmp_path_factory.mktemp("browser")
        second_model = build_model_dir(work / "models" / "second-internvl2", seed=1)  # other weights, other answers
        notebook = parameterize_notebook(load_notebook_node(str(find_notebook("06"))),
                                         {"FINETUNED_MODEL": str(second_model), "MAX_NEW_TOKENS": 24})
        (work / "notebooks").mkdir()
        nbformat.write(notebook, work / "notebooks" / "06_playground.ipynb")
        env = {**os.environ, **kernel_environment({"RUN_DIR": str(session_run_dir)}),
               # the server's own files (runtime, signing key, settings, workspaces) stay in the test's folder
               **{f"JUPYTER_{kind}_DIR": str(work / kind.lower()) for kind in ("RUNTIME", "DATA", "CONFIG")},
               "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "JUPYTERLAB_SETTINGS_DIR": str(work / "lab-settings")}
        (work / "config").mkdir()  # no update checks or news feed: the server makes no outside calls
        (work / "config" / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {
            "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}))
        # A learner's first visit asks which kernel to start and whether to fetch news; the test's answers:
        user_settings = {"notebook-extension/tracker": {"autoStartDefaultKernel": True},
                         "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
        for name, values in user_settings.items():
            path = work / "lab-settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env.pop("MODEL_PATH", None)
        env.pop("DATA_ROOT", None)
        return work, env

    def test_lesson_06_streams_both_answers_in_a_real_browser(lesson_in_a_lab):
        python = browser_tools_or_skip()
        work, env = lesson_in_a_lab
        port, token = free_port(), secrets.token_hex(16)
        log_path = work / "jupyterlab.log"
        server = start_jupyterlab(work / "notebooks", env, log_path, port, token)
        for stale in SCREENSHOT.parent.glob(failed_screenshot(SCREENSHOT, "*").name):  # from an earlier test run
            stale.unlink()
        failures = []
        try:
            # A fresh browser session when one fails: on a loaded machine JupyterLab's front end can
            # miss a new kernel or a widget's model (seen at load 3-4 on 2 cores); a real fault fails every time.
            for _ in range(BROWSER_ATTEMPTS):
                driver = subprocess.run(
                    [python, __file__, f"http://127.0.0.1:{port}", f"06_playground.ipynb?token={token}",
                     str(SCREENSHOT)],
                    capture_output=True, text=True, timeout=900,
                )
                if driver.returncode == 0:
                    break
                failures.append(driver.stderr[-3000:])
        finally:
            server.terminate()
            server.wait(timeout=30)
        assert driver.returncode == 0, ("\n---\n".join(failures) +
                                        f"\nJupyterLab log:\n{log_path.read_text()[-2000:]}")
        if failures:  # passed on a retry: say what the first session met, so a slow or flaky run can be traced
            warnings.warn(f"the first browser session failed, a retry passed (its page: "
                          f"{failed_screenshot(SCREENSHOT, 1)}):\n{failures[0][-1500:]}")
        report = json.loads(driver.stdout.splitlines()[-1])
        for side in SIDES:
            lengths = report["updates"][side]
            assert "Q:" in report["answers"][side] and "A:" in report["answers"][side], report["answers"]
            assert "tokens/s" in report["stats"][side]
            # streamed: the pane grew through several lengths before the last, not one jump to the whole answer
            assert len(set(lengths)) >= 3, lengths
        assert report["answers"]["base"] != report["answers"]["finetuned"]  # two models, two answers
        assert "image tokens" in report["tiles"] and report["tracebacks"] == 0
        assert SCREENSHOT.stat().st_size > 10_000

    @pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
    def test_without_the_browser_tools_the_test_says_how_to_enable_them(monkeypatch, tmp_path, ci, outcome):
        monkeypatch.setattr(sys.modules[__name__], "BROWSER_TOOLS", tmp_path / "no-tools")
        monkeypatch.setenv("CI", ci)
        with pytest.raises(outcome, match="run `make browser-tools` to enable it"):
            browser_tools_or_skip()
