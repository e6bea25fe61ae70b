"""Rooms, microphones, codecs and noise for training speech: what a clip goes through before it reaches VITA.

Synthetic speech is close-talk and clean; a user's is not. `augment` applies, each with its probability and in the
order sound travels: room reverberation (a simulated shoebox room, pyroomacoustics' image-source method), level and
clipping (a far or overdriven microphone), band-limiting (a telephone line, a laptop microphone), a lossy codec round
trip (Opus or MP3 through PyAV's encoders, as a call or a recording would), then stationary noise (white, pink,
brown) or babble (other speech summed) at an SNR drawn from `AugmentParams.snr_db`. The clip keeps its length and
sampling rate; the result stays within [-1, 1]. Everything is drawn from the `rng` given, so a data build is
reproducible.

    rng = np.random.default_rng(0)
    rooms = simulate_rooms(32, 16_000, rng)            # once per build: a room takes about a second to simulate
    audio, applied = augment(audio, 16_000, rng, AugmentParams(), babble=[other_clip, ...], rooms=rooms)
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges of `augment` (probabilities in [0, 1], ranges as (low, high)).

    Defaults: about half the clips get a room, a third a band limit, a quarter a codec, most some noise, so the
    clean close-talk case stays common (the held-out split keeps its own clean clips).
    """

    reverb: float = 0.5
    rt60_secs: tuple[float, float] = (0.2, 0.9)
    room_metres: tuple[float, float] = (3.0, 9.0)
    band_limit: float = 0.3
    codec: float = 0.25
    codec_kbps: tuple[int, int] = (12, 48)
    gain_db: tuple[float, float] = (-18.0, 6.0)
    clipping: float = 0.05
    noise: float = 0.7
    babble_share: float = 0.4  # of the noisy clips, how many get babble (when other speech is given)
    snr_db: tuple[float, float] = (0.0, 20.0)

    def __post_init__(self) -> None:
        for name in ("reverb", "band_limit", "codec", "clipping", "noise", "babble_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentParams.{name} is a probability in [0, 1], found {value}")
        for name in ("rt60_secs", "room_metres", "codec_kbps", "gain_db", "snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"AugmentParams.{name} must be (low, high) with low <= high, found {(low, high)}")
        if self.rt60_secs[0] <= 0 or self.room_metres[0] <= 1.0:
            raise ValueError(
                f"AugmentParams needs rt60_secs > 0 and room_metres > 1, found {self.rt60_secs}, {self.room_metres}"
            )


def augment(
    audio: np.ndarray,
    sampling_rate: int,
    rng: np.random.Generator,
    params: AugmentParams | None = None,
    babble: Sequence[np.ndarray] = (),
    rooms: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, list[str]]:
    """`audio` (float32 mono) through a random room, microphone, codec and noise; returns it and what was applied.

    `babble`: other speech clips for babble noise (none: stationary noise only). `rooms`: impulse responses from
    `simulate_rooms` to pick from (none: one room is simulated for this clip, about a second of CPU).
    """
    params = params if params is not None else AugmentParams()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or not len(audio) or not np.isfinite(audio).all():
        found = f"shape {audio.shape}" if audio.ndim != 1 or not len(audio) else "NaN/inf samples"
        raise ValueError(f"augment takes a non-empty finite mono clip, found {found}; expected a 1-D float array")
    applied: list[str] = []
    if rng.random() < params.reverb:
        if rooms:
            index = int(rng.integers(0, len(rooms)))
            audio = convolve_room(audio, rooms[index])
            applied.append(f"room {index}")
        else:
            rt60 = float(rng.uniform(*params.rt60_secs))
            audio = convolve_room(audio, simulate_room(sampling_rate, rt60, rng, params.room_metres))
            applied.append(f"room rt60={rt60:.2f}s")
    gain = float(rng.uniform(*params.gain_db))
    audio = audio * np.float32(10 ** (gain / 20))
    if rng.random() < params.clipping:
        ceiling = float(rng.uniform(0.2, 0.6)) * max(float(np.max(np.abs(audio))), 1e-6)
        audio = np.clip(audio, -ceiling, ceiling)
        applied.append(f"clipped at {ceiling:.3f}")
    if rng.random() < params.band_limit:
        kind = "telephone" if rng.random() < 0.5 else "laptop"
        audio = band_limit(audio, sampling_rate, kind)
        applied.append(kind)
    if rng.random() < params.codec:
        codec = "opus" if rng.random() < 0.5 else "mp3"
        kbps = int(rng.integers(params.codec_kbps[0], params.codec_kbps[1] + 1))
        audio = codec_round_trip(audio, sampling_rate, codec, kbps)
        applied.append(f"{codec} {kbps} kbps")
    if rng.random() < params.noise:
        snr = float(rng.uniform(*params.snr_db))
        if babble and rng.random() < params.babble_share:
            noise = babble_noise(babble, len(audio), rng)
            applied.append(f"babble snr={snr:.1f}dB")
        else:
            colour = str(rng.choice(["white", "pink", "brown"]))
            noise = coloured_noise(len(audio), colour, rng)
            applied.append(f"{colour} noise snr={snr:.1f}dB")
        audio = add_at_snr(audio, noise, snr)
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:  # scale rather than clip: clipping is an augmentation of its own, drawn above
        audio = audio / peak
    return audio.astype(np.float32), applied


class Augmenter:
    """`augment` for a data build: one random stream, a bank of simulated rooms per sampling rate (made on first
    use), and babble from the clean clips it has seen (the other speakers of the same build).

    Args:
        params: the probabilities and ranges.
        seed: of the random stream (a build is reproducible).
        rooms: how many rooms to simulate per sampling rate.
        babble_bank: how many recent clean clips to keep as babble sources.
    """

    def __init__(self, params: AugmentParams | None = None, seed: int = 0, rooms: int = 16, babble_bank: int = 32):
        self.params = params if params is not None else AugmentParams()
        self.rng = np.random.default_rng(seed)
        self.room_count, self.babble_bank = rooms, babble_bank
        self._rooms: dict[int, list[np.ndarray]] = {}
        self._clips: dict[int, list[np.ndarray]] = {}
        self.applied: list[list[str]] = []  # what each call applied, in order

    def __call__(self, audio: np.ndarray, sampling_rate: int) -> np.ndarray:
        if sampling_rate not in self._rooms:
            self._rooms[sampling_rate] = simulate_rooms(self.room_count, sampling_rate, self.rng, self.params)
        bank = self._clips.setdefault(sampling_rate, [])
        out, applied = augment(audio, sampling_rate, self.rng, self.params, bank, self._rooms[sampling_rate])
        bank.append(np.asarray(audio, dtype=np.float32))
        del bank[: -self.babble_bank]
        self.applied.append(applied)
        return out


def simulate_room(
    sampling_rate: int, rt60: float, rng: np.random.Generator, room_metres: tuple[float, float] = (3.0, 9.0)
) -> np.ndarray:
    """The impulse response from a random talker to a random microphone in a random shoebox room with reverberation
    time `rt60` (pyroomacoustics' image-source method; peak 1)."""
    import pyroomacoustics as pra

    size = np.array([rng.uniform(*room_metres), rng.uniform(*room_metres), rng.uniform(2.4, 3.5)])
    try:
        absorption, max_order = pra.inverse_sabine(rt60, size)
    except ValueError:  # a reverberation time the room cannot have: the most reverberant it can
        absorption, max_order = 0.05, 17
    # The late tail beyond order 17 changes little for speech and costs most of the time.
    room = pra.ShoeBox(size, fs=sampling_rate, materials=pra.Material(absorption), max_order=min(max_order, 17))
    source = size * rng.uniform(0.2, 0.8, 3)
    microphone = np.clip(source + rng.uniform(-1.5, 1.5, 3), 0.3, size - 0.3)
    room.add_source(source)
    room.add_microphone(microphone)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)
    return rir / max(float(np.max(np.abs(rir))), 1e-9)


