"""Lesson 04's training path on a CPU: the XTuner adaptations, the launcher, resume after a kill, real errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.outputs import OutputRefused
from course_utils.training import (
    TINY_CONFIG, TrainingFailed, TrainingJob, TrainingRefused, config_path, job_for, load_config, planned_steps,
    scheduled_lrs, train, training_curve,
)
from course_utils.training.launcher import prepare_work_dir, zero_partitions


@pytest.fixture(scope="module")
def prepared(session_run_dir):
    """Lesson 03's prepared default data (40 synthetic dishes, 360 training questions)."""
    from course_utils.foodieqa import ensure_prepared_foodieqa
    from course_utils.paths import prepared_dir

    ensure_prepared_foodieqa()
    return prepared_dir()


# ----------------------------------------------------------------------------------------------- adaptations
def test_get_rank_answers_zero_without_a_process_group():
    import torch.distributed as dist

    from course_utils.training import xtuner_patches

    assert not dist.is_initialized()
    assert dist.get_rank is xtuner_patches.get_rank_or_zero  # installed by importing the module
    assert dist.get_rank() == 0
    with pytest.raises(Exception):
        xtuner_patches._distributed_get_rank()  # what XTuner's _llm_forward met before


def test_mmengine_checkpoint_objects_load_with_weights_only(tmp_path):
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    from course_utils.training import xtuner_patches  # allow-lists on import

    buffer = HistoryBuffer()
    buffer.update(0.5)
    path = tmp_path / "hub.pth"
    torch.save({"message_hub": {"log_scalars": {"train/loss": buffer}}, "seed": np.int64(3),
                "lr": np.array([1e-4])}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["message_hub"]["log_scalars"]["train/loss"].current() == 0.5
    assert loaded["lr"][0] == 1e-4
    with pytest.raises(Exception, match="not an mmengine statistic"):
        xtuner_patches.history_buffer_statistic(torch.Tensor, "__init__")  # any other getattr is refused


def test_deepspeed_model_states_give_their_seed_with_weights_only(tmp_path):
    """XTuner's resume reads the seed from DeepSpeed's model states, where mmengine's DeepSpeed config is a
    ``ConfigDict``; the rest of the file is what DeepSpeed 0.16 saves (no optimizer: ZeRO keeps it apart)."""
    import collections

    import torch
    from mmengine.config import Config

    from course_utils.training import xtuner_patches  # noqa: F401 (allow-lists on import)

    deepspeed_config = Config({"strategy": {"config": {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}}})
    states = {"module": {"mlp1.weight": torch.ones(2)}, "buffer_names": [], "optimizer": None,
              "param_shapes": [collections.OrderedDict(w=torch.Size([2, 3]))], "sparse_tensor_module_names": set(),
              "global_steps": 20, "ds_config": deepspeed_config.strategy.config, "ds_version": "0.16.2",
              "meta": {"seed": 7}}
    torch.save(states, tmp_path / "mp_rank_00_model_states.pt")
    loaded = torch.load(tmp_path / "mp_rank_00_model_states.pt", weights_only=True)
    assert loaded["meta"]["seed"] == 7
    assert loaded["ds_config"]["zero_optimization"]["stage"] == 2


def test_warmup_is_never_too_short_to_ramp():
    from course_utils.training.xtuner_patches import warmup_iters

    assert warmup_iters(0.03, 10) == 2  # 0.3 iterations would be 0: "end should be larger than begin"
    assert warmup_iters(0.03, 1000) == 30
    assert warmup_iters(0, 1000) == 0


def test_planned_schedule_warms_up_then_decays(prepared):
    job = job_for(prepared, max_epochs=1)
    steps = planned_steps(job)
    assert steps == -(-360 // 8)  # 360 questions in batches of 8
    lrs = scheduled_lrs(job)
    peak = load_config(job).optim_wrapper.optimizer.lr
    assert len(lrs) == steps
    assert lrs[0] == pytest.approx(peak * 1e-5)  # the warmup's start factor
    assert lrs[1] == pytest.approx(peak)  # a 2-step warmup has ramped (a 1-step one would stay at 3e-9)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # cosine decay
    assert lrs[-1] < 0.01 * peak


def test_dataset_uses_the_configs_tiling_and_the_models_system_message(prepared, tiny_model_path):
    from xtuner.registry import BUILDER

    from course_utils.internvl.conversation import INTERNVL_SYSTEM_MESSAGE

    job = job_for(prepared, tiny_model_path, max_epochs=1)
    dataset = BUILDER.build(load_config(job).train_dataloader.dataset)
    text_tokens = dataset.conv2length_text[len("\n".join(t["value"] for t in dataset.data[0]["conversations"]))]
    assert dataset.group_length[0] == text_tokens + dataset.patch_token * 1  # the sampler's length: one tile
    item = dataset.prepare_data(0)  # (XTuner rewrites the sample's text in place)
    assert tuple(item["pixel_values"].shape) == (1, 3, 224, 224)  # one tile, no thumbnail, whatever the picture
    text = dataset.tokenizer.decode(item["input_ids"])
    assert INTERNVL_SYSTEM_MESSAGE in text and "InternLM (书生·浦语)" not in text


def test_lora_counts_match_peft(tiny_model_path):
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from course_utils.training.lora import lora_parameter_count, lora_targets, parameter_budget

    model = AutoModel.from_pretrained(tiny_model_path, trust_remote_code=True)
    targets = lora_targets(model.language_model)
    peft_model = get_peft_model(copy.deepcopy(model.language_model),
                                LoraConfig(r=16, lora_alpha=32, target_modules=sorted(targets)))
    trained = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert lora_parameter_count(model.language_model, 16, targets) == trained
    budget = parameter_budget(model, r=16)
    assert sum(budget.values()) - budget["LoRA adapters r=16 (trained)"] == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- launcher
def test_command_runs_xtuner_with_this_python(prepared, tmp_path):
    job = job_for(prepared, max_epochs=1)
    command = job.command()
    assert command[:3] == [sys.executable, "-m", "xtuner.tools.train"]
    assert command[3] == str(config_path(TINY_CONFIG)) and "--work-dir" in command
    env = job.environment()
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["COURSE_TRAIN_JSON"].endswith("train.json") and env["COURSE_MAX_EPOCHS"] == "1"
    assert env["COURSE_DIST_BACKEND"] == "gloo"  # this machine has no GPU: processes talk through gloo
    assert load_config(job).env_cfg.dist_cfg.backend == "gloo"  # the config reads it


def test_multi_gpu_command_is_xtuners_torchrun_with_deepspeed(prepared):
    from xtuner.configs import cfgs_name_path

    job = job_for(prepared, deepspeed="deepspeed_zero2", nproc_per_node=4)
    command = job.command(resume_from=Path("iter_8.pth"))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command and command[-2:] == ["--launcher", "pytorch"]
    assert command[command.index("--deepspeed") + 1] == "deepspeed_zero2"
    assert command[command.index("--resume") + 1] == "iter_8.pth"
    assert Path(command[command.index("--nproc_per_node=4") + 3]).name == "train.py"
    assert "deepspeed_zero2" in cfgs_name_path  # the name XTuner resolves to its ZeRO-2 JSON
    assert job.iters_per_epoch(batch_size=8) == -(-360 // 32)  # 4 processes share every epoch


def test_single_gpu_deepspeed_gets_a_free_rendezvous_port(prepared, monkeypatch):
    import socket

    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = job_for(prepared, deepspeed="deepspeed_zero2").environment()
    assert env["MASTER_ADDR"] == "127.0.0.1"
    # as a one-process torchrun sets them: without them DeepSpeed looks for MPI (mpi4py, not in the course env)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("0", "0", "1")
    with socket.socket() as probe:  # DeepSpeed's default 29500 may be another run's; this one is free
        probe.bind(("127.0.0.1", int(env["MASTER_PORT"])))
    assert "MASTER_PORT" not in job_for(prepared).environment()  # plain PyTorch sets up no process group
    monkeypatch.setenv("MASTER_PORT", "29612")
    assert job_for(prepared, deepspeed="deepspeed_zero2").environment()["MASTER_PORT"] == "29612"


def test_work_dir_with_checkpoints_needs_resume_or_fresh(tmp_path):
    work_dir = tmp_path / "run"
    assert prepare_work_dir(work_dir, resume=False, fresh=False) is None  # new: made and marked
    (work_dir / "iter_5.pth").write_bytes(b"")
    (work_dir / "iter_10.pth").write_bytes(b"")
    with pytest.raises(TrainingRefused, match="resume=True"):
        prepare_work_dir(work_dir, resume=False, fresh=False)
    assert prepare_work_dir(work_dir, resume=True, fresh=False) == work_dir / "iter_10.pth"
    (work_dir / "iter_15.pth").mkdir()  # a DeepSpeed checkpoint is a folder; this one's save was cut off:
    (work_dir / "last_checkpoint").write_text(str(work_dir / "iter_10.pth"))  # mmengine names the last complete one
    assert prepare_work_dir(work_dir, resume=True, fresh=False) == work_dir / "iter_10.pth"
    (work_dir / "last_checkpoint").write_text(str(work_dir / "iter_15.pth"))
    assert prepare_work_dir(work_dir, resume=True, fresh=False) == work_dir / "iter_15.pth"
    assert prepare_work_dir(work_dir, resume=False, fresh=True) is None
    assert not list(work_dir.glob("iter_*.pth"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputRefused):
        prepare_work_dir(foreign, resume=False, fresh=True)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_a_broken_zero_checkpoint_of_other_gpus_fails_before_launching_and_keeps_it(prepared):
    job = job_for(prepared, run_name="zero-checkpoint-of-two-gpus", deepspeed="deepspeed_zero2", nproc_per_node=1)
    prepare_work_dir(job.work_dir, resume=False, fresh=False)
    checkpoint = job.work_dir / "iter_4.pth"
    checkpoint.mkdir()
    (checkpoint / "mp_rank_00_model_states.pt").write_bytes(b"")
    for rank in (0, 1):  # the files DeepSpeed ZeRO writes from 2 GPUs, here empty: unreadable
        (checkpoint / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"")
    (job.work_dir / "last_checkpoint").write_text(str(checkpoint))
    launched, real_popen = [], subprocess.Popen

    def popen(command, *args, **kwargs):  # the conversion runs; a training launch is recorded instead
        if "xtuner.tools.train" in command:
            return launched.append(command)
        return real_popen(command, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("subprocess.Popen", popen)
        with pytest.raises(TrainingFailed, match="saved on 2 GPUs and this launch has 1; converting it to DeepSpeed"):
            train(job, resume=True, progress=False)
        with pytest.raises(TrainingRefused, match="saved by DeepSpeed ZeRO: resume it with the DeepSpeed config"):
            train(job_for(prepared, run_name="zero-checkpoint-of-two-gpus"), resume=True, progress=False)
    assert launched == [] and checkpoint.is_dir() and len(list(checkpoint.iterdir())) == 3  # nothing removed
    assert not (job.work_dir / "universal").exists()  # the failed conversion leaves nothing behind
    assert zero_partitions(checkpoint) == 2 and zero_partitions(job.work_dir / "iter_8.pth") == 0


def test_broken_config_surfaces_xtuners_error(prepared, tiny_model_path, tmp_path):
    broken = tmp_path / "broken.py"
    text = config_path(TINY_CONFIG).read_text(encoding="utf-8")
    broken.write_text(text.replace("freeze_llm=True", "freeze_lm=True"))  # a misspelt keyword
    job = job_for(prepared, tiny_model_path, run_name="broken", config=broken, max_epochs=1)
    with pytest.raises(TrainingFailed) as failure:
        train(job, progress=False)
    message = str(failure.value)
    assert "exit status 1" in message and "unexpected keyword argument 'freeze_lm'" in message  # XTuner's words


# ----------------------------------------------------------------------------------------------- training
def test_lesson_04s_run_trains_lora_on_the_tiny_base(lesson04_run):
    run = lesson04_run
    assert run["complete"] and run["steps"] == run["planned_steps"]
    assert Path(run["checkpoint"]).name == f"iter_{run['steps']}.pth"
    assert run["final_loss"] < 0.25 * run["first_loss"]
    assert run["trained"] == {"llm": "lora", "vision": "frozen", "projector": "full"}
    assert run["image_tiling"] == {"max_dynamic_patch": None, "use_thumbnail": None}  # the model's own
    assert Path(run["config"]).name == TINY_CONFIG
    data = json.loads(Path(run["prepared_manifest"]).read_text(encoding="utf-8"))
    assert data["counts"]["train_questions"] == 360
    curve = training_curve(run["work_dir"])
    assert curve[-1]["step"] == run["steps"] and len(curve) == run["steps"]  # lesson 04 logs every step


def test_resume_after_kill_continues_the_schedule(prepared, tiny_model_path):
    job = job_for(prepared, tiny_model_path, run_name="resume-test", max_epochs=1, save_steps=10, log_interval=1)
    steps = planned_steps(job)
    killed = train(job, fresh=True, stop_after_step=20, progress=False)
    assert killed.stopped_early and killed.checkpoint.name == "iter_20.pth"
    with pytest.raises(TrainingRefused):
        train(job, progress=False)  # neither resume nor fresh: the killed run's checkpoints are kept
    resumed = train(job, resume=True, progress=False)
    assert resumed.resumed_from_step == 20 and resumed.first_resumed_step == 21
    assert resumed.steps == steps
    lrs = scheduled_lrs(job)
    curve = {row["step"]: row for row in training_curve(job.work_dir)}
    assert sorted(curve) == list(range(1, steps + 1))
    for step in range(21, steps + 1):  # a run without its optimizer state would restart near lr = 3e-9
        assert curve[step]["lr"] == pytest.approx(lrs[step - 1], rel=1e-6)
    shutil.rmtree(job.work_dir)


def test_the_recipe_is_sized_by_the_model_not_by_where_it_came_from(tiny_model_path, tmp_path):
    """A copy of the tiny base without the course's markers (a learner's MODEL_PATH) gets the tiny recipe; a model
    of InternVL2-2B's width, or a hub id, the 2B recipe."""
    from course_utils.tiny_model import build_config
    from course_utils.training import LESSON_CONFIG, config_for

    copy = shutil.copytree(tiny_model_path, tmp_path / "my-download",
                           ignore=shutil.ignore_patterns(".course-output.json", "course_build.json"))
    assert config_for(tiny_model_path) == config_for(copy) == TINY_CONFIG
    wide = tmp_path / "wide"
    wide.mkdir()
    build_config("internvl2-2b", vocab_size=92553).save_pretrained(wide)
    assert config_for(wide) == config_for("OpenGVLab/InternVL2-2B") == LESSON_CONFIG
