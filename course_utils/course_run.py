"""Run the lessons: execute notebooks with papermill and summarise the figures they recorded.

``make course`` and the notebook tests both go through :func:`execute_notebook`, so a lesson runs the same way
for a maintainer, for CI and for a learner who runs it from the command line.

Smoke mode: a lesson whose tagged ``parameters`` cell declares ``smoke = False`` is executed with
``smoke = True`` (few steps, few samples) unless ``smoke=False`` is asked for; JupyterLab runs its own default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CourseError
from .outputs import course_folder, staged_file
from .paths import (EDITIONS, FIRST_EDITION, LESSON_GLOB, edition_subfolder, notebook_build_dir, notebook_dir,
                    project_root, run_dir, temporary_environment)
from .records import read_records

SMOKE_PARAMETER = "smoke"
HEADLINE_FIGURE = "heldout_original"  # recorded by lesson 05: accuracy before/after in the trained answer style
EXECUTED_KIND = "executed-notebooks"  # the outputs marker's kind


def list_notebooks(edition: str = FIRST_EDITION) -> list[Path]:
    """An edition's lesson notebooks, in lesson order (``00_*.ipynb``, ``01_*.ipynb``, ...)."""
    return sorted(p for p in notebook_dir(edition).glob(LESSON_GLOB))


def find_notebook(name: str, edition: str = FIRST_EDITION) -> Path:
    """A lesson notebook by path, file name, stem or number prefix (``"03"``, ``"03_foodieqa_data"``)."""
    if Path(name).suffix == ".ipynb" and Path(name).is_file():
        return Path(name)
    lessons = list_notebooks(edition)
    matches = [p for p in lessons if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in lessons)
        raise FileNotFoundError(f"no single notebook matches {name!r}; the lessons are: {known}")
    return matches[0]


def execute_notebook(
    notebook: str | Path,
    output_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    smoke: bool = True,
) -> Path:
    """Execute one lesson with papermill into ``output_dir`` and return the executed copy's path.

    ``parameters`` override the notebook's tagged ``parameters`` cell; ``env`` adds environment variables for the
    kernel (``RUN_DIR``, ``MODEL_PATH``, ...); ``smoke`` selects smoke mode where the lesson offers it. The
    kernel starts in the notebooks folder, as in JupyterLab, with this checkout on its ``PYTHONPATH``.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = find_notebook(str(notebook))
    folder = course_folder(output_dir, EXECUTED_KIND, protected=[source.parent])
    failure = None
    with temporary_environment(kernel_environment(env)):  # the kernel inherits this process's environment
        with staged_file(folder / source.name) as partial:
            try:
                papermill.execute_notebook(
                    str(source), str(partial), parameters=lesson_parameters(source, parameters, smoke),
                    cwd=str(source.parent), kernel_name="python3", progress_bar=False,
                )
            except PapermillExecutionError as error:
                failure = error  # a complete record of a failed run: kept, it shows the failing cell
    if failure is not None:
        raise failure
    return folder / source.name


def kernel_environment(extra: dict[str, str] | None) -> dict[str, str]:
    """The variables a lesson's kernel gets: ``extra``, and a PYTHONPATH led by this checkout.

    The kernel starts in ``notebooks/``, so without it ``import course_utils`` works only where the package is
    installed or the caller exported PYTHONPATH (as the Makefile does).
    """
    entries = [str(project_root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(entries)), **(extra or {})}


def lesson_parameters(source: Path, parameters: dict[str, Any] | None, smoke: bool) -> dict[str, Any]:
    """The parameters to inject: ``parameters`` plus ``smoke=True`` when asked for and the lesson declares it."""
    import papermill

    injected = dict(parameters or {})
    if smoke and SMOKE_PARAMETER in papermill.inspect_notebook(str(source)):
        injected.setdefault(SMOKE_PARAMETER, True)
    return injected


def recorded_figures(executed: Path) -> dict[str, Any]:
    """The figures an executed lesson recorded (see :mod:`course_utils.records`)."""
    return read_records(executed)


@dataclass
class LessonRun:
    """The outcome of one executed lesson."""

    name: str
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def build_embedded_defaults() -> list[str]:
    """Build the embedded model and data the lessons default to (seconds; reused when current).

    Returns one line per default for the run's header.
    """
    from .foodieqa import ensure_synthetic_foodieqa
    from .tiny_model import ensure_tiny_model

    lines = []
    for label, ensure in (("tiny base model", ensure_tiny_model), ("synthetic FoodieQA", ensure_synthetic_foodieqa)):
        start = time.perf_counter()
        folder = ensure()
        lines.append(f"{label}: {folder} ({time.perf_counter() - start:.1f} s)")
    return lines


def describe_error(error: BaseException) -> str:
    """One line naming what failed: papermill's cell error (``ename: evalue``) or the exception itself."""
    name = getattr(error, "ename", None) or type(error).__name__
    value = getattr(error, "evalue", None) or str(error)
    first_line = value.strip().splitlines()[0] if value.strip() else ""
    return f"{name}: {first_line}" if first_line else name


def run_lesson(notebook: Path, output_dir: Path, smoke: bool = True, parameters: dict[str, Any] | None = None,
               env: dict[str, str] | None = None) -> LessonRun:
    """Execute one lesson, catching its failure so that the others still run; figures recorded before a failure count.

    ``parameters`` and ``env`` are passed to :func:`execute_notebook` (e.g. a GPU run's ``require_gpu=True``)."""
    output_dir = course_folder(output_dir, EXECUTED_KIND, protected=[notebook.parent])  # before deleting in it
    executed = output_dir / notebook.name
    executed.unlink(missing_ok=True)  # figures of an earlier run must not pass for this run's
    start = time.perf_counter()
    error = None
    try:
        execute_notebook(notebook, output_dir, parameters=parameters, env=env, smoke=smoke)
    except Exception as exc:  # a failing lesson is reported in the summary, then fails the whole run
        error = describe_error(exc)
    figures = recorded_figures(executed) if executed.exists() else {}
    return LessonRun(notebook.stem, time.perf_counter() - start, figures, error)


