"""Tests of the Space's input limits (`spaces_demo/limits.py`) and of the errors the page shows for them.

Each refusal must name the value found and the one allowed; files outside the upload folder are never read.
"""

import shutil
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import soundfile

from spaces_demo.handlers import VitaSpace
from spaces_demo.limits import Limits, check_text, check_upload, check_video, load_audio, load_image


def _wav(path, secs, rate=16_000):
    soundfile.write(str(path), np.zeros(int(secs * rate), np.float32), rate, subtype="PCM_16")
    return path


def _video(path, secs, fps=4):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(int(secs * fps)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path


def test_an_audio_clip_longer_than_allowed_is_refused_with_both_lengths(upload_root):
    limits = Limits(max_audio_secs=2.0)
    audio, rate = load_audio(_wav(upload_root / "ok.wav", 1.5, rate=22_050), limits, upload_root)
    assert rate == 22_050 and audio.dtype == np.float32 and audio.shape == (33_075,)
    with pytest.raises(ValueError, match=r"The audio is 2\.5 s long; the limit is 2 s"):
        load_audio(_wav(upload_root / "long.wav", 2.5), limits, upload_root)


def test_audio_soundfile_cannot_read_is_decoded_with_pyav(upload_root):
    import av

    path = upload_root / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16_000, layout="mono")
        samples = np.zeros((1, 16_000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())
    audio, rate = load_audio(path, Limits(), upload_root)
    assert rate == 16_000 and abs(len(audio) - 16_000) < 2_048  # the codec pads a frame or so
    with pytest.raises(ValueError, match=r"The audio is 1\.\d s long; the limit is 0\.5 s"):
        load_audio(path, Limits(max_audio_secs=0.5), upload_root)


def test_a_video_longer_than_allowed_is_refused_with_both_lengths(upload_root):
    assert check_video(_video(upload_root / "short.mp4", 2), Limits(), upload_root).name == "short.mp4"
    with pytest.raises(ValueError, match=r"The video is 3\.0 s long; the limit is 2\.5 s"):
        check_video(_video(upload_root / "long.mp4", 3), Limits(max_video_secs=2.5), upload_root)


def test_the_real_31_second_video_fixture_is_over_the_default_limit(upload_root, fixtures_dir):
    path = shutil.copy(fixtures_dir / "demo_1.mp4", upload_root / "demo_1.mp4")
    with pytest.raises(ValueError, match=r"The video is 31\.\d s long; the limit is 30 s"):
        check_video(path, Limits(), upload_root)


def test_an_image_with_too_many_pixels_is_refused_before_decoding(upload_root):
    from PIL import Image

    Image.new("RGB", (400, 300), "blue").save(upload_root / "blue.png")
    image = load_image(upload_root / "blue.png", Limits(), upload_root)
    assert image.mode == "RGB" and image.size == (400, 300)
    with pytest.raises(ValueError, match=r"400x300 \(0\.1 megapixels\); the limit is 0\.1 megapixels"):
        load_image(upload_root / "blue.png", Limits(max_image_megapixels=0.1), upload_root)
    (upload_root / "not-an-image.png").write_bytes(b"hello")
    with pytest.raises(ValueError, match="cannot be read"):
        load_image(upload_root / "not-an-image.png", Limits(), upload_root)


def test_an_oversized_file_is_refused_with_both_sizes(upload_root):
    path = upload_root / "big.wav"
    path.write_bytes(b"\0" * 3 * 2**20)
    with pytest.raises(ValueError, match=r"The audio file is 3\.0 MB; the limit is 2 MB"):
        check_upload(path, Limits(max_file_mb=2), "audio", upload_root)
    assert Limits(max_file_mb=2).max_file_size == "2048kb"  # what launch(max_file_size=...) parses


def test_files_outside_the_upload_folder_are_never_read(upload_root, tmp_path):
    outside = _wav(tmp_path / "private.wav", 0.5)
    with pytest.raises(ValueError, match="must be a file uploaded to this app"):
        load_audio(outside, Limits(), upload_root)
    with pytest.raises(ValueError, match="must be a file uploaded to this app"):
        load_image("/etc/passwd", Limits(), upload_root)
    with pytest.raises(ValueError, match="must be a file uploaded to this app"):
        check_video(upload_root / ".." / "private.wav", Limits(), upload_root)  # no escape through ..
    with pytest.raises(ValueError, match="is missing"):
        check_upload(upload_root / "gone.wav", Limits(), "audio", upload_root)


def test_text_and_limit_values_are_checked():
    assert check_text("  What colour?  ", Limits()) == "What colour?" and check_text(None, Limits()) == ""
    with pytest.raises(ValueError, match="The question has 11 characters; the limit is 10"):
        check_text("x" * 11, Limits(max_text_chars=10))
    with pytest.raises(ValueError, match="max_audio_secs must be positive, found 0"):
        Limits(max_audio_secs=0)


def test_the_page_shows_the_limit_as_a_gradio_error(tiny_runtime, upload_root):
    space = VitaSpace(tiny_runtime, limits=Limits(max_audio_secs=1.0), upload_root=str(upload_root))
    request = SimpleNamespace(session_hash="visitor")
    too_long = _wav(upload_root / "long.wav", 1.5)
    with pytest.raises(gr.Error, match=r"The audio is 1\.5 s long; the limit is 1 s"):
        next(space.chat("", None, None, str(too_long), None, request))
    with pytest.raises(gr.Error, match="Type a question or give audio"):
        next(space.chat("", None, None, None, None, request))
    with pytest.raises(gr.Error, match="outside"):
        space.realtime_image("/etc/hostname", None, request)
    assert space.open_sessions() == 0  # refused before any session was opened


def _server_free(message: str, root) -> None:
    """A message for the visitor: no server folder, no errno."""
    assert str(root) not in message and "/tmp" not in message, message
    assert "errno" not in message.lower() and "[Err" not in message, message


def test_an_empty_upload_is_said_to_be_empty_by_the_name_the_visitor_gave(upload_root):
    for kind, suffix in (("image", "png"), ("audio", "wav"), ("video", "mp4")):
        path = upload_root / f"stored.{suffix}"
        path.write_bytes(b"")
        with pytest.raises(ValueError, match=rf"The {kind} 'mine\.{suffix}' is empty \(0 bytes\)") as refused:
            check_upload(path, Limits(), kind, upload_root, name=f"mine.{suffix}")
        _server_free(str(refused.value), upload_root)
    empty = upload_root / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"The audio 'empty\.wav' is empty \(0 bytes\); expected an audio file$"):
        load_audio(empty, Limits(), upload_root)
    # A wav with a header and no samples is empty too (libsndfile reads it: 0 frames).
    with pytest.raises(ValueError, match=r"The audio 'silence\.wav' is empty: it holds no samples"):
        load_audio(_wav(upload_root / "silence.wav", 0), Limits(), upload_root)


