"""Compose a fresh VITA from separate pretrained parts: a causal LM, an InternViT tower and a VITA audio encoder.

This is how a new VITA starts (stage 1 extends and tunes an existing LLM, stage 2 aligns pretrained encoders to it):
the LLM and its tokenizer come from any transformers causal-LM checkpoint, the vision tower from a transformers
`internvl_vision` checkpoint (or the vision tower of an `internvl` one), the audio encoder from a saved
`VitaAudioEncoder`; only the vision projector starts from random weights. The VITA skeleton is built on the meta device
and the pretrained modules are moved in, so no part is ever held twice.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from modeling_vita import VitaAudioEncoder, VitaAudioEncoderConfig, VitaConfig, VitaForConditionalGeneration
from modeling_vita.modeling_vita import VitaMultiModalProjector
from processing_vita import VitaImageProcessor, VitaProcessor, VitaVideoProcessor
from processing_vita.tokenization_vita import add_vita_special_tokens, resize_embeddings_with_mean_init

logger = logging.getLogger(__name__)


def _vision_tower(path: str | None, dtype: torch.dtype | None, trust_remote_code: bool):
    """(config, module or None) of the vision tower; None when the tower starts from the InternViT defaults."""
    if path is None:
        return None, None
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if config.model_type == "internvl_vision":
        return config, AutoModel.from_pretrained(path, dtype=dtype)
    if config.model_type == "internvl":
        return config.vision_config, AutoModel.from_pretrained(path, dtype=dtype).vision_tower
    raise ValueError(
        f"vision_model_name_or_path has model_type {config.model_type!r}; expected 'internvl_vision' or 'internvl' "
        "(transformers' InternViT layout, e.g. OpenGVLab/InternVL*-hf or a converted InternViT-300M-448px)."
    )


def compose_vita(
    text_model_name_or_path: str,
    vision_model_name_or_path: str | None = None,
    audio_model_name_or_path: str | None = None,
    dtype: torch.dtype | None = None,
    state_tokens_as_special: bool = False,
    trust_remote_code: bool = False,
) -> tuple[VitaForConditionalGeneration, VitaProcessor]:
    """A `VitaForConditionalGeneration` and its `VitaProcessor` from separate checkpoints.

    The tokenizer of the LLM gets the `<image>`/`<video>`/`<audio>` placeholders (and the state tokens when
    `state_tokens_as_special`); the LLM's embeddings grow to match, new rows set to the mean of the old ones. Towers
    not given start from random weights with the released shapes (InternViT-300M-448px, the 24-layer audio encoder).
    """
    tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path, trust_remote_code=trust_remote_code)
    token_ids = add_vita_special_tokens(tokenizer, state_tokens_as_special=state_tokens_as_special)
    language_model = AutoModelForCausalLM.from_pretrained(
        text_model_name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if len(tokenizer) > language_model.get_input_embeddings().weight.shape[0]:
        resize_embeddings_with_mean_init(language_model, len(tokenizer))
    text_config = language_model.config

    vision_config, vision_tower = _vision_tower(vision_model_name_or_path, dtype, trust_remote_code)
    audio_tower = None
    audio_config = None
    if audio_model_name_or_path is not None:
        audio_tower = VitaAudioEncoder.from_pretrained(audio_model_name_or_path, dtype=dtype)
        audio_config = audio_tower.config
    config = VitaConfig(
        text_config=text_config,
        vision_config=vision_config,
        audio_config=VitaAudioEncoderConfig(**audio_config.to_diff_dict()) if audio_config else None,
        image_token_id=token_ids["<image>"],
        video_token_id=token_ids["<video>"],
        audio_token_id=token_ids["<audio>"],
        tie_word_embeddings=getattr(text_config, "tie_word_embeddings", False),
    )
    with torch.device("meta"):
        model = VitaForConditionalGeneration(config)
    # Move the pretrained modules in; the towers that were not given and the projector are built for real here.
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    if vision_tower is None:
        vision_tower = AutoModel.from_config(config.vision_config)
    model.model.vision_tower = vision_tower
    if audio_tower is not None:
        adapter = audio_tower.adapter
        if adapter.linear.out_features != config.audio_config.output_size:
            # The adapter's last layer maps to the LLM width: a new LLM width means a new (trainable) last layer.
            logger.warning(
                "The audio adapter maps to %d features, the LLM is %d wide: its last linear layer starts afresh.",
                adapter.linear.out_features,
                config.audio_config.output_size,
            )
            adapter.linear = nn.Linear(adapter.linear.in_features, config.audio_config.output_size)
            audio_tower._init_weights(adapter.linear)
        audio_tower.config.output_size = config.audio_config.output_size
        model.model.audio_tower = audio_tower
    else:
        model.model.audio_tower = VitaAudioEncoder._from_config(config.audio_config)
    model.model.multi_modal_projector = VitaMultiModalProjector(config)
    for module in model.model.multi_modal_projector.modules():
        model._init_weights(module)
    if dtype is not None:
        model.to(dtype)
    still_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    assert not still_meta, f"parts of the composed model were never materialised: {still_meta[:5]}"

    image_size = config.vision_config.image_size[0]
    processor = VitaProcessor(
        image_processor=VitaImageProcessor(image_size=image_size),
        video_processor=VitaVideoProcessor(image_size=image_size),
        tokenizer=tokenizer,
        image_seq_length=config.image_seq_length,
    )
    return model, processor


__all__ = ["compose_vita"]
