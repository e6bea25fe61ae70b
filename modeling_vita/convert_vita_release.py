"""A released VITA checkpoint folder as published: its config, its two tower folders and its tokenizer, found.

`open_release` reads the checkpoint's `config.json`, tells VITA-1.0 from VITA-1.5 (`--version` may say), and finds
the InternViT and whale folders that `mm_vision_tower` and `mm_audio_encoder` name: as written (absolute, or relative
to the checkpoint), beside the checkpoint, or inside it, by their last path component, since the released configs
hold the authors' training paths. `--vision-tower` / `--audio-encoder` override the search. Only the towers'
configuration files are read (their shapes, the global CMVN): the weights that count are the checkpoint's own, whose
audio adapter is newer than the one in the audio folder's `final.pt`, so `final.pt` is never opened.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .convert_vita_config import RELEASES, detect_release, read_internvit, read_whale

logger = logging.getLogger(__name__)


@dataclass
class ReleaseFolder:
    """What `open_release` found. `notes` says where each part came from, for the converter's summary."""

    input_dir: Path
    config: dict[str, Any]
    version: str
    vision: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    cmvn_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _candidates(named: str, checkpoint: Path) -> list[Path]:
    path = Path(named)
    found = [path] if path.is_absolute() else [checkpoint / path, checkpoint.parent / path]
    found += [checkpoint.parent / path.name, checkpoint / path.name]
    return list(dict.fromkeys(found))


def find_tower(
    what: str, key: str, config: dict, checkpoint: Path, given: str | None, marker: str, flag: str
) -> Path | None:
    """The tower folder: `given` (a flag), else what `config[key]` names; None when the config names none.

    `marker` is the file that makes a folder that tower's (config.json, train.yaml).
    """
    if given is not None:
        folder = Path(given)
        if not (folder / marker).is_file():
            raise ValueError(f"{flag} {given}: no {marker} there; expected the {what} folder of the release")
        return folder
    named = config.get(key)
    if not named:
        return None
    tried = _candidates(str(named), checkpoint)
    for folder in tried:
        if (folder / marker).is_file():
            return folder
    raise ValueError(
        f"{checkpoint / 'config.json'} names {key} {named!r}, but no folder with {marker} is at "
        f"{[str(p) for p in tried]}; expected the {what} folder there (download it beside the checkpoint) or "
        f"given with {flag} DIR"
    )


def open_release(
    input_dir: str | Path,
    version: str | None = None,
    vision_tower: str | None = None,
    audio_encoder: str | None = None,
) -> ReleaseFolder:
    """Read a release folder; raises `ValueError` naming the file and the found and expected values."""
    checkpoint = Path(input_dir)
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        found = sorted(p.name for p in checkpoint.iterdir())[:10] if checkpoint.is_dir() else "no such folder"
        raise ValueError(f"{config_path} does not exist (found: {found}); expected a released VITA checkpoint folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} is not JSON ({error}); expected the release's config.json") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a {type(config).__name__}; expected a JSON object")
    if version is None:
        version = detect_release(config, config_path)
    elif version not in RELEASES:
        raise ValueError(f"--version {version!r}; expected one of {sorted(RELEASES)}")
    release = ReleaseFolder(checkpoint, config, version, sources={"config": str(config_path)})
    release.notes.append(f"VITA-{version} ({config.get('model_type')}, {config.get('architectures')})")

    try:
        vision_dir = find_tower(
            "InternViT", "mm_vision_tower", config, checkpoint, vision_tower, "config.json", "--vision-tower"
        )
    except ValueError:
        if vision_tower is not None or not isinstance(config.get("vision_config"), dict):
            raise
        vision_dir = None  # config.json carries the tower's fields itself
        release.notes.append("vision tower: its folder is not found; using the vision_config inside config.json")
    if vision_dir is not None:
        release.vision = read_internvit(vision_dir)
        release.sources["vision"] = str(vision_dir / "config.json")
        release.notes.append(f"vision tower: {vision_dir}")
    audio_dir = find_tower(
        "audio encoder", "mm_audio_encoder", config, checkpoint, audio_encoder, "train.yaml", "--audio-encoder"
    )
    if audio_dir is not None:
        import yaml

        train_path = audio_dir / "train.yaml"
        try:
            train = yaml.safe_load(train_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise ValueError(f"{train_path} is not YAML ({error}); expected the whale encoder's train.yaml") from error
        if not isinstance(train, dict):
            raise ValueError(f"{train_path} holds a {type(train).__name__}; expected a YAML mapping")
        release.audio = read_whale(train, train_path)
        release.sources["audio"] = str(train_path)
        if (audio_dir / "global_cmvn").is_file():
            release.cmvn_file = audio_dir / "global_cmvn"
        release.notes.append(
            f"audio encoder: {audio_dir} (train.yaml; final.pt not read: the checkpoint's own weights count)"
        )
    return release


__all__ = ["ReleaseFolder", "find_tower", "open_release"]
