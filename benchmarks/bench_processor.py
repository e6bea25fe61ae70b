"""Speed of VITA's preprocessing (processing_vita) against the original recipe, printed as a table.

Measures on one CPU thread
(torch.set_num_threads(1)): the audio real-time factor (compute seconds per audio second) for 1/10/60 s clips, image
tiling of a 12-megapixel photo and of the demo photo, and video sampling of the demo video. "Original recipe" is the
plain path of the original code: torchaudio fbank + CMVN; PIL resize + crop of each tile + torchvision normalise;
decoding every frame with PyAV (decord is not installed) then picking the sampled ones. Targets: audio RTF < 0.01,
12 MP tiling < 150 ms.

Run: python -m benchmarks.bench_processor
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchaudio
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"

from processing_vita.feature_extraction_vita import VitaFeatureExtractor  # noqa: E402
from processing_vita.image_processing_vita import VitaImageProcessor, find_tile_grid  # noqa: E402
from processing_vita.video_processing_vita import VitaVideoProcessor, sample_frame_indices  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # warm-up: first calls pay for lazy allocations and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def original_audio(wave: np.ndarray, mean: torch.Tensor, istd: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(wave).unsqueeze(0) * (1 << 15)
    feats = torchaudio.compliance.kaldi.fbank(
        x, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0, sample_frequency=16000
    )
    return (feats - mean) * istd


def original_tiles(image: Image.Image, size: int = 448) -> torch.Tensor:
    from torchvision.transforms import functional as tvf

    cols, rows = find_tile_grid(image.width, image.height, size)
    resized = image.resize((cols * size, rows * size))
    tiles = [
        resized.crop(((i % cols) * size, (i // cols) * size, (i % cols + 1) * size, (i // cols + 1) * size))
        for i in range(cols * rows)
    ]
    if len(tiles) > 1:
        tiles.append(image.resize((size, size)))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return torch.stack([tvf.normalize(tvf.to_tensor(t), mean, std) for t in tiles])


def original_video(path: Path, size: int = 448) -> torch.Tensor:
    import av
    from torchvision.transforms import functional as tvf

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        positions = sample_frame_indices(stream.frames, float(stream.average_rate))
        wanted = set(positions)
        # decord is not installed: decode sequentially, keeping the sampled frames only.
        kept = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream)) if i in wanted}
    picked = [Image.fromarray(kept[i]) for i in positions]
    out = []
    for frame in picked:
        frame = tvf.center_crop(tvf.resize(frame, size, interpolation=tvf.InterpolationMode.BICUBIC), size)
        out.append(tvf.normalize(tvf.to_tensor(frame), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    return torch.stack(out)


def main() -> None:
    torch.set_num_threads(1)
    rows: list[tuple[str, str, str, str]] = []

    fe = VitaFeatureExtractor()
    mean, istd = torch.tensor(fe.cmvn_mean), torch.tensor(fe.cmvn_istd)
    rng = np.random.default_rng(0)
    for seconds in (1, 10, 60):
        wave = (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32)
        ours = median_time(lambda w=wave: fe(w, sampling_rate=16000, return_tensors="pt"))
        orig = median_time(lambda w=wave: original_audio(w, mean, istd))
        rows.append(
            (f"audio fbank+CMVN {seconds:>2d} s (RTF)", f"{ours / seconds:.5f}", f"{orig / seconds:.5f}", "< 0.01")
        )
    wave = (0.1 * rng.standard_normal(48000 * 10)).astype(np.float32)
    ours = median_time(lambda: fe(wave, sampling_rate=48000, return_tensors="pt"))
    rows.append(("audio 10 s at 48 kHz incl. resample (RTF)", f"{ours / 10:.5f}", "n/a", "< 0.01"))

    ip = VitaImageProcessor()
    ip_exact = VitaImageProcessor(resize_backend="pil")
    photo = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    ours = median_time(lambda: ip(photo), repeats=5)
    exact = median_time(lambda: ip_exact(photo), repeats=5)
    orig = median_time(lambda: original_tiles(photo), repeats=5)
    rows.append(("image tiling 4000x3000 (12 MP), ms", f"{ours * 1e3:.1f}", f"{orig * 1e3:.1f}", "< 150"))
    rows.append(("  same, resize_backend='pil' (bit-exact), ms", f"{exact * 1e3:.1f}", f"{orig * 1e3:.1f}", ""))
    demo = FIXTURES / "demo1.jpg"
    if demo.is_file():
        demo_image = Image.open(demo).convert("RGB")
        ours = median_time(lambda: ip(demo_image))
        orig = median_time(lambda: original_tiles(demo_image))
        rows.append(("image tiling demo1.jpg (decoded), ms", f"{ours * 1e3:.1f}", f"{orig * 1e3:.1f}", ""))
        ours = median_time(lambda: ip(str(demo)))
        rows.append(("image demo1.jpg from file (decode+tile), ms", f"{ours * 1e3:.1f}", "n/a", ""))

    video = FIXTURES / "demo_1.mp4"
    if video.is_file():
        vp = VitaVideoProcessor()
        ours = median_time(lambda: vp(str(video)), repeats=3)
        orig = median_time(lambda: original_video(video), repeats=3)
        rows.append(("video demo_1.mp4 (31.8 s) -> 16 frames, ms", f"{ours * 1e3:.0f}", f"{orig * 1e3:.0f}", ""))

    header = ("measure (1 thread)", "processing_vita", "original recipe", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
