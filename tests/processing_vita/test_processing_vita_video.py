"""VitaVideoProcessor: VITA's 1 fps / 4..16 frame sampling rule, PyAV decoding of generated and real videos, frame
preprocessing against the original recipe (shortest-edge resize + centre crop), and clear errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from processing_vita.video_processing_vita import (
    VitaVideoProcessor,
    decode_all_frames,
    decode_video,
    sample_frame_indices,
)

from .media import fixture_path


def reference_positions(num_frames, fps, min_frames=4, max_frames=16):
    """The original `_get_rawvideo_dec` sampling, written out independently."""
    stride = int(round(float(fps) / 1))
    all_pos = list(range(0, num_frames - 1 + 1, stride))
    if len(all_pos) > max_frames:
        picks = np.linspace(0, len(all_pos) - 1, num=max_frames, dtype=int)
    elif len(all_pos) < min_frames:
        picks = np.linspace(0, len(all_pos) - 1, num=min_frames, dtype=int)
    else:
        return all_pos
    return [all_pos[i] for i in picks]


@pytest.mark.parametrize(
    ("num_frames", "fps", "expected_count"),
    [(954, 30.0, 16), (300, 30.0, 10), (60, 30.0, 4), (1, 25.0, 4), (480, 30.0, 16), (450, 29.97, 15)],
)
def test_sampling_keeps_one_frame_per_second_within_four_to_sixteen(num_frames, fps, expected_count):
    positions = sample_frame_indices(num_frames, fps)
    assert positions == reference_positions(num_frames, fps)
    assert len(positions) == expected_count


def test_short_video_repeats_frames_to_reach_four():
    # positions [0, 30]; linspace(0, 1, 4) truncates to [0, 0, 0, 1].
    assert sample_frame_indices(60, 30.0) == [0, 0, 0, 30]


@settings(max_examples=200, deadline=None)
@given(num_frames=st.integers(1, 3000), fps=st.floats(0.6, 120.0))
def test_sampling_matches_reference_for_random_lengths(num_frames, fps):
    assert sample_frame_indices(num_frames, fps) == reference_positions(num_frames, fps)


def test_generated_video_file_samples_the_expected_frames(make_video):
    # 25 frames at 10 fps: positions 0, 10, 20 -> fewer than 4 -> [0, 0, 10, 20].
    path = make_video(25, fps=10)
    out = VitaVideoProcessor(image_size=32)(str(path))
    assert out["video_num_frames"].tolist() == [4]
    assert out["pixel_values_videos"].shape == (4, 3, 32, 32)
    red = out["pixel_values_videos"][:, 0] * 0.229 + 0.485
    levels = (red.mean(dim=(1, 2)) * 255).round().tolist()
    for level, frame_index in zip(levels, [0, 0, 10, 20]):
        assert abs(level - 10 * frame_index) < 8


def test_video_given_as_bytes_equals_video_given_as_path(make_video):
    path = make_video(45, fps=10)
    proc = VitaVideoProcessor(image_size=32)
    torch.testing.assert_close(proc(path.read_bytes())["pixel_values_videos"], proc(str(path))["pixel_values_videos"])


@pytest.mark.parametrize(("num_frames", "gop"), [(200, 7), (95, 30), (33, 1)])
def test_seeking_decoder_returns_exactly_the_frames_of_a_full_decode(make_video, num_frames, gop):
    path = make_video(num_frames, fps=10, gop=gop)
    frames, fps = decode_video(str(path))
    every, _ = decode_all_frames(str(path))
    indices = sample_frame_indices(len(every), fps)
    assert len(frames) == len(indices)
    for frame, i in zip(frames, indices):
        np.testing.assert_array_equal(frame, every[i])


def test_demo_video_seeking_matches_sequential_decode():
    import av

    path = fixture_path("demo_1.mp4")
    frames, fps = decode_video(str(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        indices = sample_frame_indices(stream.frames, fps)
        wanted = set(indices)
        # Sequential decode keeping only the sampled frames (all 953 frames would need 2 GB).
        kept = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream)) if i in wanted}
    assert len(frames) == 16
    for frame, i in zip(frames, indices):
        np.testing.assert_array_equal(frame, kept[i])


def test_demo_video_gives_sixteen_frames():
    path = fixture_path("demo_1.mp4")
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = len(reference_positions(stream.frames, float(stream.average_rate)))
    out = VitaVideoProcessor(image_size=56)(str(path))
    assert out["video_num_frames"].tolist() == [expected] == [16]
    assert out["pixel_values_videos"].shape == (16, 3, 56, 56)


def test_frames_are_resized_on_the_short_edge_and_centre_cropped_like_clip():
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)) for _ in range(4)]
    out = VitaVideoProcessor(image_size=32)(frames)
    resized = frames[0].resize((int(32 * 100 / 60), 32), Image.Resampling.BICUBIC)
    left = (resized.width - 32) // 2
    crop = np.asarray(resized.crop((left, 0, left + 32, 32)), dtype=np.float32) / 255.0
    expected = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    torch.testing.assert_close(
        out["pixel_values_videos"][0], torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-5, rtol=0
    )


def test_numpy_frames_and_pil_frames_give_the_same_result():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)
    proc = VitaVideoProcessor(image_size=32)
    a = proc(arr)
    b = proc([Image.fromarray(f) for f in arr])
    torch.testing.assert_close(a["pixel_values_videos"], b["pixel_values_videos"])
    assert a["video_num_frames"].tolist() == [6]


def test_in_memory_frames_with_fps_are_sampled_by_the_same_rule():
    arr = np.zeros((90, 16, 16, 3), dtype=np.uint8)
    out = VitaVideoProcessor(image_size=16)(arr, fps=30)
    assert out["video_num_frames"].tolist() == [len(reference_positions(90, 30))] == [4]


def test_batch_of_videos_concatenates_frames(make_video):
    path = make_video(45, fps=10)
    out = VitaVideoProcessor(image_size=32)([str(path), np.zeros((20, 16, 16, 3), np.uint8)])
    assert out["video_num_frames"].tolist() == [5, 16]
    assert out["pixel_values_videos"].shape[0] == 21


def test_corrupt_or_missing_video_raises_clear_value_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ValueError, match="could not be decoded|no video stream"):
        VitaVideoProcessor()(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        VitaVideoProcessor()(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="expected a path"):
        VitaVideoProcessor()(3.5)


def test_save_and_load_keep_frame_limits(tmp_path):
    proc = VitaVideoProcessor(image_size=64, min_frames=2, max_frames=8)
    proc.save_pretrained(tmp_path)
    loaded = VitaVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.image_size, loaded.min_frames, loaded.max_frames) == (64, 2, 8)


def test_frames_of_extreme_aspect_are_cropped_before_resizing_within_two_grey_levels():
    # 4096x2 would be resized to 917504x448 first (1.2 GB a frame); the crop's box alone is resized instead.
    rng = np.random.default_rng(2)
    frame = Image.fromarray(rng.integers(0, 256, (4, 1000, 3), dtype=np.uint8))
    tile = VitaVideoProcessor(image_size=32).frame_to_tile(frame, 32).permute(1, 2, 0).numpy().astype(int)
    resized = frame.resize((8000, 32), Image.Resampling.BICUBIC)
    reference = np.asarray(resized.crop((3984, 0, 4016, 32)), dtype=int)
    assert np.abs(tile - reference).max() <= 2


def test_unusable_sampling_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match=r"fps is nan; expected a finite frame rate"):
        VitaVideoProcessor(image_size=16)(np.zeros((4, 8, 8, 3), np.uint8), fps=float("nan"))
    with pytest.raises(ValueError, match=r"image_size is 0; expected an integer in \[1, 1024\]"):
        VitaVideoProcessor(image_size=0)
