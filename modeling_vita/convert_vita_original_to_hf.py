"""`vita-convert-original`: a released VITA-1.0 checkpoint folder to a native `VitaForConditionalGeneration` folder.

The folder loads with `from_pretrained` / `AutoModel.from_pretrained(..., trust_remote_code=True)`: config
(`convert_vita_config.py`), weights streamed shard by shard (`convert_vita_weights.py`, key mapping in
`convert_vita_mapping.py`), the remote-code closure, a processor with the checkpoint's tokenizer and global CMVN, and
a model card; optionally pushed to the Hub. The public conversion API is re-exported here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from processing_vita.feature_extraction_vita import load_global_cmvn

from .configuration_vita import VitaConfig
from .convert_vita_config import build_vita_config, expected_shapes
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
from .convert_vita_weights import ConversionResult, convert_checkpoint
from .remote_code import write_remote_code

logger = logging.getLogger(__name__)


def write_config_and_code(config: VitaConfig, output_dir: str | os.PathLike, dtype: torch.dtype) -> None:
    """config.json (with the same auto_map `VitaPreTrainedModel.save_pretrained` writes), generation_config.json and
    the remote-code files, i.e. the closure `save_pretrained` writes."""
    from transformers import GenerationConfig

    from . import modeling_vita

    output = Path(output_dir)
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **modeling_vita.AUTO_MAP}
    config.architectures = ["VitaForConditionalGeneration"]
    config.dtype = dtype
    config.save_pretrained(output)
    ids = {name: getattr(config.text_config, f"{name}_token_id", None) for name in ("bos", "eos")}
    GenerationConfig(
        bos_token_id=1 if ids["bos"] is None else ids["bos"], eos_token_id=2 if ids["eos"] is None else ids["eos"]
    ).save_pretrained(output)
    write_remote_code(output)


def model_card(config: VitaConfig, repo_id: str | None = None) -> str:
    """A README.md for the converted folder, generated from the config."""
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    name = repo_id or "path/to/converted-vita"
    experts = getattr(text, "num_local_experts", None)
    llm = f"{text.model_type} ({text.num_hidden_layers} layers, hidden {text.hidden_size}"
    llm += f", {experts} experts top-{text.num_experts_per_tok})" if experts else ")"
    state = ", ".join(f"`{t}`" for t in config.state_tokens.values())
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: any-to-any
tags: [vita, omni, multimodal, audio, vision, custom_code]
---

# VITA (converted to transformers 5.x)

VITA-1.0, the open omni multimodal LLM of Fu et al. (2024), converted from the original `VITAMixtralForCausalLM`
checkpoint to a native transformers model (`VitaForConditionalGeneration`, loaded with `trust_remote_code=True`).

## Architecture
- LLM: {llm}, vocabulary {text.vocab_size}.
- Vision: InternViT as transformers' `InternVLVisionModel` ({vision.num_hidden_layers} layers, hidden
  {vision.hidden_size}, {vision.image_size[0]} px tiles, patch {vision.patch_size[0]}), last layer without CLS,
  features x{config.vision_feature_scale}, 2x2 pixel shuffle, two-layer GELU MLP: {config.image_seq_length} tokens
  per tile or video frame; the image processor tiles large images (1-12 tiles plus a thumbnail by default).
- Audio: the "whale" encoder ({audio.num_hidden_layers} layers, hidden {audio.hidden_size},
  {audio.num_attention_heads} heads) on {audio.num_mel_bins}-bin Kaldi fbank with global CMVN (in the feature
  extractor), 4x CNN subsampling and a stride-2 CNN adapter: 12.5 tokens per second.

## Modalities
Input: text, image, video (frames), audio, alone or combined. Output: text (speech through an external TTS).

## State tokens
Every answer opens with one of {state}: the input was a spoken query (answer it), noisy audio not meant for the
assistant (say nothing), a text query. Placeholder ids: image {config.image_token_id}, video
{config.video_token_id}, audio {config.audio_token_id}.

## Usage
```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image", "image": "photo.jpg"}},
                                         {{"type": "text", "text": "What is in the picture?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
state, answer = processor.parse_response(processor.decode(out[0, inputs["input_ids"].shape[1]:]))
```

## License
Apache-2.0, as the original release.

## Citation
```bibtex
@article{{fu2024vita,
  title={{VITA: Towards Open-Source Interactive Omni Multimodal LLM}},
  author={{Fu, Chaoyou and others}},
  journal={{arXiv preprint arXiv:2408.05211}},
  year={{2024}}
}}
```
"""


