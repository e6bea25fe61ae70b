"""vLLM plugin for VITA: `pip install vita-hf[vllm]` beside vLLM, then `vllm serve <converted VITA folder>`.

vLLM calls `register()` (entry point `vllm.general_plugins: vita = vllm_vita:register`) in every process it starts.
It makes three things known, without importing vLLM's model code yet (vLLM's own advice for plugins):
- the config class of `model_type: "vita"` (`config.VitaVllmConfig`), to transformers' `AutoConfig` and to vLLM's
  config registry, so the checkpoint's own `configuration_vita.py` (remote code for transformers >= 5.20) is not
  needed and `--trust-remote-code` is not either;
- the architecture `VitaForConditionalGeneration` (the `architectures` entry of a converted `config.json`), served by
  `model.VitaForConditionalGeneration`;
- `transformers.VideoProcessorMixin`, which transformers only exports when torchvision imports (vLLM's CPU wheel
  brings none that loads); `VitaVideoProcessor` needs only PIL and torch, and `ProcessorMixin` looks the base class
  up by that name.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

ARCHITECTURE = "VitaForConditionalGeneration"


def _export_video_processor_base() -> None:
    import transformers
    from transformers import video_processing_utils

    try:
        transformers.VideoProcessorMixin  # noqa: B018 - the lazy module raises when torchvision is missing
    except AttributeError:
        transformers.VideoProcessorMixin = video_processing_utils.VideoProcessorMixin


def _register_config() -> None:
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from .config import VitaVllmConfig

    # With modeling_vita imported (transformers >= 5.24) "vita" is already VitaConfig, which serves as well.
    if "vita" not in CONFIG_MAPPING:
        AutoConfig.register("vita", VitaVllmConfig)
    try:
        from vllm.transformers_utils import config as vllm_config_utils

        # Known to vLLM's registry, a config is loaded by its class even where config.json has an auto_map.
        vllm_config_utils._CONFIG_REGISTRY.setdefault("vita", VitaVllmConfig)
    except (ImportError, AttributeError):  # another vLLM layout: AutoConfig's registration still applies
        logger.debug("vLLM's config registry not found; relying on AutoConfig's registration of 'vita'.")


def register() -> None:
    """Entry point of the `vllm.general_plugins` group."""
    from vllm import ModelRegistry

    _export_video_processor_base()
    _register_config()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        # By name: vLLM imports the model module only where a model is actually built.
        ModelRegistry.register_model(ARCHITECTURE, "vllm_vita.model:VitaForConditionalGeneration")


__all__ = ["ARCHITECTURE", "register"]
