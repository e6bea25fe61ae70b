"""Audio coming into a duplex session: chunk validation, streaming resampling to 16 kHz, and reading recordings.

Microphones and files come at any common rate (8000, 22050, 24000, 44100, 48000 Hz, ...), as int16 or float. The
session copies each chunk in the caller's thread (`copy_chunk`, which never lets a bad chunk raise there: what is no
array of numbers, such as a ragged list or a bfloat16 tensor, becomes the message of an `error` event), validates it
in the dispatcher (`as_float32_mono` and `checked_rate`: a bad chunk raises `ValueError` naming the value found and the
one expected, before any state changes) and resamples the stream to 16 kHz with `Resampler`, a streaming
windowed-sinc (Kaiser) polyphase filter. It is time-aligned (centred filter), so segment times on the 16 kHz clock
do not shift; a rate change mid-stream flushes the old filter's lookahead first (`duplex_vad`). `resample` runs it
over a whole clip (the CLI and the Space mix spoken answers at one rate with it); numpy only, as the VAD, while the
processor's offline feature extraction resamples whole clips with torchaudio. `read_audio_file` reads recordings and
the speech engines' output. `EchoGuard` keeps the assistant's own voice, played back into the microphone, from
counting as the user.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
MIN_RATE, MAX_RATE = 8000, 192_000
_DTYPES = "int16, float16, float32 or float64"


def copy_chunk(chunk: Any) -> tuple[np.ndarray | None, str | None]:
    """`(a private numpy copy of chunk, None)`, or `(None, why it is no array of numbers)`; never raises.

    Runs in the caller's thread (the caller may reuse its buffer); torch tensors are read without importing torch.
    """
    try:
        if hasattr(chunk, "detach") and hasattr(chunk, "dtype"):
            dtype = str(chunk.dtype)
            if dtype not in ("torch.int16", "torch.float16", "torch.float32", "torch.float64"):
                return None, f"audio chunk dtype must be {_DTYPES}, found {dtype}"
            return chunk.detach().cpu().numpy().copy(), None
        return np.array(chunk, copy=True), None
    except Exception as error:  # numpy's ValueError for ragged lists, TypeError for objects it cannot read, ...
        found = f"a {type(chunk).__name__} numpy cannot read as one ({type(error).__name__}: {error})"
        return None, f"audio chunk must be a 1-D array of numbers, found {found}"


def checked_rate(sampling_rate: Any) -> int:
    """The rate as an int; `ValueError` unless it is a whole number of Hz in [8000, 192000]."""
    try:
        valid = not isinstance(sampling_rate, bool) and int(sampling_rate) == sampling_rate
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid or not MIN_RATE <= int(sampling_rate) <= MAX_RATE:
        raise ValueError(
            f"sampling rate must be a whole number of Hz between {MIN_RATE} and {MAX_RATE}, found {sampling_rate!r}"
        )
    return int(sampling_rate)


def as_float32_mono(chunk: np.ndarray) -> np.ndarray:
    """Validate an audio chunk and return it as float32 in [-1, 1]: int16 is scaled by 1/32768, floats are kept."""
    array = np.asarray(chunk)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"audio chunk must be mono with shape (num_samples,), found shape {array.shape}")
    if array.dtype == np.int16:
        return array.astype(np.float32) / 32768.0
    if array.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"audio chunk dtype must be {_DTYPES}, found {array.dtype}")
    samples = array.astype(np.float32)
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise ValueError(f"audio chunk must hold finite samples, found {bad} NaN/inf of {samples.size}")
    return samples


class Resampler:
    """Streaming resampler from `orig_sr` to `target_sr` (windowed sinc with a Kaiser window, polyphase).

    Output sample n sits at input time n * orig_sr / target_sr exactly (the filter is centred), so times computed
    from the output count are right; the price is a lookahead of `half_width` input samples (about 0.5 ms at 48 kHz),
    returned by `flush`.

    Args:
        orig_sr: input rate in Hz (integer, 8000..192000).
        target_sr: output rate in Hz.
        zero_crossings: zero crossings of the sinc kept on each side (filter length and stop-band quality).
        rolloff: cutoff as a fraction of the lower Nyquist frequency.
        beta: Kaiser window shape.
    """

    def __init__(
        self,
        orig_sr: int,
        target_sr: int = SAMPLING_RATE,
        zero_crossings: int = 8,
        rolloff: float = 0.94,
        beta: float = 8.0,
    ) -> None:
        orig_sr, target_sr = checked_rate(orig_sr), checked_rate(target_sr)
        gcd = math.gcd(orig_sr, target_sr)
        self.orig_sr, self.target_sr = orig_sr, target_sr
        self.up, self.down = target_sr // gcd, orig_sr // gcd
        if self.up > 4096 or self.down > 4096:
            raise ValueError(
                f"orig_sr/target_sr must reduce to a ratio with terms <= 4096, found {orig_sr}/{target_sr} = "
                f"{self.down}/{self.up}"
            )
        cutoff = min(1.0, self.up / self.down) * rolloff  # relative to the input Nyquist frequency
        self.half_width = math.ceil(zero_crossings / cutoff)  # in input samples
        offsets = np.arange(-self.half_width + 1, self.half_width + 1)  # input index minus floor(output time)
        tau = np.arange(self.up)[:, None] / self.up - offsets[None, :]  # (up, taps): output time minus input time
        window = np.i0(beta * np.sqrt(np.clip(1.0 - (tau / self.half_width) ** 2, 0.0, None))) / np.i0(beta)
        table = cutoff * np.sinc(cutoff * tau) * window
        self._table = (table / table.sum(axis=1, keepdims=True)).astype(np.float32)  # unit gain at DC per phase
        self._offsets = offsets
        self.reset()

    def reset(self) -> None:
        # Samples before the stream are zeros; `_start` is the absolute input index of `_buffer[0]`.
        self._buffer = np.zeros(self.half_width, dtype=np.float32)
        self._start = -self.half_width
        self._next = 0  # next output index

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk (float32, validated by the caller); returns what is ready so far."""
        if self.up == self.down:
            return samples
        self._buffer = np.concatenate([self._buffer, samples])
        end = self._start + len(self._buffer)  # absolute index one past the last input sample
        # Output n needs inputs up to floor(n * down / up) + half_width.
        stop = max(self._next, ((end - self.half_width) * self.up + self.down - 1) // self.down)
        if stop == self._next:
            return np.zeros(0, dtype=np.float32)
        outputs = np.arange(self._next, stop)
        base, phase = np.divmod(outputs * self.down, self.up)
        index = base[:, None] - self._start + self._offsets[None, :]
        result = np.einsum("ij,ij->i", self._buffer[index], self._table[phase]).astype(np.float32)
        self._next = stop
        keep_from = stop * self.down // self.up - self.half_width + 1
        self._buffer = self._buffer[keep_from - self._start :]
        self._start = keep_from
        return result

    def flush(self) -> np.ndarray:
        """Return the samples held back by the lookahead (the stream is padded with zeros) and reset."""
        if self.up == self.down:
            return np.zeros(0, dtype=np.float32)
        end = self._start + len(self._buffer)
        missing = -(-end * self.up // self.down) - self._next  # ceil(inputs * up / down) outputs in all
        tail = self(np.zeros(self.half_width + 1, dtype=np.float32))[: max(0, missing)]
        self.reset()
        return tail


def rms(samples: np.ndarray) -> float:
    """Root mean square of float samples (0.0 for none)."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


class EchoGuard:
    """Tells the assistant's own voice, played back into the microphone, from the user's.

    While the assistant's speech plays, a microphone chunk counts as the user only if its RMS is at least
    `margin_db` above the RMS of the speech being played; quieter chunks are echo. What plays is known from the
    caller's reports (`reported`), or else estimated from the spoken clips queued back to back on the audio clock
    (`queued`); an interruption ends the estimate (`cut`). Owned by one thread; times are on the audio clock.
    """

    def __init__(self, margin_db: float = 10.0) -> None:
        self.margin_db = float(margin_db)
        self.reported_rms: float | None = None  # the caller says it plays audio of this RMS; None: no report
        self.playing_until = 0.0
        self.playing_rms = 0.0
        self._paused_at: float | None = None
        self._left = 0.0  # what was left to play at the pause

    def reported(self, playing_rms: float | None) -> None:
        self.reported_rms = playing_rms

    def queued(self, audio: np.ndarray, sampling_rate: int, now: float) -> None:
        """A clip of the assistant's speech was handed to the player at `now`; it plays after the ones before."""
        if len(audio):
            self.playing_rms = rms(audio)
            self.playing_until = max(self.playing_until, now) + len(audio) / sampling_rate

    def cut(self, now: float) -> None:
        """The player stops the assistant's speech at `now` (the answer was interrupted)."""
        self.playing_until = now
        self._paused_at = None

    def pause(self, now: float) -> None:
        """The player pauses the assistant's speech at `now` (a duck): nothing plays until `resume`."""
        if self._paused_at is None and now < self.playing_until:
            self._paused_at, self._left = now, self.playing_until - now
            self.playing_until = now

    def resume(self, now: float) -> None:
        """The paused speech plays on from `now` for what was left of it."""
        if self._paused_at is not None:
            self.playing_until, self._paused_at = now + self._left, None

    def is_echo(self, samples: np.ndarray, now: float) -> bool:
        playing = self.reported_rms
        if playing is None and now < self.playing_until:
            playing = self.playing_rms
        if playing is None or not len(samples):
            return False
        return rms(samples) < playing * 10 ** (self.margin_db / 20)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """A whole float32 clip from `orig_sr` to `target_sr` (`Resampler` then its flush)."""
    if orig_sr == target_sr or not len(audio):
        return np.asarray(audio, dtype=np.float32)
    resampler = Resampler(orig_sr, target_sr)
    return np.concatenate([resampler(np.asarray(audio, dtype=np.float32)), resampler.flush()])


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A recording (wav, flac, ogg, ...; any rate, channels averaged) as float32 mono samples and its rate.

    Raises `ValueError` naming the file when it cannot be read or holds no samples.
    """
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own LibsndfileError, RuntimeError or OSError
        raise ValueError(f"cannot read the recording {os.fspath(path)!r}: {error}") from error
    if audio.shape[0] == 0:
        raise ValueError(f"the recording {os.fspath(path)!r} holds no samples, expected a non-empty one")
    return audio.mean(axis=1).astype(np.float32), int(rate)


__all__ = [
    "SAMPLING_RATE",
    "EchoGuard",
    "Resampler",
    "as_float32_mono",
    "checked_rate",
    "copy_chunk",
    "read_audio_file",
    "resample",
    "rms",
]
