"""A released VITA checkpoint folder as published: its config, its two tower folders and its tokenizer, found.

`open_release` reads the checkpoint's `config.json`, tells VITA-1.0 from VITA-1.5 (`--version` may say), and finds
the InternViT and whale folders that `mm_vision_tower` and `mm_audio_encoder` name: as written (absolute, or relative
to the checkpoint), beside the checkpoint, or inside it, by their last path component, since the released configs
hold the authors' training paths. `--vision-tower` / `--audio-encoder` override the search. Only the towers'
configuration files are read (their shapes, the global CMVN): the weights that count are the checkpoint's own, whose
audio adapter is newer than the one in the audio folder's `final.pt`, so `final.pt` is never opened.

Confinement: the checkpoint folder's own files (config.json, the weights and their index, the tokenizer) must resolve
inside it (`inside_folder`): a symlink or an index entry (`../x`, `/abs/x`) that leads elsewhere is refused, naming
both paths. A snapshot of the Hub cache (`<repo>/snapshots/<revision>/`, whose files link to `<repo>/blobs/`) counts
its repository folder as inside. The tower folders are outside by design (config.json or a flag names them), so only
the files listed above are confined. Every refusal is a `ValueError` naming the file and what was found and expected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .convert_vita_config import RELEASES, detect_release, read_internvit, read_whale

logger = logging.getLogger(__name__)

T = TypeVar("T")


def confinement_root(folder: Path) -> Path:
    """Where the files of `folder` may resolve: the folder itself, or for a Hub cache snapshot
    (`<repo>/snapshots/<revision>`, whose files are links into `<repo>/blobs`) the repository's cache folder."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and (resolved.parent.parent / "blobs").is_dir():
        return resolved.parent.parent
    return resolved


def inside_folder(folder: Path, name: str | Path, named_by: Path | None = None) -> Path:
    """`folder / name`, refused with a `ValueError` when it resolves outside `folder` (`confinement_root`).

    `named_by` is the file that gave `name` (an index), for the message.
    """
    path, root = folder / name, confinement_root(folder)
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        source = f"{named_by} names {str(name)!r}, which" if named_by else f"{path}"
        raise ValueError(
            f"{source} resolves to {resolved}, outside the checkpoint folder {root}; expected a file inside it "
            "(copy the file into the folder instead of linking to it)"
        )
    return path


def read_named(path: Path, expected: str, read: Callable[[], T]) -> T:
    """`read()`, any failure of it raised as one `ValueError` naming `path`, what went wrong and what was expected."""
    try:
        return read()
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: {error}; expected {expected}") from error
    except Exception as error:  # a reader's own error types (OSError, KeyError, TypeError, yaml, tokenizers ...)
        raise ValueError(f"{path}: {type(error).__name__}: {error}; expected {expected}") from error


def _confined_files(checkpoint: Path) -> None:
    """Refuse a checkpoint folder whose files (not its tower sub-folders) resolve outside it."""
    for path in sorted(checkpoint.iterdir()):
        if not path.is_dir():
            inside_folder(checkpoint, path.name)


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
    _confined_files(checkpoint)
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
        release.vision = read_named(
            vision_dir / "config.json", "InternViT's config.json (a JSON object)", lambda: read_internvit(vision_dir)
        )
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
        release.audio = read_named(
            train_path, "the whale encoder's train.yaml in its original schema", lambda: read_whale(train, train_path)
        )
        release.sources["audio"] = str(train_path)
        if (audio_dir / "global_cmvn").is_file():
            release.cmvn_file = audio_dir / "global_cmvn"
        release.notes.append(
            f"audio encoder: {audio_dir} (train.yaml; final.pt not read: the checkpoint's own weights count)"
        )
    return release


__all__ = ["ReleaseFolder", "confinement_root", "find_tower", "inside_folder", "open_release", "read_named"]
