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
through `prepare_turn` and `run_turn`, the real-time tab gets a `DuplexSession` per visitor from `new_session`.

Two backends: `VitaRuntime` runs turns on transformers' `generate` (the default); `VllmRuntime` (`--backend vllm`) is
one vLLM engine (`modeling_vita.duplex_vllm_backend.VllmEngine`, started on the checkpoint folder) whose continuous
batching serves every visitor's chat and real-time turns; there `model` is None and only the folder's processor is
loaded in this process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoProcessor, PreTrainedModel, ProcessorMixin

from modeling_vita.duplex_session import DuplexSession
from modeling_vita.generation_vita import (
    VitaTurnStreamer,
    checkpoint_state_tokens,
    prepare_turn_inputs,
    run_turn,
    state_token_sequences,
)
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


class SpaceRuntime:
    """What both backends give the Space: the processor, the state tokens, sessions and one chat turn."""

    model_path: str | None
    processor: ProcessorMixin

    @property
    def model(self) -> PreTrainedModel | None:
        return None

    @cached_property
    def state_tokens(self) -> dict[VitaState, str]:
        """The string the checkpoint writes for each state, as the page shows it."""
        return {VitaState(name): token for name, token in self.processor.state_tokens.items()}

    @cached_property
    def state_spellings(self) -> dict[VitaState, list[int]]:
        """The token ids that spell each state token (what the state constraint and the turn streamer read)."""
        return state_token_sequences(self.processor.tokenizer, self.state_tokens)

    def new_session(self, **session_kwargs: Any) -> DuplexSession:
        raise NotImplementedError

    def prepare_turn(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The inputs of one chat turn (raises on bad media before the turn is counted)."""
        raise NotImplementedError

    def run_turn(
        self,
        prepared: dict[str, Any],
        streamer: VitaTurnStreamer,
        allowed_states: list[VitaState] | None,
        generation_kwargs: dict[str, Any],
    ) -> None:
        """Generate one chat answer into `streamer`; setting `streamer.stop` ends it within a step."""
        self.turn_runner()(prepared, streamer, allowed_states, generation_kwargs)

    def turn_runner(self) -> Callable[..., Any]:
        """The backend's `run_turn(prepared, streamer, allowed_states, generation_kwargs)`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runtime started (nothing for transformers; the engine for vLLM)."""


@dataclass
class VitaRuntime(SpaceRuntime):
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
        """The processor's `state_tokens`, checked against the model config's."""
        return {VitaState(name): token for name, token in checkpoint_state_tokens(self.model, self.processor).items()}

    def new_session(self, **session_kwargs: Any) -> DuplexSession:
        """A `DuplexSession` over the shared model (`pipe.session(...)`; arguments as `DuplexSession` takes them)."""
        return self.pipe.session(**session_kwargs)

    def prepare_turn(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return prepare_turn_inputs(self.processor, messages, self.model)

    def turn_runner(self) -> Callable[..., Any]:
        return partial(run_turn, self.model)


@dataclass
class VllmRuntime(SpaceRuntime):
    """A vLLM engine serving the checkpoint, shared by every browser session (`--backend vllm`).

    Args:
        engine: a `VllmEngine` on the checkpoint folder.
        processor: the folder's `VitaProcessor` (`engine.load_processor()`).
        model_path: the folder the engine serves.
    """

    engine: Any
    processor: ProcessorMixin
    model_path: str | None = None

    def new_session(self, **session_kwargs: Any) -> DuplexSession:
        """A `DuplexSession` whose turns are requests to the shared engine."""
        return DuplexSession(None, self.processor, backend="vllm", engine=self.engine, **session_kwargs)

    def prepare_turn(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        from modeling_vita.duplex_vllm_backend import vllm_prompt

        return vllm_prompt(self.processor, messages)

    def turn_runner(self) -> Callable[..., Any]:
        return self.engine.run_turn

    def close(self) -> None:
        self.engine.close()


def load_runtime(
    model: str | None = None,
    device: str | None = None,
    backend: str = "transformers",
    engine_args: dict[str, Any] | None = None,
) -> SpaceRuntime:
    """Load the checkpoint once for the whole process (on the GPU when there is one).

    transformers: the model and processor come from the checkpoint (`trust_remote_code=True`, see the module
    docstring); the pipeline around them is the installed `VitaDuplexPipeline`. vllm: a `VllmEngine` on the folder
    (`engine_args`: vLLM engine arguments) and the folder's processor; vLLM runs none of the folder's code (the
    installed plugin serves it).
    """
    model_path = resolve_model_path(model)
    if backend == "vllm":
        from modeling_vita.duplex_vllm_backend import start_engine

        logger.info("starting a vLLM engine on %s (%s)", model_path, engine_args or "default engine arguments")
        engine, processor = start_engine(model_path, **(engine_args or {}))
        return VllmRuntime(engine, processor, model_path=model_path)
    if backend != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'vllm', found {backend!r}")
    if engine_args:
        raise ValueError(
            f"engine_args are vLLM engine arguments; found {sorted(engine_args)} with backend 'transformers'"
        )
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
    "SpaceRuntime",
    "VitaRuntime",
    "VllmRuntime",
    "default_history_turns",
    "load_runtime",
    "resolve_model_path",
]
