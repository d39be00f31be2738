"""Lesson 04's launcher: ``xtuner train`` in a subprocess, with progress, a live curve, resume and real errors.

:func:`train` runs XTuner's own training script (``python -m xtuner.tools.train``, what ``xtuner train`` runs)
with the kernel's Python and that environment's ``bin/`` first on ``PATH``, so the subprocess sees the same
packages as the notebook. While it trains:

* progress and the live loss / learning-rate curve come from mmengine's scalar log
  (``<work dir>/<timestamp>/vis_data/scalars.json``, one JSON line per logged step), not from the console text;
* peak memory is the most the training processes held (resident memory on a CPU, mmengine's ``memory`` figure,
  ``torch.cuda.max_memory_allocated``, on a GPU);
* a failure raises :class:`TrainingFailed` with the last lines of XTuner's own log;
* an interrupted run is resumed from its newest checkpoint with ``resume=True`` (the optimizer state is saved,
  so the run continues at the next step with the scheduled learning rate).

A work dir holding another run's checkpoints is refused unless the call says ``resume=True`` or ``fresh=True``.
On a GPU the lesson trains as the original one did, with ``--deepspeed deepspeed_zero2``; several GPUs run
through ``torchrun`` (``nproc_per_node``), exactly the command ``xtuner train`` builds from ``NPROC_PER_NODE``.
A DeepSpeed ZeRO checkpoint resumes on another number of GPUs through DeepSpeed's universal checkpoint
(:func:`universal_checkpoint`), and the run goes on at the same place in its data and learning-rate schedule
(``xtuner_patches.ResumeAtSamePlace``). Several processes also run on a CPU (gloo), which is how the tests check it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..engines.interface import cuda_available
from ..engines.serving import choose_port
from ..errors import CourseError
from ..outputs import course_folder, is_course_output, staged_file
from ..paths import project_root

FINETUNE_KIND = "finetune-run"
MANIFEST_FILE = "course-finetune.json"
LOG_FILE = "xtuner-train.log"
LAST_CHECKPOINT_FILE = "last_checkpoint"  # mmengine writes the newest checkpoint's path here once it is saved
CHECKPOINT_PATTERN = re.compile(r"^iter_(\d+)\.pth$")
ERROR_LINES = 25
DEEPSPEED_CONFIG_FILE = "deepspeed.json"  # the DeepSpeed config the launcher wrote for a launch, when it wrote one
UNIVERSAL_FOLDER = "universal"  # a ZeRO checkpoint converted for another number of GPUs, while it is resumed


class TrainingFailed(CourseError):
    """``xtuner train`` exited with an error; the message carries the end of its log."""


class TrainingRefused(CourseError, ValueError):
    """The work dir holds another run's checkpoints and the call did not say what to do with them, or holds a
    checkpoint this launch cannot resume."""


def one_process_group(env: dict) -> dict[str, str]:
    """The variables a one-process torchrun would give DeepSpeed, for a run started without torchrun.

    DeepSpeed sets up a one-process group itself. Without RANK, LOCAL_RANK and WORLD_SIZE it looks for an MPI
    launcher instead ("No module named 'mpi4py'" where mpi4py is not installed); and its default port 29500 may be
    another run's (say, a learner's second notebook: "address already in use"), so a free one is chosen unless
    ``env`` names one.
    """
    group = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    if "MASTER_PORT" not in env:
        group.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(choose_port("127.0.0.1", None)))
    return group


def float32_precision(deepspeed: dict) -> dict:
    """A DeepSpeed config that trains in float32: fp16 and bf16 off (a CPU, where the course's recipe trains in
    float32; XTuner's ``"auto"`` would turn fp16 on there, since it asks only whether the device exists)."""
    for precision in ("fp16", "bf16"):
        if precision in deepspeed:
            deepspeed[precision]["enabled"] = False
    return deepspeed


@dataclass
class TrainingJob:
    """One fine-tuning run: what ``xtuner train`` is given (every path comes from here, never from the config)."""

    config: Path  # an XTuner config in the repo's configs/
    model_path: str  # base model folder (or hub id)
    train_json: Path  # lesson 03's train.json
    image_folder: Path  # where train.json's image paths start
    work_dir: Path  # RUN_DIR/finetune/<run name>
    validation_json: Path | None = None  # lesson 03's test.json: the loss on held-out dishes after every epoch
    max_epochs: int | None = None  # None: the config's value
    save_steps: int | None = None
    log_interval: int | None = None
    deepspeed: str | None = None  # e.g. "deepspeed_zero2" (XTuner's name) or a DeepSpeed JSON file
    nproc_per_node: int = 1  # GPUs on this machine; more than one runs through torchrun
    extra_env: dict = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The subprocess's environment: this Python's bin/ first, the course importable, the job's paths."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        others = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path and path != str(project_root())]
        env["PYTHONPATH"] = os.pathsep.join([str(project_root()), *others])
        env["PYTHONUNBUFFERED"] = "1"
        env["COURSE_MODEL_PATH"] = str(self.model_path)
        env["COURSE_TRAIN_JSON"] = str(Path(self.train_json).resolve())
        env["COURSE_IMAGE_FOLDER"] = str(Path(self.image_folder).resolve())
        if self.validation_json is not None:
            env["COURSE_VALIDATION_JSON"] = str(Path(self.validation_json).resolve())
        env["COURSE_DIST_BACKEND"] = "nccl" if cuda_available() else "gloo"  # how the processes talk
        for name, value in (("COURSE_MAX_EPOCHS", self.max_epochs), ("COURSE_SAVE_STEPS", self.save_steps),
                            ("COURSE_LOG_INTERVAL", self.log_interval)):
            if value is not None:
                env[name] = str(int(value))
        if self.deepspeed and self.nproc_per_node == 1:
            env.update(one_process_group(env))
        env.update({key: str(value) for key, value in self.extra_env.items()})
        return env

    def command(self, resume_from: Path | None = None, deepspeed: str | None = None) -> list[str]:
        """The training command: ``python -m xtuner.tools.train CONFIG --work-dir ...`` (torchrun for several GPUs).

        ``deepspeed`` replaces the job's DeepSpeed config for this launch (:func:`deepspeed_config`)."""
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node must be at least 1, got {self.nproc_per_node}")
        args = [str(Path(self.config).resolve()), "--work-dir", str(Path(self.work_dir).resolve())]
        if deepspeed or self.deepspeed:
            args += ["--deepspeed", str(deepspeed or self.deepspeed)]
        if resume_from is not None:
            args += ["--resume", str(resume_from)]
        if self.nproc_per_node == 1:
            return [sys.executable, "-m", "xtuner.tools.train", *args]
        # what `NPROC_PER_NODE=N xtuner train ...` runs; called directly, its exit status is the training's
        import xtuner.tools.train

        port = os.environ.get("PORT") or str(choose_port("127.0.0.1", None))
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0",
                f"--nproc_per_node={self.nproc_per_node}", "--master_addr=127.0.0.1", f"--master_port={port}",
                xtuner.tools.train.__file__, *args, "--launcher", "pytorch"]

    def iters_per_epoch(self, batch_size: int) -> int:
        samples = len(json.loads(Path(self.train_json).read_text(encoding="utf-8")))
        return math.ceil(samples / (batch_size * self.nproc_per_node))