def test_unreadable_files_name_the_file_and_why_without_a_server_path_or_errno(upload_root):
    text = b"These are my shopping notes, not a picture.\n" * 4
    for suffix in ("png", "wav", "mp4"):
        (upload_root / f"notes.{suffix}").write_bytes(text)
    with pytest.raises(
        ValueError, match=r"The image 'notes\.png' cannot be read: .* expected a PNG, JPEG or WebP"
    ) as e:
        load_image(upload_root / "notes.png", Limits(), upload_root)
    _server_free(str(e.value), upload_root)
    with pytest.raises(ValueError, match=r"The audio 'notes\.wav' cannot be read \(invalid data found") as e:
        load_audio(upload_root / "notes.wav", Limits(), upload_root)
    assert "expected an audio file in a common format (WAV, MP3" in str(e.value)
    _server_free(str(e.value), upload_root)
    with pytest.raises(ValueError, match=r"The video 'holiday\.mp4' cannot be read \(invalid data found") as e:
        check_video(upload_root / "notes.mp4", Limits(), upload_root, name="holiday.mp4")
    _server_free(str(e.value), upload_root)
    # A truncated picture: its header is fine, its data is not.
    from PIL import Image

    Image.effect_noise((64, 64), 40).convert("RGB").save(upload_root / "whole.png")
    (upload_root / "cut.png").write_bytes((upload_root / "whole.png").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"The image 'cut\.png' cannot be read: its picture data is damaged") as e:
        load_image(upload_root / "cut.png", Limits(), upload_root)
    _server_free(str(e.value), upload_root)


def test_a_file_without_the_stream_asked_for_is_refused(upload_root):
    video = _video(upload_root / "silent.mp4", 1)
    with pytest.raises(ValueError, match=r"The audio 'silent\.mp4' holds no audio stream"):
        load_audio(video, Limits(), upload_root)
    import av

    path = upload_root / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16_000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())
    with pytest.raises(ValueError, match=r"The video 'voice\.m4a' holds no video stream"):
        check_video(path, Limits(), upload_root)


def test_a_path_outside_the_uploads_is_refused_without_naming_the_servers_folders(upload_root):
    with pytest.raises(ValueError, match="must be a file uploaded to this app") as refused:
        load_image("/etc/passwd", Limits(), upload_root)
    assert "'passwd'" in str(refused.value) and "/etc" not in str(refused.value)
    _server_free(str(refused.value), upload_root)


def test_every_limit_is_described_in_one_wording():
    from spaces_demo.limits import describe_limits

    assert describe_limits(Limits()) == (
        "50 MB a file, audio 60 s, video 30 s, images 16 megapixels, typed questions 2,000 characters, "
        "10 minutes of streaming per conversation"
    )
    custom = Limits(max_file_mb=2.5, max_text_chars=300, max_realtime_secs=90, max_image_megapixels=0.5)
    assert describe_limits(custom) == (
        "2.5 MB a file, audio 60 s, video 30 s, images 0.5 megapixels, typed questions 300 characters, "
        "90 s of streaming per conversation"
    )
    assert describe_limits(Limits(max_realtime_secs=60)).endswith("1 minute of streaming per conversation")
