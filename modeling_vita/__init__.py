"""VITA for the Hugging Face ecosystem: configuration, model, generation helpers and the duplex pipeline.

Importing the package registers VITA with transformers' Auto classes, so `AutoModel.from_pretrained(path)` works
without `trust_remote_code` when the package is installed; saved folders also carry the code and an `auto_map` for
use where it is not (the pattern of parler-tts and other out-of-tree transformers packages).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
)

from .audio_encoder import VitaAudioEncoder, get_audio_token_count
from .configuration_vita import VitaAudioEncoderConfig, VitaConfig
from .duplex_session import AudioOut, DuplexSession, EspeakTTS, PiperTTS
from .duplex_vad import VADParams
from .modeling_vita import AUTO_MAP, VitaForConditionalGeneration, VitaModel, VitaPreTrainedModel
from .pipeline_vita_duplex import VitaDuplexPipeline, register_vita_duplex_pipeline

__version__ = "0.1.0.dev0"


def _register() -> None:
    AutoConfig.register(VitaConfig.model_type, VitaConfig, exist_ok=True)
    AutoConfig.register(VitaAudioEncoderConfig.model_type, VitaAudioEncoderConfig, exist_ok=True)
    AutoModel.register(VitaAudioEncoderConfig, VitaAudioEncoder, exist_ok=True)
    # `AutoModel` gives the generation class, as the design's public API asks.
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        auto_class.register(VitaConfig, VitaForConditionalGeneration, exist_ok=True)
    # Saved folders copy the code files and record where each class lives.
    VitaConfig.register_for_auto_class("AutoConfig")
    VitaForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
    register_vita_duplex_pipeline()


_register()

__all__ = [
    "AUTO_MAP",
    "AudioOut",
    "DuplexSession",
    "EspeakTTS",
    "PiperTTS",
    "VADParams",
    "VitaDuplexPipeline",
    "register_vita_duplex_pipeline",
    "VitaAudioEncoder",
    "VitaAudioEncoderConfig",
    "VitaConfig",
    "VitaForConditionalGeneration",
    "VitaModel",
    "VitaPreTrainedModel",
    "__version__",
    "get_audio_token_count",
]
