"""VitaProcessor: the released prompt format and system prompts, placeholder expansion to the exact feature counts,
count mismatches, padding sides, state-token parsing, and save/load round trips (also through AutoProcessor)."""

import numpy as np
import pytest
import torch
from PIL import Image

from processing_vita import VitaProcessor
from processing_vita.feature_extraction_vita import get_audio_token_count, get_num_fbank_frames
from processing_vita.image_processing_vita import get_num_tiles
from processing_vita.testing_utils import TINY_TOKEN_IDS
from processing_vita.tokenization_vita import VitaState

from .media import fixture_path

LANG_SYS = (
    "You are an AI robot and your name is VITA. \n- You are a multimodal large language model developed by the open "
    "source community. Your aim is to be helpful, honest and harmless. \n- You support the ability to communicate "
    "fluently and answer user questions in multiple languages of the user's choice. \n- If the user corrects the wrong"
    " answer you generated, you will apologize and discuss the correct answer with the user."
)
IMAGE_SYS = LANG_SYS + (
    " \n- You must answer the question strictly according to the content of the image given by the user, and it is "
    "strictly forbidden to answer the question without the content of the image. Please note that you are seeing the "
    "image, not the video."
)
VIDEO_SYS = LANG_SYS + (
    " \n- You must answer the question strictly according to the content of the video given by the user, and it is "
    "strictly forbidden to answer the question without the content of the video. Please note that you are seeing the "
    "video, not the image."
)


def tone(seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_lang_system_prompt_is_417_characters():
    assert len(LANG_SYS) == 417


def test_text_only_chat_uses_the_lang_prompt_exactly(tiny_processor):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    prompt = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "system:" + LANG_SYS + "</s>\nuser:Hello</s>\nbot:"


def test_audio_chat_uses_the_lang_prompt_and_no_newline_after_audio(tiny_processor):
    messages = [{"role": "user", "content": [{"type": "audio", "audio": (tone(1.0), 16000)}]}]
    prompt = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "system:" + LANG_SYS + "</s>\nuser:<audio></s>\nbot:"


def test_image_chat_uses_the_image_prompt_exactly(tiny_processor):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.new("RGB", (60, 60))},
                {"type": "audio", "audio": (tone(1.0), 16000)},
                {"type": "text", "text": "What is it?"},
            ],
        }
    ]
    prompt = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "system:" + IMAGE_SYS + "</s>\nuser:<image>\n<audio>What is it?</s>\nbot:"


def test_video_chat_uses_the_video_prompt_even_with_images(tiny_processor):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.new("RGB", (60, 60))},
                {"type": "video", "video": np.zeros((4, 20, 20, 3), np.uint8)},
                {"type": "text", "text": "Describe."},
            ],
        }
    ]
    prompt = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "system:" + VIDEO_SYS + "</s>\nuser:<image>\n<video>\nDescribe.</s>\nbot:"


def test_multi_turn_history_keeps_state_tokens_of_answers(tiny_processor):
    messages = [
        {"role": "user", "content": [{"type": "audio", "audio": (tone(1.0), 16000)}]},
        {"role": "assistant", "content": "<1>Hi"},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<3>A2"}]},
        {"role": "user", "content": "Q3"},
    ]
    prompt = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    expected = (
        "system:" + LANG_SYS + "</s>\nuser:<audio></s>\nbot:<1>Hi</s>\nuser:Q2</s>\nbot:<3>A2</s>\nuser:Q3</s>\nbot:"
    )
    assert prompt == expected
    assert not tiny_processor.apply_chat_template(messages[:2]).endswith("bot:")


def test_system_message_overrides_the_default_prompt(tiny_processor):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tiny_processor.apply_chat_template(messages, add_generation_prompt=True) == (
        "system:Be brief.</s>\nuser:Hi</s>\nbot:"
    )


