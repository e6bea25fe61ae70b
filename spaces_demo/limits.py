"""Input limits of the VITA Space: what one upload may weigh and last, checked before anything reaches the model.

Issue #8 asks for upload size and duration limits with clear messages and no reading of paths the user did not
upload. Each refusal is a `ValueError` that names the value found and the one allowed. Gradio enforces the byte limit
itself at upload time (`launch(max_file_size=...)`); the checks here repeat it for callers of the Python API and add
what gradio cannot know: seconds of audio and video, megapixels.

Every loader takes a path that gradio wrote into its own upload folder and refuses any other (`check_upload`), so a
crafted API call naming `/etc/passwd` is an error, not a read. Media are probed before they are decoded: the header
of an image gives its size, soundfile and PyAV give a duration without decoding the whole stream.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one request.

    Args:
        max_file_mb: bytes of one uploaded file, in MB (also given to `launch(max_file_size=...)`).
        max_audio_secs: length of an uploaded or recorded audio question.
        max_video_secs: length of an uploaded video (VITA samples at most 16 frames, so longer clips only cost time).
        max_image_megapixels: pixels of an uploaded image (VITA tiles it into at most 12 tiles of 448 px anyway).
        max_text_chars: characters of a typed question.
        max_realtime_secs: microphone audio one real-time conversation may stream.
    """

    max_file_mb: float = 50.0
    max_audio_secs: float = 60.0
    max_video_secs: float = 30.0
    max_image_megapixels: float = 16.0
    max_text_chars: int = 2000
    max_realtime_secs: float = 600.0

    def __post_init__(self) -> None:
        for name in ("max_file_mb", "max_audio_secs", "max_video_secs", "max_image_megapixels", "max_realtime_secs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, found {getattr(self, name)!r}")
        if self.max_text_chars < 1:
            raise ValueError(f"Limits.max_text_chars must be at least 1, found {self.max_text_chars}")

    @property
    def max_file_size(self) -> str:
        """The byte limit in the form `launch(max_file_size=...)` takes (gradio parses "<int><unit>")."""
        return f"{int(self.max_file_mb * 1024)}kb"


def upload_folder() -> Path:
    """The folder gradio writes uploads to (`GRADIO_TEMP_DIR`, else `<tmp>/gradio`), as gradio itself computes it."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def check_upload(path: str | os.PathLike, limits: Limits, kind: str, root: str | os.PathLike | None = None) -> Path:
    """The resolved path of an uploaded `kind` ("image", "audio", "video") file, after checking where it lies and
    how big it is. `root` is the upload folder (default gradio's)."""
    root = Path(root).resolve() if root is not None else upload_folder()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root):
        logger.warning("refused a %s path outside the upload folder: %s", kind, path)
        raise ValueError(f"The {kind} must be a file uploaded to this app; found {str(path)!r} outside {root}")
    if not resolved.is_file():
        raise ValueError(f"The {kind} upload {resolved.name!r} is missing; expected a file, upload it again")
    size_mb = resolved.stat().st_size / 2**20
    if size_mb > limits.max_file_mb:
        raise ValueError(f"The {kind} file is {size_mb:.1f} MB; the limit is {limits.max_file_mb:g} MB")
    return resolved


def check_text(text: str | None, limits: Limits) -> str:
    """The stripped question, checked for length ("" when nothing was typed)."""
    text = (text or "").strip()
    if len(text) > limits.max_text_chars:
        raise ValueError(f"The question has {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


def load_image(path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None) -> Image.Image:
    """An uploaded image as RGB PIL, refused before decoding when its header names too many pixels."""
    from PIL import Image, UnidentifiedImageError

    resolved = check_upload(path, limits, "image", root)
    try:
        with Image.open(resolved) as image:
            megapixels = image.width * image.height / 1e6  # from the header: nothing is decoded yet
            if megapixels > limits.max_image_megapixels:
                raise ValueError(
                    f"The image is {image.width}x{image.height} ({megapixels:.1f} megapixels); "
                    f"the limit is {limits.max_image_megapixels:g} megapixels"
                )
            return image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"The image {resolved.name!r} cannot be read ({error}); expected a PNG, JPEG or WebP"
        ) from error


def _seconds_with_pyav(path: Path, kind: str) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1e6  # microseconds (av.time_base)
            stream = (container.streams.video or container.streams.audio)[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            frames = sum(1 for _ in container.decode(stream))  # no duration in the header: count the frames
            rate = float(stream.average_rate or stream.rate or 0)
            if rate <= 0:
                raise ValueError(f"The {kind} {path.name!r} gives no frame rate; expected a rate above 0")
            return frames / rate
    except (av.error.FFmpegError, IndexError) as error:
        raise ValueError(
            f"The {kind} {path.name!r} cannot be read ({error}); expected a common {kind} format"
        ) from error


def load_audio(
    path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None
) -> tuple[np.ndarray, int]:
    """An uploaded or recorded clip as float32 mono samples and their rate, refused when longer than allowed."""
    import soundfile

    resolved = check_upload(path, limits, "audio", root)
    try:
        info = soundfile.info(str(resolved))
        seconds = info.frames / info.samplerate
        readable = True
    except (soundfile.LibsndfileError, RuntimeError):  # a container libsndfile does not know (m4a, webm): PyAV
        seconds = _seconds_with_pyav(resolved, "audio")
        readable = False
    if seconds > limits.max_audio_secs:
        raise ValueError(f"The audio is {seconds:.1f} s long; the limit is {limits.max_audio_secs:g} s")
    if readable:
        audio, rate = soundfile.read(str(resolved), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    else:
        audio, rate = _decode_audio_with_pyav(resolved)
    if audio.size == 0:
        raise ValueError(f"The audio {resolved.name!r} holds no samples; expected a non-empty recording")
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def _decode_audio_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        # Planar or packed, any sample format: the resampler hands out packed float32 mono.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pieces = [
            frame.to_ndarray().reshape(-1)
            for decoded in container.decode(stream)
            for frame in resampler.resample(decoded)
        ]
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), int(rate)


def check_video(path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None) -> Path:
    """The path of an uploaded video (the processor decodes it), refused when longer than allowed."""
    resolved = check_upload(path, limits, "video", root)
    seconds = _seconds_with_pyav(resolved, "video")
    if seconds > limits.max_video_secs:
        raise ValueError(f"The video is {seconds:.1f} s long; the limit is {limits.max_video_secs:g} s")
    return resolved


__all__ = ["Limits", "check_text", "check_upload", "check_video", "load_audio", "load_image", "upload_folder"]
