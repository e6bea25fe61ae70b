"""VitaProcessor: one call turns text with `<image>`/`<video>`/`<audio>` placeholders plus media into model inputs.

The released prompt format is `system:{SYS}</s>\\nuser:{Q}</s>\\nbot:` with three system prompts (text, image, video).
As transformers' multimodal processors do, placeholders are expanded here (left-padded text, right-padded audio, one
processor_config.json and a chat_template.jinja). Each placeholder is expanded to exactly as many copies as the model
will produce features: image_seq_length per tile, image_seq_length per video frame, and `get_audio_token_count(frames)`
per audio clip. The chat template is plain jinja run by transformers' `apply_chat_template`, so other backbones can
plug their own.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import LARGE_INTEGER

from .chat_template_vita import (
    build_chat_template,
    checked_system_prompts,
)
from .feature_extraction_vita import VitaFeatureExtractor, get_audio_token_count, load_audio
from .image_processing_vita import VitaImageProcessor, flatten_images
from .tokenization_vita import (
    AUDIO_TOKEN,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VitaState,
    checked_state_tokens,
    encode_marked_texts,
    parse_state,
)
from .video_processing_vita import VitaVideoProcessor, flatten_videos

try:  # what apply_chat_template(sanitize_control_tokens=True) wraps control tokens typed in messages in
    from transformers.processing_utils import _MARKED_RE, _UNMARKED
except ImportError:  # pragma: no cover - a transformers without it marks nothing
    _MARKED_RE, _UNMARKED = re.compile("(?!)"), ""

logger = logging.getLogger(__name__)

_TEXT_KWARGS = {
    "padding",
    "padding_side",
    "truncation",
    "max_length",
    "add_special_tokens",
    "return_attention_mask",
    "pad_to_multiple_of",
    "return_token_type_ids",
    "return_offsets_mapping",
    "return_length",
    "verbose",
}
_IMAGE_KWARGS = {"image_size", "min_dynamic_patch", "max_dynamic_patch", "use_thumbnail", "max_image_pixels"}
_VIDEO_KWARGS = {"fps", "do_sample_frames"}
# Keys transformers' apply_chat_template may forward that have no meaning here.
_IGNORED_KWARGS = {"return_text_replacement_offsets", "return_mm_token_type_ids"}


def _checked_texts(text: Any) -> list[str] | None:
    """`text` as a list of strings that the tokenizer can encode; a `ValueError` naming what is wrong otherwise."""
    if text is None:
        return None
    texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        found = type(text).__name__ if texts is None else [type(t).__name__ for t in texts]
        raise ValueError(f"`text` has type {found}; expected a string or a list of strings.")
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"`text` {i} holds {t[err.start]!r} at character {err.start}, a lone surrogate that no UTF-8 text can "
                "hold; expected valid Unicode. Decode the input with errors='replace' or drop the character."
            ) from err
    return texts


def _subconfig(d: dict[str, Any] | None) -> dict[str, Any]:
    drop = {"image_processor_type", "video_processor_type", "feature_extractor_type", "processor_class", "auto_map"}
    return {k: v for k, v in (d or {}).items() if k not in drop}


class VitaProcessor(ProcessorMixin):
    r"""Processor of VITA: image tiling, video frames, audio fbank and a tokenizer with media placeholders.

    `image_seq_length` is the number of LLM tokens one 448 tile (or one video frame) becomes:
    (image_size / patch_size)^2 * downsample_ratio^2 = (448 / 14)^2 * 0.25 = 256 for the released model.
    `system_prompts` ("lang", "image", "video") are the default system prompts of the chat template and of the
    training collator (default: the released model's); small models trained here use short ones. `state_tokens`
    (`{state name: string}`, default `<1>`, `<2>`, `<3>`) are the strings the checkpoint opens its answers with; the
    chat template and `parse_response` use them, and they must equal the model config's `state_tokens`.
    """

    text_kwargs = {"padding_side": "left"}

    def __init__(
        self,
        image_processor: VitaImageProcessor | None = None,
        video_processor: VitaVideoProcessor | None = None,
        feature_extractor: VitaFeatureExtractor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_seq_length: int = 256,
        system_prompts: dict[str, str] | None = None,
        state_tokens: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        image_processor = image_processor if image_processor is not None else VitaImageProcessor()
        video_processor = video_processor if video_processor is not None else VitaVideoProcessor()
        feature_extractor = feature_extractor if feature_extractor is not None else VitaFeatureExtractor()
        if tokenizer is None:
            raise ValueError("VitaProcessor needs a tokenizer; got None. Pass the backbone's tokenizer.")
        super().__init__(
            image_processor,
            video_processor,
            feature_extractor,
            tokenizer,
            chat_template=chat_template
            if chat_template is not None
            else build_chat_template(system_prompts, state_tokens),
            **kwargs,
        )
        self.image_seq_length = int(image_seq_length)
        self.system_prompts = checked_system_prompts(system_prompts)
        self.state_tokens = checked_state_tokens(state_tokens)
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.audio_token = getattr(tokenizer, "audio_token", None) or AUDIO_TOKEN
        vocab = tokenizer.get_vocab()
        missing = [t for t in (self.image_token, self.video_token, self.audio_token) if t not in vocab]
        if missing:
            raise ValueError(
                f"The tokenizer lacks the placeholder tokens {missing}; expected {IMAGE_TOKEN}, {VIDEO_TOKEN}, "
                f"{AUDIO_TOKEN} in its vocabulary. Call tokenization_vita.add_vita_special_tokens(tokenizer) first."
            )
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        # Build the sub-processors from our own classes: going through AutoImageProcessor & co. would require their
        # registration (or trust_remote_code) even when this package is imported.
        processor_dict = processor_dict or {}
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [
            VitaImageProcessor(**_subconfig(processor_dict.get("image_processor"))),
            VitaVideoProcessor(**_subconfig(processor_dict.get("video_processor"))),
            VitaFeatureExtractor(**_subconfig(processor_dict.get("feature_extractor"))),
            tokenizer,
        ]

    # ------------------------------------------------------------------ inputs

    @staticmethod
    def _audio_clips(audio: Any) -> list[Any]:
        if audio is None:
            return []
        if isinstance(audio, (np.ndarray, torch.Tensor, str, os.PathLike, bytes)):
            return [audio]
        if isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[1], (int, np.integer)):
            return [audio]
        if isinstance(audio, (list, tuple)):
            if audio and all(isinstance(x, (int, float, np.number)) for x in audio):
                return [np.asarray(audio, dtype=np.float32)]
            flat: list[Any] = []
            for item in audio:
                flat.extend(VitaProcessor._audio_clips(item))
            return flat
        raise ValueError(
            f"Audio input of type {type(audio).__name__}; expected a path, an array, an (array, sampling_rate) tuple "
            "or a list of those."
        )

    def _process_audio_clips(self, clips: list[Any], sampling_rate: int | None) -> BatchFeature:
        waves, rates = [], []
        for clip in clips:
            if isinstance(clip, (str, os.PathLike, bytes)):
                clip = load_audio(clip, self.feature_extractor.max_seconds)
            if isinstance(clip, tuple):
                wave, rate = clip
            else:
                wave, rate = clip, sampling_rate
            if rate is None:
                rate = self.feature_extractor.sampling_rate
            waves.append(wave)
            rates.append(rate)  # checked (integer, 8..192 kHz) by the feature extractor
        return self.feature_extractor(waves, sampling_rate=rates, return_tensors="pt")

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Expand placeholders, process media and tokenize (text left padded, audio right padded).

        `images`/`videos`/`audio` are matched in order to the placeholders of all samples of `text` (flat lists or
        per-sample nested lists). An audio item may be a path, an array (at `sampling_rate`) or an
        (array, sampling_rate) tuple. Returns input_ids, attention_mask, pixel_values, image_num_patches,
        pixel_values_videos, video_num_frames, input_features, input_features_mask (those that apply).
        """
        text_kwargs: dict[str, Any] = {"padding": True, "padding_side": "left"}
        images_kwargs: dict[str, Any] = {}
        videos_kwargs: dict[str, Any] = {}
        text_kwargs.update(kwargs.pop("text_kwargs", None) or {})
        images_kwargs.update(kwargs.pop("images_kwargs", None) or {})
        videos_kwargs.update(kwargs.pop("videos_kwargs", None) or {})
        audio_kwargs = kwargs.pop("audio_kwargs", None) or {}
        sampling_rate = audio_kwargs.get("sampling_rate", sampling_rate)
        return_tensors = kwargs.pop("common_kwargs", {}).get("return_tensors", return_tensors)
        # Set by apply_chat_template: control tokens typed in messages are marked, and encoded as plain text.
        sanitize = bool(kwargs.pop("sanitize_control_tokens", False))
        for key, value in kwargs.items():
            if key in _TEXT_KWARGS:
                text_kwargs[key] = value
            elif key in _IMAGE_KWARGS:
                images_kwargs[key] = value
            elif key in _VIDEO_KWARGS:
                videos_kwargs[key] = value
            elif key not in _IGNORED_KWARGS:
                raise TypeError(f"VitaProcessor got an unexpected keyword argument {key!r}.")

        flat_images = flatten_images(images)
        flat_videos = flatten_videos(videos)
        audio_clips = self._audio_clips(audio)
        texts = _checked_texts(text)

        if texts is not None:
            unmarked = [_MARKED_RE.sub("", t) for t in texts] if sanitize else texts
            for name, token, n_media in (
                ("image", self.image_token, len(flat_images)),
                ("video", self.video_token, len(flat_videos)),
                ("audio", self.audio_token, len(audio_clips)),
            ):
                n_tokens = sum(t.count(token) for t in unmarked)
                if n_tokens != n_media:
                    raise ValueError(
                        f"The text has {n_tokens} {token} placeholders but {n_media} {name} inputs were given; "
                        f"expected one {token} per {name}, in order. A {token} typed by a user is text: put it in "
                        "a text block of a chat message and call apply_chat_template(..., tokenize=True)."
                    )

        data: dict[str, Any] = {}
        repeats: dict[str, list[int]] = {"image": [], "video": [], "audio": []}
        if flat_images:
            out = self.image_processor(flat_images, **images_kwargs)
            data["pixel_values"] = out["pixel_values"]
            data["image_num_patches"] = out["image_num_patches"]
            repeats["image"] = [self.image_seq_length * int(n) for n in out["image_num_patches"]]
        if flat_videos:
            out = self.video_processor(flat_videos, **videos_kwargs)
            data["pixel_values_videos"] = out["pixel_values_videos"]
            data["video_num_frames"] = out["video_num_frames"]
            repeats["video"] = [self.image_seq_length * int(n) for n in out["video_num_frames"]]
        if audio_clips:
            out = self._process_audio_clips(audio_clips, sampling_rate)
            data["input_features"] = out["input_features"]
            data["input_features_mask"] = out["input_features_mask"]
            repeats["audio"] = [get_audio_token_count(int(n)) for n in out["input_features_mask"].sum(-1)]

        if texts is not None:
            expanded = self._expand_placeholders(texts, repeats)
            encoded = (
                self._encode_marked(expanded, text_kwargs) if sanitize else self.tokenizer(expanded, **text_kwargs)
            )
            self._check_expanded_counts(encoded["input_ids"], repeats)
            self._check_context(encoded)
            data = {**dict(encoded), **data}

        if return_tensors == "np":
            data = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def _expand_placeholders(self, texts: list[str], repeats: dict[str, list[int]]) -> list[str]:
        tokens = {"image": self.image_token, "video": self.video_token, "audio": self.audio_token}
        # Placeholders typed in messages (marked by apply_chat_template) are text, not media.
        pattern = re.compile("|".join(f"(?P<{k}>{_UNMARKED}{re.escape(v)})" for k, v in tokens.items()))
        iters = {k: iter(v) for k, v in repeats.items()}

        def expand(match: re.Match) -> str:
            kind = match.lastgroup
            return tokens[kind] * next(iters[kind])

        return [pattern.sub(expand, t) for t in texts]

    def _encode_marked(self, texts: list[str], text_kwargs: dict[str, Any]) -> Any:
        # The tokenizer's own `sanitize_control_tokens` path refuses post-processor tokens (BOS): added around here.
        ids = encode_marked_texts(self.tokenizer, texts, text_kwargs.get("add_special_tokens", True))
        limit = getattr(self.tokenizer, "model_max_length", None)
        max_length = text_kwargs.get("max_length") or (
            limit if isinstance(limit, int) and limit < LARGE_INTEGER else None
        )
        if text_kwargs.get("truncation") not in (None, False, "do_not_truncate") and max_length is not None:
            left = getattr(self.tokenizer, "truncation_side", "right") == "left"
            ids = [x[-max_length:] if left else x[:max_length] for x in ids]
        pad_keys = ("padding", "max_length", "pad_to_multiple_of", "padding_side", "return_attention_mask")
        return self.tokenizer.pad({"input_ids": ids}, **{k: text_kwargs[k] for k in pad_keys if k in text_kwargs})

    def _check_context(self, encoded: Any) -> None:
        # Text beyond the context the tokenizer declares (model_max_length) would be read at positions the model
        # never saw: refused rather than warned, since the answer would be silently wrong. Unset limits (1e30) pass.
        limit = getattr(self.tokenizer, "model_max_length", None)
        if not isinstance(limit, int) or limit >= LARGE_INTEGER:
            return
        masks = encoded.get("attention_mask") or [[1] * len(ids) for ids in encoded["input_ids"]]
        for i, mask in enumerate(masks):
            length = int(np.sum(np.asarray(mask)))
            if length > limit:
                raise ValueError(
                    f"Sample {i} is {length:,} tokens long; expected at most {limit:,} (tokenizer.model_max_length, "
                    "the model's context). Shorten the text or split it, or pass truncation=True and max_length "
                    "(media spans must stay whole)."
                )

    def _check_expanded_counts(self, input_ids: Any, repeats: dict[str, list[int]]) -> None:
        # Truncation can cut an expanded span; the model would then fail on a feature/token mismatch much later.
        for kind, token_id in (
            ("image", self.image_token_id),
            ("video", self.video_token_id),
            ("audio", self.audio_token_id),
        ):
            expected = sum(repeats[kind])
            found = sum(int(np.sum(np.asarray(ids) == token_id)) for ids in input_ids)
            if found != expected:
                raise ValueError(
                    f"After tokenization there are {found} {kind} tokens but the {kind} inputs need {expected}; "
                    "expected them to match. Do not truncate inside media spans (use max_length=None or a larger "
                    "max_length)."
                )

    # ------------------------------------------------------------------ chat template

    def apply_chat_template(
        self, conversation: Any, chat_template: str | None = None, sampling_rate: int | None = None, **kwargs: Any
    ) -> Any:
        """transformers' `apply_chat_template`; `sampling_rate` gives the rate of raw arrays in audio blocks.

        Audio blocks take `{"type": "audio", "audio": path | array | (array, sampling_rate)}`.

        Media placeholders come from content blocks; message text is text. With `tokenize=True` the default is
        `sanitize_control_tokens=True`: a `<image>`, `</s>` or state token typed in a message is encoded as the plain
        text it is, never as a placeholder or control id (`tokenize=False` returns a string, which cannot tell them
        apart). It cannot be combined with `return_assistant_tokens_mask=True`, which therefore turns it off.
        """
        if kwargs.get("tokenize") and not kwargs.get("return_assistant_tokens_mask"):
            kwargs.setdefault("sanitize_control_tokens", True)
        if sampling_rate is not None:
            processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
            processor_kwargs["sampling_rate"] = sampling_rate
            kwargs["processor_kwargs"] = processor_kwargs
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def _multimodal_inputs_from_conversations(
        self, conversations: list, audio_loading_params: dict, load_audio_from_video: bool = False
    ) -> tuple[list, list, list, dict]:
        # Own version: audio is kept as (array, rate) so each clip carries its own rate, and files are read with
        # soundfile/PyAV instead of transformers' loader (which wants librosa or torchcodec).
        batch_images, batch_videos, batch_audio = [], [], []
        default_rate = audio_loading_params.get("sampling_rate")
        for conversation in conversations:
            images, videos = [], []
            for message in conversation:
                content = message.get("content")
                if isinstance(content, str) or not content:
                    continue
                for block in content:
                    kind = block.get("type")
                    if kind == "image":
                        images.extend(block[k] for k in ("image", "url", "path") if k in block)
                    elif kind == "video":
                        videos.extend(block[k] for k in ("video", "url", "path") if k in block)
                    elif kind == "audio":
                        for key in ("audio", "url", "path"):
                            if key not in block:
                                continue
                            value = block[key]
                            if isinstance(value, (str, os.PathLike, bytes)):
                                value = load_audio(value, self.feature_extractor.max_seconds)
                            elif not (isinstance(value, tuple) and len(value) == 2):
                                value = (value, block.get("sampling_rate", default_rate))
                            batch_audio.append(value)
            batch_images.append(images)
            batch_videos.append(videos)
        return batch_images, batch_videos, batch_audio, {}

    # ------------------------------------------------------------------ outputs

    def parse_response(self, response: Any, *args: Any, **kwargs: Any) -> tuple[VitaState | None, str]:
        """Split a generated answer into (state, text): strips a leading state token (`state_tokens`; one following
        space too) and trailing `</s>`/padding. Accepts text or token ids."""
        if not isinstance(response, str):
            if isinstance(response, torch.Tensor):
                response = response.tolist()
            response = self.tokenizer.decode(response, skip_special_tokens=False)
        text = response
        bos = getattr(self.tokenizer, "bos_token", None)
        text = text.lstrip()
        if bos and text.startswith(bos):
            text = text[len(bos) :].lstrip()
        state, text = parse_state(text, self.state_tokens)
        enders = tuple(t for t in (getattr(self.tokenizer, "eos_token", None), "</s>", self.tokenizer.pad_token) if t)
        # Only whitespace that sat before a removed end marker is dropped; the answer itself is kept verbatim.
        while text.rstrip().endswith(enders):
            stripped = text.rstrip()
            end = next(e for e in enders if stripped.endswith(e))
            text = stripped[: -len(end)].rstrip()
        return state, text

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "image_num_patches",
            "pixel_values_videos",
            "video_num_frames",
            "input_features",
            "input_features_mask",
        ]


# save_pretrained then writes auto_map and copies these files, so AutoX(..., trust_remote_code=True) can load them.
VitaProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["VitaProcessor"]
