"""VITA processing package: image tiling, video sampling, audio fbank, tokenizer tools and VitaProcessor.

Flat package (no subfolders) because the same files are saved next to a
checkpoint as Hub remote code; modules import each other only relatively and never import `modeling_vita`.
"""

import logging

from .chat_template_vita import CHAT_FORMATS, CHAT_TEMPLATE, SYSTEM_PROMPTS, build_chat_template
from .feature_extraction_vita import (
    VitaFeatureExtractor,
    get_audio_token_count,
    get_num_fbank_frames,
    load_audio,
    load_global_cmvn,
)
from .image_processing_vita import VitaImageProcessor, find_tile_grid, get_num_tiles
from .processing_vita import VitaProcessor
from .tokenization_vita import (
    AUDIO_TOKEN,
    DEFAULT_STATE_TOKENS,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VitaState,
    add_vita_special_tokens,
    checked_state_tokens,
    extend_tokenizer_vocabulary,
    parse_state,
    resize_embeddings_with_mean_init,
    train_extension_tokenizer,
)
from .video_processing_vita import VitaVideoProcessor, sample_frame_indices

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_TOKEN",
    "CHAT_FORMATS",
    "CHAT_TEMPLATE",
    "IMAGE_TOKEN",
    "DEFAULT_STATE_TOKENS",
    "SYSTEM_PROMPTS",
    "VIDEO_TOKEN",
    "VitaFeatureExtractor",
    "VitaImageProcessor",
    "VitaProcessor",
    "VitaState",
    "VitaVideoProcessor",
    "add_vita_special_tokens",
    "build_chat_template",
    "checked_state_tokens",
    "extend_tokenizer_vocabulary",
    "find_tile_grid",
    "get_audio_token_count",
    "get_num_fbank_frames",
    "get_num_tiles",
    "load_audio",
    "load_global_cmvn",
    "parse_state",
    "resize_embeddings_with_mean_init",
    "sample_frame_indices",
    "train_extension_tokenizer",
]
