"""Fixtures for the processing_vita tests: the tiny processor and a generated video file."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_processor():
    from processing_vita.testing_utils import tiny_vita_processor

    return tiny_vita_processor()


@pytest.fixture
def make_video(tmp_path):
    """Write a small mpeg4 video whose frame i has red level 10*i, so sampled frames can be identified."""

    def _make(
        num_frames: int, fps: int = 10, width: int = 64, height: int = 48, name: str = "clip.mp4", gop: int = 12
    ) -> Path:
        import av
        import numpy as np

        path = tmp_path / name
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.gop_size = gop
            for i in range(num_frames):
                frame = np.zeros((height, width, 3), np.uint8)
                frame[..., 0] = min(255, 10 * i)
                frame[..., 1] = (37 * i) % 256  # distinct frames even after the red channel saturates
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path

    return _make
