"""Speed of VITA-1.5's speech out (speech decoder + TiCodec codec) on CPU at the released sizes; prints a table.

Run on demand: `python -m benchmarks.bench_speech [--repeats 3] [--threads 2] [--tokens 200] [--text-tokens 12]`.
The decoder and the codec have the released shapes (`VitaSpeechDecoderConfig()`, `VitaCodecConfig()`) and random
weights; the LLM in front of them is a one-layer Qwen2 of VITA-1.5's width (3584, so every text token is 4 decoder
rows), used only for its input embeddings, as `generate_speech` uses the LLM. A random decoder may end at once or
never: its end-of-speech logit is held down, so every run decodes exactly `--tokens` codec tokens (200 = 5 s at 40
tokens a second), sampled top-2 as VITA-1.5's demos do. Everything runs in float32: bf16 matrix products are slow on
CPUs without native bf16 instructions (such as this project's AVX2 machines), so bf16 numbers would measure that.

What is measured (medians over the repeats):
- the real-time factor (seconds of compute per second of audio) of decoder + codec for the one-shot clip
  (`generate_speech`) and for the chunked stream (`stream_speech`: a first chunk of 20 tokens, later ones of 40, each
  decoded with 10 tokens of context on both sides), and those of the decoder alone and of one codec pass over all
  the tokens (their sum is about the one-shot figure);
- the time from the text tokens to the first audio chunk on the streaming path (input embeddings -> decoder prefill ->
  the 30 codec tokens of the first chunk and its look-ahead -> codec decode of those 30 tokens). The text of the first
  piece is given: the time the LLM takes to write it is not included;
- the decoder's prefill (pre-network and main layers over the frames) and its step per codec token (time between
  successive tokens, cache included). One step reads all of the main layers' weights (about 260 MB in float32), so
  on CPU it is bound by memory bandwidth rather than arithmetic.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable

import torch

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config

logger = logging.getLogger(__name__)

# VITA-1.5's LLM width and head layout (Qwen2-7B); one small layer, since only the input embeddings are read.
LLM = {"hidden_size": 3584, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 28,
       "num_key_value_heads": 4}  # fmt: skip
CHUNKING = {"first_chunk_size": 20, "chunk_size": 40, "chunk_padding": 10}


def build_model() -> VitaForConditionalGeneration:
    """A VITA with the released speech decoder and codec (random weights) whose decoder never ends on its own."""
    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2", text_config=LLM, speech_config={})).eval()
    decoder = model.speech_model.decoder
    with torch.no_grad():
        decoder.out_proj.bias[decoder.config.eos_token_id] = -1e4
    return model


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _decoder_run(model: VitaForConditionalGeneration, text_ids: torch.Tensor, tokens: int) -> dict[str, float]:
    """Total, prefill and median step seconds of the decoder alone, from the times its tokens come out."""
    frames = model.speech_frames(text_ids)
    start = time.perf_counter()
    stamps = []
    generator = torch.Generator().manual_seed(0)
    for _ in model.speech_model.decoder.generate_codec_tokens(frames, max_speech_tokens=tokens, generator=generator):
        stamps.append(time.perf_counter())
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    step = statistics.median(steps)
    # The first token costs the prefill plus one step.
    return {"decoder": stamps[-1] - start, "prefill": stamps[0] - start - step, "step": step,
            "mean_step": statistics.mean(steps)}  # fmt: skip


def measure(model: VitaForConditionalGeneration, text_tokens: int, tokens: int, repeats: int) -> dict[str, float]:
    """Medians over rounds that visit every case in turn, so background load hits all cases alike."""
    speech_model = model.speech_model
    seconds = tokens * speech_model.codec.config.hop_length / speech_model.config.sampling_rate
    text_ids = torch.randint(10, 1000, (1, text_tokens), generator=torch.Generator().manual_seed(1))

    def speak() -> object:
        return model.generate_speech(text_ids, max_speech_tokens=tokens, generator=torch.Generator().manual_seed(0))

    def stream() -> object:
        generator = torch.Generator().manual_seed(0)
        return model.stream_speech(text_ids, max_speech_tokens=tokens, generator=generator, **CHUNKING)

    samples: dict[str, list[float]] = {}
    with torch.inference_mode():
        codec_tokens = speak().codec_tokens  # also the warm-up: first calls pay for allocations
        for _ in range(repeats):
            round_times = {
                "one_shot": _seconds(speak),
                **_decoder_run(model, text_ids, tokens),
                "codec": _seconds(lambda: speech_model.codec.decode(codec_tokens)),
                "stream": _seconds(lambda: list(stream())),
                "first_chunk": _seconds(lambda: next(iter(stream()))),
            }
            for key, value in round_times.items():
                samples.setdefault(key, []).append(value)
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "seconds": seconds,
        "frames": model.speech_frames(text_ids).shape[1],
        "one_shot_rtf": median["one_shot"] / seconds,
        "decoder_rtf": median["decoder"] / seconds,
        "codec_rtf": median["codec"] / seconds,
        "stream_rtf": median["stream"] / seconds,
        "first_chunk_ms": median["first_chunk"] * 1e3,
        "prefill_ms": median["prefill"] * 1e3,
        "step_ms": median["step"] * 1e3,
        "mean_step_ms": median["mean_step"] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=200, help="codec tokens a run (40 a second)")
    parser.add_argument("--text-tokens", type=int, default=12, help="text tokens of the spoken piece")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    model = build_model()
    decoder_params = model.speech_model.decoder.num_parameters() / 1e6
    codec_params = model.speech_model.codec.num_parameters() / 1e6
    result = measure(model, args.text_tokens, args.tokens, args.repeats)
    print(
        f"torch {torch.__version__}, CPU, {args.threads} threads, float32 (bf16 is slow on this CPU), random weights "
        f"at the released sizes: decoder {decoder_params:.1f}M, codec {codec_params:.1f}M parameters"
    )
    print(
        f"{args.tokens} codec tokens = {result['seconds']:.2f} s of audio a run (EOS held down), top-2 sampling; "
        f"text {args.text_tokens} tokens = {result['frames']} decoder rows; median of {args.repeats} repeats"
    )
    chunks = "/".join(str(CHUNKING[k]) for k in ("first_chunk_size", "chunk_size", "chunk_padding"))
    rows = [
        ("one shot (generate_speech): real-time factor", f"{result['one_shot_rtf']:.3f}", "s compute / s audio"),
        (f"  decoder alone ({args.tokens} tokens)", f"{result['decoder_rtf']:.3f}", "s / s"),
        ("  codec decode alone (one pass)", f"{result['codec_rtf']:.3f}", "s / s"),
        (f"stream (stream_speech {chunks}): real-time factor", f"{result['stream_rtf']:.3f}", "s compute / s audio"),
        ("text tokens -> first audio chunk (stream)", f"{result['first_chunk_ms']:.0f}", "ms"),
        (f"decoder prefill ({result['frames']} rows)", f"{result['prefill_ms']:.1f}", "ms"),
        (
            "decoder step per codec token, median / mean",
            f"{result['step_ms']:.1f} / {result['mean_step_ms']:.1f}",
            "ms",
        ),
    ]
    # The machines these numbers come from are shared: a busy one slows every row, so the load is part of the result.
    print(f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)")
    print()
    print(f"{'metric':<52}{'value':>13}  unit")
    for name, value, unit in rows:
        print(f"{name:<52}{value:>13}  {unit}")


if __name__ == "__main__":
    main()
