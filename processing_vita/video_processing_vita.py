"""Video processor of VITA: PyAV decoding, 1 fps sampling kept to 4..16 frames, one 448 tile per frame.

Sampling follows the original's `_get_rawvideo_dec` (which used decord): stride = round(avg_fps); positions = range(0,
last + 1, stride); more than 16 positions -> 16 of them picked by `np.linspace(0, len - 1, 16, dtype=int)`; fewer than
4 -> 4 picked the same way (positions repeat). Frames get CLIP-style preprocessing: shortest edge resized to
`image_size` (bicubic), centre crop, ImageNet normalisation. No dynamic tiling on video frames.

The class derives from transformers' `VideoProcessorMixin` (so `AutoVideoProcessor`, save/load and the processor's
class checks work) but replaces the whole pipeline: the torchvision-based `BaseVideoProcessor` resizes differently
from PIL and samples frames by another rule.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin

from .image_processing_vita import IMAGENET_MEAN, IMAGENET_STD, load_image

logger = logging.getLogger(__name__)


def sample_frame_indices(num_frames: int, avg_fps: float, min_frames: int = 4, max_frames: int = 16) -> list[int]:
    """Frame indices VITA keeps from a video of `num_frames` frames at `avg_fps` (see module doc)."""
    if num_frames <= 0:
        raise ValueError(f"The video has {num_frames} frames; expected at least one decodable frame.")
    stride = max(1, int(round(float(avg_fps))))
    positions = list(range(0, num_frames, stride))
    if len(positions) > max_frames:
        return [positions[i] for i in np.linspace(0, len(positions) - 1, num=max_frames, dtype=int)]
    if len(positions) < min_frames:
        return [positions[i] for i in np.linspace(0, len(positions) - 1, num=min_frames, dtype=int)]
    return positions


def _is_frame(x: Any) -> bool:
    return isinstance(x, Image.Image) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (2, 3))


def is_single_video(x: Any) -> bool:
    """A path, bytes, a (T, H, W, C) array/tensor or a list of frames (PIL images or (H, W, C) arrays)."""
    if isinstance(x, (str, os.PathLike, bytes, bytearray)):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim == 4
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_frame(f) for f in x)


def flatten_videos(videos: Any) -> list[Any]:
    """Flatten one video, a list of videos or a per-sample nested list into a flat list of videos."""
    if videos is None:
        return []
    if is_single_video(videos):
        return [videos]
    if isinstance(videos, (list, tuple)):
        flat: list[Any] = []
        for item in videos:
            flat.extend(flatten_videos(item))
        return flat
    raise ValueError(
        f"Video input of type {type(videos).__name__}; expected a path, bytes, a (T, H, W, C) array or a list of "
        "PIL frames (or a list of those)."
    )


def _frames_by_seeking(container: Any, stream: Any, wanted: list[int]) -> list[np.ndarray] | None:
    """Decode only around the wanted frames: seek to the keyframe before each one and decode forward.

    Frame i is the i-th smallest packet timestamp (what decord's index means). Returns None whenever that mapping
    cannot be trusted (missing timestamps, count mismatch), so the caller decodes everything instead.
    """
    import av

    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None and p.size > 0]
    all_pts = sorted(pts for pts, _ in packets)
    keyframes = sorted(pts for pts, key in packets if key)
    if not keyframes or len(all_pts) != len(set(all_pts)) or len(all_pts) < max(wanted) + 1:
        return None
    by_pts = {all_pts[i]: i for i in set(wanted)}
    found: dict[int, np.ndarray] = {}
    frames_iter = None
    current_key = None
    last_pts = None
    for index in sorted(set(wanted)):
        target = all_pts[index]
        if index in found:
            continue
        key = keyframes[max(0, bisect.bisect_right(keyframes, target) - 1)]
        if frames_iter is None or key != current_key and (last_pts is None or last_pts < key) or last_pts >= target:
            try:
                container.seek(key, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                return None
            frames_iter = container.decode(stream)
            current_key = key
        for frame in frames_iter:
            if frame.pts is None:
                return None
            last_pts = frame.pts
            if frame.pts in by_pts and by_pts[frame.pts] not in found:
                found[by_pts[frame.pts]] = frame.to_ndarray(format="rgb24")
            if frame.pts >= target:
                break
        if index not in found:
            return None
    return [found[i] for i in wanted]


def decode_video(
    video: str | os.PathLike | bytes, index: int = 0, min_frames: int = 4, max_frames: int = 16
) -> tuple[list[np.ndarray], float]:
    """Decode the frames VITA samples from a video file with PyAV; returns (RGB uint8 frames, average fps)."""
    import av

    name = "<bytes>" if isinstance(video, (bytes, bytearray)) else str(video)
    if not isinstance(video, (bytes, bytearray)) and not Path(video).is_file():
        raise ValueError(f"Video {index}: file {name!r} does not exist; expected a path to a video file.")

    def source() -> Any:
        return io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else str(video)

    try:
        with av.open(source()) as container:
            if not container.streams.video:
                raise ValueError(f"Video {index}: {name!r} has no video stream; expected a file with video frames.")
            stream = container.streams.video[0]
            avg_fps = float(stream.average_rate) if stream.average_rate else 0.0
            num_frames = int(stream.frames or 0)
            if num_frames > 0 and avg_fps > 0:
                wanted = sample_frame_indices(num_frames, avg_fps, min_frames, max_frames)
                frames = _frames_by_seeking(container, stream, wanted)
                if frames is not None:
                    return frames, avg_fps
        # No usable header count or index: decode every frame, as decord would index them.
        with av.open(source()) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, OSError) as err:
        # PyAV errors subclass ValueError too; re-raise them with the file name and the expectation.
        raise ValueError(
            f"Video {index}: {name!r} could not be decoded ({err}); expected a readable video file (mp4, webm, ...)."
        ) from err
    if not decoded:
        raise ValueError(f"Video {index}: {name!r} has no decodable frames; expected a valid video.")
    if avg_fps <= 0:
        avg_fps = 1.0
    return [decoded[i] for i in sample_frame_indices(len(decoded), avg_fps, min_frames, max_frames)], avg_fps


def decode_all_frames(video: str | os.PathLike | bytes) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (RGB uint8) and its average fps; the slow path, kept as a reference for tests."""
    import av

    with av.open(io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate or 1.0)


class VitaVideoProcessor(VideoProcessorMixin):
    r"""Samples and preprocesses video frames the way VITA does (see module doc).

    Accepts per video: a file path or bytes (decoded with PyAV), a (T, H, W, C) uint8 array/tensor or a list of
    PIL frames. In-memory frames are taken to be at `fps` frames per second (default 1.0, i.e. already one frame per
    second) and sampled by the same rule; pass `do_sample_frames=False` to keep them all.

    Returns `pixel_values_videos` (all frames of all videos, (N_frames, 3, image_size, image_size)) and
    `video_num_frames` (frames per video).
    """

    model_input_names = ["pixel_values_videos", "video_num_frames"]

    def __init__(
        self,
        image_size: int = 448,
        min_frames: int = 4,
        max_frames: int = 16,
        do_sample_frames: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 1 <= min_frames <= max_frames:
            raise ValueError(
                f"min_frames={min_frames}, max_frames={max_frames}; expected 1 <= min_frames <= max_frames."
            )
        self.image_size = int(image_size)
        self.min_frames = int(min_frames)
        self.max_frames = int(max_frames)
        self.do_sample_frames = bool(do_sample_frames)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]

    def frame_to_tile(self, frame: Image.Image, image_size: int) -> torch.Tensor:
        """Shortest edge to `image_size` (bicubic) then centre crop, as CLIPImageProcessor did; uint8 (3, S, S)."""
        w, h = frame.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(image_size * long / short)
        new_size = (image_size, new_long) if w <= h else (new_long, image_size)
        if new_size != (w, h):
            frame = frame.resize(new_size, Image.Resampling.BICUBIC)
        w, h = frame.size
        top = (h - image_size) // 2
        left = (w - image_size) // 2
        arr = np.array(frame)[top : top + image_size, left : left + image_size]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)

    def load_frames(self, video: Any, index: int, fps: float | None, do_sample_frames: bool) -> list[Image.Image]:
        """Decoded and sampled RGB frames of one video."""
        if isinstance(video, (str, os.PathLike, bytes, bytearray)):
            frames, _ = decode_video(video, index, self.min_frames, self.max_frames)
            return [Image.fromarray(f) for f in frames]
        frames_in = list(video)
        if not frames_in:
            raise ValueError(f"Video {index} has no frames; expected at least one frame.")
        if do_sample_frames:
            indices = sample_frame_indices(len(frames_in), fps or 1.0, self.min_frames, self.max_frames)
            frames_in = [frames_in[i] for i in indices]
        return [load_image(f, index) for f in frames_in]

    def preprocess(
        self,
        videos: Any,
        image_size: int | None = None,
        fps: float | None = None,
        do_sample_frames: bool | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Sample, resize, crop and normalise one video or a (possibly nested) list of videos."""
        image_size = self.image_size if image_size is None else image_size
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        flat = flatten_videos(videos)
        if not flat:
            raise ValueError("No videos were given; expected at least one video.")
        tiles = []
        counts = []
        for index, video in enumerate(flat):
            frames = self.load_frames(video, index, fps, do_sample_frames)
            tiles.extend(self.frame_to_tile(f, image_size) for f in frames)
            counts.append(len(frames))
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        pixel_values = torch.stack(tiles).to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)
        data = {"pixel_values_videos": pixel_values, "video_num_frames": torch.tensor(counts, dtype=torch.long)}
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data)

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)


# save_pretrained then writes auto_map and copies these files, so AutoX(..., trust_remote_code=True) can load them.
VitaVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["VitaVideoProcessor", "sample_frame_indices", "decode_video", "flatten_videos"]
