"""The one command that makes vita-tiny: data, vocabulary extension, every training stage, evaluation, export.

Design: the vita-tiny issue; the stages are the project's own recipes (`python -m recipes.sft` with one YAML a stage
beside this file, run as a user runs them, one subprocess each), evaluation is `recipes/evaluate.py` on the
held-out split, and the export is `pipeline("vita-duplex").save_pretrained`, so the committed checkpoint carries model,
processor, chat template and remote code. Layout of open-r1's and alignment-handbook's recipe runners.

    python -m recipes.vita_tiny                     # everything, into spaces_demo/vita-tiny (make vita-tiny)
    python -m recipes.vita_tiny --small --max-steps 2 --export out/vt-smoke   # a smoke run, about a minute

Steps and where they write (paths relative to the current directory, the checkout under `make vita-tiny`):
    data        data/vita-tiny (reused when its manifest matches; `--rebuild-data` forces)
    initialize  runs/vita-tiny/init: English tokenizer + Chinese extension, processor (short system prompts, CMVN
                from the training speech), untrained model
    audio_pretrain  runs/vita-tiny/audio_pretrain: the audio encoder pretrained by CTC on the training speech (the
                stand-in for VITA's pretrained encoder; `pretrain_audio.py`)
    vision_pretrain  runs/vita-tiny/vision_pretrain: the vision tower pretrained to name the attributes of the
                training pictures (the stand-in for InternViT; `pretrain_vision.py`)
    stages      runs/vita-tiny/stage1_llm -> stage2_vision_align -> stage2_audio_align -> stage3_multimodal_sft
    evaluate    runs/vita-tiny/eval_heldout.json and eval_heldout_previous.json (+ .txt): both held-out splits
    export      spaces_demo/vita-tiny (model card with the evaluation table), recipes/vita_tiny/training_curves.png
                and the results section of recipes/vita_tiny/README.md
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The stage YAMLs, README.md and training_curves.png sit beside this file (package data of recipes.vita_tiny).
RECIPE_DIR = Path(__file__).resolve().parent
STAGES = ("stage1_llm", "stage2_vision_align", "stage2_audio_align", "stage3_multimodal_sft")
STAGE_DATA = {
    "stage1_llm": "llm_train",
    "stage2_vision_align": "vision_train",
    "stage2_audio_align": "audio_train",
    "stage3_multimodal_sft": "sft_train",
}
RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"
# The issues' acceptance targets, checked (and printed) after the evaluation, on both held-out splits; and the least
# state accuracy every voice family of the held-out split must reach on its own.
TARGETS = {"state accuracy": (">=", 0.95), "background ignored": (">=", 0.95), "image QA": (">=", 0.90),
           "video QA": (">=", 0.80), "WER": ("<", 0.15)}  # fmt: skip
FAMILY_TARGET = 0.90
EVAL_SPLITS = {"heldout": "held-out (unseen families)", "heldout_previous": "previous held-out"}


def _log(message: str) -> None:
    print(f"[vita-tiny {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_data(data_dir: Path, small: bool, rebuild: bool, seed: int) -> dict[str, Any]:
    """Build the synthetic data unless a matching build is already there."""
    from recipes.vita_tiny.data import DEFAULT_SIZES, SMALL_SIZES, build_vita_tiny_data, data_version

    manifest_path = data_dir / "manifest.json"
    wanted = SMALL_SIZES if small else DEFAULT_SIZES
    if manifest_path.is_file() and not rebuild:
        manifest = json.loads(manifest_path.read_text())
        same = manifest.get("sizes") == wanted and manifest.get("seed") == seed
        if same and manifest.get("generator") == data_version():
            _log(f"data: reusing {data_dir} (built in {manifest['build_seconds']} s; --rebuild-data to rebuild)")
            return manifest
    _log(f"data: building {data_dir}")
    return build_vita_tiny_data(data_dir, seed=seed, small=small)


def run_stage(stage: str, data_dir: Path, work_dir: Path, previous: Path, extra: list[str]) -> Path:
    """Run one stage's YAML through `python -m recipes.sft` in a subprocess; returns its output folder."""
    output = work_dir / stage
    command = [
        sys.executable, "-m", "recipes.sft", "--config", str(RECIPE_DIR / f"{stage}.yaml"),
        "--model_name_or_path", str(previous), "--dataset_name", str(data_dir / STAGE_DATA[stage]),
        "--media_root", str(data_dir / "media"), "--output_dir", str(output), *extra,
    ]  # fmt: skip
    _log(f"{stage}: {' '.join(command[1:])}")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command, check=True, env=env)
    return output


