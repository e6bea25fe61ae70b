"""The model side of the VITA Space: one checkpoint per process, served through the installed `vita-hf` packages.

A Space holds this folder, a checkpoint folder and `requirements.txt`, which installs this project (`vita-hf`: the
packages `modeling_vita` and `processing_vita`). The model and the processor are loaded from the checkpoint as the
`vita-duplex` command loads them, with `trust_remote_code=True`: a class the installed packages register comes from
them (importing `modeling_vita` registers VITA's model and processor classes, and transformers 5 prefers a class
registered in the process to a folder's copy of it), any other from the checkpoint's own code (every folder this
project exports carries its modeling and processing code). Everything around the model comes from the
installed `modeling_vita`: the `VitaDuplexPipeline`, its `DuplexSession`, the event classes, the speech engines and
the timeline. A checkpoint's own copies of the pipeline and session files are never imported, so the events the
Space checks with `isinstance` are always the classes the session makes them with, whatever the checkpoint carries.

The model is loaded once (`load_runtime`) and shared read-only by every browser session: the chat tab runs its turns
on `runtime.model` and `runtime.processor`, the real-time tab gets a `DuplexSession` per visitor from `new_session`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoProcessor, PreTrainedModel, ProcessorMixin

from modeling_vita.duplex_session import DuplexSession
from modeling_vita.generation_vita import checkpoint_state_tokens, state_token_sequences
from modeling_vita.pipeline_vita_duplex import VitaDuplexPipeline
from processing_vita import VitaState

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "vita-tiny"
MODEL_ENV = "VITA_MODEL"
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


@dataclass
class VitaRuntime:
    """A loaded VITA model behind the installed `VitaDuplexPipeline`, shared read-only by every browser session.

    Args:
        pipe: the pipeline over the model and processor (`VitaDuplexPipeline(model=..., processor=...)`).
        model_path: where the checkpoint was loaded from (None for a model built in memory).
    """

    pipe: VitaDuplexPipeline
    model_path: str | None = None

    @property
    def model(self) -> PreTrainedModel:
        return self.pipe.model

    @property
    def processor(self) -> ProcessorMixin:
        return self.pipe.processor

    @cached_property
    def state_tokens(self) -> dict[VitaState, str]:
        """The string the checkpoint writes for each state (the processor's `state_tokens`, checked against the
        model config's), as the page shows it."""
        return {VitaState(name): token for name, token in checkpoint_state_tokens(self.model, self.processor).items()}

    @cached_property
    def state_spellings(self) -> dict[VitaState, list[int]]:
        """The token ids that spell each state token (what the state constraint and the turn streamer read)."""
        return state_token_sequences(self.processor.tokenizer, self.state_tokens)

    def new_session(self, **session_kwargs: Any) -> DuplexSession:
        """A `DuplexSession` over the shared model (`pipe.session(...)`; arguments as `DuplexSession` takes them)."""
        return self.pipe.session(**session_kwargs)


def load_runtime(model: str | None = None, device: str | None = None) -> VitaRuntime:
    """Load the checkpoint once for the whole process (on the GPU when there is one).

    The model and processor come from the checkpoint (`trust_remote_code=True`, see the module docstring); the
    pipeline around them is the installed `VitaDuplexPipeline`.
    """
    model_path = resolve_model_path(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("loading the VITA checkpoint %s on %s", model_path, device)
    vita = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    pipe = VitaDuplexPipeline(model=vita, processor=processor, device=device)
    logger.info("serving %s: model %s, processor %s", model_path, type(vita).__module__, type(processor).__module__)
    return VitaRuntime(pipe, model_path=model_path)


__all__ = [
    "DEFAULT_MODEL_DIR",
    "HISTORY_TURNS",
    "MODEL_ENV",
    "VitaRuntime",
    "default_history_turns",
    "load_runtime",
    "resolve_model_path",
]
