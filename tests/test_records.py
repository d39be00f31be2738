"""Recorded figures: what a notebook records is read back from its executed copy."""

from __future__ import annotations

import json

import pytest

from course_utils.records import RECORD_MIME, read_records, record


def output_with(name, value):
    return {"output_type": "display_data", "metadata": {}, "data": {RECORD_MIME: {"name": name, "value": value}}}


def write_notebook(path, cells):
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_read_records_collects_every_figure_and_a_later_record_wins(tmp_path):
    notebook = write_notebook(
        tmp_path / "executed.ipynb",
        [
            {"cell_type": "markdown", "source": "text"},
            {"cell_type": "code", "outputs": [output_with("accuracy", 0.25), {"output_type": "stream", "text": "x"}]},
            {"cell_type": "code", "outputs": [output_with("accuracy", 0.5), output_with("labels", ["A", "B"])]},
        ],
    )
    assert read_records(notebook) == {"accuracy": 0.5, "labels": ["A", "B"]}


def test_a_notebook_without_records_has_none(tmp_path):
    assert read_records(write_notebook(tmp_path / "clean.ipynb", [{"cell_type": "code", "outputs": []}])) == {}


def test_record_displays_the_figure_under_the_course_mime_type(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw: shown.append((obj, raw)))
    assert record("steps", 12) == 12
    (payload, raw), = shown
    assert raw is True
    assert payload[RECORD_MIME] == {"name": "steps", "value": 12}
    assert payload["text/plain"] == "steps = 12"


def test_record_refuses_a_value_json_cannot_store():
    with pytest.raises(TypeError):
        record("model", object())
