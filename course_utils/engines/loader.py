"""``load_engine``: the one place that picks a backend and imports it, so imports run one way
(loader -> backends -> interface)."""

from __future__ import annotations

from pathlib import Path

from .interface import Engine, choose_backend

BACKENDS = ("auto", "transformers", "lmdeploy", "turbomind")


def load_engine(model_path, backend: str = "auto", *, dtype: str = "auto", device: str | None = None,
                max_dynamic_patch: int | None = None, session_len: int | None = None,
                cache_max_entry_count: float | None = None, max_batch_size: int | None = None, tp: int = 1,
                vision_batch_size: int | None = None, executor: str | None = None,
                quant_policy: int | None = None) -> Engine:
    """Load ``model_path`` (any InternVL2 folder) with ``backend`` ("auto", "transformers", "lmdeploy" or
    "turbomind"). The knobs are explained in :data:`.interface.KNOBS`; None keeps each backend's default. ``tp``
    splits the model over that many GPUs (LMDeploy); ``executor`` is how LMDeploy's PyTorch engine runs it
    (``lmdeploy_engine.backend_config``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "auto":
        backend, _ = choose_backend()
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist: pass an InternVL2 folder (the README shows "
                                "how to download one) or leave MODEL_PATH unset for the embedded tiny model")
    knobs = dict(dtype=dtype, max_dynamic_patch=max_dynamic_patch, session_len=session_len,
                 cache_max_entry_count=cache_max_entry_count, max_batch_size=max_batch_size, tp=tp,
                 vision_batch_size=vision_batch_size, quant_policy=quant_policy)
    if backend == "transformers":
        from .transformers_engine import TransformersEngine

        if executor is not None:
            raise ValueError(f"executor={executor!r} is LMDeploy's: the transformers engine runs in this process")
        return TransformersEngine(path, device=device, **knobs)
    from .lmdeploy_engine import LMDeployEngine

    if device not in (None, "cuda"):
        raise ValueError(f"LMDeploy runs on the CUDA GPU only (got device={device!r}): use backend='transformers'")
    return LMDeployEngine(path, engine=backend, executor=executor, **knobs)
