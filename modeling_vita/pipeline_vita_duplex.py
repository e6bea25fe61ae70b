"""`vita-duplex`: a transformers `Pipeline` for one VITA turn, and the door to a live duplex session.

A pipeline is one request and one response, so `pipe(audio=..., images=..., text=...)` runs a single turn: the
first generated tokens are constrained to spell a state token and the answer comes back without it. The
always-listening loop (VAD, interruption, one model in two roles) is stateful and threaded, so it lives in
`DuplexSession` and the pipeline only hands out sessions: `pipe.session(vad=VADParams(...), tts=None)`.

Register the task with `register_vita_duplex_pipeline()` (importing `modeling_vita` does), then
`pipeline("vita-duplex", model=model, processor=processor)`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from transformers import AutoModelForCausalLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .duplex_audio_input import SAMPLING_RATE
from .duplex_events import VitaState
from .duplex_session import DuplexSession
from .duplex_speech_output import TTSEngine
from .duplex_vad import VADParams
from .generation_vita import (
    VitaTurnStreamer,
    checkpoint_state_tokens,
    prepare_turn_inputs,
    run_turn,
    state_token_sequences,
)
from .remote_code import write_remote_code

logger = logging.getLogger(__name__)

TASK = "vita-duplex"


class VitaDuplexPipeline(Pipeline):
    """One VITA turn: `pipe(audio=..., images=None, text=None)` -> `{"state": ..., "text": ...}`.

    `state` is "query_audio", "noisy_audio" or "query_text"; `text` is the answer without the state token ("" for
    noisy audio). Without audio the input is a typed query and its state token is forced to `<3>`; with audio the
    model decides. `audio` is a path or a mono array at `sampling_rate` (default 16 kHz); `images` one image or a
    list. Generation parameters (`max_new_tokens=...`, `generate_kwargs={...}`) go to `generate` as in other
    transformers pipelines.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def __call__(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        audio: Any = None,
        images: Any = None,
        text: str | None = None,
        **kwargs: Any,
    ) -> dict[str, str]:
        if inputs is None:
            inputs = {"audio": audio, "images": images, "text": text}
        elif not isinstance(inputs, dict):
            raise ValueError(f"VitaDuplexPipeline takes audio=, images=, text= or one dict of them, found {inputs!r}")
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise ValueError(f"VitaDuplexPipeline got unexpected parameters {sorted(kwargs)}")
        preprocess_params = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        generate_kwargs = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("max_new_tokens is given twice (argument and generate_kwargs); expected one")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        return preprocess_params, {"generate_kwargs": generate_kwargs}, {}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the model, the whole processor (chat template, CMVN, tiling limits) and the code the pipeline needs,
        so that `pipeline("vita-duplex", model=save_directory, trust_remote_code=True)` works where this project is
        absent (the folder's code is the remote-code closure, see `remote_code.py`)."""
        os.makedirs(save_directory, exist_ok=True)
        self.model.config.custom_pipelines = custom_pipelines(type(self))
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)
        write_remote_code(save_directory)

    def _spellings(self) -> dict[VitaState, list[int]]:
        return state_token_sequences(self.processor.tokenizer, checkpoint_state_tokens(self.model, self.processor))

    def preprocess(self, inputs: dict[str, Any], sampling_rate: int = SAMPLING_RATE) -> dict[str, Any]:
        audio, images, text = inputs.get("audio"), inputs.get("images"), inputs.get("text")
        if audio is None and not text:
            raise ValueError("VitaDuplexPipeline needs audio or text, found neither")
        if images is None:
            images = []
        elif not isinstance(images, (list, tuple)):
            images = [images]
        content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
        if audio is not None:
            if isinstance(audio, np.ndarray) and sampling_rate != SAMPLING_RATE:
                audio = (audio, sampling_rate)
            content.append({"type": "audio", "audio": audio})
        if text:
            content.append({"type": "text", "text": text})
        model_inputs = prepare_turn_inputs(self.processor, [{"role": "user", "content": content}], self.model)
        model_inputs["forced_state"] = VitaState.QUERY_TEXT if audio is None else None
        return model_inputs

    def _forward(self, model_inputs: dict[str, Any], generate_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        forced_state = model_inputs.pop("forced_state")
        streamer = VitaTurnStreamer(self.processor.tokenizer, self._spellings())
        allowed = None if forced_state is None else [forced_state]
        run_turn(
            self.model, model_inputs, streamer, allowed, self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        )
        return {"state": streamer.state, "text": streamer.text}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, str]:
        state = model_outputs["state"]
        if state is None:  # cannot happen with the state constraint, unless generation was cut at zero tokens
            names = [state.value for state in VitaState]
            raise ValueError(f"the answer opens with no state token; expected one of {names}")
        return {"state": state, "text": model_outputs["text"].strip()}

    def session(
        self,
        vad: VADParams | None = None,
        tts: TTSEngine | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        **session_kwargs: Any,
    ) -> DuplexSession:
        """A live `DuplexSession` over this pipeline's model and processor, with the pipeline's generation settings."""
        generation_kwargs = self._prepare_generate_kwargs(dict(generation_kwargs or {}))
        return DuplexSession(
            self.model, self.processor, vad=vad, tts=tts, generation_kwargs=generation_kwargs, **session_kwargs
        )


def custom_pipelines(pipeline_class: type = VitaDuplexPipeline) -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` entry of a saved config.json that makes `pipeline("vita-duplex", model=folder,
    trust_remote_code=True)` load `pipeline_class` from the folder's own code."""
    impl = f"{pipeline_class.__module__.rpartition('.')[2]}.{pipeline_class.__name__}"
    return {TASK: {"impl": impl, "pt": (AutoModelForCausalLM.__name__,), "type": "multimodal"}}


def register_vita_duplex_pipeline() -> None:
    """Make `pipeline("vita-duplex", ...)` available in this process (and saved with `pipe.save_pretrained`)."""
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=VitaDuplexPipeline, pt_model=AutoModelForCausalLM, type="multimodal"
    )


__all__ = ["VitaDuplexPipeline", "custom_pipelines", "register_vita_duplex_pipeline"]
