"""Bad and odd inputs through `VitaProcessor` and `VitaForConditionalGeneration`, one table row each.

A row either names the `ValueError` it must raise (a regex over the problem, the value found and the value expected)
or checks the correct result of an input that is odd but valid; the valid ones also go through the tiny model, whose
logits must come out finite. The ids name the cases; nothing is printed. Media are made in code (`bad_media.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.image_processing_vita import candidate_grids, get_num_tiles
from processing_vita.testing_utils import TINY_TOKEN_IDS, tiny_vita_processor
from processing_vita.video_processing_vita import VitaVideoProcessor, decode_all_frames, sample_frame_indices

from . import bad_media as media

IMAGE, VIDEO, AUDIO, BOS, EOS = (TINY_TOKEN_IDS[k] for k in ("image", "video", "audio", "bos", "eos"))
STATES = TINY_TOKEN_IDS["state"]


@pytest.fixture(scope="module")
def shared():
    torch.manual_seed(0)
    return tiny_vita_processor(), VitaForConditionalGeneration(tiny_vita_config()).eval()


@pytest.fixture
def env(shared, tmp_path):
    processor, model = shared
    return SimpleNamespace(p=processor, model=model, tmp=tmp_path)


def through_model(env: Any, inputs: Any) -> None:
    """The processor's output runs through the model: finite logits, one row per token."""
    with torch.inference_mode():
        logits = env.model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and bool(torch.isfinite(logits).all())


def audio(env: Any, clip: Any, rate: Any = 16000) -> Any:
    return env.p(text="<audio>", audio=[clip], sampling_rate=rate, return_tensors="pt")


def image(env: Any, item: Any, **kwargs: Any) -> Any:
    return env.p(text="<image>\nWhat is it?", images=[item], return_tensors="pt", **kwargs)


def video(env: Any, item: Any, **kwargs: Any) -> Any:
    return env.p(text="<video>\nWhat happens?", videos=[item], return_tensors="pt", **kwargs)


def chat(env: Any, blocks: list[dict[str, Any]], **kwargs: Any) -> Any:
    messages = [{"role": "user", "content": blocks}]
    return env.p.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", **kwargs
    )


def model_inputs(env: Any, **overrides: Any) -> dict[str, Any]:
    """A valid one-image, one-clip model input of the tiny model, with `overrides` replacing or adding entries."""
    inputs = dict(env.p(text="<image><audio>Hi", images=[np.zeros((56, 56, 3), np.uint8)], audio=[media.tone()],
                        sampling_rate=16000, return_tensors="pt"))  # fmt: skip
    inputs.update(overrides)
    return {k: v for k, v in inputs.items() if v is not None}


def forward(env: Any, **overrides: Any) -> Any:
    with torch.inference_mode():
        return env.model(**model_inputs(env, **overrides))


ids = torch.tensor

