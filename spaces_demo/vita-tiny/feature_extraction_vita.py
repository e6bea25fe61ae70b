"""Audio feature extractor of VITA: 16 kHz mono Kaldi fbank (80 bins, 25/10 ms) with global CMVN.

The original multiplies the waveform by 2**15, calls `torchaudio.compliance.kaldi.fbank` and applies a global CMVN
inside the encoder. Here the CMVN is part of the feature extractor (its statistics live in the processor config), the
resampling bug of the original HF path (fbank called with the pre-resampling rate) is not reproduced, and dither is 0
so the features are deterministic.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchaudio
from transformers import BatchFeature
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.utils import logging

logger = logging.get_logger(__name__)

TARGET_SAMPLING_RATE = 16000
MIN_SAMPLING_RATE = 8000
MAX_SAMPLING_RATE = 192000
# One 25 ms Kaldi window at 16 kHz; shorter input yields zero frames.
MIN_NUM_SAMPLES = 400
HOP_SAMPLES = 160
# The audio encoder's sinusoid positional table has 5000 rows, indexed by subsampled (25 Hz) frames.
MAX_ENCODER_FRAMES = 5000
# Float samples are taken to be in [-1, 1]; a peak beyond this is refused, not rescaled. Resampled or mixed float audio
# overshoots 1 by a little; int16 samples handed over as float peak in the hundreds to 32767, and 1e21 overflows the
# fbank (2**15 * x squared) to inf/NaN. Neither can be repaired here without guessing the scale, which would change
# the loudness the model judges speech against noise by, so the caller is told the fix.
DEFAULT_MAX_AMPLITUDE = 2.0

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_INT_SCALES = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def get_num_fbank_frames(num_samples: int) -> int:
    """Number of Kaldi fbank frames (snip_edges=True, 25 ms / 10 ms at 16 kHz) for `num_samples` samples."""
    if num_samples < MIN_NUM_SAMPLES:
        return 0
    return 1 + (num_samples - MIN_NUM_SAMPLES) // HOP_SAMPLES


def get_num_encoder_frames(num_frames: int) -> int:
    """Frames after the encoder's two stride-2 convolutions without padding (kernel 3)."""
    return ((num_frames - 1) // 2 - 1) // 2


def get_audio_token_count(num_frames: int) -> int:
    """LLM tokens for `num_frames` fbank frames: 4x conv subsampling, then the stride-2 adapter (ceil)."""
    d = ((num_frames - 1) // 2 - 1) // 2
    return (d - 1) // 2 + 1


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_freq, new_freq, dtype=torch.float32)


def resample_waveform(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """`wave` (time last) from `orig_freq` to `new_freq` Hz as float32, with torchaudio's windowed sinc (the same
    numbers as `torchaudio.functional.resample`); one kernel is kept per rate pair, since building it costs far more
    than applying it to a short clip."""
    wave = wave.to(torch.float32)
    if orig_freq == new_freq:
        return wave
    return _resampler(int(orig_freq), int(new_freq))(wave)


def load_global_cmvn(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    """Read the original `global_cmvn` JSON (`mean_stat`, `var_stat`, `frame_num`) and return (mean, istd)."""
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"Could not read the CMVN file {path!r} ({err}); expected a JSON file with keys mean_stat, var_stat and "
            "frame_num as written by the original VITA/wenet training. Check the path."
        ) from err
    missing = [k for k in ("mean_stat", "var_stat", "frame_num") if k not in stats]
    if missing:
        raise ValueError(
            f"The CMVN file {path!r} lacks keys {missing}; found {sorted(stats)}, expected mean_stat, var_stat, "
            "frame_num. Pass the global_cmvn file of the original audio encoder."
        )
    frame_num = float(stats["frame_num"])
    if frame_num <= 0:
        raise ValueError(f"frame_num in {path!r} is {frame_num}; expected a positive frame count.")
    mean = np.asarray(stats["mean_stat"], dtype=np.float64) / frame_num
    var = np.asarray(stats["var_stat"], dtype=np.float64) / frame_num - mean**2
    # The original clamps tiny variances so silent bins do not blow up the inverse std.
    var = np.maximum(var, 1.0e-20)
    istd = 1.0 / np.sqrt(var)
    return mean.tolist(), istd.tolist()


class _AudioTooLong(ValueError):
    pass


def _too_long(name: str, seconds: float, max_seconds: float) -> _AudioTooLong:
    return _AudioTooLong(
        f"Audio file {name!r} lasts at least {seconds:.1f} s; expected at most {max_seconds:.1f} s (the audio "
        "encoder's limit). Split it into shorter clips."
    )


def load_audio(source: str | os.PathLike | bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (path or bytes) as float32 (samples,) or (samples, channels) and its sampling rate.

    Uses soundfile when installed (wav/flac/ogg), else PyAV (any container FFmpeg reads, e.g. mp3/m4a). A file longer
    than `max_seconds` is refused before it is read whole (memory stays bounded by the limit, not the file).
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not os.path.isfile(source):
        raise ValueError(f"Audio file {name!r} does not exist; expected a path to an audio file.")
    errors = []
    try:
        import soundfile as sf

        data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        info = sf.info(data)
        if max_seconds is not None and info.frames > max_seconds * info.samplerate:
            raise _too_long(name, info.frames / info.samplerate, max_seconds)
        if isinstance(data, io.BytesIO):
            data.seek(0)
        wave, sr = sf.read(data, dtype="float32", always_2d=False)
        return np.asarray(wave, dtype=np.float32), int(sr)
    except ImportError:
        pass
    except _AudioTooLong:
        raise
    except Exception as err:  # soundfile raises its own error type for unreadable files; try PyAV next
        errors.append(f"soundfile: {err}")
    try:
        import av

        data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
        with av.open(data) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate)
            # Packed float mono: PyAV frames otherwise differ in layout (planar vs packed) by codec.
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            chunks, total = [], 0
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
                total += frame.samples
                if max_seconds is not None and total > max_seconds * sr:
                    raise _too_long(name, total / sr, max_seconds)
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        if not chunks:
            raise ValueError("no decodable audio frames")
        return np.concatenate(chunks).astype(np.float32), sr
    except _AudioTooLong:
        raise
    except Exception as err:
        errors.append(f"PyAV: {err}")
    raise ValueError(
        f"Audio file {name!r} could not be decoded ({'; '.join(errors)}); expected a readable audio file "
        "(wav, flac, mp3, ...)."
    )


class VitaFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns raw audio into VITA's normalised log-mel filterbank features.

    Each clip is mixed down to mono, scaled to [-1, 1) (integer input), resampled to 16 kHz, multiplied by 2**15 and
    passed to `torchaudio.compliance.kaldi.fbank(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0,
    energy_floor=0)`, then normalised with the global CMVN `(x - cmvn_mean) * cmvn_istd`.

    Inputs: one clip (1-D array/tensor/list of floats, or 2-D (channels, samples) / (samples, channels)) or a list of
    clips. Clips must be at least 400 samples at 16 kHz (one frame) and shorter than the encoder limit of
    `max_encoder_frames` subsampled frames (5000 -> about 200 s). Float samples must lie within
    +-`max_amplitude` (default 2.0: [-1, 1] plus headroom); larger peaks (int16 samples passed as float, a wrong gain)
    are refused with a `ValueError` that says how to scale them, since any guess at the scale changes the features.

    Outputs: `input_features` (batch, max_frames, 80), right padded with 0, and `input_features_mask`
    (batch, max_frames) with 1 on real frames. Padding is always on the right whatever `padding_side` is given, because
    the token count of a clip is computed from its unpadded length.
    """

    model_input_names = ["input_features", "input_features_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = TARGET_SAMPLING_RATE,
        padding_value: float = 0.0,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        dither: float = 0.0,
        cmvn_mean: Sequence[float] | None = None,
        cmvn_istd: Sequence[float] | None = None,
        max_encoder_frames: int = MAX_ENCODER_FRAMES,
        return_attention_mask: bool = True,
        max_amplitude: float = DEFAULT_MAX_AMPLITUDE,
        **kwargs: Any,
    ) -> None:
        # Left padding would shift frames relative to the token count; the original always pads on the right.
        kwargs.pop("padding_side", None)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            padding_side="right",
            **kwargs,
        )
        self.frame_length = frame_length
        self.frame_shift = frame_shift
        self.dither = dither
        self.max_encoder_frames = max_encoder_frames
        if not (isinstance(max_amplitude, (int, float)) and 1.0 <= max_amplitude < math.inf):
            raise ValueError(f"max_amplitude is {max_amplitude!r}; expected a finite peak >= 1.0 (2.0 by default).")
        self.max_amplitude = float(max_amplitude)
        self.cmvn_mean = [0.0] * feature_size if cmvn_mean is None else [float(v) for v in cmvn_mean]
        self.cmvn_istd = [1.0] * feature_size if cmvn_istd is None else [float(v) for v in cmvn_istd]
        for name, values in (("cmvn_mean", self.cmvn_mean), ("cmvn_istd", self.cmvn_istd)):
            if len(values) != feature_size:
                raise ValueError(
                    f"{name} has {len(values)} values but feature_size is {feature_size}; give one value per mel bin."
                )

    @classmethod
    def from_global_cmvn_file(cls, path: str | os.PathLike, **kwargs: Any) -> VitaFeatureExtractor:
        """Build the extractor with the CMVN statistics of the original `global_cmvn` JSON file."""
        mean, istd = load_global_cmvn(path)
        return cls(cmvn_mean=mean, cmvn_istd=istd, **kwargs)

    @property
    def max_num_samples(self) -> int:
        """Longest accepted clip at 16 kHz, in samples (encoder frames must stay below `max_encoder_frames`)."""
        # Largest T with ((T-1)//2-1)//2 < max_encoder_frames is T = 4 * max_encoder_frames + 2.
        max_frames = 4 * self.max_encoder_frames + 2
        return MIN_NUM_SAMPLES + (max_frames - 1) * HOP_SAMPLES + HOP_SAMPLES - 1

    @property
    def max_seconds(self) -> float:
        """Longest accepted clip in seconds (`max_num_samples` at 16 kHz); `load_audio` refuses longer files."""
        return self.max_num_samples / TARGET_SAMPLING_RATE

    def _to_mono_float(self, clip: Any, index: int) -> np.ndarray | torch.Tensor:
        if isinstance(clip, torch.Tensor):
            if clip.dtype in (torch.int16, torch.int32):
                scale = 32768.0 if clip.dtype == torch.int16 else 2147483648.0
                wave = clip.to(torch.float32) / scale
            elif clip.is_floating_point():
                wave = clip.detach().to("cpu", torch.float32)
            else:
                raise ValueError(
                    f"Audio clip {index} has dtype {clip.dtype}; expected float16/32/64, int16 or int32. "
                    "Convert the waveform to float32 in [-1, 1]."
                )
        else:
            arr = np.asarray(clip)
            if arr.dtype in _INT_SCALES:
                wave = torch.from_numpy(arr.astype(np.float32) / _INT_SCALES[arr.dtype])
            elif arr.dtype.type in _FLOAT_DTYPES:
                wave = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            else:
                raise ValueError(
                    f"Audio clip {index} has dtype {arr.dtype}; expected float16/32/64, int16 or int32. "
                    "Convert the waveform to float32 in [-1, 1]."
                )
        if wave.ndim == 2:
            # The channel axis is the short one: stereo files are (2, N) or (N, 2).
            channel_axis = 0 if wave.shape[0] <= wave.shape[1] else 1
            wave = wave.mean(dim=channel_axis)
        elif wave.ndim != 1:
            raise ValueError(
                f"Audio clip {index} has shape {tuple(wave.shape)}; expected 1-D (samples) or 2-D (channels, samples)"
                " / (samples, channels). Pass a batch as a list of clips."
            )
        if wave.numel() == 0:
            raise ValueError(
                f"Audio clip {index} is empty (0 samples); expected at least {MIN_NUM_SAMPLES} at 16 kHz."
            )
        if not bool(torch.isfinite(wave).all()):
            raise ValueError(f"Audio clip {index} contains NaN or inf; expected finite samples. Clean the waveform.")
        peak = float(wave.abs().max())
        if peak > self.max_amplitude:
            hint = (
                "These look like int16 samples passed as float: divide them by 32768 (or pass the int16 array)"
                if peak <= 32768.0
                else "Scale the waveform to [-1, 1]"
            )
            raise ValueError(
                f"Audio clip {index} peaks at {peak:.6g}; expected float samples in [-1, 1] (at most "
                f"{self.max_amplitude:g} accepted, max_amplitude). {hint}."
            )
        return wave

    def _split_batch(self, raw_speech: Any) -> list[Any]:
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            return [raw_speech]
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("Got an empty list of audio clips; expected at least one clip.")
            if all(isinstance(x, (int, float, np.number)) for x in raw_speech):
                return [np.asarray(raw_speech, dtype=np.float32)]
            return list(raw_speech)
        raise ValueError(
            f"Audio input has type {type(raw_speech).__name__}; expected a numpy array, a torch tensor, a list of "
            "floats or a list of those (a batch)."
        )

    def waveform_to_features(self, wave: torch.Tensor) -> torch.Tensor:
        """fbank + CMVN of one 16 kHz mono float waveform in [-1, 1]; returns (frames, feature_size)."""
        feats = torchaudio.compliance.kaldi.fbank(
            wave.unsqueeze(0) * 32768.0,
            num_mel_bins=self.feature_size,
            frame_length=self.frame_length,
            frame_shift=self.frame_shift,
            dither=self.dither,
            energy_floor=0.0,
            sample_frequency=TARGET_SAMPLING_RATE,
        )
        mean = torch.tensor(self.cmvn_mean, dtype=feats.dtype)
        istd = torch.tensor(self.cmvn_istd, dtype=feats.dtype)
        return (feats - mean) * istd

    def __call__(
        self,
        raw_speech: Any,
        sampling_rate: int | Sequence[int] | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Compute `input_features` and `input_features_mask` for one clip or a list of clips (see class doc).

        `sampling_rate` is one rate for all clips or a list with one rate per clip.
        """
        clips = self._split_batch(raw_speech)
        if isinstance(sampling_rate, (list, tuple)):
            if len(sampling_rate) != len(clips):
                raise ValueError(
                    f"Got {len(sampling_rate)} sampling rates for {len(clips)} audio clips; expected one rate per clip"
                    " or a single rate."
                )
            rates = [self._check_rate(r) for r in sampling_rate]
        else:
            rates = [self._check_rate(sampling_rate)] * len(clips)
        return self._extract(clips, rates, return_tensors, return_attention_mask)

    def _check_rate(self, sampling_rate: Any) -> int:
        if sampling_rate is None:
            logger.warning_once(
                "No sampling_rate given to VitaFeatureExtractor; assuming 16000 Hz. Pass sampling_rate to avoid "
                "silently wrong features."
            )
            sampling_rate = TARGET_SAMPLING_RATE
        if isinstance(sampling_rate, float) and sampling_rate.is_integer():
            sampling_rate = int(sampling_rate)
        if not isinstance(sampling_rate, (int, np.integer)) or not (
            MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE
        ):
            raise ValueError(
                f"Unsupported sampling_rate {sampling_rate!r}; expected an integer between {MIN_SAMPLING_RATE} and "
                f"{MAX_SAMPLING_RATE} Hz (audio is resampled to {TARGET_SAMPLING_RATE}). Pass the file's real rate."
            )
        return int(sampling_rate)

    def _extract(
        self, clips: list[Any], rates: list[int], return_tensors: str | None, return_attention_mask: bool | None
    ) -> BatchFeature:
        features = []
        for index, (clip, sampling_rate) in enumerate(zip(clips, rates)):
            wave = self._to_mono_float(clip, index)
            if sampling_rate != TARGET_SAMPLING_RATE:
                wave = resample_waveform(wave, sampling_rate, TARGET_SAMPLING_RATE)
            num_samples = int(wave.shape[-1])
            if num_samples < MIN_NUM_SAMPLES:
                raise ValueError(
                    f"Audio clip {index} has {num_samples} samples at 16 kHz ({num_samples / 16:.1f} ms); expected at "
                    f"least {MIN_NUM_SAMPLES} (25 ms, one fbank frame). Pad or drop the clip."
                )
            num_frames = get_num_fbank_frames(num_samples)
            if get_num_encoder_frames(num_frames) >= self.max_encoder_frames:
                raise ValueError(
                    f"Audio clip {index} lasts {num_samples / TARGET_SAMPLING_RATE:.1f} s; expected at most "
                    f"{self.max_num_samples / TARGET_SAMPLING_RATE:.1f} s (the encoder's positional table has "
                    f"{self.max_encoder_frames} frames of 40 ms). Split the audio into shorter segments."
                )
            features.append(self.waveform_to_features(wave))

        max_len = max(f.shape[0] for f in features)
        batch = torch.full((len(features), max_len, self.feature_size), float(self.padding_value))
        mask = torch.zeros((len(features), max_len), dtype=torch.long)
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = 1

        data: dict[str, Any] = {"input_features": batch}
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        if return_attention_mask:
            data["input_features_mask"] = mask
        if return_tensors in (None, "np"):
            data = {k: v.numpy() for k, v in data.items()}
            return BatchFeature(data, tensor_type=return_tensors)
        return BatchFeature(data, tensor_type=return_tensors)

    def get_num_audio_tokens(self, num_samples: int, sampling_rate: int = TARGET_SAMPLING_RATE) -> int:
        """LLM tokens for a clip of `num_samples` at `sampling_rate` (after resampling to 16 kHz)."""
        num_16k = math.ceil(num_samples * TARGET_SAMPLING_RATE / sampling_rate)
        return get_audio_token_count(get_num_fbank_frames(num_16k))


# save_pretrained then writes auto_map and copies these files, so AutoX(..., trust_remote_code=True) can load them.
VitaFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "VitaFeatureExtractor",
    "get_audio_token_count",
    "get_num_fbank_frames",
    "get_num_encoder_frames",
    "load_global_cmvn",
    "load_audio",
]
