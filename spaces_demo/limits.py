"""Input limits of the VITA Space: what one upload may weigh and last, checked before anything reaches the model.

Issue #8 asks for upload size and duration limits with clear messages and no reading of paths the user did not
upload. Each refusal is a `ValueError` that names the value found and the one allowed. Gradio enforces the byte limit
itself at upload time (`launch(max_file_size=...)`); the checks here repeat it for callers of the Python API and add
what gradio cannot know: seconds of audio and video, megapixels.

Every loader takes a path that gradio wrote into its own upload folder and refuses any other (`check_upload`), so a
crafted API call naming `/etc/passwd` is an error, not a read. Media are probed before they are decoded: the header
of an image gives its size, soundfile and PyAV give a duration without decoding the whole stream.

Messages are for the visitor: they name the file as the visitor called it (`name`, else the file's own name), never
the folder it lies in on the server, and say why it was refused in words (an empty file is empty; a file no decoder
understands "cannot be read", with the decoder's reason but not its errno or path). `describe_limits` is the one
wording of the limits, shown in the page's header and listed in the Space README.
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


def describe_limits(limits: Limits) -> str:
    """Every limit in words, as the page's header and the Space README list them."""
    streaming = limits.max_realtime_secs
    if streaming % 60 == 0:
        minutes = streaming / 60
        streaming_text = f"{minutes:g} minute{'s' if minutes != 1 else ''}"
    else:
        streaming_text = f"{streaming:g} s"
    return (
        f"{limits.max_file_mb:g} MB a file, audio {limits.max_audio_secs:g} s, video {limits.max_video_secs:g} s, "
        f"images {limits.max_image_megapixels:g} megapixels, typed questions {limits.max_text_chars:,} characters, "
        f"{streaming_text} of streaming per conversation"
    )


