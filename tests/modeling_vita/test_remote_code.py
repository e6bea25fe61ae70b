"""Tests of the remote-code closure a saved folder carries, and of the committed checkpoint's copy of it."""

import filecmp
import json
import shutil
from pathlib import Path

import pytest

from modeling_vita.remote_code import remote_code_closure, source_folders, write_remote_code

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO_ROOT / "spaces_demo" / "vita-tiny"
REEXPORT = (
    "python -c \"from modeling_vita.remote_code import write_remote_code; write_remote_code('spaces_demo/vita-tiny')\""
)


def _entry_config(folder: Path) -> None:
    config = {
        "auto_map": {"AutoConfig": "configuration_vita.VitaConfig", "AutoModel": "modeling_vita.VitaModel"},
        "custom_pipelines": {"vita-duplex": {"impl": "pipeline_vita_duplex.VitaDuplexPipeline"}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    processor = {"auto_map": {"AutoProcessor": "processing_vita.VitaProcessor"}, "image_processor": {"x": 1}}
    (folder / "processor_config.json").write_text(json.dumps(processor))


def test_closure_holds_what_the_classes_reach_and_no_tool():
    closure = remote_code_closure(["modeling_vita", "pipeline_vita_duplex", "processing_vita"])
    assert {"modeling_vita.py", "audio_encoder.py", "configuration_vita.py", "duplex_session.py"} <= set(closure)
    assert {"tokenization_vita.py", "feature_extraction_vita.py"} <= set(closure)  # reached across the two packages
    tools = {"cli_vita_duplex.py", "convert_vita_original_to_hf.py", "convert_vita_mapping.py", "duplex_timeline.py"}
    assert not tools & set(closure) and "testing_utils.py" not in closure and "__init__.py" not in closure
    assert {path.parent for path in closure.values()} == set(source_folders())


def test_unknown_module_is_refused_with_the_folders_searched():
    with pytest.raises(ValueError, match="'no_such_module' is in none of"):
        remote_code_closure(["no_such_module"])


def test_write_remote_code_copies_the_closure_and_drops_stale_vita_modules(tmp_path):
    _entry_config(tmp_path)
    (tmp_path / "cli_vita_duplex.py").write_text("# stale copy of an old export\n")
    (tmp_path / "my_script.py").write_text("# the user's own file\n")
    written = write_remote_code(tmp_path)
    assert written == sorted(remote_code_closure(["configuration_vita", "modeling_vita", "pipeline_vita_duplex",
                                                  "processing_vita"]))  # fmt: skip
    assert not (tmp_path / "cli_vita_duplex.py").exists() and (tmp_path / "my_script.py").exists()
    for name, source in remote_code_closure(["pipeline_vita_duplex"]).items():
        assert filecmp.cmp(tmp_path / name, source, shallow=False), name


def test_committed_checkpoint_code_is_the_closure_of_the_sources(tmp_path):
    """Fails when a source file changed and the checkpoint was not re-exported (fix: the REEXPORT command)."""
    if not (CHECKPOINT / "config.json").is_file():
        pytest.skip(f"{CHECKPOINT} is missing")
    expected = tmp_path / "expected"
    expected.mkdir()
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        if (CHECKPOINT / name).is_file():
            shutil.copy(CHECKPOINT / name, expected / name)
    write_remote_code(expected)
    committed = sorted(path.name for path in CHECKPOINT.glob("*.py"))
    assert committed == sorted(path.name for path in expected.glob("*.py")), f"re-export with: {REEXPORT}"
    differing = [name for name in committed if not filecmp.cmp(CHECKPOINT / name, expected / name, shallow=False)]
    assert differing == [], f"{differing} differ from the sources; re-export with: {REEXPORT}"