# ---------------------------------------------------------------- refused: (id, call, regex)
REFUSED: list[tuple[str, Callable[[Any], Any], str]] = [
    # audio
    ("audio-empty", lambda e: audio(e, np.zeros(0, np.float32)), r"0 is empty \(0 samples\); expected at least 400"),
    ("audio-one-sample", lambda e: audio(e, np.zeros(1, np.float32)), r"has 1 samples .*expected at least 400"),
    ("audio-nan", lambda e: audio(e, np.full(1600, np.nan, np.float32)), r"contains NaN or inf; expected finite"),
    ("audio-inf", lambda e: audio(e, np.full(1600, np.inf, np.float32)), r"contains NaN or inf; expected finite"),
    ("audio-complex", lambda e: audio(e, media.tone().astype(np.complex64)),
     r"dtype complex64; expected float16/32/64, int16 or int32"),
    ("audio-bool", lambda e: audio(e, np.ones(1600, bool)), r"dtype bool; expected float16/32/64, int16 or int32"),
    ("audio-3d", lambda e: audio(e, np.zeros((2, 2, 800), np.float32)), r"shape \(2, 2, 800\); expected 1-D"),
    ("audio-rate-4000", lambda e: audio(e, media.tone(rate=4000), 4000),
     r"sampling_rate 4000; expected an integer between 8000 and 192000"),
    ("audio-rate-384000", lambda e: audio(e, media.tone(0.1, rate=384000), 384000),
     r"sampling_rate 384000; expected an integer between 8000 and 192000"),
    ("audio-rate-nan", lambda e: audio(e, media.tone(), float("nan")), r"sampling_rate nan; expected an integer"),
    ("audio-huge-1e21", lambda e: audio(e, media.tone() * 1e21),
     r"peaks at 3e\+20; expected float samples in \[-1, 1\] \(at most 2 accepted.*Scale the waveform"),
    ("audio-int16-as-float", lambda e: audio(e, np.round(media.tone(amplitude=0.5) * 32767)),
     r"peaks at 1638\d; expected float samples in \[-1, 1\].*int16 samples passed as float: divide them by 32768"),
    ("audio-file-too-long", lambda e: audio(e, str(media.write_wav(e.tmp / "long.wav", 205.0))),
     r"lasts at least 205\.0 s; expected at most 200\.0 s .*Split it"),
    ("audio-corrupt-file", lambda e: audio(e, _write(e.tmp / "x.wav", b"RIFF" + b"\1" * 99)),
     r"could not be decoded .*expected a readable audio file"),
    ("audio-placeholders-1-clips-2", lambda e: e.p(text="<audio>", audio=[media.tone(), media.tone()]),
     r"1 <audio> placeholders but 2 audio inputs were given; expected one <audio> per audio"),
    # images
    ("image-0x0-pil", lambda e: image(e, Image.new("RGB", (0, 0))), r"Image 0 is 0x0 pixels; expected at least 1x1"),
    ("image-0x0-array", lambda e: image(e, np.zeros((0, 0, 3), np.uint8)), r"shape \(0, 0, 3\); expected .*H, W >= 1"),
    ("image-5-channel", lambda e: image(e, np.zeros((8, 8, 5), np.uint8)), r"shape \(8, 8, 5\); expected \(H, W\)"),
    ("image-nan", lambda e: image(e, np.full((8, 8, 3), np.nan)), r"contains NaN or inf; expected finite pixel"),
    ("image-uint16-array", lambda e: image(e, np.full((8, 8), 4000, np.uint16)),
     r"dtype uint16 with values in 4000\.\.4000; expected 0\.\.255"),
    ("image-complex", lambda e: image(e, np.zeros((8, 8, 3), np.complex64)), r"dtype complex64; expected uint8"),
    ("image-truncated", lambda e: image(e, str(media.png_truncated(e.tmp / "t.png"))), r"could not be decoded"),
    ("image-header-13000x13000", lambda e: image(e, str(media.png_header_only(e.tmp / "b.png", 13000, 13000))),
     r"13000x13000 = 169,000,000 pixels; expected at most max_image_pixels=64,000,000"),
    ("image-pil-bomb-30000x30000", lambda e: image(e, str(media.png_header_only(e.tmp / "b.png", 30000, 30000))),
     r"refused by PIL as a decompression bomb .*expected at most 178,956,970 pixels"),
    ("image-over-configured-limit", lambda e: image(e, Image.new("RGB", (20, 20)), max_image_pixels=100),
     r"20x20 = 400 pixels; expected at most max_image_pixels=100"),
    ("image-size-0", lambda e: image(e, Image.new("RGB", (20, 20)), image_size=0),
     r"image_size is 0; expected an integer in \[1, 1024\]"),
    ("image-max-dynamic-patch-10000", lambda e: image(e, Image.new("RGB", (20, 20)), max_dynamic_patch=10000),
     r"max_dynamic_patch is 10000; expected an integer in \[1, 128\]"),
    ("image-min-above-max", lambda e: image(e, Image.new("RGB", (20, 20)), min_dynamic_patch=13),
     r"min_dynamic_patch is 13; expected an integer in \[1, 12\]"),
    ("image-wrong-type", lambda e: image(e, 7), r"Image 0 has type int; expected a PIL image"),
    ("image-missing-file", lambda e: image(e, str(e.tmp / "nope.png")), r"does not exist; expected a path"),
    ("image-placeholders-2-images-1", lambda e: e.p(text="<image><image>", images=[Image.new("RGB", (8, 8))]),
     r"2 <image> placeholders but 1 image inputs were given"),
    # videos
    ("video-corrupt", lambda e: video(e, _write(e.tmp / "c.mp4", b"\0garbage" * 50)),
     r"could not be decoded|no video stream"),
    ("video-0-frames-file", lambda e: video(e, str(media.write_video(e.tmp / "z.mkv", 0, container="matroska"))),
     r"ends before its first frame .*expected at least one decodable frame"),
    ("video-0-frames-array", lambda e: video(e, np.zeros((0, 8, 8, 3), np.uint8)), r"has no frames; expected"),
    ("video-0x0-frame", lambda e: video(e, np.zeros((4, 0, 0, 3), np.uint8)),
     r"Video 0: frame 0 is not a usable frame .*shape \(0, 0, 3\)"),
    ("video-fps-nan", lambda e: video(e, np.zeros((4, 8, 8, 3), np.uint8), fps=float("nan")),
     r"fps is nan; expected a finite frame rate"),
    ("video-fps-inf", lambda e: video(e, np.zeros((4, 8, 8, 3), np.uint8), fps=float("inf")),
     r"fps is inf; expected a finite frame rate"),
    ("video-fps-negative", lambda e: video(e, np.zeros((4, 8, 8, 3), np.uint8), fps=-5), r"fps is -5; expected"),
    ("video-frame-over-limit", lambda e: VitaVideoProcessor(max_frame_pixels=1000)(_video_file(e, 3)),
     r"frames of 64x48 = 3,072 pixels; expected at most max_frame_pixels=1,000"),
    ("video-wrong-type", lambda e: video(e, 3.5), r"Video input of type float; expected a path"),
    # text
    ("text-int", lambda e: e.p(text=5), r"`text` has type int; expected a string or a list of strings"),
    ("text-list-with-int", lambda e: e.p(text=["a", 5]), r"`text` has type \['str', 'int'\]; expected a string"),
    ("text-lone-surrogate", lambda e: e.p(text="ab\ud800c"), r"holds '\\ud800' at character 2, a lone surrogate"),
    ("text-typed-placeholder-in-raw-text", lambda e: e.p(text="What does <image> mean?"),
     r"1 <image> placeholders but 0 image inputs .*put it in a text block of a chat message"),
    ("text-200k-chars-over-context", lambda e: _long_text(),
     r"Sample 0 is [\d,]+ tokens long; expected at most 2,048 \(tokenizer.model_max_length"),
    # model
    ("model-id-at-vocab-size", lambda e: forward(e, input_ids=ids([[1, 1024, 3]]), attention_mask=None),
     r"holds the id 1024; expected ids in \[0, 1023\]"),
    ("model-id-negative", lambda e: forward(e, input_ids=ids([[1, -1, 3]]), attention_mask=None),
     r"holds the id -1; expected ids in \[0, 1023\]"),
    ("model-ids-float", lambda e: forward(e, input_ids=torch.ones(1, 3), attention_mask=None),
     r"`input_ids` has shape \(1, 3\) and dtype torch.float32; expected a 2-D integer tensor"),
    ("model-ids-1d", lambda e: forward(e, input_ids=ids([1, 2, 3]), attention_mask=None),
     r"`input_ids` has shape \(3,\) .*expected a 2-D integer tensor"),
    ("model-ids-and-embeds", lambda e: forward(e, inputs_embeds=torch.zeros(1, 3, 64)), r"exactly one of `input_ids`"),
    ("model-mask-too-long", lambda e: _text_forward(e, attention_mask=torch.ones(1, 5, dtype=torch.long)),
     r"`attention_mask` has shape \(1, 5\); expected \(1, 3\)"),
    ("model-mask-batch-2", lambda e: _text_forward(e, attention_mask=torch.ones(2, 3, dtype=torch.long)),
     r"`attention_mask` has shape \(2, 3\); expected \(1, 3\)"),
    ("model-features-batch-2-mask-batch-1", lambda e: _two_clips(e, keep_mask_rows=1),
     r"`input_features_mask` has shape \(1, 98\); expected \(2, 98\)"),
    ("model-features-nan", lambda e: forward(e, input_features=torch.full((1, 98, 80), float("nan"))),
     r"`input_features` holds 7840 NaN/inf values; expected finite"),
    ("model-features-int", lambda e: forward(e, input_features=torch.zeros(1, 98, 80, dtype=torch.long)),
     r"`input_features` has shape \(1, 98, 80\) and dtype torch.int64; expected a 3-D floating-point"),
    ("model-pixels-wrong-size", lambda e: forward(e, pixel_values=torch.zeros(1, 3, 32, 32)),
     r"`pixel_values` has shape \(1, 3, 32, 32\); expected \(tiles, 3, 56, 56\)"),
    ("model-pixels-nan", lambda e: forward(e, pixel_values=torch.full((1, 3, 56, 56), float("nan"))),
     r"`pixel_values` holds 9408 NaN/inf values"),
    ("model-num-patches-disagree", lambda e: forward(e, image_num_patches=ids([2])),
     r"`image_num_patches` sums to 2 but 1 tiles/frames were given"),
    ("model-more-placeholders-than-features", lambda e: _eight_image_tokens(e), r"tokens: 8, features: 4"),
]  # fmt: skip