def upload_folder() -> Path:
    """The folder gradio writes uploads to (`GRADIO_TEMP_DIR`, else `<tmp>/gradio`), as gradio itself computes it."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def check_upload(
    path: str | os.PathLike,
    limits: Limits,
    kind: str,
    root: str | os.PathLike | None = None,
    name: str | None = None,
) -> Path:
    """The resolved path of an uploaded `kind` ("image", "audio", "video") file, after checking where it lies, that
    it holds something and how big it is. `root` is the upload folder (default gradio's); `name` is the file's name
    as the visitor knows it, for the messages (default the file's own name; never the server's folder)."""
    root = Path(root).resolve() if root is not None else upload_folder()
    resolved = Path(path).resolve()
    name = name or Path(path).name
    if not resolved.is_relative_to(root):
        logger.warning("refused a %s path outside the upload folder: %s", kind, path)
        raise ValueError(f"The {kind} must be a file uploaded to this app; {name!r} is outside its upload folder")
    if not resolved.is_file():
        raise ValueError(f"The {kind} upload {name!r} is missing; expected a file, upload it again")
    size = resolved.stat().st_size
    if size == 0:
        raise ValueError(f"The {kind} {name!r} is empty (0 bytes); expected {_article(kind)} {kind} file")
    size_mb = size / 2**20
    if size_mb > limits.max_file_mb:
        raise ValueError(f"The {kind} file is {size_mb:.1f} MB; the limit is {limits.max_file_mb:g} MB")
    return resolved


def check_text(text: str | None, limits: Limits) -> str:
    """The stripped question, checked for length ("" when nothing was typed)."""
    text = (text or "").strip()
    if len(text) > limits.max_text_chars:
        raise ValueError(f"The question has {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


IMAGE_FORMATS = "a PNG, JPEG or WebP picture"
AUDIO_FORMATS = "WAV, MP3, OGG, FLAC, M4A or WebM"
VIDEO_FORMATS = "MP4, WebM, MOV or AVI"
_FORMATS = {"audio": AUDIO_FORMATS, "video": VIDEO_FORMATS}


def load_image(
    path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None, name: str | None = None
) -> Image.Image:
    """An uploaded image as RGB PIL (turned as its EXIF orientation says, as a browser shows it), refused before
    decoding when its header names too many pixels. `name`: the visitor's file name, for the messages."""
    from PIL import Image, ImageOps

    resolved = check_upload(path, limits, "image", root, name)
    name = name or resolved.name
    try:
        opened = Image.open(resolved)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"The image {name!r} cannot be read: its header names too many pixels to open safely; the limit is "
            f"{limits.max_image_megapixels:g} megapixels"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:  # UnidentifiedImageError is an OSError; its text has the path
        raise ValueError(
            f"The image {name!r} cannot be read: its content is not a picture format this app knows; "
            f"expected {IMAGE_FORMATS}"
        ) from error
    with opened as image:
        megapixels = image.width * image.height / 1e6  # from the header: nothing is decoded yet
        if megapixels > limits.max_image_megapixels:
            raise ValueError(
                f"The image is {image.width}x{image.height} ({megapixels:.1f} megapixels); "
                f"the limit is {limits.max_image_megapixels:g} megapixels"
            )
        try:
            return ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as error:  # a truncated or damaged file
            raise ValueError(
                f"The image {name!r} cannot be read: its picture data is damaged or incomplete; "
                f"expected {IMAGE_FORMATS}"
            ) from error


def _unreadable(kind: str, name: str, error: Exception) -> ValueError:
    """The message for a file FFmpeg or libsndfile cannot read: the decoder's reason, without its errno or path."""
    reason = getattr(error, "strerror", None)  # FFmpegError: "Invalid data found when processing input"
    reason = f" ({reason[0].lower()}{reason[1:]})" if isinstance(reason, str) and reason else ""
    return ValueError(
        f"The {kind} {name!r} cannot be read{reason}; expected {_article(kind)} {kind} file in a common format "
        f"({_FORMATS[kind]})"
    )


def _seconds_with_pyav(path: Path, kind: str, name: str | None = None) -> float:
    import av

    name = name or path.name
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise ValueError(
                    f"The {kind} {name!r} holds no {kind} stream; expected {_article(kind)} {kind} file "
                    f"({_FORMATS[kind]})"
                )
            if container.duration is not None:
                return container.duration / 1e6  # microseconds (av.time_base)
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            frames = sum(1 for _ in container.decode(stream))  # no duration in the header: count the frames
            rate = float(stream.average_rate or stream.rate or 0)
            if rate <= 0:
                raise ValueError(f"The {kind} {name!r} gives no frame rate; expected a rate above 0")
            return frames / rate
    except av.error.FFmpegError as error:  # a ValueError too: caught first, its text has the errno and the path
        raise _unreadable(kind, name, error) from error


def load_audio(
    path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None, name: str | None = None
) -> tuple[np.ndarray, int]:
    """An uploaded or recorded clip as float32 mono samples and their rate, refused when longer than allowed or empty.
    `name`: the visitor's file name, for the messages."""
    import soundfile

    resolved = check_upload(path, limits, "audio", root, name)
    name = name or resolved.name
    try:
        info = soundfile.info(str(resolved))
        readable = info.samplerate > 0
        seconds = info.frames / info.samplerate if readable else 0.0
    except (soundfile.LibsndfileError, RuntimeError):  # a container libsndfile does not know (m4a, webm): PyAV
        readable = False
    if not readable:
        seconds = _seconds_with_pyav(resolved, "audio", name)
    if seconds > limits.max_audio_secs:
        raise ValueError(f"The audio is {seconds:.1f} s long; the limit is {limits.max_audio_secs:g} s")
    if readable:
        try:
            audio, rate = soundfile.read(str(resolved), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise _unreadable("audio", name, error) from error
        audio = audio.mean(axis=1)
    else:
        audio, rate = _decode_audio_with_pyav(resolved, name)
    if audio.size == 0:
        raise ValueError(f"The audio {name!r} is empty: it holds no samples; expected a recording with sound")
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def _decode_audio_with_pyav(path: Path, name: str) -> tuple[np.ndarray, int]:
    import av

    try:
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
    except av.error.FFmpegError as error:  # damaged past the header
        raise _unreadable("audio", name, error) from error
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), int(rate)


def check_video(
    path: str | os.PathLike, limits: Limits, root: str | os.PathLike | None = None, name: str | None = None
) -> Path:
    """The path of an uploaded video (the processor decodes it), refused when longer than allowed. `name`: the
    visitor's file name, for the messages."""
    resolved = check_upload(path, limits, "video", root, name)
    seconds = _seconds_with_pyav(resolved, "video", name or resolved.name)
    if seconds > limits.max_video_secs:
        raise ValueError(f"The video is {seconds:.1f} s long; the limit is {limits.max_video_secs:g} s")
    return resolved


__all__ = [
    "Limits",
    "check_text",
    "check_upload",
    "check_video",
    "describe_limits",
    "load_audio",
    "load_image",
    "upload_folder",
]