def format_figure(value: Any, width: int = 100) -> str:
    """A recorded value as one short line: floats to 4 significant digits, lists and dicts as compact JSON."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (str, int, type(None))):  # bool is an int: True/False, as Python prints them
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(runs: list[LessonRun], output_dir: Path) -> str:
    """The table ``make course`` ends with: each lesson, ok or FAILED, its time, and the figures it recorded."""
    lines = [f"Lessons executed into {output_dir}", f"  {'lesson':<28} {'result':<7} {'time':>8}"]
    for run in runs:
        lines.append(f"  {run.name:<28} {'ok' if run.ok else 'FAILED':<7} {run.seconds:>6.1f} s")
        lines += [f"      {name} = {format_figure(value)}" for name, value in run.figures.items()]
        if run.error:
            lines.append(f"      error: {run.error}")
    passed = sum(run.ok for run in runs)
    lines.append(f"{passed} of {len(runs)} lessons ran; {sum(run.seconds for run in runs):.1f} s in all")
    headline = next((run.figures[HEADLINE_FIGURE] for run in runs if HEADLINE_FIGURE in run.figures), None)
    if headline:
        lines.append(format_headline(headline))
    return "\n".join(lines)


def format_headline(figure: dict) -> str:
    """Lesson 05's before/after on held-out dishes, the figure the whole course builds up to, as one line."""
    before, after = figure["before"], figure["after"]
    low, high = figure["ci95_after"]
    return (f"Headline: held-out accuracy {before:.1%} before fine-tuning -> {after:.1%} after "
            f"(95 % CI {low:.1%}-{high:.1%}, {figure['questions']} questions, McNemar p = {figure['mcnemar_p']:.2g})")


def run_course(output_dir: Path, lessons: list[str] | None = None, smoke: bool = True,
               editions: tuple[str, ...] = tuple(EDITIONS)) -> int:
    """Build the embedded defaults, execute each edition's lessons in order, print the summaries; 0 only if every
    lesson ran.

    ``lessons`` picks some by number or name (default: all). The first edition's executed copies go to
    ``output_dir``, another's to ``output_dir/<edition>`` (``build/notebooks/zh-CN``).
    """
    plans = []
    for edition in editions:
        notebooks = [find_notebook(name, edition) for name in lessons] if lessons else list_notebooks(edition)
        if not notebooks:
            raise CourseError(f"no lesson notebooks (NN_name.ipynb) in {notebook_dir(edition)}")
        folder = Path(output_dir) / edition_subfolder(edition)
        plans.append((edition, notebooks, course_folder(folder, EXECUTED_KIND, protected=[notebook_dir(edition)])))
    print(f"RUN_DIR={run_dir()}")
    for line in build_embedded_defaults():
        print(f"  {line}")
    failed = []
    for edition, notebooks, folder in plans:
        runs = []
        for notebook in notebooks:
            print(f"running {edition}/{notebook.stem} ...", flush=True)
            runs.append(run_lesson(notebook, folder, smoke=smoke))
        print()
        print(format_summary(runs, folder))
        failed += [f"{edition}/{run.name}" for run in runs if not run.ok]
    if failed:
        print(
            f"\nerror: {len(failed)} lesson(s) failed: {', '.join(failed)}. The executed copies show the failing "
            "cell; rerun one with `python -m course_utils run-notebook NN [--edition E]`.",
            file=sys.stderr,
        )
        return 1
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    default_out = str(notebook_build_dir())
    full_help = "run with the lessons' own defaults instead of smoke mode"

    parser = subparsers.add_parser("run-notebook", help="execute one lesson notebook with papermill")
    parser.add_argument("notebook", help="file name, stem or number, e.g. 03")
    parser.add_argument("--edition", choices=list(EDITIONS), default=FIRST_EDITION, help="default: %(default)s")
    parser.add_argument("--out", default=None, help="output folder (default: the edition's under build/notebooks)")
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.set_defaults(handler=_run_notebook_cli)

    parser = subparsers.add_parser(
        "run-course", help="build the embedded defaults, execute every lesson, print a summary of their figures"
    )
    parser.add_argument("lessons", nargs="*", help="only these lessons (numbers or names); default: all")
    parser.add_argument("--edition", choices=["all", *EDITIONS], default="all", help="default: %(default)s")
    parser.add_argument("--out", default=default_out, help="output folder (other editions in sub-folders)")
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.set_defaults(handler=_run_course_cli)


def _run_notebook_cli(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    notebook = find_notebook(args.notebook, args.edition)
    args.out = args.out or notebook_build_dir(args.edition)
    try:
        executed = execute_notebook(notebook, args.out, smoke=not args.full)
    except PapermillExecutionError as error:
        raise CourseError(f"{notebook.stem} failed: {describe_error(error)}; the executed copy in {args.out} "
                          "shows the failing cell") from error
    print(f"executed: {executed}")
    for name, value in recorded_figures(executed).items():
        print(f"  {name}: {format_figure(value)}")
    return 0


def _run_course_cli(args: argparse.Namespace) -> int:
    editions = tuple(EDITIONS) if args.edition == "all" else (args.edition,)
    return run_course(Path(args.out), args.lessons, smoke=not args.full, editions=editions)
