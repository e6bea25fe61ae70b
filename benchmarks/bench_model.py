"""Prefill/decode speed and peak memory of VITA against transformers' InternVL and the bare text model.

All three share the same weights where they share structure: the LLM (a small Mixtral), the InternViT tower and
the 448 px tile. InternVL's projector adds a layer norm that VITA's has not; everything else is the same work, so
the ratios show the cost of VITA's own code (placeholder checks, scatter, audio path when unused, wrappers).
Run on demand: `python -m benchmarks.bench_model [--repeats 10] [--threads 2]`; it prints a table.
Peak memory is the growth of the resident set (peak minus start) in a fresh process per scenario.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

from transformers import InternVLConfig, InternVLForConditionalGeneration, MixtralForCausalLM  # noqa: E402

from modeling_vita import VitaConfig, VitaForConditionalGeneration  # noqa: E402
from modeling_vita.audio_encoder import get_audio_token_count  # noqa: E402

TEXT = {
    "model_type": "mixtral",
    "vocab_size": 8192,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
    "pad_token_id": 0,
}
VISION = {
    "model_type": "internvl_vision",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "image_size": 448,
    "patch_size": 14,
    "attention_bias": True,
    "use_mean_pooling": True,
}
AUDIO = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = 8000, 8001, 8002
TEXT_TOKENS = 32
DECODE_TOKENS = 32


def build_vita() -> VitaForConditionalGeneration:
    config = VitaConfig(
        text_config=TEXT,
        vision_config=VISION,
        audio_config=AUDIO,
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        audio_token_id=AUDIO_TOKEN,
    )
    return VitaForConditionalGeneration(config).eval()


def build_internvl() -> InternVLForConditionalGeneration:
    config = InternVLConfig(
        text_config=TEXT, vision_config=VISION, image_token_id=IMAGE_TOKEN, tie_word_embeddings=False
    )
    return InternVLForConditionalGeneration(config).eval()


def build_text() -> MixtralForCausalLM:
    return MixtralForCausalLM(build_vita().config.text_config).eval()


BUILDERS = {"vita": build_vita, "internvl": build_internvl, "text": build_text}


def build_models() -> dict:
    """All three models with the same LLM, vision and LM-head weights (MoE routing, hence work, then matches)."""
    torch.manual_seed(0)
    vita, internvl, text_only = build_vita(), build_internvl(), build_text()
    internvl.model.language_model.load_state_dict(vita.model.language_model.state_dict())
    internvl.model.vision_tower.load_state_dict(vita.model.vision_tower.state_dict())
    internvl.lm_head.load_state_dict(vita.lm_head.state_dict())
    text_only.model.load_state_dict(vita.model.language_model.state_dict())
    text_only.lm_head.load_state_dict(vita.lm_head.state_dict())
    return {"vita": vita, "internvl": internvl, "text": text_only}


def make_inputs(scenario: str) -> dict:
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(10, 7000, (TEXT_TOKENS,), generator=generator)
    if scenario == "image+text":
        ids = torch.cat([torch.full((256,), IMAGE_TOKEN), text])
        extra = {"pixel_values": torch.randn(1, 3, 448, 448, generator=generator)}
    elif scenario == "audio+text":
        frames = 1 + (3 * 16000 - 400) // 160
        ids = torch.cat([torch.full((get_audio_token_count(frames),), AUDIO_TOKEN), text])
        extra = {"input_features": torch.randn(1, frames, 80, generator=generator)}
    else:
        ids, extra = text, {}
    return {"input_ids": ids[None], "attention_mask": torch.ones(1, ids.shape[0], dtype=torch.long), **extra}


def prefill_seconds(model, inputs) -> float:
    start = time.perf_counter()
    model(**inputs)
    return time.perf_counter() - start


def generate_seconds(model, inputs, new_tokens: int) -> float:
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start


CASES = [
    ("image+text", "vita"),
    ("image+text", "internvl"),
    ("audio+text", "vita"),
    ("text", "vita"),
    ("text", "internvl"),
    ("text", "text"),
]


def measure_speed(repeats: int) -> dict:
    """Medians over rounds that visit every case in turn, so background load hits all cases alike."""
    models = build_models()
    inputs = {scenario: make_inputs(scenario) for scenario, _ in CASES}
    samples = {case: {"prefill": [], "short": [], "long": []} for case in CASES}
    with torch.inference_mode():
        for round_index in range(repeats + 1):
            for case in CASES:
                model, case_inputs = models[case[1]], inputs[case[0]]
                timings = (
                    prefill_seconds(model, case_inputs),
                    generate_seconds(model, case_inputs, 1),
                    generate_seconds(model, case_inputs, DECODE_TOKENS + 1),
                )
                if round_index == 0:
                    continue  # warm-up round
                for key, value in zip(("prefill", "short", "long"), timings):
                    samples[case][key].append(value)
    results = {}
    for case, values in samples.items():
        decode = (statistics.median(values["long"]) - statistics.median(values["short"])) / DECODE_TOKENS
        results[case] = {"prefill_ms": statistics.median(values["prefill"]) * 1e3, "decode_ms": decode * 1e3}
    return results


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_memory(scenario: str, model_name: str) -> float:
    """Peak resident memory added by building `model_name` and running prefill + 8 decode steps, in MB.

    A child process inherits its parent's high-water mark through fork, so on Linux the mark is reset first
    (`/proc/self/clear_refs`); elsewhere `ru_maxrss` is used as it is.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, peak = _status_kb("VmRSS"), lambda: _status_kb("VmHWM")
    except OSError:
        before, peak = None, None
    if before is None or peak is None:
        before, peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
    torch.manual_seed(0)
    model = BUILDERS[model_name]()
    with torch.inference_mode():
        generate_seconds(model, make_inputs(scenario), 8)
    after = peak() if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-case", nargs=2, metavar=("SCENARIO", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps(measure_memory(*args.memory_case)))
        return
    speed = measure_speed(args.repeats)
    memory = {}
    for case in CASES:
        # A fresh process per case that builds only that model, so one model's peak does not hide another's.
        command = [sys.executable, __file__, "--memory-case", *case, "--threads", str(args.threads)]
        memory[case] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} rounds, CPU")
    print(f"{'scenario':<12}{'model':<10}{'prefill ms':>12}{'decode ms/tok':>15}{'peak MB':>10}")
    for case in CASES:
        row = speed[case]
        print(f"{case[0]:<12}{case[1]:<10}{row['prefill_ms']:>12.2f}{row['decode_ms']:>15.3f}{memory[case]:>10.0f}")
    image_ratio = speed[("image+text", "vita")]["prefill_ms"] / speed[("image+text", "internvl")]["prefill_ms"]
    decode_ratio = speed[("text", "vita")]["decode_ms"] / speed[("text", "text")]["decode_ms"]
    decode_internvl = speed[("text", "vita")]["decode_ms"] / speed[("text", "internvl")]["decode_ms"]
    print()
    print(f"{'ratio':<52}{'value':>8}{'target':>9}")
    print(f"{'image+text prefill, VITA / InternVL':<52}{image_ratio:>8.3f}{'<= 1.10':>9}")
    print(f"{'text-only decode per token, VITA / bare Mixtral':<52}{decode_ratio:>8.3f}{'<= 1.05':>9}")
    print(f"{'text-only decode per token, VITA / InternVL':<52}{decode_internvl:>8.3f}{'':>9}")


if __name__ == "__main__":
    main()
