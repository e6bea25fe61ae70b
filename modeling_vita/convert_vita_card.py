"""The model card (README.md) of a converted VITA folder, written from its config."""

from __future__ import annotations

import logging

import torch

from .configuration_vita import VitaConfig

logger = logging.getLogger(__name__)


def _memory_table(config: VitaConfig) -> str:
    """Weight memory of the model per dtype (parameters counted on the meta device)."""
    from .modeling_vita import VitaForConditionalGeneration

    with torch.device("meta"):
        model = VitaForConditionalGeneration(config)
    count = sum(parameter.numel() for parameter in model.parameters())
    size = f"{count / 1e9:.2f} B" if count >= 1e8 else f"{count / 1e6:.2f} M"
    rows = [
        f"| {name} | {count * width / 2**30:.2f} GiB |" for name, width in (("float32", 4), ("bfloat16 / float16", 2))
    ]
    return "\n".join([f"Weights: {size} parameters.", "", "| dtype | memory of the weights |", "|---|---|", *rows])


def model_card(config: VitaConfig, version: str = "1.0", repo_id: str | None = None) -> str:
    """A README.md for the folder converted from the VITA-`version` release, generated from the config."""
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    name = repo_id or "path/to/converted-vita"
    experts = getattr(text, "num_local_experts", None)
    llm = f"{text.model_type} ({text.num_hidden_layers} layers, hidden {text.hidden_size}"
    llm += f", {experts} experts top-{text.num_experts_per_tok})" if experts else ")"
    state = ", ".join(f"`{t}`" for t in config.state_tokens.values())
    original = "VITAMixtralForCausalLM" if version == "1.0" else "VITAQwen2ForCausalLM"
    memory = _memory_table(config)
    citation15 = (
        "\n\n```bibtex\n@article{fu2025vita15,\n  title={VITA-1.5: Towards GPT-4o Level Real-Time Vision and Speech "
        "Interaction},\n  author={Fu, Chaoyou and others},\n  journal={arXiv preprint arXiv:2501.01957},\n"
        "  year={2025}\n}\n```"
        if version == "1.5"
        else ""
    )
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: any-to-any
tags: [vita, omni, multimodal, audio, vision, custom_code]
---

# VITA (converted to transformers 5.x)

VITA-{version}, the open omni multimodal LLM of Fu et al., converted from the original `{original}` checkpoint to a
native transformers model (`VitaForConditionalGeneration`, loaded with `trust_remote_code=True`).

{memory}

## Architecture
- LLM: {llm}, vocabulary {text.vocab_size}.
- Vision: InternViT as transformers' `InternVLVisionModel` ({vision.num_hidden_layers} layers, hidden
  {vision.hidden_size}, {vision.image_size[0]} px tiles, patch {vision.patch_size[0]}), last layer without CLS,
  features x{config.vision_feature_scale}, 2x2 pixel shuffle, two-layer GELU MLP: {config.image_seq_length} tokens
  per tile or video frame; the image processor tiles large images (1-12 tiles plus a thumbnail by default).
- Audio: the "whale" encoder ({audio.num_hidden_layers} layers, hidden {audio.hidden_size},
  {audio.num_attention_heads} heads) on {audio.num_mel_bins}-bin Kaldi fbank with global CMVN (in the feature
  extractor), 4x CNN subsampling and a stride-2 CNN adapter: 12.5 tokens per second.

## Modalities
Input: text, image, video (frames), audio, alone or combined. Output: text (speech through an external TTS).

## State tokens
Every answer opens with one of {state}: the input was a spoken query (answer it), noisy audio not meant for the
assistant (say nothing), a text query. Placeholder ids: image {config.image_token_id}, video
{config.video_token_id}, audio {config.audio_token_id}.

## Usage
```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image", "image": "photo.jpg"}},
                                         {{"type": "text", "text": "What is in the picture?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
state, answer = processor.parse_response(processor.decode(out[0, inputs["input_ids"].shape[1]:]))
```

## Conversion
Converted from the release as published with `vita-convert-original --input CHECKPOINT --output FOLDER` (the tower
folders that config.json names are found beside the checkpoint, or given with `--vision-tower` / `--audio-encoder`);
`--push-to-hub ORG/NAME` uploads the folder (`--dry-run` lists what would be uploaded).

## License
Apache-2.0, as the original release.

## Citation
```bibtex
@article{{fu2024vita,
  title={{VITA: Towards Open-Source Interactive Omni Multimodal LLM}},
  author={{Fu, Chaoyou and others}},
  journal={{arXiv preprint arXiv:2408.05211}},
  year={{2024}}
}}
```{citation15}
"""


__all__ = ["model_card"]
