"""Lesson 04's exercise checks accept the right answer and turn down plausible wrong ones with their hint."""

from __future__ import annotations

import json

import pytest
import torch

from course_utils.course_run import find_notebook
from course_utils.exercises import find_check


def notebook_definition(name: str) -> dict:
    """Run the lesson's cell that defines ``name`` (a class written on the page) and return its namespace."""
    cells = json.loads(find_notebook("04").read_text(encoding="utf-8"))["cells"]
    source = next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and f"class {name}(" in "".join(c["source"]))
    namespace = {"math": __import__("math"), "torch": torch, "nn": torch.nn}
    exec(source, namespace)
    return namespace


def test_04_1_only_b_learns_at_the_first_step():
    LoRALinear = notebook_definition("LoRALinear")["LoRALinear"]
    check = find_check("04.1")
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 8), r=4, alpha=8)
    assert "backward pass first" in check("B", layer=layer)
    layer(torch.randn(3, 16)).pow(2).sum().backward()
    assert check("B", layer=layer) is None
    assert "B is still zero" in check("A", layer=layer)


def test_04_2_counts_labelled_over_attended_positions():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    batch = {"labels": labels, "attention_mask": mask}
    check = find_check("04.2")
    assert check(3 / 8, batch=batch) is None
    assert "not the padding" in check(3 / 10, batch=batch)
    assert "the share the loss ignores" in check(5 / 8, batch=batch)


def test_04_3_reads_the_held_out_losses(tmp_path):
    log = tmp_path / "20260101_000000" / "vis_data" / "scalars.json"
    log.parent.mkdir(parents=True)
    training = [{"loss": abs(25 - step) / 10, "lr": 1e-3, "step": step} for step in range(1, 31)]  # lowest at 25
    rows = [{"val_loss": 9.0, "step": 0}, *training,
            {"val_loss": 1.0, "step": 10}, {"val_loss": 0.8, "step": 20}, {"val_loss": 0.9, "step": 30}]
    log.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    check = find_check("04.3")
    assert check(20, work_dir=tmp_path) is None
    assert "where the training loss was lowest" in check(25, work_dir=tmp_path)
    assert "is its val_loss the lowest" in check(30, work_dir=tmp_path)
    assert "no held-out losses" in check(20, work_dir=tmp_path / "empty")


def test_04_4_names_the_misspelt_keyword(tmp_path):
    from course_utils.training import TINY_CONFIG, config_path

    check = find_check("04.4")
    broken = tmp_path / "broken_config.py"
    broken.write_text(config_path(TINY_CONFIG).read_text(encoding="utf-8").replace("freeze_llm=", "freeze_lm="))
    assert check("freeze_lm", config=broken) is None
    assert "unexpected keyword argument" in check("freeze_llm", config=broken)
    assert "builds as it is" in check("freeze_lm", config=config_path(TINY_CONFIG))


def test_every_check_of_the_lesson_is_tested():
    from course_utils.exercises import CHECKS

    find_check("04.1")
    assert sorted(name for name in CHECKS if name.startswith("04.")) == [f"04.{n}" for n in range(1, 5)]


@pytest.mark.parametrize("name", ["04.1", "04.2", "04.3", "04.4"])
def test_the_lesson_asks_for_each_check(name):
    text = find_notebook("04").read_text(encoding="utf-8")
    assert f'check(\\"{name}\\"' in text
