"""Builds the tiny VITA folders and transformers' reference answers that the vLLM tests compare against.

Run in the project's own environment (transformers >= 5.24, which `modeling_vita` needs; the vLLM environment has
5.19): `python -m tests.vllm.make_reference OUT_DIR`. For each backbone ("qwen2", "mixtral") it writes
`OUT_DIR/<backbone>/` (a converted-style folder: config, safetensors, processor, tokenizer, chat template) and
`OUT_DIR/<backbone>/reference.json`: for a text, an image and an audio chat, the prompt as the chat template writes
it, transformers' prompt token ids, its greedy answer and the log-probabilities of the first step's top tokens.

The LLM is 128 wide with 2 heads (head_dim 64, which vLLM's CPU attention accepts; it refuses 16) and its weights
are drawn wider than the default init, so greedy steps are decided by clear margins rather than rounding.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor

logger = logging.getLogger(__name__)

BACKBONES = ("qwen2", "mixtral")
NEW_TOKENS = 8
TOP_K = 5
TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1}


def conversations() -> dict[str, list[dict]]:
    """The three chats, media built deterministically (no files needed)."""
    grid = np.linspace(0, 255, 56 * 84 * 3, dtype=np.float32).reshape(56, 84, 3)
    image = Image.fromarray(((grid * 7) % 256).astype(np.uint8))
    time = np.arange(16000 * 2) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * time) * np.sin(2 * np.pi * 1.5 * time)).astype(np.float32)
    return {
        "text": [{"role": "user", "content": [{"type": "text", "text": "What time is it?"}]}],
        "image": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}],
        "audio": [{"role": "user", "content": [{"type": "audio", "audio": (audio, 16000)}]}],
    }


def media_of(chat: list[dict]) -> dict:
    """The media of a chat as saved beside the reference: the image as PNG, the audio as float32 .npy."""
    blocks = chat[0]["content"]
    return {b["type"]: b[b["type"]] for b in blocks if b["type"] in ("image", "audio")}


def build(backbone: str, out: Path) -> None:
    torch.manual_seed(0)
    config = tiny_vita_config(backbone, text_config=dict(TEXT), vision_feature_scale=1.0)
    model = VitaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in model.model.language_model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, 0.1)
        model.lm_head.weight.normal_(0.0, 0.5)
    processor = tiny_vita_processor(max_dynamic_patch=2)
    folder = out / backbone
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    reference = {}
    for name, chat in conversations().items():
        prompt = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        inputs = processor.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1].float()
            generated = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS)
        logprobs = torch.log_softmax(logits, -1)
        top = torch.topk(logprobs, TOP_K)
        margin = float(top.values[0] - top.values[1])
        media = media_of(chat)
        if "image" in media:
            media["image"].save(folder / f"{name}.png")
        if "audio" in media:
            np.save(folder / f"{name}.npy", media["audio"][0])
        reference[name] = {
            "prompt": prompt,
            "prompt_token_ids": inputs["input_ids"][0].tolist(),
            "output_token_ids": generated[0, inputs["input_ids"].shape[1] :].tolist(),
            "top_token_ids": top.indices.tolist(),
            "top_logprobs": top.values.tolist(),
            "first_step_margin": margin,
        }
        logger.info("%s/%s: %d prompt tokens, margin %.3f", backbone, name, inputs["input_ids"].shape[1], margin)
    (folder / "reference.json").write_text(json.dumps(reference, indent=1))


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(argv[0] if argv else "build/vllm_reference")
    for backbone in BACKBONES:
        build(backbone, out)
    print(f"wrote {', '.join(str(out / b) for b in BACKBONES)}")


if __name__ == "__main__":
    main(sys.argv[1:])
