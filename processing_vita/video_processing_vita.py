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

from .image_processing_vita import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_SIZE, checked_int, load_image

logger = logging.getLogger(__name__)

# Default bound on a video frame's pixels (4096 x 4096: 4K and 5K video pass): up to 16 sampled frames are held
# decoded, about 3 bytes a pixel each. Configurable per processor (`max_frame_pixels`, None for no bound).
DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096
# Frames whose shortest-edge resize would be longer than this many tiles are cropped before resizing (see
# `frame_to_tile`); below it the resize is the original's, bit for bit.
_EXACT_RESIZE_MAX_ASPECT = 8


def checked_fps(fps: Any, index: int | None = None) -> float | None:
    """`fps` as a positive finite float (None stays None: 1 frame a second); a clear `ValueError` otherwise."""
    if fps is None:
        return None
    where = "" if index is None else f" for video {index}"
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not 0 < fps < 1e6:
        raise ValueError(
            f"fps{where} is {fps!r}; expected a finite frame rate in frames per second, 0 < fps < 1e6 (the rate "
            "of in-memory frames; None means 1 frame a second)."
        )
    return float(fps)


def _check_frame_pixels(width: int, height: int, index: int, where: str, max_pixels: int | None) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"Video {index}{where} has frames of {width}x{height} pixels; expected at least 1x1.")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"Video {index}{where} has frames of {width}x{height} = {width * height:,} pixels; expected at most "
            f"max_frame_pixels={max_pixels:,}. Downscale the video, or raise max_frame_pixels on the video processor."
        )


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


def _frames_by_seeking(
    container: Any, stream: Any, num_frames: int, avg_fps: float, min_frames: int, max_frames: int
) -> list[np.ndarray] | None:
    """Decode only around the sampled frames: seek to the keyframe before each one and decode forward.

    Frame i is the i-th smallest packet timestamp (what decord's index means); `num_frames` is the header's count, or
    0 when the container has none (mkv, webm), and then the packets are counted (demuxing decodes nothing). Returns
    None whenever that mapping cannot be trusted (missing timestamps, count mismatch), so the caller decodes instead.
    """
    import av

    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None and p.size > 0]
    all_pts = sorted(pts for pts, _ in packets)
    keyframes = sorted(pts for pts, key in packets if key)
    if not all_pts:
        return None
    wanted = sample_frame_indices(num_frames or len(all_pts), avg_fps, min_frames, max_frames)
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


