"""Builds the tiny VITA folders and transformers' reference answers that the vLLM tests compare against.

Run in the project's own environment (transformers >= 5.24, which `modeling_vita` needs; the vLLM environment has
5.19): `python -m tests.vllm.make_reference OUT_DIR`. For each backbone ("qwen2", "mixtral") it writes
`OUT_DIR/<backbone>/` (a converted-style folder: config, safetensors, processor, tokenizer, chat template) and
`OUT_DIR/<backbone>/reference.json`: for a text, an image, a video and an audio chat, the prompt as the chat
template writes it, transformers' prompt token ids, its greedy answer and the log-probabilities of the first step's
top tokens.

The LLM is 128 wide with 2 heads (head_dim 64, which vLLM's CPU attention accepts; it refuses 16) and its weights
are drawn wider than the default init, so greedy steps are decided by clear margins rather than rounding.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from modeling_vita import VitaForConditionalGeneration

logger = logging.getLogger(__name__)

BACKBONES = ("qwen2", "mixtral")
NEW_TOKENS = 8
TOP_K = 5
TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1}


def conversations() -> dict[str, list[dict]]:
    """The four chats, media built deterministically (no files needed)."""
    grid = np.linspace(0, 255, 56 * 84 * 3, dtype=np.float32).reshape(56, 84, 3)
    image = Image.fromarray(((grid * 7) % 256).astype(np.uint8))
    time = np.arange(16000 * 2) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * time) * np.sin(2 * np.pi * 1.5 * time)).astype(np.float32)
    # Five frames (the processor keeps 4 to 16, one a second): every one is used, as a sampled clip would be.
    video = ((np.arange(5 * 40 * 60 * 3).reshape(5, 40, 60, 3) * 3) % 251).astype(np.uint8)
    return {
        "text": [{"role": "user", "content": [{"type": "text", "text": "What time is it?"}]}],
        "image": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}],
        "video": [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "Move?"}]}],
        "audio": [{"role": "user", "content": [{"type": "audio", "audio": (audio, 16000)}]}],
    }


def media_of(chat: list[dict]) -> dict:
    """The media of a chat as saved beside the reference: the image as PNG, the video's uint8 frames and the audio's
    float32 samples as .npy."""
    blocks = chat[0]["content"]
    return {b["type"]: b[b["type"]] for b in blocks if b["type"] in ("image", "video", "audio")}


def build(backbone: str, out: Path) -> None:
    # Imported here: the vLLM tests import this module's chats under vLLM's transformers, without the model classes.
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

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
        if "video" in media:
            np.save(folder / f"{name}.npy", media["video"])
        reference[name] = {
            "prompt": prompt,
            "prompt_token_ids": inputs["input_ids"][0].tolist(),
            "output_token_ids": generated[0, inputs["input_ids"].shape[1] :].tolist(),
            "top_token_ids": top.indices.tolist(),
            "top_logprobs": top.values.tolist(),
            "first_step_margin": margin,
        }
        logger.info("%s/%s: %d prompt tokens, margin %.3f", backbone, name, inputs["input_ids"].shape[1], margin)
    write_clip(folder / CLIP)
    reference["space_chat"] = space_chat_answers(model, processor, folder)
    (folder / "reference.json").write_text(json.dumps(reference, indent=1))


def space_chat_turns(folder: Path) -> list[dict]:
    """The Space chat's questions (`ChatTurn` fields): a typed question about the saved image, a follow-up whose
    prompt holds the first exchange, and a question about a video file (`write_clip`), decoded by each backend."""
    image = Image.open(folder / "image.png").convert("RGB")
    return [{"text": "Hi", "image": image}, {"text": "And then?"}, {"text": "Move?", "video": str(folder / CLIP)}]


CLIP = "clip.mp4"


def write_clip(path: Path) -> None:
    """A 4 s MPEG-4 clip at 2 frames a second (a bar moving right), which the processor samples to 4 frames."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(8):
            frame = np.full((48, 64, 3), 40, np.uint8)
            frame[:, index * 8 : index * 8 + 8] = (220, 60, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def space_chat_answers(model: VitaForConditionalGeneration, processor, folder: Path) -> list[dict]:
    """The Space's chat tab on transformers (`VitaRuntime`): each answer's state and text."""
    from modeling_vita.pipeline_vita_duplex import VitaDuplexPipeline
    from spaces_demo.chat import ChatSession, ChatTurn
    from spaces_demo.runtime import VitaRuntime

    session = ChatSession(VitaRuntime(VitaDuplexPipeline(model=model, processor=processor)), max_new_tokens=NEW_TOKENS)
    answers = []
    for fields in space_chat_turns(folder):
        turn = list(session.ask(ChatTurn(**fields)))[-1]
        answers.append({"state": turn.state.value, "answer": turn.answer})
    return answers


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(argv[0] if argv else "build/vllm_reference")
    for backbone in BACKBONES:
        build(backbone, out)
    print(f"wrote {', '.join(str(out / b) for b in BACKBONES)}")


if __name__ == "__main__":
    main(sys.argv[1:])
