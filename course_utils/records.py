"""Figures a notebook records, readable from its executed copy (scrapbook-style glue without the dependency).

``record("accuracy", 0.62)`` inside a notebook displays the value under a course-specific MIME type; the
executed ``.ipynb`` therefore carries every recorded figure, and ``read_records(path)`` gets them back for
tests and for the ``make course`` summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_MIME = "application/vnd.internvl-course.record+json"


def record(name: str, value: Any) -> Any:
    """Record a JSON-serialisable figure under ``name`` in the running notebook's outputs; returns ``value``."""
    json.dumps(value)  # fail here, with the name in the traceback, rather than in the notebook writer
    from IPython.display import display

    display({RECORD_MIME: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"}, raw=True)
    return value


def read_records(notebook_path: str | Path) -> dict[str, Any]:
    """Every figure recorded in an executed notebook, by name (a later record of a name wins)."""
    notebook = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    records: dict[str, Any] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(RECORD_MIME)
            if payload is not None:
                records[payload["name"]] = payload["value"]
    return records
