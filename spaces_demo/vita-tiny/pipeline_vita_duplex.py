"""`vita-duplex`: a transformers `Pipeline` for one VITA turn, and the door to a live duplex session.

A pipeline is one request and one response (`reference/hf_conventions.md` section 2.5), so `pipe(audio=..., images=...,
text=...)` runs a single turn: the first generated tokens are constrained to spell a state token (`<1>` spoken query,
`<2>` noisy audio, `<3>` typed query; `design.md` sections 1 and 4), and the answer comes back without it. The
always-listening loop (VAD, interruption, one model in two roles) is stateful and threaded, so it lives in
`DuplexSession` (`duplex_session.py`, built on the pure state machine of `duplex_state.py` as in moshi, pipecat and
fastrtc) and the pipeline only hands out sessions: `pipe.session(vad=VADParams(...), tts=None)`.

Register the task with `register_vita_duplex_pipeline()`, then `pipeline("vita-duplex", model=model,
processor=processor)`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessorList,
    Pipeline,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .duplex_events import NOISY_AUDIO, QUERY_TEXT, STATES
from .duplex_session import DuplexSession, TTSEngine
from .duplex_vad import SAMPLING_RATE, VADParams
from .generation_vita import StateTokenLogitsProcessor, parse_state, state_token_sequences

TASK = "vita-duplex"


class _StopAfterState(StoppingCriteria):
    """Ends generation once the answer opens with a given state token (`<2>` has no answer: it acts as EOS)."""

    def __init__(self, spelling: list[int], prompt_length: int) -> None:
        self.spelling = list(spelling)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        head = input_ids[:, self.prompt_length : self.prompt_length + len(self.spelling)]
        if head.shape[1] < len(self.spelling):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return (head == torch.tensor(self.spelling, device=input_ids.device)).all(dim=1)


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
        """Save the model, the whole processor (chat template, CMVN, tiling limits) and the pipeline code, so that
        `pipeline("vita-duplex", model=save_directory, trust_remote_code=True)` works where this project is absent."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)

    def _spellings(self) -> dict[str, list[int]]:
        return dict(zip(STATES, state_token_sequences(self.processor.tokenizer)))

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
        model_inputs = self.processor.apply_chat_template(
            [{"role": "user", "content": content}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            sampling_rate=SAMPLING_RATE,
        )
        model_inputs = {
            key: value.to(self.dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in model_inputs.items()
        }
        model_inputs["forced_state"] = QUERY_TEXT if audio is None else None
        return model_inputs

    def _forward(self, model_inputs: dict[str, Any], generate_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        forced_state = model_inputs.pop("forced_state")
        prompt_length = model_inputs["input_ids"].shape[1]
        spellings = self._spellings()
        allowed = [spellings[forced_state]] if forced_state else list(spellings.values())
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        logits_processor = LogitsProcessorList(generate_kwargs.pop("logits_processor", None) or [])
        logits_processor.insert(0, StateTokenLogitsProcessor(allowed, prompt_length=prompt_length))
        stopping_criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
        stopping_criteria.append(_StopAfterState(spellings[NOISY_AUDIO], prompt_length))
        sequences = self.model.generate(
            **model_inputs, logits_processor=logits_processor, stopping_criteria=stopping_criteria, **generate_kwargs
        )
        return {"generated": sequences[0, prompt_length:].cpu()}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, str]:
        state, rest = parse_state(model_outputs["generated"], self._spellings())
        if state is None:  # cannot happen with the state constraint, unless generation was cut at zero tokens
            raise ValueError(f"the answer opens with no state token; expected one of {STATES}")
        text = "" if state == NOISY_AUDIO else self.processor.decode(rest, skip_special_tokens=True).strip()
        return {"state": state, "text": text}

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


def register_vita_duplex_pipeline() -> None:
    """Make `pipeline("vita-duplex", ...)` available in this process (and saved with `pipe.save_pretrained`)."""
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=VitaDuplexPipeline, pt_model=AutoModelForCausalLM, type="multimodal"
    )


__all__ = ["VitaDuplexPipeline", "register_vita_duplex_pipeline"]
