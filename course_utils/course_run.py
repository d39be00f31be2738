"""Run the lessons: execute notebooks with papermill and summarise the figures they recorded.

``make course`` and the notebook tests both go through :func:`execute_notebook`, so a lesson runs the same way
for a maintainer, for CI and for a learner who runs it from the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .paths import project_root
from .records import read_records


def notebook_dir() -> Path:
    """The folder of the numbered lesson notebooks."""
    return project_root() / "notebooks"


def list_notebooks() -> list[Path]:
    """The lesson notebooks, in lesson order (``00_*.ipynb``, ``01_*.ipynb``, ...)."""
    return sorted(p for p in notebook_dir().glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str) -> Path:
    """A lesson notebook by file name, stem or number prefix (``"03"``, ``"03_foodieqa_data"``)."""
    matches = [p for p in list_notebooks() if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in list_notebooks())
        raise FileNotFoundError(f"no single notebook matches {name!r}; the lessons are: {known}")
    return matches[0]


def execute_notebook(
    notebook: str | Path,
    output_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Execute one lesson with papermill into ``output_dir`` and return the executed copy's path.

    ``parameters`` override the notebook's tagged ``parameters`` cell; ``env`` adds environment variables for the
    kernel (``RUN_DIR``, ``MODEL_PATH``, ...). The kernel starts in the notebooks folder, as in JupyterLab.
    """
    import papermill

    source = Path(notebook) if Path(notebook).suffix == ".ipynb" else find_notebook(str(notebook))
    output = Path(output_dir) / source.name
    output.parent.mkdir(parents=True, exist_ok=True)
    saved_env = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})  # the kernel inherits this process's environment
    try:
        papermill.execute_notebook(
            str(source), str(output), parameters=parameters or {}, cwd=str(source.parent),
            kernel_name="python3", progress_bar=False,
        )
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return output


def recorded_figures(executed: Path) -> dict[str, Any]:
    """The figures an executed lesson recorded (see :mod:`course_utils.records`)."""
    return read_records(executed)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run-notebook", help="execute one lesson notebook with papermill")
    parser.add_argument("notebook", help="file name, stem or number, e.g. 03")
    parser.add_argument("--out", default=str(project_root() / "build" / "notebooks"), help="output folder")
    parser.set_defaults(handler=_run_notebook_cli)


def _run_notebook_cli(args: argparse.Namespace) -> int:
    executed = execute_notebook(args.notebook, args.out)
    print(f"executed: {executed}")
    for name, value in recorded_figures(executed).items():
        print(f"  {name}: {value}")
    return 0