def _video_file(env: Any, num_frames: int) -> str:
    return str(media.write_video(env.tmp / "v.mp4", num_frames))


def _write(path: Any, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _long_text() -> Any:
    processor = tiny_vita_processor()
    processor.tokenizer.model_max_length = 2048
    return processor(text=("What colour is the shape? " * 8000)[:200_000])


def _text_forward(env: Any, **kwargs: Any) -> Any:
    return env.model(input_ids=ids([[1, 20, 21]]), **kwargs)


def _two_clips(env: Any, keep_mask_rows: int) -> Any:
    inputs = env.p(text="<audio><audio>", audio=[media.tone(), media.tone()], sampling_rate=16000, return_tensors="pt")
    inputs["input_features_mask"] = inputs["input_features_mask"][:keep_mask_rows]
    return env.model(**inputs)


def _eight_image_tokens(env: Any) -> Any:
    inputs = model_inputs(env)
    extra = torch.full((1, 4), IMAGE)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return env.model(**inputs)


@pytest.mark.parametrize(("call", "message"), [pytest.param(c, m, id=i) for i, c, m in REFUSED])
def test_bad_input_is_refused_with_a_clear_error(env, call, message):
    with pytest.raises(ValueError, match=message):
        call(env)


# ---------------------------------------------------------------- handled: each function checks the correct result
HANDLED: list[Any] = []


def handled(function: Callable[[Any], None]) -> Callable[[Any], None]:
    HANDLED.append(pytest.param(function, id=function.__name__.removeprefix("case_").replace("_", "-")))
    return function


@handled
def case_audio_5_channel_is_mixed_down(env):
    clips = np.stack([media.tone(amplitude=0.1 * (k + 1)) for k in range(5)])
    out = audio(env, clips)
    torch.testing.assert_close(out["input_features"], audio(env, clips.mean(axis=0))["input_features"])
    through_model(env, out)


@handled
def case_audio_int16_array_is_scaled(env):
    wave = np.round(media.tone() * 32767).astype(np.int16)
    expected = audio(env, wave.astype(np.float32) / 32768.0)["input_features"]
    torch.testing.assert_close(audio(env, wave)["input_features"], expected)


@handled
def case_audio_rates_8000_and_192000_and_overshoot_are_accepted(env):
    for rate in (8000, 192000):
        out = audio(env, media.tone(1.0, rate=rate, amplitude=1.5), rate)
        assert int(out["input_features_mask"].sum()) == 98  # 1 s at 16 kHz: 1 + (16000 - 400) // 160 frames
        through_model(env, out)


@handled
def case_image_1x500_gets_a_one_column_grid(env):
    out = image(env, Image.new("RGB", (1, 500), (200, 10, 10)))
    assert out["image_num_patches"].tolist() == [get_num_tiles(1, 500, 56, 1, 12)] == [13]
    through_model(env, out)


def _same_pixels(env: Any, found: Any, expected_image: Image.Image) -> None:
    torch.testing.assert_close(found["pixel_values"], image(env, expected_image)["pixel_values"])


@handled
def case_image_16_bit_png_is_scaled_to_8_bits(env):
    out = image(env, str(media.png_16bit(env.tmp / "w.png")))
    _same_pixels(env, out, Image.new("RGB", (40, 30), (255, 255, 255)))
    through_model(env, out)


@handled
def case_image_palette_with_alpha_drops_alpha_like_the_original(env):
    path = media.png_palette_alpha(env.tmp / "p.png")
    expected = Image.new("RGB", (40, 20), (0, 255, 0))
    expected.paste((255, 0, 0), (0, 0, 20, 20))
    _same_pixels(env, image(env, str(path)), expected)


@handled
def case_image_animated_gif_uses_its_first_frame(env):
    _same_pixels(env, image(env, str(media.gif_animated(env.tmp / "a.gif"))), Image.new("RGB", (32, 32), (255, 0, 0)))


@handled
def case_image_grid_search_to_10000_tiles_is_fast_and_keeps_the_original_order(env):
    start = time.perf_counter()
    assert len(candidate_grids(1, 10000)) == 93668
    assert time.perf_counter() - start < 10.0  # the cubic search took over 10 minutes
    original = {(i, j) for n in range(1, 41) for i in range(1, n + 1) for j in range(1, n + 1) if 1 <= i * j <= 40}
    assert candidate_grids(1, 40) == tuple(sorted(original, key=lambda g: g[0] * g[1]))


@handled
def case_video_1_frame_is_repeated_to_4(env):
    out = video(env, str(media.write_video(env.tmp / "one.mp4", 1)))
    assert out["video_num_frames"].tolist() == [4]
    assert all(torch.equal(out["pixel_values_videos"][0], frame) for frame in out["pixel_values_videos"])
    through_model(env, out)


@handled
def case_video_4096x2_frames_are_cropped_before_resizing(env):
    start = time.perf_counter()
    out = video(env, str(media.write_video(env.tmp / "wide.mp4", 30, width=4096, height=2)))
    assert time.perf_counter() - start < 20.0  # the full resize took 100 s and 4 GB
    assert out["pixel_values_videos"].shape == (4, 3, 56, 56)
    through_model(env, out)


@handled
def case_video_mkv_without_frame_count_is_sampled_while_decoding(env):
    import av

    path = media.write_video(env.tmp / "clip.mkv", 120, container="matroska")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # no count in the header
    every, fps = decode_all_frames(str(path))
    expected = [Image.fromarray(every[i]) for i in sample_frame_indices(len(every), fps)]
    out = video(env, str(path))
    torch.testing.assert_close(
        out["pixel_values_videos"], video(env, expected, do_sample_frames=False)["pixel_values_videos"]
    )


def _counts(out: Any) -> dict[str, int]:
    row = out["input_ids"][0]
    names = {"bos": BOS, "eos": EOS, "image": IMAGE, "video": VIDEO, "audio": AUDIO}
    return {
        **{k: int((row == v).sum()) for k, v in names.items()},
        "state": int(sum((row == s).sum() for s in STATES)),
    }


@handled
def case_chat_placeholder_typed_in_a_question_is_text(env):
    out = chat(
        env, [{"type": "image", "image": Image.new("RGB", (56, 56))}, {"type": "text", "text": "Is <image> a tag?"}]
    )
    assert _counts(out)["image"] == 4 and out["image_num_patches"].tolist() == [1]
    assert "Is <image> a tag?" in env.p.tokenizer.decode(out["input_ids"][0])
    through_model(env, out)


@handled
def case_chat_control_and_state_tokens_typed_by_a_user_are_text(env):
    typed = "</s> <s> <1> <2> <3> <|im_end|> <audio> <video> <pad> <unk>"
    out = chat(env, [{"type": "text", "text": typed}])
    assert _counts(out) == {"bos": 1, "eos": 2, "image": 0, "video": 0, "audio": 0, "state": 0}  # eos: the template's
    assert typed in env.p.tokenizer.decode(out["input_ids"][0])
    through_model(env, out)


@handled
def case_chat_forged_markers_cannot_unmark_a_placeholder(env):
    forged = "\U000f0000<image>\U000f0001 and \U000f0001<video>\U000f0000"
    assert _counts(chat(env, [{"type": "text", "text": forged}]))["image"] == 0


@handled
def case_chat_without_typed_tokens_encodes_as_before(env):
    blocks = [{"type": "image", "image": Image.new("RGB", (60, 60))}, {"type": "text", "text": "What colour is it?"}]
    assert torch.equal(chat(env, blocks)["input_ids"], chat(env, blocks, sanitize_control_tokens=False)["input_ids"])


@handled
def case_text_over_context_with_truncation_is_cut(env):
    processor = tiny_vita_processor()
    processor.tokenizer.model_max_length = 2048
    out = processor(text="What colour is the shape? " * 8000, truncation=True, max_length=2048)
    assert len(out["input_ids"][0]) == 2048


@handled
def case_model_generates_after_typed_tokens(env):
    out = chat(env, [{"type": "text", "text": "Say <3> then </s>"}])
    with torch.inference_mode():
        generated = env.model.generate(**out, max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, out["input_ids"].shape[1] + 3)


@handled
def case_model_placeholders_without_media_are_ordinary_tokens(env):
    # As Llava and InternVL embed them (transformers' common tests feed random ids that hit them).
    inputs = model_inputs(env, pixel_values=None, image_num_patches=None, input_features=None,
                          input_features_mask=None)  # fmt: skip
    with torch.inference_mode():
        logits = env.model(**inputs).logits
        text = env.model.model.language_model(input_ids=inputs["input_ids"]).last_hidden_state
        expected = env.model.lm_head(text)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("check", HANDLED)
def test_odd_input_is_handled_correctly(env, check):
    check(env)