def test_tokenized_chat_expands_every_placeholder_to_the_feature_count(tiny_processor):
    image = Image.new("RGB", (300, 100))
    wave = tone(2.0)
    video = np.zeros((6, 20, 30, 3), np.uint8)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "video", "video": video},
                {"type": "audio", "audio": wave},
                {"type": "text", "text": "Q"},
            ],
        }
    ]
    out = tiny_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", sampling_rate=16000
    )
    ids = out["input_ids"][0]
    tiles = get_num_tiles(300, 100, 56, 1, 12)
    assert out["image_num_patches"].tolist() == [tiles]
    assert out["pixel_values"].shape == (tiles, 3, 56, 56)
    assert int((ids == TINY_TOKEN_IDS["image"]).sum()) == 4 * tiles
    assert out["video_num_frames"].tolist() == [6]
    assert int((ids == TINY_TOKEN_IDS["video"]).sum()) == 4 * 6
    assert int((ids == TINY_TOKEN_IDS["audio"]).sum()) == get_audio_token_count(get_num_fbank_frames(32000)) == 24
    assert out["input_features"].shape == (1, 198, 80)
    assert ids[0] == TINY_TOKEN_IDS["bos"]


def test_real_fixtures_expand_to_the_documented_token_counts(tiny_processor):
    photo, logo = fixture_path("demo1.jpg"), fixture_path("vita_log2.png")
    out = tiny_processor(text="<image>\n<image>\nCompare.", images=[str(photo), str(logo)], return_tensors="pt")
    counts = [get_num_tiles(*Image.open(p).size, 56, 1, 12) for p in (photo, logo)]
    assert out["image_num_patches"].tolist() == counts == [7, 5]
    assert int((out["input_ids"] == TINY_TOKEN_IDS["image"]).sum()) == 4 * 12


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("<image><image>", {"images": [Image.new("RGB", (9, 9))]}, "2 <image> placeholders but 1 image"),
        ("no placeholder", {"images": [Image.new("RGB", (9, 9))]}, "0 <image> placeholders but 1 image"),
        ("<video>", {}, "1 <video> placeholders but 0 video"),
        ("<audio>", {"audio": [tone(1.0), tone(1.0)], "sampling_rate": 16000}, "1 <audio> placeholders but 2 audio"),
    ],
)
def test_placeholder_and_media_count_mismatch_names_both_counts(tiny_processor, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor(text=text, **kwargs)


def test_truncation_inside_a_media_span_is_refused(tiny_processor):
    with pytest.raises(ValueError, match="Do not truncate inside media spans"):
        tiny_processor(
            text="<image>hi", images=[Image.new("RGB", (500, 100))], truncation=True, max_length=5, return_tensors="pt"
        )


def test_batch_of_two_pads_text_left_and_audio_right(tiny_processor):
    short, long = tone(1.0), tone(3.0)
    out = tiny_processor(
        text=["<audio>Q", "<audio>A longer question here"],
        audio=[short, long],
        sampling_rate=16000,
        return_tensors="pt",
    )
    mask = out["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert out["input_ids"][0, 0] == TINY_TOKEN_IDS["pad"]
    feat_mask = out["input_features_mask"]
    n_short, n_long = get_num_fbank_frames(16000), get_num_fbank_frames(48000)
    assert feat_mask.sum(-1).tolist() == [n_short, n_long]
    assert feat_mask[0, 0] == 1 and feat_mask[0, -1] == 0
    counts = (out["input_ids"] == TINY_TOKEN_IDS["audio"]).sum(-1).tolist()
    assert counts == [get_audio_token_count(n_short), get_audio_token_count(n_long)]


def test_audio_from_file_and_other_rates_in_a_chat(tiny_processor, tmp_path):
    import soundfile as sf

    path = tmp_path / "q.wav"
    sf.write(str(path), (tone(1.5, 44100) * 32767).astype(np.int16), 44100)
    messages = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": str(path)}, {"type": "audio", "audio": (tone(1.0, 8000), 8000)}],
        }
    ]
    out = tiny_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    frames = out["input_features_mask"].sum(-1).tolist()
    assert frames == [get_num_fbank_frames(24000), get_num_fbank_frames(16000)]


def test_corrupt_audio_file_raises_value_error(tiny_processor, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk" * 10)
    with pytest.raises(ValueError, match="could not be decoded"):
        tiny_processor(text="<audio>", audio=[str(bad)])


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<1>Hello</s>", (VitaState.QUERY_AUDIO, "Hello")),
        ("<1> Hello</s>", (VitaState.QUERY_AUDIO, "Hello")),
        ("<2></s>", (VitaState.NOISY_AUDIO, "")),
        ("<3>Two words </s></s>", (VitaState.QUERY_TEXT, "Two words")),
        ("Plain answer", (None, "Plain answer")),
        ("<s><1>Hi</s><pad><pad>", (VitaState.QUERY_AUDIO, "Hi")),
    ],
)
def test_parse_response_strips_state_token_and_eos(tiny_processor, response, expected):
    assert tiny_processor.parse_response(response) == expected


