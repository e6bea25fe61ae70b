"""Bad and odd media made in code for the bad-input table: images with PIL (or a hand-written PNG header, so a
huge image costs nothing to make), videos with PyAV, audio as arrays and wav files."""

from __future__ import annotations

import struct
import wave
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def tone(seconds: float = 1.0, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A 220 Hz sine, float32 in [-amplitude, amplitude]."""
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (amplitude * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)


def write_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A silent 16-bit mono wav of `seconds`."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says `width` x `height` (8-bit greyscale) and whose pixels are one compressed zero row:
    what a decompression bomb looks like before decoding, in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def png_16bit(path: Path, value: int = 65535, size: tuple[int, int] = (40, 30)) -> Path:
    """A 16-bit greyscale PNG filled with `value`."""
    Image.fromarray(np.full(size[::-1], value, np.uint16)).save(path)
    return path


def png_palette_alpha(path: Path) -> Path:
    """A palette PNG with a transparent index: left half colour 1 (red, opaque), right half colour 0 (transparent
    green)."""
    image = Image.new("P", (40, 20))
    image.putpalette([0, 255, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 20, 20))
    image.save(path, transparency=0)
    return path


def gif_animated(path: Path) -> Path:
    """Two frames: red, then blue."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def png_truncated(path: Path) -> Path:
    """A noisy PNG cut in the middle of its pixel data."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_video(
    path: Path, num_frames: int, width: int = 64, height: int = 48, fps: int = 10, container: str | None = None
) -> Path:
    """An mpeg4 video whose frame i has red level 10 * i (saturating) and green 37 * i mod 256."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        out.start_encoding()  # writes the header even when no frame follows
        for i in range(num_frames):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[..., 0], frame[..., 1] = min(255, 10 * i), (37 * i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


__all__ = [
    "gif_animated",
    "png_16bit",
    "png_header_only",
    "png_palette_alpha",
    "png_truncated",
    "tone",
    "write_video",
    "write_wav",
]
