"""`vita-convert-original`: a released VITA-1.0 or VITA-1.5 checkpoint folder, as published, to a native folder.

`vita-convert-original --input VITA1.5_ckpt --output vita15-hf` reads the release (`convert_vita_release.py`: the
version from config.json, the tower folders it names, the tokenizer), builds the config (`convert_vita_config.py`),
streams the weights shard by shard (`convert_vita_weights.py`, key mapping in `convert_vita_mapping.py`) and writes
the remote-code closure, a processor with the release's tokenizer, chat format, state tokens and global CMVN, the
speech decoder and codec of a release with `vita_tts_ckpt/` (`convert_vita_speech.py`), and a model card
(`convert_vita_card.py`); optionally it pushes to the Hub. Everything is written into a staging folder that becomes
`--output` only when all of it succeeded, so a failed conversion leaves nothing behind. It prints where each part came
from and every value it had to default. The public conversion API is re-exported here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from processing_vita import (
    SYSTEM_PROMPTS,
    VitaFeatureExtractor,
    VitaImageProcessor,
    VitaProcessor,
    VitaVideoProcessor,
    build_chat_template,
)
from processing_vita.feature_extraction_vita import load_global_cmvn
from processing_vita.tokenization_vita import add_vita_special_tokens

from .configuration_vita import VitaConfig
from .convert_vita_card import model_card
from .convert_vita_config import RELEASES, build_vita_config, detect_release, expected_shapes
from .convert_vita_mapping import (
    CMVN_KEYS,
    TABLE,
    convert_key,
    convert_state_dict,
    new_pieces,
    original_pieces,
    revert_key,
    revert_state_dict,
)
from .convert_vita_release import ReleaseFolder, open_release, read_named
from .convert_vita_speech import add_release_speech
from .convert_vita_weights import ConversionResult, convert_checkpoint
from .pipeline_vita_duplex import custom_pipelines
from .remote_code import write_remote_code

logger = logging.getLogger(__name__)


def write_config_and_code(config: VitaConfig, output_dir: str | os.PathLike, dtype: torch.dtype) -> None:
    """config.json (with the same auto_map `VitaPreTrainedModel.save_pretrained` writes), generation_config.json and
    the remote-code files, i.e. the closure `save_pretrained` writes."""
    from transformers import GenerationConfig

    from . import modeling_vita

    output = Path(output_dir)
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **modeling_vita.AUTO_MAP}
    config.custom_pipelines = custom_pipelines()  # pipeline("vita-duplex", model=folder, trust_remote_code=True)
    config.architectures = ["VitaForConditionalGeneration"]
    config.dtype = dtype
    config.save_pretrained(output)
    ids = {f"{name}_token_id": getattr(config.text_config, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}
    GenerationConfig(**{name: value for name, value in ids.items() if value is not None}).save_pretrained(output)
    write_remote_code(output)


def _tokenizer_with_placeholders(release: ReleaseFolder, overrides: dict[str, int]) -> tuple[Any, dict[str, int], int]:
    """The release's tokenizer with VITA's placeholders added: `(tokenizer or None, placeholder ids, rows)`.

    `rows` is the embedding rows the converted LLM needs: the checkpoint's own, or `len(tokenizer)` when the
    placeholders found no free row (the embeddings and LM head then grow with mean-initialised rows).
    """
    rows = int(release.config.get("vocab_size") or 0)
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    if not any((release.input_dir / name).is_file() for name in tokenizer_files):
        missing = [kind for kind in ("image", "video", "audio") if f"{kind}_token_id" not in overrides]
        if missing and release.version != "1.0":
            raise ValueError(
                f"{release.input_dir} has no tokenizer ({', '.join(tokenizer_files)}); expected the release's "
                f"tokenizer files beside config.json, or the placeholder ids given with --{missing[0]}-token-id"
            )
        release.notes.append("no tokenizer in the input folder: no processor is written")
        return None, overrides, rows
    from transformers import AutoTokenizer

    tokenizer = read_named(
        release.input_dir,
        "the release's tokenizer files (tokenizer.json / tokenizer.model, tokenizer_config.json)",
        lambda: AutoTokenizer.from_pretrained(release.input_dir),
    )
    added = add_vita_special_tokens(tokenizer)
    ids = {f"{kind}_token_id": added[f"<{kind}>"] for kind in ("image", "video", "audio")} | overrides
    if len(tokenizer) > rows:
        release.notes.append(
            f"vocabulary: {rows} embedding rows hold {len(tokenizer) - 3} tokens; the placeholders need "
            f"{len(tokenizer) - rows} more: embeddings and LM head grow to {len(tokenizer)} rows (mean-initialised)"
        )
        rows = len(tokenizer)
    release.notes.append("placeholders: " + ", ".join(f"{k.split('_')[0]} {v}" for k, v in ids.items()))
    return tokenizer, ids, rows


def _save_processor(output: Path, tokenizer: Any, config: VitaConfig, version: str, mean, istd) -> str:
    """The feature extractor with the CMVN statistics, plus the full processor (the release's chat format and state
    tokens) when the release has a tokenizer."""
    extractor = VitaFeatureExtractor(**({} if mean is None else {"cmvn_mean": mean, "cmvn_istd": istd}))
    if tokenizer is None:
        extractor.save_pretrained(output)
        return "feature extractor saved (no tokenizer in the input folder)"
    template = build_chat_template(SYSTEM_PROMPTS, config.state_tokens, RELEASES[version]["chat_format"])
    tile = config.vision_config.image_size[0]
    processor = VitaProcessor(
        image_processor=VitaImageProcessor(image_size=tile),
        video_processor=VitaVideoProcessor(image_size=tile),
        feature_extractor=extractor,
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_length=config.image_seq_length,
        state_tokens=config.state_tokens,
    )
    processor.save_pretrained(output)
    return f"processor saved ({RELEASES[version]['chat_format']} chat format, state tokens {config.state_tokens})"


def _push(output: Path, repo_id: str, dry_run: bool) -> None:
    files = sorted(p for p in output.rglob("*") if p.is_file())
    if dry_run:
        print(f"[dry-run] would push {len(files)} files to https://huggingface.co/{repo_id}:")
        for path in files:
            print(f"  {path.relative_to(output)}  ({path.stat().st_size:,} bytes)")
        return
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(output), commit_message="Convert VITA to transformers 5.x")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--input", required=True, help="the released checkpoint folder (config.json + weights)")
    parser.add_argument("--output", required=True, help="a new folder to write the converted model to")
    parser.add_argument("--version", choices=sorted(RELEASES), help="the release (default: read from config.json)")
    parser.add_argument("--vision-tower", help="the InternViT folder, when config.json's mm_vision_tower is not found")
    parser.add_argument("--audio-encoder", help="the audio-encoder folder (train.yaml, global_cmvn), likewise")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16")
    parser.add_argument("--max-shard-size", default="5GB", help="e.g. 5GB, 500MB")
    parser.add_argument("--image-token-id", type=int, help="id of <image> (default: added to the release's tokenizer)")
    parser.add_argument("--video-token-id", type=int, help="id of <video> (likewise)")
    parser.add_argument("--audio-token-id", type=int, help="id of <audio> (likewise)")
    parser.add_argument("--allow-missing", action="store_true", help="write the folder even if weights are missing")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repository")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: print what would be pushed")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _checked_output(input_dir: Path, output: Path) -> None:
    source, target = input_dir.resolve(), output.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ValueError(f"--output {output} overlaps --input {input_dir}; expected a folder outside the checkpoint")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"--output {output} exists and is not an empty folder; expected a new or empty folder")


def convert(args: argparse.Namespace) -> Path:
    """Convert as `args` say; the output folder appears only when everything succeeded."""
    from transformers.utils.hub import convert_file_size_to_int

    release = open_release(args.input, args.version, args.vision_tower, args.audio_encoder)
    output = Path(args.output)
    _checked_output(release.input_dir, output)
    overrides = {
        f"{kind}_token_id": getattr(args, f"{kind}_token_id")
        for kind in ("image", "video", "audio")
        if getattr(args, f"{kind}_token_id") is not None
    }
    tokenizer, ids, rows = _tokenizer_with_placeholders(release, overrides)
    text_overrides = {"vocab_size": rows} if rows else {}
    config_fields = {**release.config, **text_overrides}
    config, report = read_named(
        Path(release.sources["config"]),
        f"the fields of a VITA-{release.version} config.json",
        lambda: build_vita_config(
            config_fields, release.version, release.vision, release.audio, release.sources, **ids
        ),
    )
    created = [folder for folder in (output.parent, *output.parent.parents) if not folder.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        result = convert_checkpoint(
            release.input_dir,
            staging,
            config,
            _DTYPES[args.dtype],
            convert_file_size_to_int(args.max_shard_size),
            args.allow_missing,
            progress=not args.no_progress,
            vocab_rows=rows or None,
        )
        mean, istd = _cmvn(result, release)
        # VITA-1.5's own voice (vita_tts_ckpt/): sets config.speech_config and adds its shard.
        release.notes.extend(add_release_speech(release.input_dir, staging, config, _DTYPES[args.dtype]))
        write_config_and_code(config, staging, _DTYPES[args.dtype])
        (staging / "README.md").write_text(model_card(config, release.version, args.push_to_hub))
        if mean is not None:
            (staging / "cmvn.json").write_text(json.dumps({"cmvn_mean": mean, "cmvn_istd": istd}) + "\n")
        release.notes.append(_save_processor(staging, tokenizer, config, release.version, mean, istd))
        if output.exists():
            output.rmdir()  # checked empty above
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # the parents this run made, innermost first: nothing is left behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    for line in [*release.notes, *report.lines()]:
        print(line)
    if result.missing_keys:
        print(f"warning: {len(result.missing_keys)} weight(s) missing, initialised on load: {result.missing_keys}")
    print(f"converted {len(result.weight_map)} tensors into {output}")
    return output


def _cmvn(result: ConversionResult, release: ReleaseFolder) -> tuple[list[float] | None, list[float] | None]:
    """The CMVN the trained encoder applied: its buffers in the checkpoint; the audio folder's global_cmvn file is the
    fallback and is checked against them."""
    mean, istd = result.cmvn_mean, result.cmvn_istd
    if release.cmvn_file is None:
        return mean, istd
    file_mean, file_istd = read_named(
        release.cmvn_file,
        "the audio encoder's global_cmvn (JSON with mean_stat, var_stat, frame_num)",
        lambda: load_global_cmvn(release.cmvn_file),
    )
    if mean is None:
        return file_mean, file_istd
    if not torch.allclose(
        torch.tensor(file_mean, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64), rtol=1e-4
    ):
        print(f"warning: {release.cmvn_file} differs from the CMVN buffers in the checkpoint; using the buffers")
    return mean, istd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output = convert(args)
    except (ValueError, OSError) as error:  # a refused input, or a folder that cannot be written (it names it)
        print(f"vita-convert-original: error: {error}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        _push(output, args.push_to_hub, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CMVN_KEYS",
    "TABLE",
    "ConversionResult",
    "build_vita_config",
    "convert",
    "convert_checkpoint",
    "convert_key",
    "convert_state_dict",
    "detect_release",
    "expected_shapes",
    "load_global_cmvn",
    "main",
    "model_card",
    "new_pieces",
    "open_release",
    "original_pieces",
    "parse_args",
    "revert_key",
    "revert_state_dict",
]