# ----------------------------------------------------------------------------------------------- the work dir
def checkpoints(work_dir: str | Path) -> list[Path]:
    """``iter_N.pth`` checkpoints in a work dir, oldest first (by N): files, or folders with DeepSpeed."""
    work_dir = Path(work_dir)
    found = [(int(m.group(1)), p) for p in work_dir.glob("iter_*.pth") if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


def newest_checkpoint(work_dir: str | Path) -> Path | None:
    found = checkpoints(work_dir)
    return found[-1] if found else None


def last_saved_step(work_dir: str | Path) -> int | None:
    """The step of the newest complete checkpoint: mmengine names it in ``last_checkpoint`` once it is saved."""
    try:
        return checkpoint_step((Path(work_dir) / LAST_CHECKPOINT_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):  # no checkpoint yet, or the name is being written
        return None


def zero_partitions(checkpoint: str | Path) -> int:
    """How many GPUs saved a DeepSpeed ZeRO checkpoint (one optimizer-state file each); 0 for mmengine's own
    checkpoint file, whose optimizer state is whole."""
    return len(list(Path(checkpoint).glob("*zero_pp_rank_*_optim_states.pt"))) if Path(checkpoint).is_dir() else 0


def deepspeed_config(job: TrainingJob, load_universal: bool = False) -> Path | None:
    """The DeepSpeed config file this launch needs, written into the work dir; None where the job's own does.

    Two cases need one: a machine without CUDA, where XTuner's ``"auto"`` precision asks
    ``torch.cpu.is_bf16_supported`` (missing in torch 2.8) and fails, so ``"auto"`` becomes off (float32, as the
    CPU recipe trains); and a resume from a universal checkpoint, which DeepSpeed loads only when its config says
    ``"checkpoint": {"load_universal": true}``.
    """
    if not job.deepspeed or (cuda_available() and not load_universal):
        return None
    from xtuner.configs import cfgs_name_path  # XTuner's names, e.g. deepspeed_zero2, as `xtuner train` reads them

    source = Path(job.deepspeed) if Path(job.deepspeed).is_file() else Path(cfgs_name_path.get(job.deepspeed, ""))
    if not source.is_file():
        raise FileNotFoundError(f"no DeepSpeed config {job.deepspeed!r}: give a JSON file or one of XTuner's names "
                                "(deepspeed_zero1, deepspeed_zero2, deepspeed_zero3, ...)")
    config = json.loads(source.read_text(encoding="utf-8"))
    if not cuda_available():
        float32_precision(config)
    if load_universal:
        config.setdefault("checkpoint", {})["load_universal"] = True
    path = Path(job.work_dir) / DEEPSPEED_CONFIG_FILE
    with staged_file(path) as staging:
        staging.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


def universal_checkpoint(checkpoint: Path, saved_on: int, resumed_on: int) -> Path:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format, which loads on any number of GPUs.

    ZeRO keeps a share of the optimizer state on each GPU, and DeepSpeed 0.16 loads such a checkpoint only on as
    many ("Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is not currently
    supported"). ``deepspeed.checkpoint.ds_to_universal`` gathers every parameter's float32 weights and Adam moments
    into a file of their own. The result goes to ``<work dir>/universal/iter_N.pth`` (the checkpoint's own name,
    which the resume reads its step from); the original stays as it is.
    """
    target = checkpoint.parent / UNIVERSAL_FOLDER / checkpoint.name
    shutil.rmtree(target.parent, ignore_errors=True)  # the course's own conversion of an earlier attempt
    # XTuner's checkpoints lack the version mark Megatron-DeepSpeed writes; --inject_missing_state adds it
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(checkpoint),
               "--output_folder", str(target), "--inject_missing_state", "--num_extract_workers", "2",
               "--num_merge_workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        shutil.rmtree(target.parent, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-ERROR_LINES:])
        raise TrainingFailed(f"{checkpoint.name} was saved on {saved_on} GPUs and this launch has {resumed_on}; "
                             f"converting it to DeepSpeed's universal checkpoint failed:\n{tail}")
    return target


@contextlib.contextmanager
def launch_inputs(job: TrainingJob, checkpoint: Path | None):
    """What one launch is given: the checkpoint to resume from (``checkpoint`` itself, or its universal conversion
    when ZeRO saved it on another number of GPUs than the job has) and the DeepSpeed config file it needs (None:
    the job's own). A universal conversion is read when the launch starts and removed when the launch ends."""
    saved = zero_partitions(checkpoint) if checkpoint is not None else 0
    if saved and not job.deepspeed:
        raise TrainingRefused(f"{checkpoint.name} was saved by DeepSpeed ZeRO: resume it with the DeepSpeed config it "
                              f"trained with (deepspeed='deepspeed_zero2', say), or start again with fresh=True")
    if not saved or saved == job.nproc_per_node:
        yield checkpoint, deepspeed_config(job)
        return
    universal = universal_checkpoint(checkpoint, saved, job.nproc_per_node)
    try:
        yield universal, deepspeed_config(job, load_universal=True)
    finally:
        shutil.rmtree(universal.parent, ignore_errors=True)


def checkpoint_step(path: str | Path) -> int:
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not an XTuner checkpoint iter_N.pth")
    return int(match.group(1))


def scalar_logs(work_dir: str | Path) -> list[Path]:
    """mmengine's ``scalars.json`` of every launch in a work dir, oldest first (timestamped folders sort by time)."""
    return sorted(Path(work_dir).glob("*/vis_data/scalars.json"))


def read_scalars(path: str | Path) -> list[dict]:
    """The logged steps of one ``scalars.json`` (a line being written is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def training_curve(work_dir: str | Path, key: str = "loss") -> list[dict]:
    """Every logged step of a run, across its launches; a resumed launch replaces the steps it trains again.

    ``key="val_loss"`` gives the validation rows instead (``xtuner_patches.ValidationLoss``: step 0, then the end of
    every epoch)."""
    by_step: dict[int, dict] = {}
    for path in scalar_logs(work_dir):
        for row in read_scalars(path):
            if key in row:
                by_step[int(row["step"])] = row
    return [by_step[step] for step in sorted(by_step)]


def prepare_work_dir(work_dir: str | Path, resume: bool, fresh: bool) -> Path | None:
    """Check the work dir against the write rule; the checkpoint to resume from (None: start at step 0).

    A work dir with checkpoints is refused unless ``resume`` (continue from the newest) or ``fresh`` (remove this
    course run's checkpoints and logs, start again); a folder the course did not make is never touched.
    """
    if resume and fresh:
        raise ValueError("resume=True continues the run in the work dir and fresh=True discards it: choose one")
    work_dir = Path(work_dir)
    existing = checkpoints(work_dir) if work_dir.is_dir() else []
    if fresh and work_dir.is_dir() and is_course_output(work_dir, FINETUNE_KIND):
        for child in work_dir.iterdir():
            if child.name != ".course-output.json":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        existing = []
    course_folder(work_dir, FINETUNE_KIND)  # refuses a foreign folder
    if existing and not resume:
        raise TrainingRefused(
            f"{work_dir} already holds the checkpoints of a run (newest {existing[-1].name}): pass resume=True to "
            "continue it, fresh=True to start again from step 0, or choose another run name"
        )
    if not existing:
        return None  # nothing to resume: a first launch
    # the newest complete one: a run stopped during a save leaves a newer, partial iter_N.pth
    saved = last_saved_step(work_dir)
    complete = [path for path in existing if checkpoint_step(path) == saved]
    return (complete or existing)[-1]


# ----------------------------------------------------------------------------------------------- running
@dataclass
class TrainingResult:
    work_dir: Path
    steps: int  # the last step trained
    first_loss: float | None
    final_loss: float | None
    resumed_from_step: int | None  # the checkpoint's step, when this launch resumed
    first_resumed_step: int | None  # the first step this launch logged, when it resumed
    peak_memory_mb: float
    seconds: float
    checkpoint: Path | None
    stopped_early: bool = False  # stopped by ``stop_after_step`` (a simulated interruption)

    def to_dict(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


def _process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (dataloader workers), in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _log_tail(log_path: Path, lines: int = ERROR_LINES) -> str:
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _stop(process: subprocess.Popen) -> None:
    """End every process of the training at once, as a power cut would, and wait for them.

    The trainer and its dataloader workers share the launch's process group, but torchrun starts each GPU's worker
    in a session of its own: killing torchrun's group alone left those workers training on (and saving checkpoints
    into the work dir) after the launcher had returned. So the whole tree is listed first, then killed.
    """
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:  # it has already exited
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass
    process.wait()
    psutil.wait_procs(descendants, timeout=30)


def train(
    job: TrainingJob,
    resume: bool = False,
    fresh: bool = False,
    total_steps: int | None = None,
    stop_after_step: int | None = None,
    progress: bool = True,
    on_update=None,
    poll_seconds: float = 0.5,
) -> TrainingResult:
    """Run ``xtuner train`` for ``job`` and wait for it; see the module docstring.

    ``total_steps`` sizes the progress bar (see :func:`planned_steps`). ``stop_after_step`` kills the run as a
    power cut would, once the checkpoint of that step is on disk (lesson 04 shows resuming with it).
    ``on_update(curve)`` is called with the logged steps whenever new ones arrive (the lesson's live plot).
    """
    from tqdm.auto import tqdm

    work_dir = Path(job.work_dir).resolve()
    resume_from = prepare_work_dir(work_dir, resume=resume, fresh=fresh)
    launches_before = set(scalar_logs(work_dir))
    log_path = work_dir / LOG_FILE
    start_step = checkpoint_step(resume_from) if resume_from else 0
    started = time.monotonic()
    peak_rss = 0.0
    seen_rows = 0
    stopped_early = False
    with launch_inputs(job, resume_from) as (load_from, deepspeed), open(log_path, "a", encoding="utf-8") as log:
        bar = tqdm(total=total_steps, initial=start_step, desc="xtuner train", unit="step", disable=not progress)
        process = subprocess.Popen(job.command(load_from, deepspeed), env=job.environment(), cwd=work_dir, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                finished = process.poll() is not None
                peak_rss = max(peak_rss, _process_tree_rss_mb(process.pid))
                new_logs = [p for p in scalar_logs(work_dir) if p not in launches_before]
                rows = [r for r in read_scalars(new_logs[-1]) if "loss" in r] if new_logs else []
                if len(rows) > seen_rows:
                    bar.update(int(rows[-1]["step"]) - bar.n)
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}", lr=f"{rows[-1]['lr']:.2e}")
                    seen_rows = len(rows)
                    if on_update is not None:
                        on_update(training_curve(work_dir))
                if stop_after_step is not None and (last_saved_step(work_dir) or 0) >= stop_after_step:
                    _stop(process)
                    stopped_early = True
                    break
                if finished:
                    break
                time.sleep(poll_seconds)
        except BaseException:  # an interrupted cell stops the training too, and keeps its checkpoints
            _stop(process)
            bar.close()
            raise
    bar.close()
    if not stopped_early and process.returncode != 0:
        raise TrainingFailed(
            f"xtuner train stopped with exit status {process.returncode}. The end of its log ({log_path}):\n"
            f"{_log_tail(log_path)}"
        )
    new_logs = [p for p in scalar_logs(work_dir) if p not in launches_before]
    launch_rows = [r for r in read_scalars(new_logs[-1]) if "loss" in r] if new_logs else []
    curve = training_curve(work_dir)
    gpu_memory = max((float(r.get("memory", 0)) for r in curve), default=0.0)
    newest = newest_checkpoint(work_dir)
    return TrainingResult(
        work_dir=work_dir,
        steps=checkpoint_step(newest) if newest else 0,
        first_loss=curve[0]["loss"] if curve else None,
        final_loss=curve[-1]["loss"] if curve else None,
        resumed_from_step=start_step if resume_from else None,
        first_resumed_step=int(launch_rows[0]["step"]) if resume_from and launch_rows else None,
        peak_memory_mb=round(gpu_memory or peak_rss, 1),
        seconds=round(time.monotonic() - started, 1),
        checkpoint=newest,
        stopped_early=stopped_early,
    )