def _load_tokenizer(input_dir: Path) -> tuple[object | None, dict[str, int]]:
    """The input folder's tokenizer with VITA's placeholders added (their ids go into the config), if it has one and
    `processing_vita` imports. Imported lazily: remote-code files must never import `processing_vita`."""
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    if not any((input_dir / name).is_file() for name in tokenizer_files):
        return None, {}
    try:
        from transformers import AutoTokenizer

        from processing_vita.tokenization_vita import add_vita_special_tokens
    except ImportError:
        return None, {}
    tokenizer = AutoTokenizer.from_pretrained(input_dir)
    ids = add_vita_special_tokens(tokenizer)
    return tokenizer, {
        f"{kind}_token_id": ids[f"<{kind}>"] for kind in ("image", "video", "audio") if f"<{kind}>" in ids
    }


def _save_processor(output: Path, tokenizer, mean: list[float] | None, istd: list[float] | None) -> str:
    """Optional: the feature extractor with the CMVN statistics, plus the full processor when a tokenizer exists."""
    try:
        from processing_vita import VitaFeatureExtractor, VitaProcessor
    except ImportError as err:
        return f"processing_vita not importable ({err}); no processor saved"
    extractor = VitaFeatureExtractor(**({} if mean is None else {"cmvn_mean": mean, "cmvn_istd": istd}))
    if tokenizer is None:
        extractor.save_pretrained(output)
        return "feature extractor saved (no tokenizer in the input folder)"
    VitaProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(output)
    return "processor saved"


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
    parser.add_argument("--input", required=True, help="original checkpoint folder (config.json + weights)")
    parser.add_argument("--audio-encoder", help="original audio-encoder folder with train.yaml and global_cmvn")
    parser.add_argument("--output", required=True, help="folder to write the converted model to")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16")
    parser.add_argument("--max-shard-size", default="5GB", help="e.g. 5GB, 500MB")
    parser.add_argument("--image-token-id", type=int, help="id of <image> in the converted tokenizer")
    parser.add_argument("--video-token-id", type=int, help="id of <video> in the converted tokenizer")
    parser.add_argument("--audio-token-id", type=int, help="id of <audio> in the converted tokenizer")
    parser.add_argument("--allow-missing", action="store_true", help="write the folder even if weights are missing")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repository")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: print what would be pushed")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transformers.utils.hub import convert_file_size_to_int

    args = parse_args(argv)
    input_dir, output = Path(args.input), Path(args.output)
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"No config.json in {input_dir}; expected the original VITA_ckpt folder.")
    original_config = json.loads(config_path.read_text())
    train_yaml, cmvn_file = None, None
    if args.audio_encoder:
        import yaml

        audio_dir = Path(args.audio_encoder)
        if (audio_dir / "train.yaml").is_file():
            train_yaml = yaml.safe_load((audio_dir / "train.yaml").read_text())
        if (audio_dir / "global_cmvn").is_file():
            cmvn_file = audio_dir / "global_cmvn"
    tokenizer, overrides = _load_tokenizer(input_dir)
    overrides |= {
        f"{kind}_token_id": getattr(args, f"{kind}_token_id")
        for kind in ("image", "video", "audio")
        if getattr(args, f"{kind}_token_id") is not None
    }
    config = build_vita_config(original_config, train_yaml, **overrides)
    dtype = _DTYPES[args.dtype]
    result = convert_checkpoint(
        input_dir,
        output,
        config,
        dtype,
        convert_file_size_to_int(args.max_shard_size),
        args.allow_missing,
        progress=not args.no_progress,
    )
    if result.missing_keys:
        print(f"warning: {len(result.missing_keys)} weight(s) missing, initialised on load: {result.missing_keys}")
    # The buffers are exactly what the trained encoder applied; the global_cmvn file is the fallback.
    mean, istd = result.cmvn_mean, result.cmvn_istd
    if cmvn_file is not None:
        file_mean, file_istd = load_global_cmvn(cmvn_file)
        if mean is None:
            mean, istd = file_mean, file_istd
        elif not torch.allclose(
            torch.tensor(file_mean, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64), rtol=1e-4
        ):
            print(f"warning: {cmvn_file} differs from the CMVN buffers in the checkpoint; using the buffers")
    write_config_and_code(config, output, dtype)
    (output / "README.md").write_text(model_card(config, args.push_to_hub))
    if mean is not None:
        (output / "cmvn.json").write_text(json.dumps({"cmvn_mean": mean, "cmvn_istd": istd}) + "\n")
    print(_save_processor(output, tokenizer, mean, istd))
    print(f"converted {len(result.weight_map)} tensors into {output}")
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
    "convert_checkpoint",
    "convert_key",
    "convert_state_dict",
    "expected_shapes",
    "load_global_cmvn",
    "main",
    "model_card",
    "new_pieces",
    "original_pieces",
    "revert_key",
    "revert_state_dict",
]
