"""VITA for the Hugging Face ecosystem: configuration, model, generation helpers and the duplex runtime.

Importing the package registers VITA with transformers' Auto classes and the "vita-duplex" pipeline task, so
`AutoModel.from_pretrained(path)` and the standard "any-to-any" and "image-text-to-text" pipelines work without
`trust_remote_code` when the package is installed; saved folders also carry the code (the remote-code closure,
`remote_code.py`) and an `auto_map` for use where it is not.
"""

import logging
from typing import Any

import transformers
from packaging.version import Version

from .duplex_events import AudioOut
from .duplex_session import DuplexSession, SessionOptions
from .duplex_speech_output import EspeakTTS, PiperTTS, TTSEngine, make_tts
from .duplex_vad import VADParams
from .generation_vita import VitaTurnStreamer

__version__ = "0.1.0.dev0"

logger = logging.getLogger(__name__)

# The first transformers release with everything the model classes import (`MultimodalBaseModelOutputWithPast`, 5.24;
# `SubConfigSpec`, 5.20). The duplex runtime above (session, VAD, speech engines, turn streamer) and `processing_vita`
# need only 5.19, the release vLLM 0.32 pins (< 5.20): in a vLLM environment they serve VITA on vLLM's engine
# (`DuplexSession(None, processor, backend="vllm", engine=...)`) while the model classes stay unavailable, each name
# raising `ImportError` with the fix (`__getattr__` below).
MODEL_CLASSES_NEED_TRANSFORMERS = "5.24"
MODEL_NAMES = (
    "AUTO_MAP",
    "VitaAudioEncoder",
    "VitaAudioEncoderConfig",
    "VitaCodecConfig",
    "VitaCodecModel",
    "VitaConfig",
    "VitaDuplexPipeline",
    "VitaForConditionalGeneration",
    "VitaModel",
    "VitaPreTrainedModel",
    "VitaSpeechConfig",
    "VitaSpeechDecoder",
    "VitaSpeechDecoderConfig",
    "VitaSpeechModel",
    "VitaSpeechOutput",
    "VitaSpeechStreamer",
    "get_audio_token_count",
    "register_vita_duplex_pipeline",
)
HAS_MODEL_CLASSES = Version(transformers.__version__).release >= Version(MODEL_CLASSES_NEED_TRANSFORMERS).release

if HAS_MODEL_CLASSES:
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForMultimodalLM,
        AutoProcessor,
        AutoVideoProcessor,
    )

    from .audio_encoder import VitaAudioEncoder, get_audio_token_count
    from .codec_vita import VitaCodecModel
    from .configuration_vita import VitaAudioEncoderConfig, VitaConfig
    from .configuration_vita_codec import VitaCodecConfig
    from .configuration_vita_speech import VitaSpeechConfig, VitaSpeechDecoderConfig
    from .modeling_vita import AUTO_MAP, VitaForConditionalGeneration, VitaModel, VitaPreTrainedModel
    from .pipeline_vita_duplex import VitaDuplexPipeline, register_vita_duplex_pipeline
    from .speech_decoder_vita import VitaSpeechDecoder
    from .speech_streamer_vita import VitaSpeechStreamer
    from .speech_vita import VitaSpeechModel, VitaSpeechOutput
else:
    logger.info(
        "transformers %s: modeling_vita's duplex runtime is available, its model classes need transformers >= %s",
        transformers.__version__,
        MODEL_CLASSES_NEED_TRANSFORMERS,
    )


def _register() -> None:
    AutoConfig.register(VitaConfig.model_type, VitaConfig, exist_ok=True)
    AutoConfig.register(VitaAudioEncoderConfig.model_type, VitaAudioEncoderConfig, exist_ok=True)
    AutoModel.register(VitaAudioEncoderConfig, VitaAudioEncoder, exist_ok=True)
    AutoConfig.register(VitaCodecConfig.model_type, VitaCodecConfig, exist_ok=True)
    AutoModel.register(VitaCodecConfig, VitaCodecModel, exist_ok=True)
    for config_class, model_class in (
        (VitaSpeechDecoderConfig, VitaSpeechDecoder),
        (VitaSpeechConfig, VitaSpeechModel),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
    # `AutoModel` gives the generation class, as the design's public API asks.
    # `AutoModelForMultimodalLM` serves the "any-to-any" pipeline, `AutoModelForImageTextToText` "image-text-to-text".
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForMultimodalLM):
        auto_class.register(VitaConfig, VitaForConditionalGeneration, exist_ok=True)
    # Saved folders record where each class lives (`AUTO_MAP`) and carry the code (`remote_code.py`).
    register_vita_duplex_pipeline()
    # Pipelines load a saved folder's processor (and, by task, its image/video processor and feature extractor)
    # through Auto classes that know them by the model config. The processor package is imported here only (never by
    # the remote-code modules); without it, no registration.
    try:
        import processing_vita
    except ImportError:  # pragma: no cover - vita-hf installs both packages
        logger.info("processing_vita is not importable: the Auto processor classes do not know VitaConfig")
        return
    AutoProcessor.register(VitaConfig, processing_vita.VitaProcessor, exist_ok=True)
    AutoImageProcessor.register(
        VitaConfig, image_processor_classes={"pil": processing_vita.VitaImageProcessor}, exist_ok=True
    )
    AutoVideoProcessor.register(VitaConfig, processing_vita.VitaVideoProcessor, exist_ok=True)
    AutoFeatureExtractor.register(VitaConfig, processing_vita.VitaFeatureExtractor, exist_ok=True)


if HAS_MODEL_CLASSES:
    _register()


def __getattr__(name: str) -> Any:
    if name in MODEL_NAMES:  # only reached when the model classes were not imported
        raise ImportError(
            f"modeling_vita.{name} needs transformers >= {MODEL_CLASSES_NEED_TRANSFORMERS}, found "
            f"transformers {transformers.__version__}. vLLM 0.32 pins transformers < 5.20, so in a vLLM environment "
            "serve VITA with vLLM (the vllm_vita plugin; DuplexSession(None, processor, backend='vllm', "
            "engine=VllmEngine(folder))) and run transformers inference or training in another environment with "
            f"`pip install 'transformers>={MODEL_CLASSES_NEED_TRANSFORMERS}'`"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


RUNTIME_NAMES = (
    "AudioOut",
    "DuplexSession",
    "EspeakTTS",
    "PiperTTS",
    "SessionOptions",
    "TTSEngine",
    "VADParams",
    "VitaTurnStreamer",
    "__version__",
    "make_tts",
)
# What `from modeling_vita import *` takes: the model classes only where this transformers imports them.
__all__ = [*RUNTIME_NAMES, *MODEL_NAMES] if HAS_MODEL_CLASSES else list(RUNTIME_NAMES)
