"""Lesson 04's launcher with several processes: DeepSpeed ZeRO-2 on two processes of a CPU (gloo), stopped as a
power cut would stop it, and its checkpoint resumed on one process through DeepSpeed's universal checkpoint.

What differs on GPUs is the transport (NCCL instead of gloo) and the precision; how ZeRO splits the optimizer state
between processes, and what a resume on another number of them has to do, is the same.
"""

from __future__ import annotations

import shutil

import psutil
import pytest
import torch

from course_utils.training import checkpoints, job_for, load_config, planned_steps, scheduled_lrs, train
from course_utils.training import training_curve
from course_utils.training.config import build_schedulers, one_parameter_optimizer
from course_utils.training.launcher import universal_checkpoint, zero_partitions
from course_utils.training.xtuner_patches import place_schedulers

SAVED_STEP = 10


@pytest.fixture(scope="module")
def prepared(session_run_dir):
    """Lesson 03's prepared default data (360 training questions: 23 steps an epoch on 2 processes, 45 on 1)."""
    from course_utils.foodieqa import ensure_prepared_foodieqa
    from course_utils.paths import prepared_dir

    ensure_prepared_foodieqa()
    return prepared_dir()


def zero2_job(prepared, tiny_model_path, processes: int):
    return job_for(prepared, tiny_model_path, run_name="zero2-processes", max_epochs=1, save_steps=5, log_interval=1,
                   deepspeed="deepspeed_zero2", nproc_per_node=processes)


def run_processes(work_dir) -> list[psutil.Process]:
    """Processes whose command line names the run's work dir (torchrun, its workers, their data loaders)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(work_dir) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def stopped_on_two(prepared, tiny_model_path):
    """ZeRO-2 on 2 processes, stopped once the checkpoint of step 10 is on disk; the stopped run's job."""
    job = zero2_job(prepared, tiny_model_path, processes=2)
    result = train(job, fresh=True, stop_after_step=SAVED_STEP, progress=False)
    return job, result


def test_zero2_trains_on_two_processes_and_a_stop_ends_every_one(stopped_on_two):
    job, result = stopped_on_two
    assert result.stopped_early and result.checkpoint.name == f"iter_{SAVED_STEP}.pth"
    # torchrun starts each worker in a session of its own: they must be gone too, not training on
    assert run_processes(job.work_dir) == []
    assert zero_partitions(job.work_dir / f"iter_{SAVED_STEP}.pth") == 2  # each process saved its share
    assert planned_steps(job) == 23  # 360 questions, batch 8 on each of 2 processes
    curve = training_curve(job.work_dir)
    assert curve[0]["step"] == 1 and curve[-1]["loss"] < curve[0]["loss"]


def test_universal_checkpoint_holds_the_weights_both_processes_saved(stopped_on_two, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    job, _ = stopped_on_two
    checkpoint = job.work_dir / f"iter_{SAVED_STEP}.pth"
    gathered = get_fp32_state_dict_from_zero_checkpoint(str(job.work_dir), tag=checkpoint.name)
    universal = universal_checkpoint(checkpoint, saved_on=2, resumed_on=1)
    try:
        assert universal.name == checkpoint.name and zero_partitions(universal) == 0
        converted = {path.name: torch.load(path / "fp32.pt", weights_only=False)["param"]
                     for path in (universal / "zero").iterdir() if path.is_dir()}  # one folder per parameter
        assert converted.keys() == gathered.keys() and len(converted) > 20
        for name, weights in gathered.items():
            assert torch.equal(converted[name].reshape(weights.shape), weights), name
        moments = torch.load(universal / "zero" / next(iter(gathered)) / "exp_avg_sq.pt", weights_only=False)
        assert moments["param"].abs().sum() > 0  # Adam's state came along, not only the weights
    finally:
        shutil.rmtree(universal.parent)
    assert checkpoints(job.work_dir)[-1] == checkpoint  # the conversion is not taken for a checkpoint of its own


def test_a_two_process_checkpoint_resumes_on_one_at_the_same_place(stopped_on_two, prepared, tiny_model_path):
    job_on_one = zero2_job(prepared, tiny_model_path, processes=1)
    steps = planned_steps(job_on_one)
    assert steps == 45
    resumed = train(job_on_one, resume=True, progress=False)
    # step 10 of 23 is the same place in the data as step 20 of 45
    assert resumed.resumed_from_step == SAVED_STEP and resumed.first_resumed_step == 21
    assert resumed.steps == steps and not (job_on_one.work_dir / "universal").exists()
    assert zero_partitions(resumed.checkpoint) == 1
    curve = {row["step"]: row for row in training_curve(job_on_one.work_dir)}
    lrs = scheduled_lrs(job_on_one)
    for step in range(21, steps + 1):  # mmengine alone kept the 2-process schedule, which ends at step 23
        assert curve[step]["lr"] == pytest.approx(lrs[step - 1], rel=1e-6)
    assert curve[steps]["loss"] < curve[1]["loss"]
    assert run_processes(job_on_one.work_dir) == []


def test_place_schedulers_puts_a_resumed_schedule_where_an_uninterrupted_one_is(prepared):
    config = load_config(job_for(prepared, max_epochs=2))

    def schedule(epoch_length):
        optimizer = one_parameter_optimizer(config.optim_wrapper)
        return optimizer, build_schedulers(config.param_scheduler, optimizer, epoch_length)

    def lrs(optimizer, schedulers, steps):
        values = []
        for _ in range(steps):
            values.append(optimizer.param_groups[0]["lr"])
            for scheduler in schedulers:
                scheduler.step()
        return values

    reference = lrs(*schedule(45), 90)
    optimizer, saved = schedule(23)  # saved after 10 of 2 x 23 steps, resumed with 45 steps an epoch
    lrs(optimizer, saved, 10)
    place_schedulers(saved, config, epoch_length=45, step=20)
    assert saved[-1].end == 90 and saved[-1].last_step == 20 - saved[-1].begin  # the cosine part, on the new length
    assert lrs(optimizer, saved, 70) == pytest.approx(reference[20:], rel=1e-9)