def simulate_rooms(
    count: int, sampling_rate: int, rng: np.random.Generator, params: AugmentParams | None = None
) -> list[np.ndarray]:
    """`count` impulse responses with reverberation times drawn from `params.rt60_secs`, for `augment(rooms=...)`."""
    params = params if params is not None else AugmentParams()
    return [
        simulate_room(sampling_rate, float(rng.uniform(*params.rt60_secs)), rng, params.room_metres)
        for _ in range(count)
    ]


def convolve_room(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`audio` through the impulse response `rir`, same length and speech level."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio.astype(np.float64), rir.astype(np.float64))[: len(audio)]
    level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / max(np.sqrt(np.mean(wet**2)), 1e-9))
    return (wet * level).astype(np.float32)


def band_limit(audio: np.ndarray, sampling_rate: int, kind: str) -> np.ndarray:
    """A telephone line (300-3400 Hz) or a laptop microphone (150-7000 Hz), 4th-order Butterworth band-pass."""
    from scipy.signal import butter, sosfilt

    bands = {"telephone": (300.0, 3400.0), "laptop": (150.0, 7000.0)}
    if kind not in bands:
        raise ValueError(f"band_limit kind must be one of {sorted(bands)}, found {kind!r}")
    low, high = bands[kind]
    high = min(high, 0.45 * sampling_rate)
    sos = butter(4, [low, high], btype="bandpass", fs=sampling_rate, output="sos")
    return sosfilt(sos, audio).astype(np.float32)


