"""The whole course on a GPU: every lesson 00 -> 06 under papermill in GPU mode on the tiny base model, then
lessons 02, 04, 05 and 06 on the InternVL2-2B-shaped preset (random weights, real shapes) as ``MODEL_PATH``.

A maintainer with a CUDA GPU and the course environment reruns it with

    python benchmarks/gpu_course.py            # writes benchmarks/results/gpu_course.json and prints a table

Each lesson runs with the parameters in ``GPU_PARAMETERS`` (LMDeploy engines, DeepSpeed ZeRO-2 training) and in
smoke mode, exactly as ``make course`` runs it on a CPU; its time, result and recorded figures go to the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# GPU mode of each lesson: the values its tagged parameters cell offers for a GPU.
GPU_PARAMETERS: dict[str, dict] = {
    "00": {"require_gpu": True},
    "02": {"BACKEND": "lmdeploy"},
    "04": {"DEEPSPEED": "deepspeed_zero2"},
    "05": {"BACKEND": "lmdeploy"},
    "06": {"BACKEND": "lmdeploy"},
}
# The 2B-shaped preset (a MODEL_PATH of InternVL2-2B's shapes, random weights) runs the lessons whose cost grows
# with the model: serving, and the learner's path 04 -> 05 -> 06 (LoRA with ZeRO-2, conversion, LMDeploy). Its
# lesson 04 trains one epoch of lesson 03's default split (45 steps of 4 x 2), interrupted at step 20 and resumed.
PRESET_LESSONS = ("02", "04", "05", "06")
PRESET_PARAMETERS: dict[str, dict] = {"04": {"MAX_EPOCHS": 1}}


def gpu_description() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU is visible: this runner measures the course's GPU mode")
    properties = torch.cuda.get_device_properties(0)
    return {"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "torch": torch.__version__, "python": platform.python_version()}


def run_lessons(lessons, out_dir: Path, env: dict[str, str] | None = None, extra: dict[str, dict] | None = None,
                save=lambda outcomes: None):
    """Execute ``lessons`` in order in GPU mode; returns their outcomes as dicts, passing them to ``save`` after each
    lesson so that an interrupted run keeps what it measured."""
    import papermill

    from course_utils.course_run import find_notebook, format_figure, run_lesson

    outcomes = []
    for number in lessons:
        notebook = find_notebook(number)
        declared = papermill.inspect_notebook(str(notebook))
        wanted = {**GPU_PARAMETERS.get(number, {}), **(extra or {}).get(number, {})}
        parameters = {name: value for name, value in wanted.items() if name in declared}
        ignored = sorted(set(wanted) - set(parameters))
        print(f"running {notebook.stem} with {parameters}" + (f" (not declared: {ignored})" if ignored else ""),
              flush=True)
        run = run_lesson(notebook, out_dir, smoke=True, parameters=parameters, env=env)
        print(f"  {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s" + (f": {run.error}" if run.error else ""))
        for name, value in run.figures.items():
            print(f"    {name} = {format_figure(value)}")
        outcomes.append({"lesson": notebook.stem, "parameters": parameters, "ok": run.ok,
                         "seconds": round(run.seconds, 1), "error": run.error, "figures": run.figures})
        save(outcomes)
    return outcomes


def build_preset_model(folder: Path) -> Path:
    """The InternVL2-2B-shaped model with random weights (2.2 B parameters, bf16), built on the GPU."""
    from course_utils.tiny_model import build_model_dir, is_current_build

    if is_current_build(folder, preset="internvl2-2b"):
        return folder
    return build_model_dir(folder, preset="internvl2-2b", device="cuda")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_course.json")
    parser.add_argument("--lessons", nargs="*", default=None,
                        help="tiny-model lessons to run (default: all; none when given no number)")
    parser.add_argument("--preset-lessons", nargs="*", default=list(PRESET_LESSONS),
                        help=f"lessons to run on the 2B-shaped preset (default: {' '.join(PRESET_LESSONS)})")
    parser.add_argument("--executed", type=Path, default=None, help="folder for the executed notebooks")
    args = parser.parse_args(argv)

    from course_utils.course_run import build_embedded_defaults, list_notebooks

    # A run of some lessons keeps the other lessons of an earlier run in the same file, each part with its machine.
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    machine = gpu_description()
    executed = args.executed or Path(tempfile.mkdtemp(prefix="gpu-course-"))

    def saver(part):
        earlier = list(results.get(part, {}).get("lessons", []))

        def save(outcomes):
            rerun = {o["lesson"] for o in outcomes}
            lessons = sorted([o for o in earlier if o["lesson"] not in rerun] + outcomes, key=lambda o: o["lesson"])
            results[part] = {"machine": machine, "lessons": lessons}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return save

    for line in build_embedded_defaults():
        print(line)
    lessons = [path.name[:2] for path in list_notebooks()] if args.lessons is None else args.lessons
    if lessons:
        run_lessons(lessons, executed / "tiny", save=saver("tiny_model"))
    if args.preset_lessons:
        preset = build_preset_model(Path(os.environ.get("RUN_DIR", ROOT / "runs")) / "models" / "internvl2-2b-random")
        run_lessons(args.preset_lessons, executed / "preset", env={"MODEL_PATH": str(preset)},
                    extra=PRESET_PARAMETERS, save=saver("internvl2_2b_preset"))
    print(f"results: {args.out}")
    failed = [o["lesson"] for part in ("tiny_model", "internvl2_2b_preset")
              for o in results.get(part, {}).get("lessons", []) if not o["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