def test_parse_response_accepts_generated_ids(tiny_processor):
    ids = tiny_processor.tokenizer("<2>", add_special_tokens=False).input_ids + [TINY_TOKEN_IDS["eos"]]
    assert tiny_processor.parse_response(torch.tensor(ids)) == (VitaState.NOISY_AUDIO, "")
    assert tiny_processor.decode(ids) == "<2></s>"
    assert tiny_processor.batch_decode([ids]) == ["<2></s>"]


def _inputs():
    return dict(
        text=["<image>\n<audio>Hi", "<video>\nWhat?"],
        images=[Image.new("RGB", (200, 90), "blue")],
        videos=[np.full((5, 30, 40, 3), 120, np.uint8)],
        audio=[tone(1.2)],
        sampling_rate=16000,
        return_tensors="pt",
    )


SHORT_PROMPTS = {"lang": "Be brief.", "image": "Look at the image.", "video": "Watch the video."}


@pytest.mark.parametrize(
    "content,expected",
    [
        ("Hi", "Be brief."),
        ([{"type": "image", "image": None}, {"type": "text", "text": "Hi"}], "Look at the image."),
        ([{"type": "video", "video": None}, {"type": "text", "text": "Hi"}], "Watch the video."),
    ],
)
def test_custom_system_prompts_follow_the_modality_and_survive_saving(tmp_path, content, expected):
    from processing_vita.testing_utils import tiny_vita_tokenizer

    proc = VitaProcessor(tokenizer=tiny_vita_tokenizer(), image_seq_length=4, system_prompts=SHORT_PROMPTS)
    messages = [{"role": "user", "content": content}]
    assert proc.apply_chat_template(messages, add_generation_prompt=True).startswith(f"system:{expected}</s>")
    proc.save_pretrained(tmp_path)
    loaded = VitaProcessor.from_pretrained(tmp_path)
    assert loaded.system_prompts == SHORT_PROMPTS
    assert loaded.apply_chat_template(messages, add_generation_prompt=True).startswith(f"system:{expected}</s>")


def test_system_prompts_without_every_modality_are_refused():
    from processing_vita.testing_utils import tiny_vita_tokenizer

    with pytest.raises(ValueError, match=r"system_prompts has keys \['lang'\]; expected a string for each of"):
        VitaProcessor(tokenizer=tiny_vita_tokenizer(), system_prompts={"lang": "Be brief."})


def test_save_then_from_pretrained_gives_identical_outputs(tmp_path):
    from processing_vita.testing_utils import tiny_vita_processor

    proc = tiny_vita_processor(max_dynamic_patch=6)
    proc.feature_extractor.cmvn_mean = [1.5] * 80
    proc.save_pretrained(tmp_path)
    loaded = VitaProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == proc.chat_template
    assert loaded.image_seq_length == 4
    assert loaded.image_processor.max_dynamic_patch == 6
    assert loaded.feature_extractor.cmvn_mean == [1.5] * 80
    a, b = proc(**_inputs()), loaded(**_inputs())
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_auto_processor_loads_the_saved_remote_code(tmp_path):
    from transformers import AutoProcessor

    from processing_vita.testing_utils import tiny_vita_processor

    proc = tiny_vita_processor()
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "processing_vita.py").is_file() and (tmp_path / "chat_template.jinja").is_file()
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "VitaProcessor"
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoVideoProcessor

    for auto, name in (
        (AutoImageProcessor, "VitaImageProcessor"),
        (AutoVideoProcessor, "VitaVideoProcessor"),
        (AutoFeatureExtractor, "VitaFeatureExtractor"),
    ):
        assert type(auto.from_pretrained(tmp_path, trust_remote_code=True)).__name__ == name
    a, b = proc(**_inputs()), loaded(**_inputs())
    for key in a:
        torch.testing.assert_close(a[key], b[key])