def codec_round_trip(audio: np.ndarray, sampling_rate: int, codec: str, kbps: int) -> np.ndarray:
    """`audio` encoded with Opus or MP3 at `kbps` and decoded again (PyAV), at its rate and length."""
    import av

    from modeling_vita.duplex_audio_input import resample

    encoders = {"opus": ("libopus", "ogg", 48_000), "mp3": ("libmp3lame", "mp3", 24_000)}
    if codec not in encoders:
        raise ValueError(f"codec must be one of {sorted(encoders)}, found {codec!r}")
    name, container_format, codec_rate = encoders[codec]
    samples = resample(audio, sampling_rate, codec_rate)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(name, rate=codec_rate, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = codec_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    buffer.seek(0)
    decoded = []
    with av.open(buffer, mode="r") as container:
        for frame in container.decode(audio=0):
            decoded.append(frame.to_ndarray().reshape(frame.to_ndarray().shape[0], -1).mean(axis=0))
    out = resample(np.concatenate(decoded).astype(np.float32), codec_rate, sampling_rate)
    # Encoders add a priming delay; align on the cross-correlation peak, then keep the input's length.
    delay = _delay(audio, out)
    out = out[delay : delay + len(audio)]
    return np.pad(out, (0, len(audio) - len(out))).astype(np.float32)


def _delay(reference: np.ndarray, delayed: np.ndarray, max_secs_samples: int = 4000) -> int:
    from scipy.signal import correlate

    window = min(len(reference), 16_000)
    scores = correlate(delayed[: window + max_secs_samples], reference[:window], mode="valid", method="fft")
    return int(np.argmax(scores[: max_secs_samples + 1])) if len(scores) else 0


def coloured_noise(length: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2) noise."""
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if colour not in exponents:
        raise ValueError(f"noise colour must be one of {sorted(exponents)}, found {colour!r}")
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length)
    frequencies[0] = frequencies[1] if length > 1 else 1.0
    noise = np.fft.irfft(spectrum / frequencies ** (exponents[colour] / 2), n=length)
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def babble_noise(others: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Several other speech clips (3 to 6, looped and offset at random) summed: a room of people talking."""
    count = int(rng.integers(3, 7))
    babble = np.zeros(length, dtype=np.float64)
    for index in rng.integers(0, len(others), count):
        clip = np.asarray(others[index], dtype=np.float64)
        clip = clip / max(float(np.sqrt(np.mean(clip**2))), 1e-9)
        looped = np.tile(clip, length // max(len(clip), 1) + 2)
        start = int(rng.integers(0, len(clip)))
        babble += looped[start : start + length]
    return (babble / max(float(np.sqrt(np.mean(babble**2))), 1e-12)).astype(np.float32)


def add_at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`audio` plus `noise` scaled so that the speech-to-noise power ratio is `snr_db`."""
    speech_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise_power = max(float(np.mean(noise.astype(np.float64) ** 2)), 1e-12)
    scale = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + noise[: len(audio)] * scale).astype(np.float32)


def change_voice(audio: np.ndarray, sampling_rate: int, pitch: float, tempo: float = 1.0) -> np.ndarray:
    """Another speaker from `audio`: pitch and formants times `pitch` (the clip replayed faster, as a shorter vocal
    tract would sound), then its pace set to `tempo` times the original's by a phase vocoder."""
    import torch
    import torchaudio.functional as F

    if not (0.5 <= pitch <= 2.0 and 0.5 <= tempo <= 2.0):
        raise ValueError(f"change_voice takes pitch and tempo factors in [0.5, 2], found pitch={pitch}, tempo={tempo}")
    audio = np.asarray(audio, dtype=np.float32)
    # Resampling from a rate `pitch` times higher plays the clip `pitch` times faster and higher (the rates as a
    # ratio in hundredths: a short resampling filter whatever the clip's own rate).
    if pitch != 1.0:
        shifted = F.resample(torch.from_numpy(audio), int(round(100 * pitch)), 100).numpy()
    else:
        shifted = audio
    rate = tempo / pitch  # the phase vocoder's speed-up that brings the pace from `pitch` to `tempo`
    if abs(rate - 1.0) < 1e-3 or len(shifted) < 1024:
        return shifted.astype(np.float32)
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(torch.from_numpy(shifted), n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, np.pi * hop, n_fft // 2 + 1)[:, None]
    stretched = F.phase_vocoder(spectrum, rate, advance)
    out = torch.istft(stretched, n_fft, hop, window=window).numpy()
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return (out / peak * min(peak, 0.99) if peak > 0 else out).astype(np.float32)


__all__ = [
    "AugmentParams",
    "Augmenter",
    "add_at_snr",
    "augment",
    "babble_noise",
    "band_limit",
    "change_voice",
    "codec_round_trip",
    "coloured_noise",
    "convolve_room",
    "simulate_room",
    "simulate_rooms",
]
