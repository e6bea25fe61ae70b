"""CTC pretraining of vita-tiny's audio encoder on the training speech: its stand-in for a pretrained encoder.

VITA starts its audio encoder from an ASR-pretrained one, so the
alignment stage only has to map already-meaningful speech features into the LLM. vita-tiny's encoder starts from
random weights, and the LLM loss alone, passed back through a frozen LLM, reaches it too weakly to learn words that
carry over to unseen voices. This step gives it the dense signal an ASR encoder is trained with: a character CTC head
on the encoder's 25 Hz output (the head is kept aside; the adapter is left to the alignment stage), trained with the
data augmentations of Kaldi/ESPnet recipes:
- speed perturbation (resampling, which also moves the pitch and formants: new speaking rates and "new" speakers),
- vocal-tract length perturbation (`vtln_warp` of torchaudio's Kaldi fbank),
and without their regularisers by default: the encoder underfits its own training speech in the time this step has.
On the data of a full build (2,920 training clips of 63 speakers), the same 4,409 steps with SpecAugment (time and
frequency masks) and the encoder's dropout (0.1) left greedy CERs of 0.406 on 200 clean training clips, 0.533 on
their room/microphone/noise versions and 0.615 on the held-out voice families; without both, 0.298, 0.432 and 0.562.
`spec_augment=True`, `encoder_dropout=0.1` bring them back (for more data or longer training).
Characters rather than the LLM's tokens: measured on this data, a head over the 1,052 tokens sat in CTC's all-blank
phase for twice as long and reached a held-out CER of 0.93 where characters reached 0.44 in the same steps.

    python -m recipes.vita_tiny.pretrain_audio data/vita-tiny runs/vita-tiny/init runs/vita-tiny/audio_pretrain

Reads the clips listed in `<data>/speech_index.json` (train and held-out), writes the model of `<init>` with the
pretrained audio tower (and its processor) to the output folder, with `ctc_head.safetensors` (the character head) and
`audio_pretrain.json` (greedy-decoded character and word error rates on the held-out voices, loss history).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import torch
import torchaudio
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from processing_vita.feature_extraction_vita import get_num_encoder_frames, load_audio, resample_waveform

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"  # CTC class 0 is the blank, class i + 1 is ALPHABET[i]
SPEED_FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2)  # > 1 is faster
VTLN_WARPS = (0.9, 1.0, 1.1)


def normalize_transcript(text: str) -> str:
    """Lower-case words (letters and apostrophes) separated by single spaces: what a listener can hear."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


def transcript_labels(text: str) -> list[int]:
    """CTC classes of the normalised `text` (1-based: 0 is the blank)."""
    return [ALPHABET.index(c) + 1 for c in normalize_transcript(text)]


def greedy_decode(log_probs: torch.Tensor, length: int) -> str:
    """Best path of one utterance (`log_probs`: (frames, classes)), repeats merged and blanks dropped, as text."""
    best = log_probs[:length].argmax(-1).tolist()
    out, previous = [], 0
    for label in best:
        if label != previous and label != 0:
            out.append(ALPHABET[label - 1])
        previous = label
    return "".join(out).strip()


def error_rates(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Corpus character and word error rates (jiwer) of (reference, hypothesis) pairs, over normalised text."""
    import jiwer

    references = [normalize_transcript(r) for r, _ in pairs]
    hypotheses = [normalize_transcript(h) for _, h in pairs]
    return {"cer": float(jiwer.cer(references, hypotheses)), "wer": float(jiwer.wer(references, hypotheses))}


class CTCHead(nn.Module):
    """Encoder (25 Hz) -> blank + characters: the training-only head, saved beside the model."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.proj = nn.Linear(hidden_size, len(ALPHABET) + 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(hidden_states)).log_softmax(-1)


def _wave(path: Path) -> torch.Tensor:
    """A clip as 16 kHz mono float32 samples (read once, then sped up and warped several ways by `_features`)."""
    samples, rate = load_audio(path)
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if wave.ndim > 1:
        wave = wave.mean(-1) if wave.shape[-1] <= 2 else wave.mean(0)
    return resample_waveform(wave, rate, 16_000)


def _features(feature_extractor: Any, wave: torch.Tensor, speed: float, warp: float) -> torch.Tensor:
    # Reading a 16 kHz clip as if recorded at speed x 16 kHz and bringing it back plays it `speed` times faster.
    wave = resample_waveform(wave, round(16_000 * speed), 16_000)
    if warp == 1.0:
        return feature_extractor.waveform_to_features(wave)
    feats = torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0) * 32768.0, num_mel_bins=feature_extractor.feature_size,
        frame_length=feature_extractor.frame_length, frame_shift=feature_extractor.frame_shift, dither=0.0,
        energy_floor=0.0, sample_frequency=16_000, vtln_warp=warp, vtln_low=100.0, vtln_high=-500.0,
    )  # fmt: skip
    mean = torch.tensor(feature_extractor.cmvn_mean, dtype=feats.dtype)
    istd = torch.tensor(feature_extractor.cmvn_istd, dtype=feats.dtype)
    return (feats - mean) * istd


