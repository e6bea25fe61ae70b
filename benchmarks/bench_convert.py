"""Peak memory of the streaming weight conversion (`modeling_vita/convert_vita_original_to_hf.py`).

Builds a synthetic checkpoint of about 2 GB in the ORIGINAL VITA-1.0 layout (the released keys and shapes): a wide,
shallow Mixtral (hidden 2048, 8 experts) in float32, sharded about 500 MB a shard, plus the tiny vision and audio
towers of the test helper. It then runs the conversion CLI in a fresh process and reports that process's peak resident
set (`ru_maxrss` of the child, cross-checked by psutil polling), raw and with the baseline of a process that only
imports the converter subtracted, against the largest input shard. Target: baseline-subtracted peak under 1.5x the
largest input shard. The temporary folder is always removed. Run on demand: `python -m benchmarks.bench_convert
[--layers 8] [--dtype float32] [--keep-going]`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]

HIDDEN, FFN, EXPERTS, HEADS, KV_HEADS, VOCAB = 2048, 1024, 8, 16, 4, 1024
SHARD_BYTES = 500_000_000


def _llm_tensors(layers: int):
    """Yield (name, tensor) of the LLM in the original order, generated lazily to keep the builder small."""
    head = HIDDEN // HEADS
    import torch

    yield "model.embed_tokens.weight", torch.randn(VOCAB, HIDDEN) * 0.02
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", torch.randn(HEADS * head, HIDDEN) * 0.02
        yield p + "self_attn.k_proj.weight", torch.randn(KV_HEADS * head, HIDDEN) * 0.02
        yield p + "self_attn.v_proj.weight", torch.randn(KV_HEADS * head, HIDDEN) * 0.02
        yield p + "self_attn.o_proj.weight", torch.randn(HIDDEN, HEADS * head) * 0.02
        yield p + "block_sparse_moe.gate.weight", torch.randn(EXPERTS, HIDDEN) * 0.02
        for e in range(EXPERTS):
            q = f"{p}block_sparse_moe.experts.{e}."
            yield q + "w1.weight", torch.randn(FFN, HIDDEN) * 0.02
            yield q + "w2.weight", torch.randn(HIDDEN, FFN) * 0.02
            yield q + "w3.weight", torch.randn(FFN, HIDDEN) * 0.02
        yield p + "input_layernorm.weight", torch.ones(HIDDEN)
        yield p + "post_attention_layernorm.weight", torch.ones(HIDDEN)
    yield "model.norm.weight", torch.ones(HIDDEN)
    yield "lm_head.weight", torch.randn(VOCAB, HIDDEN) * 0.02


def build_checkpoint(folder: Path, layers: int) -> None:
    """Write the synthetic checkpoint shard by shard. Runs in its own process (`--build`): the measuring parent must
    stay small, because a forked child starts with the parent's resident set and `ru_maxrss` would count it."""
    import torch
    from safetensors.torch import save_file

    from tests.modeling_vita import original_vita

    folder.mkdir(parents=True)
    towers = {
        k: v
        for k, v in original_vita.original_state_dict().items()
        if k.startswith(("model.vision_tower", "model.audio_encoder")) and "adpter.project" not in k
    }
    towers["model.mm_projector.0.weight"] = torch.randn(HIDDEN, 4 * original_vita.VISION["hidden"]) * 0.02
    towers["model.mm_projector.0.bias"] = torch.zeros(HIDDEN)
    towers["model.mm_projector.2.weight"] = torch.randn(HIDDEN, HIDDEN) * 0.02
    towers["model.mm_projector.2.bias"] = torch.zeros(HIDDEN)
    towers["model.audio_encoder.adpter.project.weight"] = torch.randn(HIDDEN, 2 * original_vita.AUDIO["hidden"])
    towers["model.audio_encoder.adpter.project.bias"] = torch.zeros(HIDDEN)

    names, weight_map, current, size = [], {}, {}, 0

    def flush():
        name = f"model-{len(names) + 1:05d}.safetensors"
        save_file(current, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(current, name))
        names.append(name)

    for key, tensor in [*towers.items(), *_llm_tensors(layers)]:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > SHARD_BYTES:
            flush()
            current, size = {}, 0
        current[key], size = tensor, size + nbytes
    flush()
    total = len(names)
    renamed = {old: f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i, old in enumerate(names)}
    for old, new in renamed.items():
        (folder / old).rename(folder / new)
    weight_map = {k: renamed[v] for k, v in weight_map.items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = original_vita.original_config()
    config.update(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        num_local_experts=EXPERTS,
        vocab_size=VOCAB,
    )
    (folder / "config.json").write_text(json.dumps(config))
    # The audio folder's train.yaml states the adapter's LLM width, so it is written from the wide projector.
    original_vita.write_audio_encoder_folder(
        folder / "audio-encoder", {**original_vita.original_state_dict(), **towers}
    )


def _run_measured(command: list[str]) -> tuple[int, int, float]:
    """Run `command`; return (its own ru_maxrss in bytes, from wait4; psutil-polled peak in bytes; seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    polled, handle, output = [0], psutil.Process(process.pid), []

    def poll():
        while True:
            try:
                polled[0] = max(polled[0], handle.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    watchers = [threading.Thread(target=poll), threading.Thread(target=lambda: output.append(process.stdout.read()))]
    for watcher in watchers:
        watcher.start()
    # wait4 gives this child's own peak; RUSAGE_CHILDREN would mix in the checkpoint builder's.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for watcher in watchers:
        watcher.join()
    if process.returncode:
        raise RuntimeError(f"{command} failed:\n{''.join(output)[-3000:]}")
    return usage.ru_maxrss * 1024, polled[0], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--build", help=argparse.SUPPRESS)  # internal: build the checkpoint into this folder
    args = parser.parse_args()
    if args.build:
        build_checkpoint(Path(args.build), args.layers)
        return
    root = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        started = time.perf_counter()
        command = [sys.executable, "-m", "benchmarks.bench_convert", "--build", str(root / "VITA_ckpt")]
        command += ["--layers", str(args.layers)]
        subprocess.run(command, check=True, cwd=REPO_ROOT)
        built = time.perf_counter() - started
        shard_sizes = [p.stat().st_size for p in (root / "VITA_ckpt").glob("*.safetensors")]
        # Baseline first: RUSAGE_CHILDREN keeps the maximum over finished children, so order matters.
        baseline, _, _ = _run_measured(
            [sys.executable, "-c", "import modeling_vita.convert_vita_original_to_hf, transformers, safetensors"]
        )
        command = [
            sys.executable,
            "-m",
            "modeling_vita.convert_vita_original_to_hf",
            "--input",
            str(root / "VITA_ckpt"),
        ]
        command += ["--audio-encoder", str(root / "VITA_ckpt" / "audio-encoder"), "--output", str(root / "out")]
        command += ["--dtype", args.dtype, "--max-shard-size", "500MB", "--no-progress"]
        command += ["--image-token-id", "4", "--video-token-id", "5", "--audio-token-id", "6"]
        peak, polled, seconds = _run_measured(command)
        largest, total = max(shard_sizes), sum(shard_sizes)
        output_bytes = sum(p.stat().st_size for p in (root / "out").glob("*.safetensors"))
        mb = 1e6
        rows = [
            ("input checkpoint", f"{total / mb:,.0f} MB in {len(shard_sizes)} shards (built in {built:.0f} s)"),
            ("largest input shard", f"{largest / mb:,.0f} MB"),
            ("output (" + args.dtype + ")", f"{output_bytes / mb:,.0f} MB"),
            ("conversion time", f"{seconds:.1f} s ({total / mb / seconds:,.0f} MB/s read)"),
            ("baseline RSS (imports only)", f"{baseline / mb:,.0f} MB"),
            ("peak RSS, raw (ru_maxrss)", f"{peak / mb:,.0f} MB  (psutil polling: {polled / mb:,.0f} MB)"),
            ("peak RSS - baseline", f"{(peak - baseline) / mb:,.0f} MB"),
            ("(peak - baseline) / largest shard", f"{(peak - baseline) / largest:.2f}x  (target < 1.50x)"),
            ("raw peak / largest shard", f"{peak / largest:.2f}x"),
        ]
        width = max(len(name) for name, _ in rows)
        print(f"{'metric':<{width}} | value\n{'-' * width}-+-{'-' * 50}")
        for name, value in rows:
            print(f"{name:<{width}} | {value}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
