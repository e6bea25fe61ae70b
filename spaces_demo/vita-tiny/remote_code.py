"""The Hub remote code a saved VITA folder carries: exactly the files its `auto_map`s and pipelines reach.

A saved folder names its classes in `config.json` (`auto_map`, `custom_pipelines`) and in the processor's JSON
files (`auto_map`, also nested per sub-processor). transformers loads each named module from the folder and copies
the modules it imports relatively (`from .x import y`), so the folder needs that closure and nothing else: no
converter, no command-line tool. The sources sit in two flat packages here (`modeling_vita/`, `processing_vita/`,
side by side), and in one flat folder inside a checkpoint or transformers' module cache; `remote_code_closure` finds
each module in either. `write_remote_code` is what every VITA save ends with, so the folder's code is always the
closure of the code that saved it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers.dynamic_module_utils import get_relative_imports

logger = logging.getLogger(__name__)

_CODE_JSON_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def source_folders() -> list[Path]:
    """Where the remote-code modules are: this folder, and `processing_vita/` beside it in this project's tree."""
    here = Path(__file__).resolve().parent
    sibling = here.parent / "processing_vita"
    return [here, sibling] if sibling.is_dir() and sibling != here else [here]


def _class_references(value: Any) -> Iterable[str]:
    """Every "module.Class" string under `auto_map` keys of a JSON value (strings, lists, nested dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            if item:
                yield from _class_references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _class_references(item)


def _entry_modules(folder: Path) -> set[str]:
    modules: set[str] = set()

    def visit(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "auto_map":
                modules.update(ref.split("--")[-1].split(".")[0] for ref in _class_references(value))
            elif key == "custom_pipelines" and isinstance(value, dict):
                modules.update(info["impl"].split(".")[0] for info in value.values() if "impl" in info)
            else:
                visit(value)

    for name in _CODE_JSON_FILES:
        path = folder / name
        if path.is_file():
            visit(json.loads(path.read_text(encoding="utf-8")))
    return modules


def remote_code_closure(modules: Iterable[str], folders: Iterable[Path] | None = None) -> dict[str, Path]:
    """`{file name: source path}` of `modules` and every module they reach through relative imports."""
    folders = list(folders or source_folders())
    closure: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        module = pending.pop()
        name = f"{module}.py"
        if name in closure:
            continue
        found = [folder / name for folder in folders if (folder / name).is_file()]
        if not found:
            raise ValueError(f"the remote-code module {module!r} is in none of {[str(f) for f in folders]}")
        closure[name] = found[0]
        pending.extend(get_relative_imports(found[0]))
    return closure


def write_remote_code(folder: str | os.PathLike) -> list[str]:
    """Copy into `folder` the closure of the modules its JSON files name; remove VITA modules outside it.

    Returns the names of the code files the folder holds afterwards.
    """
    folder = Path(folder)
    entries = _entry_modules(folder)
    closure = remote_code_closure(entries) if entries else {}
    for name, source in closure.items():
        target = folder / name
        if not target.exists() or not os.path.samefile(source, target):
            shutil.copyfile(source, target)
    known = {path.name for source in source_folders() for path in source.glob("*.py")}
    for stale in sorted(folder.glob("*.py")):
        if stale.name in known and stale.name not in closure and stale.name != "__init__.py":
            logger.info("removing %s from %s: no saved class reaches it", stale.name, folder)
            stale.unlink()
    return sorted(closure)


__all__ = ["remote_code_closure", "source_folders", "write_remote_code"]