def _frames_by_two_passes(
    open_source: Any, avg_fps: float, min_frames: int, max_frames: int
) -> tuple[list[np.ndarray], float]:
    """Decode sequentially twice: count the frames, then keep only the sampled ones (at most `max_frames` held)."""
    with open_source() as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = sum(1 for _ in container.decode(stream))
    if count == 0:
        return [], avg_fps
    fps = avg_fps if avg_fps > 0 else 1.0
    wanted = sample_frame_indices(count, fps, min_frames, max_frames)
    keep, last = set(wanted), max(wanted)
    kept: dict[int, np.ndarray] = {}
    with open_source() as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in keep:
                kept[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return [kept[i] for i in wanted], fps


def decode_video(
    video: str | os.PathLike | bytes,
    index: int = 0,
    min_frames: int = 4,
    max_frames: int = 16,
    max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
) -> tuple[list[np.ndarray], float]:
    """Decode the frames VITA samples from a video file with PyAV; returns (RGB uint8 frames, average fps).

    Memory stays bounded by the sampled frames whatever the length: frames are found by seeking, or (no usable
    index) by two sequential passes. Frames over `max_frame_pixels` are refused before anything is decoded."""
    import av

    name = "<bytes>" if isinstance(video, (bytes, bytearray)) else str(video)
    if not isinstance(video, (bytes, bytearray)) and not Path(video).is_file():
        raise ValueError(f"Video {index}: file {name!r} does not exist; expected a path to a video file.")

    def open_source() -> Any:
        return av.open(io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else str(video))

    try:
        with open_source() as container:
            if not container.streams.video:
                raise ValueError(f"Video {index}: {name!r} has no video stream; expected a file with video frames.")
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if width or height:
                _check_frame_pixels(width, height, index, f" ({name!r})", max_frame_pixels)
            avg_fps = float(stream.average_rate) if stream.average_rate else 0.0
            if avg_fps > 0:
                frames = _frames_by_seeking(
                    container, stream, int(stream.frames or 0), avg_fps, min_frames, max_frames
                )
                if frames is not None:
                    return frames, avg_fps
        frames, avg_fps = _frames_by_two_passes(open_source, avg_fps, min_frames, max_frames)
    except av.error.EOFError as err:
        raise ValueError(
            f"Video {index}: {name!r} ends before its first frame ({err}); expected at least one decodable frame."
        ) from err
    except (av.error.FFmpegError, OSError) as err:
        # PyAV errors subclass ValueError too; re-raise them with the file name and the expectation.
        raise ValueError(
            f"Video {index}: {name!r} could not be decoded ({err}); expected a readable video file (mp4, webm, ...)."
        ) from err
    if not frames:
        raise ValueError(f"Video {index}: {name!r} has no decodable frames; expected a valid video.")
    return frames, avg_fps


def decode_all_frames(video: str | os.PathLike | bytes) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (RGB uint8) and its average fps; the slow path, kept as a reference for tests."""
    import av

    with av.open(io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate or 1.0)


def _checked_image_size(image_size: Any) -> int:
    return checked_int("image_size", image_size, 1, MAX_IMAGE_SIZE, "It is the frame tile side in pixels (448).")


class VitaVideoProcessor(VideoProcessorMixin):
    r"""Samples and preprocesses video frames the way VITA does (see module doc).

    Accepts per video: a file path or bytes (decoded with PyAV), a (T, H, W, C) uint8 array/tensor or a list of
    PIL frames. In-memory frames are taken to be at `fps` frames per second (default 1.0, i.e. already one frame per
    second) and sampled by the same rule; pass `do_sample_frames=False` to keep them all.

    Time and memory stay bounded for any input: files are sampled while decoding (never every frame held), frames of
    more than `max_frame_pixels` pixels (default 4096 x 4096; None for no bound) are refused with a `ValueError`,
    `image_size` is at most 1024 and frames of extreme aspect ratio are cropped before they are resized.

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
        max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 1 <= min_frames <= max_frames:
            raise ValueError(
                f"min_frames={min_frames}, max_frames={max_frames}; expected 1 <= min_frames <= max_frames."
            )
        self.image_size = _checked_image_size(image_size)
        self.max_frame_pixels = (
            None
            if max_frame_pixels is None
            else checked_int("max_frame_pixels", max_frame_pixels, 1, 2**62, "Pass a pixel count, or None.")
        )
        self.min_frames = int(min_frames)
        self.max_frames = int(max_frames)
        self.do_sample_frames = bool(do_sample_frames)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]

    def frame_to_tile(self, frame: Image.Image, image_size: int) -> torch.Tensor:
        """Shortest edge to `image_size` (bicubic) then centre crop, as CLIPImageProcessor did; uint8 (3, S, S).

        Up to an aspect ratio of 8:1 the whole frame is resized then cropped, as the original did, bit for bit.
        Beyond it that resize would be huge (a 4096x2 frame becomes 917504x448, 1.2 GB), so only the crop's box of
        the frame is resized (PIL's `box`), which reads the same source pixels and differs by a grey level at most.
        """
        w, h = frame.size
        if w < 1 or h < 1:
            raise ValueError(f"A video frame is {w}x{h} pixels; expected at least 1x1.")
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(image_size * long / short)
        new_w, new_h = (image_size, new_long) if w <= h else (new_long, image_size)
        top = (new_h - image_size) // 2
        left = (new_w - image_size) // 2
        if new_long > _EXACT_RESIZE_MAX_ASPECT * image_size:
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy)
            frame = frame.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
            top = left = 0
        elif (new_w, new_h) != (w, h):
            frame = frame.resize((new_w, new_h), Image.Resampling.BICUBIC)
        arr = np.array(frame)[top : top + image_size, left : left + image_size]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)

    def load_frames(self, video: Any, index: int, fps: float | None, do_sample_frames: bool) -> list[Image.Image]:
        """Decoded and sampled RGB frames of one video."""
        if isinstance(video, (str, os.PathLike, bytes, bytearray)):
            frames, _ = decode_video(video, index, self.min_frames, self.max_frames, self.max_frame_pixels)
            return [Image.fromarray(f) for f in frames]
        frames_in = list(video)
        if not frames_in:
            raise ValueError(f"Video {index} has no frames; expected at least one frame.")
        fps = checked_fps(fps, index)
        positions = list(range(len(frames_in)))
        if do_sample_frames:
            positions = sample_frame_indices(len(frames_in), fps or 1.0, self.min_frames, self.max_frames)
        frames = []
        for i in positions:
            try:
                frames.append(load_image(frames_in[i], i, self.max_frame_pixels))
            except ValueError as err:
                raise ValueError(f"Video {index}: frame {i} is not a usable frame ({err})") from err
        return frames

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
        image_size = self.image_size if image_size is None else _checked_image_size(image_size)
        fps = checked_fps(fps)
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

__all__ = [
    "DEFAULT_MAX_FRAME_PIXELS",
    "VitaVideoProcessor",
    "checked_fps",
    "decode_video",
    "flatten_videos",
    "sample_frame_indices",
]
