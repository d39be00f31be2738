"""Lesson 04 runs under papermill on the default: LoRA from scratch against peft's, the loss mask, a training step,
the lesson's LoRA recipe on the tiny base through a real `xtuner train` run (interrupted, refused, resumed) with its
held-out loss; and the `xtuner train` command the lesson tells a learner to type works as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.course_run import find_notebook
from course_utils.paths import project_root
from course_utils.training import load_finetune_manifest, training_curve
from course_utils.training.launcher import zero_partitions

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def lesson(executed_notebook):
    return executed_notebook("04")


def test_the_interrupted_run_resumes_at_the_next_step_and_finishes(lesson):
    _, figures = lesson
    assert figures["interrupted_at_step"] == 20
    assert figures["resumed_from_step"] == 20 and figures["first_resumed_step"] == 21
    assert figures["steps"] == figures["planned_steps"] == 10 * -(-360 // 8)  # 10 epochs of lesson 03's 360 questions
    assert figures["resumed_lr_matches_schedule"] is True
    assert figures["final_loss"] < 0.25 * figures["first_loss"]
    assert figures["peak_memory_mb"] > 0


def test_the_manifest_names_the_newest_checkpoint(lesson, session_run_dir):
    _, figures = lesson
    manifest = load_finetune_manifest("lesson04")
    assert manifest["complete"] and manifest["steps"] == figures["steps"]
    assert manifest["checkpoint"].endswith(f"iter_{figures['steps']}.pth")
    assert manifest["prepared_data"] == str((session_run_dir / "data" / "foodieqa-xtuner").resolve())


def test_lora_counts_and_what_trained(lesson, lesson04_run):
    _, figures = lesson
    # InternVL2-2B: LoRA r=128 on wqkv, wo, w1, w2, w3 of 24 layers and on the output layer, plus mlp1
    per_layer = 128 * ((2048 + 4096) + (2048 + 2048) + 2 * (2048 + 8192) + (8192 + 2048))
    lora = 24 * per_layer + 128 * (2048 + 92553)
    mlp1 = (4096 * 2 + 4096 * 2048 + 2048) + (2048 * 2048 + 2048)
    assert figures["lora_trained_parameters_2b"] == lora + mlp1
    assert 0.05 < figures["lora_trained_fraction_2b"] < 0.08
    # the tiny base trains exactly as InternVL2-2B does: LoRA on the LLM, the projector, the ViT frozen
    assert figures["trained"] == lesson04_run["trained"] == {"llm": "lora", "vision": "frozen", "projector": "full"}


def test_lora_from_scratch_equals_peft_on_the_tiny_base(lesson):
    _, figures = lesson
    assert figures["lora_fresh_unchanged"] is True  # B = 0: the base model's logits, bit for bit
    assert figures["lora_logits_moved"] > 0.01  # the copied adapters do change the output...
    assert figures["lora_scratch_vs_peft_max_diff"] < 1e-5  # ...and ours and peft's change it alike
    # the tiny base's LLM, r=16: wqkv 192->384, wo 192->192, w1 and w3 192->512, w2 512->192 in 4 layers, output 192->1347
    expected = 16 * (4 * ((192 + 384) + (192 + 192) + 2 * (192 + 512) + (512 + 192)) + (192 + 1347))
    assert figures["lora_trained_ours"] == figures["lora_trained_peft"] == figures["lora_trained_formula"] == expected
    per_rank = figures["lora_numbers_per_rank"]
    assert per_rank["tiny base"]["16"] == expected
    for counts in per_rank.values():  # linear in r
        assert all(counts[r] == int(r) * counts["2"] // 2 for r in counts)
    assert per_rank["InternVL2-2B"]["128"] == figures["lora_trained_parameters_2b"] - 12_595_200  # less mlp1


def test_the_loss_counts_only_the_answers(lesson):
    _, figures = lesson
    assert figures["masking_image_tokens"] == 8 * 64  # a batch of 8 one-tile pictures, 64 tokens a tile
    assert 0 < figures["masking_answer_tokens"] < 0.5 * figures["masking_text_tokens"]  # the prompt is most text
    assert figures["masking_answer_loss"] != figures["masking_text_loss"]


def test_the_larger_rank_learns_faster_in_the_first_steps(lesson):
    _, figures = lesson
    losses = figures["rank_final_losses"]
    assert figures["rank_steps"] == 12 and set(losses) == {"2", "16"}
    assert losses["16"] < losses["2"] < figures["first_loss"]


def test_the_held_out_loss_is_logged_before_training_and_after_every_epoch(lesson):
    _, figures = lesson
    epoch = -(-360 // 8)
    assert figures["validation_steps"] == [epoch * n for n in range(11)]
    held_out, trained = figures["validation_losses"], figures["epoch_training_losses"]
    assert len(trained) == 10
    assert held_out[1] < 0.25 * held_out[0]  # the first epoch carries over to dishes the model never saw
    assert held_out[2] < 1.25 * trained[1]  # after two epochs the held-out loss is close to the training loss...
    assert held_out[-1] > 1.5 * trained[-1]  # ...at the end well above it:
    # over the second half of the run the held-out loss improves far less than the training loss
    assert 1 - held_out[-1] / held_out[5] < 0.5 * (1 - trained[-1] / trained[4])
    assert min(held_out) == held_out[figures["validation_steps"].index(figures["validation_best_step"])]


def documented_command() -> str:
    """The `xtuner train` line lesson 04 tells a learner to type in a terminal."""
    cells = json.loads(find_notebook("04").read_text(encoding="utf-8"))["cells"]
    text = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return next(line for line in lines if "xtuner train " in line)


@pytest.fixture
def course_folder(session_run_dir, tmp_path) -> Path:
    """A folder laid out as the course's checkout whose runs/ is the one this session's lessons write to."""
    from course_utils.foodieqa import ensure_prepared_foodieqa
    from course_utils.tiny_model import ensure_tiny_model

    ensure_tiny_model()
    ensure_prepared_foodieqa()
    folder = tmp_path / "course"
    folder.mkdir()
    for name in ("configs", "course_utils"):
        (folder / name).symlink_to(project_root() / name)
    (folder / "runs").symlink_to(session_run_dir)
    return folder


def test_the_documented_terminal_command_trains_as_typed(course_folder):
    """The command, as the lesson writes it, in a terminal whose PATH starts with the course's environment and that
    has none of the variables the launcher sets; only the schedule is shortened (XTuner's --cfg-options)."""
    command = documented_command()
    assert command.startswith("PYTHONPATH=. xtuner train configs/internvl2_tiny_lora_foodieqa.py ")
    assert command.endswith(" --deepspeed deepspeed_zero2")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("COURSE_") and name not in ("PYTHONPATH", "RUN_DIR", "RANK", "LOCAL_RANK",
                                                              "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    short = " --cfg-options train_cfg.max_epochs=None train_cfg.max_iters=2 default_hooks.logger.interval=1"
    done = subprocess.run(["bash", "-c", command + short], cwd=course_folder, env=env, capture_output=True, text=True,
                          timeout=600)
    work_dir = course_folder / "runs" / "finetune" / "by-hand"
    assert done.returncode == 0 and (work_dir / "iter_2.pth").is_dir(), (done.stdout + done.stderr)[-3000:]
    assert zero_partitions(work_dir / "iter_2.pth") == 1  # DeepSpeed ZeRO saved it, from one process
    assert [row["step"] for row in training_curve(work_dir)] == [1, 2]
    assert [row["step"] for row in training_curve(work_dir, key="val_loss")] == [0]  # the held-out loss, before training
    # the lesson's warning: `xtuner train` exits with 0 even when the training fails
    missing = subprocess.run(["bash", "-c", command.replace("internvl2_tiny_lora_foodieqa.py", "missing.py")],
                             cwd=course_folder, env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 0 and "Cannot find configs/missing.py" in missing.stdout + missing.stderr