def _pad(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([f.shape[0] for f in features])
    batch = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
    for i, f in enumerate(features):
        batch[i, : f.shape[0]] = f
    mask = torch.arange(batch.shape[1])[None] < lengths[:, None]
    return batch, mask


def _batches(items: list[Any], lengths: list[int], batch_frames: int, rng: random.Random) -> list[list[Any]]:
    """Length-sorted batches of about `batch_frames` padded frames each, in random order (little padding)."""
    order = sorted(range(len(items)), key=lambda i: lengths[i] + rng.random() * 20)
    batches, current, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if current and longest * (len(current) + 1) > batch_frames:
            batches.append(current)
            current, longest = [], lengths[i]
        current.append(items[i])
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def evaluate_encoder(
    encoder: nn.Module, head: CTCHead, clips: list[tuple[torch.Tensor, str]], voices: list[str]
) -> dict[str, Any]:
    """Greedy-decoded CER/WER of `clips` ((features, text) pairs), overall and by voice."""
    encoder.eval()
    head.eval()
    pairs = []
    with torch.inference_mode():
        for start in range(0, len(clips), 32):
            chunk = clips[start : start + 32]
            features, mask = _pad([f for f, _ in chunk])
            out = encoder(features, input_features_mask=mask)
            log_probs = head(out.last_hidden_state)
            lengths = get_num_encoder_frames(mask.sum(-1))  # the encoder's 25 Hz frames
            for i, (_, text) in enumerate(chunk):
                pairs.append((text, greedy_decode(log_probs[i], int(lengths[i]))))
    by_voice = {
        voice: {k: round(v, 4) for k, v in error_rates([p for p, v in zip(pairs, voices) if v == voice]).items()}
        for voice in sorted(set(voices))
    }
    return {**error_rates(pairs), "n": len(pairs), "by_voice": by_voice, "examples": pairs[:5]}


def pretrain_audio_encoder(
    data_dir: str | Path,
    model_dir: str | Path,
    output_dir: str | Path,
    epochs: int = 12,
    learning_rate: float = 4e-3,
    batch_frames: int = 2000,
    seed: int = 0,
    max_steps: int | None = None,
    spec_augment: bool = False,
    encoder_dropout: float = 0.0,
) -> dict[str, Any]:
    """Train the audio tower of the model in `model_dir` with CTC; save model + processor to `output_dir`.

    `spec_augment` masks time and frequency bands of each training clip; `encoder_dropout` replaces the dropout of
    the encoder's layers during this step only (the saved config keeps its own for later stages)."""
    from transformers import AutoProcessor

    from modeling_vita import VitaForConditionalGeneration

    start = time.time()
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    index_path = data_dir / "speech_index.json"
    if not index_path.is_file():
        raise ValueError(f"{index_path} does not exist; expected the data of `python -m recipes.vita_tiny.data`.")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    extractor = processor.feature_extractor
    model = VitaForConditionalGeneration.from_pretrained(model_dir)
    encoder = model.model.audio_tower
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = encoder_dropout
    head = CTCHead(encoder.config.hidden_size)

    media = data_dir / "media"
    # Every perturbation of every clip is computed once; each epoch draws one per clip. A clip with a clean version
    # (before rooms, microphones and noise) offers both, so about half the draws are clean: the encoder learns the
    # words on clean speech and keeps them through the corruptions, which alone it learns too slowly.
    train = [
        ([_features(extractor, wave, speed, rng.choice(VTLN_WARPS)) for speed in SPEED_FACTORS for wave in waves],
         transcript_labels(clip["text"]))
        for clip in index["train"]
        for waves in [[_wave(media / path) for path in (clip["audio"], clip.get("clean")) if path]]
    ]  # fmt: skip
    heldout = [(_features(extractor, _wave(media / c["audio"]), 1.0, 1.0), c["text"]) for c in index["heldout"]]
    feature_seconds = time.time() - start
    freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=max(2, extractor.feature_size * 3 // 20))
    time_mask = torchaudio.transforms.TimeMasking(time_mask_param=15, p=0.2)

    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    plan = []
    for _ in range(epochs):
        drawn = [(rng.choice(variants), labels) for variants, labels in train]
        plan.append(_batches(drawn, [f.shape[0] for f, _ in drawn], batch_frames, rng))
    total = sum(len(p) for p in plan) if max_steps is None else min(max_steps, sum(len(p) for p in plan))
    log_every = max(1, total // 50)
    scheduler = warmup_cosine_schedule(optimizer, total)
    history, step = [], 0
    voices = [c["voice"] for c in index["heldout"]]
    for epoch, epoch_batches in enumerate(plan):
        if epoch and step < total:  # held-out error rates along the way (a few seconds), for the log
            rates = evaluate_encoder(encoder, head, heldout, voices)
            history.append(
                {"step": step, "heldout_cer": round(rates["cer"], 4), "heldout_wer": round(rates["wer"], 4)}
            )
            print(
                f"[audio pretrain] epoch {epoch}: held-out CER {rates['cer']:.3f} WER {rates['wer']:.3f}", flush=True
            )
        encoder.train()
        head.train()
        for batch in epoch_batches:
            if step >= total:
                break
            features, mask = _pad([f for f, _ in batch])
            if spec_augment:  # each clip masked on its own (torchaudio masks a whole batch alike)
                features = torch.stack([time_mask(freq_mask(time_mask(freq_mask(f.T)))).T for f in features])
            out = encoder(features, input_features_mask=mask)
            log_probs = head(out.last_hidden_state)  # (batch, frames / 4, classes)
            lengths = get_num_encoder_frames(mask.sum(-1))  # the encoder's 25 Hz frames
            targets = [torch.tensor(labels) for _, labels in batch]
            loss = F.ctc_loss(
                log_probs.transpose(0, 1), torch.cat(targets), lengths, torch.tensor([len(t) for t in targets]),
                zero_infinity=True,
            )  # fmt: skip
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % log_every == 0 or step == total:
                history.append({"step": step, "loss": round(loss.item(), 4)})
                print(
                    f"[audio pretrain] step {step}/{total} ctc loss {loss.item():.3f} ({time.time() - start:.0f} s)",
                    flush=True,
                )
    report = evaluate_encoder(encoder, head, heldout, voices)
    summary = {
        "train_clips": len(train), "heldout_clips": len(heldout),
        "steps": step, "heldout_cer": round(report["cer"], 4), "heldout_wer": round(report["wer"], 4),
        "heldout_by_voice": report["by_voice"], "examples": report["examples"],
        "spec_augment": spec_augment, "encoder_dropout": encoder_dropout,
        "feature_seconds": round(feature_seconds, 1),
        "seconds": round(time.time() - start, 1), "log_history": history,
    }  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    # The head is not part of VITA; kept beside the model to decode the encoder's output (`greedy_decode`).
    save_file(head.state_dict(), str(output_dir / "ctc_head.safetensors"))
    processor.save_pretrained(output_dir)
    (output_dir / "audio_pretrain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first 5% of `total` steps (from 1/warmup, not 0), then cosine decay to 0: the schedule
    of both tower pretraining steps (this one and `pretrain_vision.py`)."""
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretraining_main(
    argv: list[str] | None, description: str, pretrain: Any, tower: str, epochs: int, learning_rate: float
) -> None:
    """The command line of a tower pretraining step (this one and `pretrain_vision.py`): data, model, output folders
    and the schedule's knobs; prints the summary without its loss history."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data", help="folder written by `python -m recipes.vita_tiny.data`")
    parser.add_argument("model", help="model + processor to start from (`python -m recipes.vita_tiny.initialize`)")
    parser.add_argument("output", help=f"folder for the model with the pretrained {tower}")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = pretrain(
        args.data, args.model, args.output, args.epochs, args.learning_rate, seed=args.seed, max_steps=args.max_steps
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "log_history"}, indent=1))


def main(argv: list[str] | None = None) -> None:
    pretraining_main(argv, __doc__.split("\n\n")[0], pretrain_audio_encoder, "audio tower", 12, 4e-3)


if __name__ == "__main__":
    main()