def stage_history(output: Path) -> list[dict[str, Any]]:
    """The trainer's log history of a finished stage (`trainer_state.json`, written by `trainer.save_state`)."""
    state = output / "trainer_state.json"
    return json.loads(state.read_text())["log_history"] if state.is_file() else []


def plot_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Training loss of every stage against its step, one panel a stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(4 * len(histories), 3.2), squeeze=False)
    for ax, (stage, history) in zip(axes[0], histories.items()):
        points = [(h["step"], h["loss"]) for h in history if "loss" in h]
        if points:
            ax.plot(*zip(*points), color="tab:blue", linewidth=1.4)
        ax.set_title(stage.replace("_", " "), fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meets(name: str, value: float | None) -> bool:
    """Whether a headline number reaches its target in `TARGETS`."""
    op, bound = TARGETS[name]
    return value is not None and (value >= bound if op == ">=" else value < bound)


def headline(report: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The numbers the issues ask for, from an `evaluate.py` report and its `breakdown` by task."""
    background = tasks.get("background")
    return {
        "state accuracy": report["state"]["accuracy"],
        "background ignored": background["state"] / background["n"] if background else None,
        "image QA": report["exact_match"]["image"]["accuracy"],
        "video QA": report["exact_match"]["video"]["accuracy"],
        "WER": report["asr"]["wer"],
    }


def voices_summary(data_dir: Path) -> dict[str, Any]:
    """The speakers and voice families each bank of the data build used (from its manifest)."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    return {"train_speakers": len(manifest["voices"]["train"]), "train_families": manifest["voice_families"]["train"],
            "heldout_families": manifest["voice_families"]["heldout"]}  # fmt: skip


def targets_met(summary: dict[str, Any]) -> dict[str, bool]:
    """Every target on every evaluated split, and every held-out voice family's state accuracy."""
    met = {}
    for split, result in summary["splits"].items():
        for name, value in result["headline"].items():
            met[f"{split}: {name}"] = meets(name, value)
        if split == "heldout":
            for family, entry in result["families"].items():
                met[f"{split}: family {family}"] = entry["state"] / entry["n"] >= FAMILY_TARGET
    return met


def breakdown(report: dict[str, Any], labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Accuracy by a label of each row (`labels`: row id -> label; rows labelled "" are left out): state correct
    and, where there is an answer, answer correct. By the data's `task` column, or by the voice family that spoke
    the row (`voices.family_of_key` of its `voice`)."""
    out: dict[str, dict[str, Any]] = {}
    for sample in report["samples"]:
        label = labels.get(sample["id"], "?")
        if not label:
            continue
        entry = out.setdefault(label, {"n": 0, "state": 0, "answer": 0, "answered": 0})
        entry["n"] += 1
        entry["state"] += sample["expected_state"] == sample["predicted_state"]
        if "correct" in sample:
            entry["answered"] += 1
            entry["answer"] += bool(sample["correct"])
    return dict(sorted(out.items()))


def results_markdown(summary: dict[str, Any]) -> str:
    """The evaluation and timing tables shared by the model card and the recipe README."""
    splits = summary["splits"]
    names = [EVAL_SPLITS.get(split, split) for split in splits]
    lines = [f"| metric | {' | '.join(names)} | target |", "|---|" + "---|" * len(names) + "---|"]
    for name in TARGETS:
        op, bound = TARGETS[name]
        shown = []
        for result in splits.values():
            value = result["headline"].get(name)
            shown.append("-" if value is None else f"{value:.3f}" + ("" if meets(name, value) else " (missed)"))
        lines.append(f"| {name} | {' | '.join(shown)} | {op} {bound} |")
    for split, result in splits.items():
        target = f" (target >= {FAMILY_TARGET} each)" if split == "heldout" else ""
        header = f"| voice family, {EVAL_SPLITS.get(split, split)}{target} | spoken rows | state correct | accuracy |"
        lines += ["", header, "|---|---|---|---|"]
        for family, entry in result["families"].items():
            lines.append(
                f"| {family} | {entry['n']} | {entry['state']}/{entry['n']} | {entry['state'] / entry['n']:.3f} |"
            )
    for split, result in splits.items():
        lines += [
            "",
            f"| task, {EVAL_SPLITS.get(split, split)} | rows | state correct | answer correct |",
            "|---|---|---|---|",
        ]
        for task, entry in result["tasks"].items():
            answer = f"{entry['answer']}/{entry['answered']}" if entry["answered"] else "-"
            lines.append(f"| {task} | {entry['n']} | {entry['state']}/{entry['n']} | {answer} |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {secs:.0f} |" for step, secs in summary["seconds"].items()]
    lines.append(f"| total | {sum(summary['seconds'].values()):.0f} |")
    return "\n".join(lines)


def write_model_card(export: Path, summary: dict[str, Any]) -> None:
    init, audio, vision = summary["initialize"], summary["audio_pretrain"], summary["vision_pretrain"]
    ctc_augmentations = "speed perturbation, VTLN" + (", SpecAugment" if audio.get("spec_augment", True) else "")
    vision_accuracy = ", ".join(f"{k} {v:.2f}" for k, v in vision["heldout_accuracy"].items() if v is not None)
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: any-to-any
tags: [vita, multimodal, audio, video, tiny, synthetic]
---

# vita-tiny

A {init["parameters"] / 1e6:.1f} M-parameter VITA (Mixtral backbone with 4 experts, InternViT-style vision tower at
56 px, VITA's audio encoder) trained from scratch on CPU by this project's recipes (`python -m recipes.vita_tiny`) on
synthetic data: coloured shapes in pictures and moving in videos, bilingual text questions, spoken questions (plain,
with fillers and courtesies, terse, with a pause inside) and background talk (statements, talk addressed to someone
else, TV and radio speech, backchannels) from {summary["voices"]["train_speakers"]} speakers of
{len(summary["voices"]["train_families"])} voice families (Piper, espeak-ng accents and variants, festival; a share
converted in pitch, formants and tempo), through simulated rooms, telephone and laptop microphones, Opus and MP3
round trips, and stationary or babble noise at 0-20 dB SNR. It knows that little world only; it exists so the
pipeline, the CLI and the Space show VITA's behaviour (state tokens, ignoring background talk, interruption) on any
machine.

```python
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

model = AutoModelForCausalLM.from_pretrained("path/to/vita-tiny", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("path/to/vita-tiny", trust_remote_code=True)
pipe = pipeline("vita-duplex", model="path/to/vita-tiny", trust_remote_code=True)
pipe(audio="question.wav", images="shapes.png")  # {{"state": "query_audio", "text": "red"}}
```

The audio encoder was first pretrained with CTC over characters on the training speech ({ctc_augmentations};
`recipes/vita_tiny/pretrain_audio.py`): held-out greedy CTC transcripts had a character error rate of
{audio["heldout_cer"]:.3f} and a word error rate of {audio["heldout_wer"]:.3f}, before the LLM saw any speech.
The vision tower was first pretrained to name the colour, shape, count and position of the training pictures
(linear heads over its patch features, the heads then dropped; `recipes/vita_tiny/pretrain_vision.py`); on held-out
pictures and video frames those heads scored {vision_accuracy}.

Vocabulary: a byte-level BPE of {init["base_vocabulary"]} tokens trained on the English text, extended with
{init["chinese_pieces_added"]} Chinese pieces (a Chinese sample went from {init["chinese_sample_tokens_before"]} to
{init["chinese_sample_tokens_after"]} tokens), {init["vocabulary"]} in all.

## Evaluation

Two held-out splits: the current one (voice families never heard in training, with their own draws of rooms,
microphones, codecs and noise; held-out phrasings, ways of asking and background sentences) and the previous one
(the three held-out voices, phrasings and statements the checkpoint before the voices work was measured on, white
noise at 5-30 dB).

{results_markdown(summary)}
"""
    (export / "README.md").write_text(card, encoding="utf-8")


def update_recipe_readme(summary: dict[str, Any]) -> None:
    readme = RECIPE_DIR / "README.md"
    text = readme.read_text(encoding="utf-8")
    if RESULTS_BEGIN not in text:
        raise ValueError(f"{readme} has no {RESULTS_BEGIN} marker; expected the results section to replace.")
    head, rest = text.split(RESULTS_BEGIN, 1)
    tail = rest.split(RESULTS_END, 1)[1]
    body = f"\n![training curves](training_curves.png)\n\n{results_markdown(summary)}\n"
    readme.write_text(head + RESULTS_BEGIN + body + RESULTS_END + tail, encoding="utf-8")


def export_checkpoint(model_dir: Path, export: Path) -> None:
    """Save model + processor + remote code through the vita-duplex pipeline, in float32 (small enough), and the
    `vita-duplex` command's timeline renderer beside them."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

    import modeling_vita  # noqa: F401  (registers the vita-duplex task)

    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    if export.exists():
        shutil.rmtree(export)
    pipeline("vita-duplex", model=model, processor=processor).save_pretrained(export)  # code: the remote-code closure


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/vita-tiny")
    parser.add_argument("--work-dir", default="runs/vita-tiny")
    parser.add_argument("--export", default="spaces_demo/vita-tiny", help="folder of the finished checkpoint")
    parser.add_argument("--small", action="store_true", help="the small data build (tests, smoke runs)")
    parser.add_argument("--rebuild-data", action="store_true")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every stage at this many steps (smoke)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N held-out rows only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="leave recipes/vita_tiny/README.md as it is")
    args = parser.parse_args(argv)
    data_dir, work_dir, export = (Path(p).resolve() for p in (args.data_dir, args.work_dir, args.export))
    work_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.time()

    def timed(step: str, fn, *a):
        t0 = time.time()
        result = fn(*a)
        seconds[step] = time.time() - t0
        return result

    timed("data", ensure_data, data_dir, args.small, args.rebuild_data, args.seed)
    from recipes.vita_tiny.initialize import initialize

    init_summary = timed("initialize", initialize, data_dir, work_dir / "init", args.seed)
    _log(f"initialize: {init_summary}")
    from recipes.vita_tiny.pretrain_audio import pretrain_audio_encoder

    _log("audio_pretrain: CTC on the training speech")
    pretrain = functools.partial(pretrain_audio_encoder, epochs=1) if args.small else pretrain_audio_encoder
    audio_summary = timed("audio_pretrain", pretrain, data_dir, work_dir / "init", work_dir / "audio_pretrain")
    _log(f"audio_pretrain: held-out CER {audio_summary['heldout_cer']}, WER {audio_summary['heldout_wer']}")
    from recipes.vita_tiny.pretrain_vision import pretrain_vision_tower

    _log("vision_pretrain: attribute heads on the training pictures")
    pretrain = functools.partial(pretrain_vision_tower, epochs=1) if args.small else pretrain_vision_tower
    vision_summary = timed(
        "vision_pretrain", pretrain, data_dir, work_dir / "audio_pretrain", work_dir / "vision_pretrain"
    )
    _log(f"vision_pretrain: held-out accuracy {vision_summary['heldout_accuracy']}")
    # A capped (smoke) run logs every step, so its curves and trainer states are not empty.
    extra = ["--max_steps", str(args.max_steps), "--logging_steps", "1"] if args.max_steps else []
    previous = work_dir / "vision_pretrain"
    for stage in STAGES:
        previous = timed(stage, run_stage, stage, data_dir, work_dir, previous, extra)

    from recipes.evaluate import evaluate, format_report, load_model_and_processor, load_rows
    from recipes.vita_tiny.voices import family_of_key

    def run_eval() -> dict[str, dict[str, Any]]:
        model, processor = load_model_and_processor(str(previous))
        results = {}
        for split in EVAL_SPLITS:
            rows = load_rows(str(data_dir / split))
            report = evaluate(model, processor, rows, data_dir / "media", max_new_tokens=32, limit=args.eval_limit)
            (work_dir / f"eval_{split}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            (work_dir / f"eval_{split}.txt").write_text(format_report(report) + "\n")
            print(f"== {split}\n{format_report(report)}")
            tasks = breakdown(report, {row["id"]: row["task"] for row in rows})
            families = breakdown(report, {row["id"]: family_of_key(row["voice"]) for row in rows})
            results[split] = {"headline": headline(report, tasks), "tasks": tasks, "families": families}
        return results

    splits = timed("evaluate", run_eval)

    t0 = time.time()
    export_checkpoint(previous, export)
    histories = {
        "audio_pretrain (CTC)": audio_summary["log_history"],
        "vision_pretrain": vision_summary["log_history"],
    }
    histories.update({stage: stage_history(work_dir / stage) for stage in STAGES})
    curves = export / "training_curves.png" if args.no_readme else RECIPE_DIR / "training_curves.png"
    plot_curves(histories, curves)
    seconds["export"] = time.time() - t0
    summary = {
        "splits": splits,
        "initialize": init_summary,
        "audio_pretrain": {k: v for k, v in audio_summary.items() if k != "log_history"},
        "vision_pretrain": {k: v for k, v in vision_summary.items() if k != "log_history"},
        "voices": voices_summary(data_dir),
        "seconds": seconds,
        "total_seconds": time.time() - started,
    }
    write_model_card(export, summary)
    if not args.no_readme:
        update_recipe_readme(summary)
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    size = sum(f.stat().st_size for f in export.rglob("*") if f.is_file())
    _log(f"done in {summary['total_seconds'] / 60:.1f} min; {export} holds {size / 2**20:.1f} MiB")
    for split, result in splits.items():
        for name, value in result["headline"].items():
            op, bound = TARGETS[name]
            _log(f"{split}: {name}: {value} (target {op} {bound})")
    missed = [name for name, ok in targets_met(summary).items() if not ok]
    _log("every target met" if not missed else f"targets missed: {', '.join(missed)}")
    return summary


if __name__ == "__main__":
    main()
