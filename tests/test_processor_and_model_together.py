"""The processor and the model agree: token ids, feature counts, and a forward/generate on processor output."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.audio_encoder import get_audio_token_count as model_audio_token_count
from modeling_vita.testing_utils import TINY_TOKEN_IDS as MODEL_IDS
from modeling_vita.testing_utils import TINY_VOCAB_SIZE as MODEL_VOCAB
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.feature_extraction_vita import get_audio_token_count as processor_audio_token_count
from processing_vita.testing_utils import TINY_TOKEN_IDS as PROCESSOR_IDS
from processing_vita.testing_utils import TINY_VOCAB_SIZE as PROCESSOR_VOCAB
from processing_vita.testing_utils import tiny_vita_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_vita_processor()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VitaForConditionalGeneration(tiny_vita_config()).eval()


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _video(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (frames, 64, 80, 3), dtype=np.uint8)


def _speech(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def test_tiny_processor_and_tiny_model_share_token_ids(processor, model):
    assert PROCESSOR_IDS == MODEL_IDS and PROCESSOR_VOCAB == MODEL_VOCAB
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<image>", "<video>", "<audio>"]) == [
        model.config.image_token_id,
        model.config.video_token_id,
        model.config.audio_token_id,
    ]
    assert tokenizer.convert_tokens_to_ids(list(model.config.state_tokens.values())) == MODEL_IDS["state"]
    assert len(tokenizer) <= model.config.text_config.vocab_size
    assert processor.image_seq_length == model.config.image_seq_length


def test_audio_token_formula_is_the_same_in_both_packages():
    for frames in range(0, 5000):
        assert processor_audio_token_count(frames) == model_audio_token_count(frames), frames


@pytest.mark.parametrize(
    "media",
    [
        {"images": True},
        {"videos": True},
        {"audio": True},
        {},
        {"images": True, "audio": True},
        {"videos": True, "audio": True},
        {"images": True, "videos": True, "audio": True},
    ],
    ids=lambda media: "+".join(media) or "text",
)
def test_model_runs_on_processor_output_for_every_modality_mix(processor, model, media):
    prompt = "".join(
        placeholder
        for key, placeholder in (("images", "<image>\n"), ("videos", "<video>\n"), ("audio", "<audio>"))
        if key in media
    )
    inputs = processor(
        text=[prompt + "what is this?", "hello there"],
        images=[[_image(300, 120, 1)], []] if "images" in media else None,
        videos=[[_video(9, 2)], []] if "videos" in media else None,
        audio=[[_speech(1.7, 3)], []] if "audio" in media else None,
        sampling_rate=16000,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_chat_template_output_generates_and_parses(processor, model):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": _image(200, 200, 4)},
                {"type": "audio", "audio": _speech(2.0, 5)},
                {"type": "text", "text": "describe it"},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == 24
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    state, text = processor.parse_response(processor.decode(out[0, inputs["input_ids"].shape[1] :]))
    assert isinstance(text, str)
    assert state is None or state.value in model.config.state_tokens
