"""Bad inputs through the duplex session and the converter, one parametrized row each, with the exact behaviour.

Session rows run a `DuplexSession` over the scripted model and energy VAD of `test_duplex_session.py` (no real
model). A bad chunk or image is an `error` event whose message names the value found and the one expected; it moves
neither the clock nor the visual context, and the next good input is answered. A bad argument of a caller-side call
raises `ValueError` there; every call after `close()` raises, and `close()` twice is fine.

Converter rows take a copy of a tiny original-layout VITA-1.0 checkpoint (`original_vita.py`), break one thing and run
`vita-convert-original`: exit status 2, a message on stderr naming the file and the found/expected value, no output
folder and no staging folder left, and no file outside the output folder touched (every file under the row's folder,
the input, the audio folder and the files symlinks point at included, keeps its bytes and its modification time).
"""

import hashlib
import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modeling_vita.convert_vita_original_to_hf import main as convert_main
from modeling_vita.duplex_session import DuplexSession
from processing_vita.testing_utils import tiny_vita_processor
from tests.modeling_vita import original_vita
from tests.modeling_vita.test_duplex_session import (
    EOS,
    FAST_VAD,
    QUERY,
    SR,
    Collector,
    EnergyScorer,
    ScriptedModel,
    has,
    push,
    silence,
    tone,
    words,
)

# ------------------------------------------------------------------------------------------------------ session


@pytest.fixture(scope="module")
def processor():
    return tiny_vita_processor()


@pytest.fixture
def session(processor):
    model = ScriptedModel([[QUERY, *words(processor, "Hello"), EOS]] * 4)
    session = DuplexSession(model, processor, vad=FAST_VAD, vad_scorer=EnergyScorer())
    session.model_calls = model.calls
    yield session
    session.close()


def _truncated_png(folder: Path) -> Path:
    path = folder / "truncated.png"
    Image.new("RGB", (64, 64), "blue").save(path)
    path.write_bytes(path.read_bytes()[:60])
    return path


C = np.zeros(320, dtype=np.float32)  # one good 20 ms chunk at 16 kHz, for the rows that break the rate
AUDIO_ROWS = {  # id: (chunk, rate, the message's regex)
    "nan": (
        np.where(np.arange(320) == 3, np.nan, 0.1).astype(np.float32),
        SR,
        r"finite samples, found 1 NaN/inf of 320",
    ),
    "inf": (np.full(320, np.inf, dtype=np.float64), SR, r"finite samples, found 320 NaN/inf of 320"),
    "int32": (np.zeros(320, dtype=np.int32), SR, r"must be int16, float16, float32 or float64, found int32"),
    "complex": (np.zeros(320, dtype=np.complex64), SR, r"float32 or float64, found complex64"),
    "strings": (["a", "b"], SR, r"float32 or float64, found <U1"),
    "stereo": (np.zeros((320, 2), dtype=np.float32), SR, r"mono with shape \(num_samples,\), found shape \(320, 2\)"),
    "3-d": (np.zeros((1, 320, 1), dtype=np.float32), SR, r"found shape \(1, 320, 1\)"),
    "scalar": (0.5, SR, r"found shape \(\)"),
    "ragged list": ([[0.1, 0.2], [0.3]], SR, r"1-D array of numbers, found a list numpy cannot read as one"),
    "bf16 tensor": (torch.zeros(320, dtype=torch.bfloat16), SR, r"float32 or float64, found torch\.bfloat16"),
    "int64 tensor": (torch.zeros(320, dtype=torch.int64), SR, r"float32 or float64, found torch\.int64"),
    "rate 4000": (C, 4000, r"whole number of Hz between 8000 and 192000, found 4000"),
    "rate 400000": (C, 400_000, r"between 8000 and 192000, found 400000"),
    "rate nan": (C, float("nan"), r"between 8000 and 192000, found nan"),
    "rate 22050.5": (C, 22050.5, r"between 8000 and 192000, found 22050\.5"),
    "rate str": (C, "16000", r"between 8000 and 192000, found '16000'"),
    "rate None": (C, None, r"between 8000 and 192000, found None"),
    "rate bool": (C, True, r"between 8000 and 192000, found True"),
}


@pytest.mark.parametrize("chunk, rate, match", AUDIO_ROWS.values(), ids=AUDIO_ROWS.keys())
def test_a_bad_chunk_is_an_error_event_and_the_next_query_is_answered(session, chunk, rate, match):
    events = Collector(session)
    session.push_audio(chunk, rate)
    (error,) = [e for e in events.until(has("error")) if e.type == "error"]
    assert error.message.startswith("bad audio chunk skipped: ") and error.turn_id is None
    assert re.search(match, error.message), error.message
    assert session.time == 0.0  # the clock did not move
    push(session, np.concatenate([tone(0.4), silence(0.3)]))
    events.until(has("response_done"))
    assert [e.type for e in events.events] == [
        "error", "speech_started", "speech_ended", "state_decided", "text_delta", "response_done"
    ]  # fmt: skip
    assert events.of("speech_ended")[0].start == pytest.approx(0.0, abs=0.04)


IMAGE_ROWS = {  # id: (a function of the test's tmp_path giving the image, the message's regex)
    # The processor's loader words the messages; each row pins the value found and that an expected one follows.
    "0x0 PIL": (lambda tmp: Image.new("RGB", (0, 0)), r"0x0 pixels; expected at least 1x1"),
    "0x0 array": (lambda tmp: np.zeros((0, 0, 3), np.uint8), r"(shape \(0, 0, 3\)|0x0 pixels); expected"),
    "missing path": (lambda tmp: str(tmp / "nowhere.png"), r"nowhere\.png' does not exist; expected"),
    "truncated png": (_truncated_png, r"truncated\.png' could not be decoded .*; expected"),
    "garbage bytes": (lambda tmp: b"not an image", r"'<bytes>' could not be decoded .*; expected"),
    "nan pixels": (lambda tmp: np.full((8, 8, 3), np.nan, np.float32), r"NaN or inf; expected finite"),
    "video clip": (lambda tmp: np.zeros((2, 8, 8, 3), np.uint8), r"shape \(2, 8, 8, 3\); expected"),
    "int32 > 255": (lambda tmp: np.full((8, 8), 300, np.int32), r"dtype int32 .*; expected"),
    "not an image": (lambda tmp: 5, r"has type int; expected"),
}


@pytest.mark.parametrize("make, match", IMAGE_ROWS.values(), ids=IMAGE_ROWS.keys())
def test_a_bad_image_is_an_error_event_and_never_enters_the_frames(session, tmp_path, make, match):
    events = Collector(session)
    session.push_image(make(tmp_path))
    (error,) = [e for e in events.until(has("error")) if e.type == "error"]
    assert error.message.startswith("bad image skipped: Image 0") and error.turn_id is None
    assert re.search(match, error.message), error.message
    session.push_image(Image.new("RGB", (56, 56), "red"))
    session.push_text("What is in the picture?")
    events.until(has("response_done"))
    assert [e.type for e in events.events] == ["error", "state_decided", "text_delta", "response_done"]
    (frame,) = session.history[0].images  # the good image only, decoded, shown with the query
    assert isinstance(frame, Image.Image) and frame.mode == "RGB" and frame.size == (56, 56)
    assert "<image>" in session.processor.decode(session.model_calls[0][0])


CALLER_ROWS = {  # id: (a call on the session, the ValueError's regex)
    "text None": (lambda s: s.push_text(None), r"push_text takes a non-empty str, found NoneType None"),
    "text bytes": (lambda s: s.push_text(b"hi"), r"non-empty str, found bytes b'hi'"),
    "text blank": (lambda s: s.push_text("  \n"), r"non-empty str, found str '  \\n'"),
    "playback rms nan": (lambda s: s.playback_started(float("nan")), r"finite number >= 0 or None, found nan"),
    "playback rms < 0": (lambda s: s.playback_started(-0.5), r"finite number >= 0 or None, found -0\.5"),
    "playback rms inf": (lambda s: s.playback_started(float("inf")), r"finite number >= 0 or None, found inf"),
    "playback rms str": (lambda s: s.playback_started("loud"), r"finite number >= 0 or None, found 'loud'"),
}


@pytest.mark.parametrize("call, match", CALLER_ROWS.values(), ids=CALLER_ROWS.keys())
def test_a_bad_argument_raises_in_the_caller_and_the_session_goes_on(session, call, match):
    with pytest.raises(ValueError, match=match):
        call(session)
    events = Collector(session)
    push(session, np.concatenate([tone(0.4), silence(0.3)]))
    events.until(has("response_done"))
    assert not events.of("error") and [t.role for t in session.history] == ["user", "assistant"]


AFTER_CLOSE_ROWS = {
    "push_audio": lambda s: s.push_audio(tone(0.02), SR),
    "push_text": lambda s: s.push_text("hello"),
    "push_image": lambda s: s.push_image(Image.new("RGB", (8, 8))),
    "flush": lambda s: s.flush(),
    "playback_started": lambda s: s.playback_started(0.1),
    "playback_stopped": lambda s: s.playback_stopped(),
}


@pytest.mark.parametrize("call", AFTER_CLOSE_ROWS.values(), ids=AFTER_CLOSE_ROWS.keys())
def test_every_call_after_close_raises_and_close_twice_is_fine(session, call):
    session.close()
    with pytest.raises(ValueError, match=r"the DuplexSession is closed; expected an open session"):
        call(session)
    session.close()
    assert list(session.events(timeout=0.1)) == [] and session.wait_idle(0.1)


# ---------------------------------------------------------------------------------------------------- converter

TOKEN_IDS = ["--image-token-id", "4", "--video-token-id", "5", "--audio-token-id", "6"]
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_release")
    state_dict = original_vita.original_state_dict()
    original_vita.write_original_checkpoint(root / "VITA_ckpt", state_dict, num_shards=2)
    original_vita.write_audio_encoder_folder(root / "audio-encoder", state_dict)
    return root


def _rewrite_header(case: Path, change) -> None:
    """Rewrite the first shard's header with `change(header, data) -> (header, data, length field or None)`."""
    raw = (case / SHARD).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    header, data, field = change(header, data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    (case / SHARD).write_bytes(struct.pack("<Q", len(encoded) if field is None else field) + encoded + data)


def _tensors_by_offset(header: dict) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _promise_more(header, data):
    header[_tensors_by_offset(header)[-1]]["data_offsets"][1] += 4096
    return header, data, None


def _overlap(header, data):
    first, second = _tensors_by_offset(header)[:2]
    begin, end = header[second]["data_offsets"]
    start = header[first]["data_offsets"][0]
    header[second]["data_offsets"] = [start, start + end - begin]
    return header, data, None


def _dtype(name):
    def change(header, data):
        key = next(k for k in _tensors_by_offset(header) if header[k]["dtype"] == "F32")
        header[key]["dtype"] = name
        return header, data, None

    return change


def _index(case: Path, change) -> None:
    path = case / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    change(index)
    path.write_text(json.dumps(index))


def _outside_shard(case: Path) -> Path:
    """A valid shard outside the checkpoint folder (the row's folder is the case's parent)."""
    target = case.parent / "elsewhere" / SHARD
    target.parent.mkdir()
    shutil.copy(case / SHARD, target)
    return target


def _relink(case: Path, name: str) -> None:
    target = case.parent / "elsewhere" / name
    target.parent.mkdir(exist_ok=True)
    shutil.move(case / name, target)
    (case / name).symlink_to(target)


def _index_points(value_of):
    def mutate(case: Path) -> None:
        target = _outside_shard(case)
        _index(case, lambda index: index["weight_map"].update(dict.fromkeys(
            [k for k, v in index["weight_map"].items() if v == SHARD], value_of(case, target))))  # fmt: skip

    return mutate


def _as_bin(case: Path, content, raw_pickle: bool = False) -> None:
    for path in case.glob("*.safetensors"):
        path.unlink()
    (case / "model.safetensors.index.json").unlink()
    if raw_pickle:
        (case / "pytorch_model.bin").write_bytes(pickle.dumps(content))
    else:
        torch.save(content, case / "pytorch_model.bin")


class WritesAFile:
    """A pickle whose loading would run `exec` and write `marker` (never loaded here)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def _duplicate_tensor(case: Path) -> None:
    (case / "model.safetensors.index.json").unlink()
    save_file({"model.norm.weight": torch.ones(64)}, case / "model-00003-extra.safetensors")


def _misplaced(case: Path) -> None:
    def change(index):
        key = next(k for k, v in index["weight_map"].items() if v == SHARD)
        index["weight_map"][key] = "model-00002-of-00002.safetensors"

    _index(case, change)


CONVERTER_ROWS = {  # id: (mutate(case folder), regex of the one-line message)
    "config not json": (lambda c: (c / "config.json").write_text("{oops"), r"config\.json is not JSON \("),
    "config a list": (lambda c: (c / "config.json").write_text("[1]"), r"config\.json holds a list; expected a JSON"),
    "config links out": (
        lambda c: _relink(c, "config.json"),
        r"config\.json resolves to .*elsewhere/config\.json, "
        r"outside the checkpoint folder .*; expected a file inside it",
    ),  # fmt: skip
    "index not json": (
        lambda c: (c / "model.safetensors.index.json").write_text("{oops"),
        r"index\.json is not readable JSON \(.*\); expected the index save_pretrained writes",
    ),
    "index no weight_map": (
        lambda c: (c / "model.safetensors.index.json").write_text('{"metadata": {}}'),
        r"index\.json holds keys \['metadata'\]; expected an object with a non-empty 'weight_map'",
    ),
    "index names a missing file": (
        lambda c: _index(c, lambda i: i["weight_map"].update(x="gone.safetensors")),
        r"index\.json names 'gone\.safetensors', but .*gone\.safetensors is not a file",
    ),
    "index entry ../": (
        _index_points(lambda case, target: f"../elsewhere/{SHARD}"),
        rf"index\.json names '\.\./elsewhere/{SHARD}', which resolves to .*/elsewhere/{SHARD}, outside",
    ),
    "index entry absolute": (
        _index_points(lambda case, target: str(target)),
        rf"index\.json names '/.*/elsewhere/{SHARD}', which resolves to .*, outside the checkpoint",
    ),
    "shard links out": (
        lambda c: _relink(c, SHARD),
        rf"{SHARD} resolves to .*/elsewhere/{SHARD}, outside the checkpoint",
    ),
    "truncated shard": (
        lambda c: (c / SHARD).write_bytes((c / SHARD).read_bytes()[:-100]),
        r"is not a valid safetensors file: .*incomplete metadata, file not fully covered; its header "
        r"describes ([\d,]+) bytes of tensor data, the file holds (?!\1)[\d,]+; expected a complete",
    ),
    "header promises more": (
        lambda c: _rewrite_header(c, _promise_more),
        r"invalid shape, data type, or offset for tensor; its header describes [\d,]+ bytes of "
        r"tensor data, the file holds [\d,]+",
    ),
    "overlapping offsets": (lambda c: _rewrite_header(c, _overlap), r"not a valid safetensors file: .*invalid offset"),
    "bad header json": (
        lambda c: (c / SHARD).write_bytes(struct.pack("<Q", 16) + b"{not json at all" + bytes(64)),
        r"\(88 bytes\) is not a valid safetensors file: .*invalid JSON in header",
    ),
    "unknown dtype": (lambda c: _rewrite_header(c, _dtype("Q7")), r"unknown variant `Q7`, expected one of"),
    "dtype not converted": (lambda c: _rewrite_header(c, _dtype("U32")), r"has dtype U32; expected one of \['F64'"),
    "header length 2^63": (
        lambda c: _rewrite_header(c, lambda h, d: (h, d, 2**63)),
        r"header too large; its header length field says 9,223,372,036,854,775,808 bytes, the whole "
        r"file holds [\d,]+",
    ),
    "empty shard": (
        lambda c: (c / SHARD).write_bytes(b""),
        r"\(0 bytes\) is not a valid safetensors file: .*too small",
    ),
    "tensor in two shards": (
        _duplicate_tensor,
        r"model\.norm\.weight is in both .*model-0000[12]-of-00002\.safetensors "
        r"and .*model-00003-extra\.safetensors; expected it in one shard",
    ),
    "index misplaces a tensor": (
        _misplaced,
        rf"index\.json puts \S+ in model-00002-of-00002\.safetensors, but "
        rf".*{SHARD} holds it; expected the index to match the shards",
    ),
    "pickle runs code (zip)": (
        lambda c: _as_bin(c, {"w": WritesAFile(c.parent / "pwned")}),
        r"pytorch_model\.bin cannot be read as weights only \(UnpicklingError: Unsupported "
        r"global: GLOBAL (builtins\.)?exec was not an allowed global.*\); expected a state dict of tensors",
    ),
    "pickle runs code (raw)": (
        lambda c: _as_bin(c, {"w": WritesAFile(c.parent / "pwned")}, raw_pickle=True),
        r"pytorch_model\.bin cannot be read as weights only \(RuntimeError: .*\); expected",
    ),
    "bin holds a list": (
        lambda c: _as_bin(c, [torch.zeros(2)]),
        r"pytorch_model\.bin holds list; expected a state dict",
    ),
    "bin holds an int": (lambda c: _as_bin(c, {"w": 3}), r"pytorch_model\.bin holds 'w': int; expected a state dict"),
    "train.yaml not yaml": (
        lambda c: (c.parent / "audio-encoder" / "train.yaml").write_text("a: [b"),
        r"audio-encoder/train\.yaml is not YAML \(.*\); expected the whale encoder's train\.yaml",
    ),
    "global_cmvn not json": (
        lambda c: (c.parent / "audio-encoder" / "global_cmvn").write_text("{oops"),
        r"CMVN file .*global_cmvn.* \(.*\); expected a JSON file with keys mean_stat",
    ),
}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file under `root` (links as links): bytes digest, size and modification time."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else os.readlink(path)
            state[str(path.relative_to(root))] = (digest, info.st_size, info.st_mtime_ns)
    return state


@pytest.mark.parametrize("mutate, match", CONVERTER_ROWS.values(), ids=CONVERTER_ROWS.keys())
def test_a_bad_release_exits_2_naming_the_file_and_leaves_nothing(release, tmp_path, capsys, mutate, match):
    case, audio = tmp_path / "VITA_ckpt", tmp_path / "audio-encoder"
    shutil.copytree(release / "VITA_ckpt", case)
    shutil.copytree(release / "audio-encoder", audio)
    mutate(case)
    before = _snapshot(tmp_path)
    argv = ["--input", str(case), "--audio-encoder", str(audio), "--output", str(tmp_path / "out" / "converted")]
    assert convert_main([*argv, "--no-progress", *TOKEN_IDS]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vita-convert-original: error: ") and "Traceback" not in error, error
    assert re.search(match, error, re.S), error
    assert _snapshot(tmp_path) == before  # nothing outside the output was touched, nothing was left
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "pwned").exists()  # a pickle's code never ran


def test_the_pickle_rows_would_really_run_code(tmp_path):
    """The malicious pickle of the table is live: loaded without `weights_only` it writes its file."""
    torch.save({"w": WritesAFile(tmp_path / "ran")}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert (tmp_path / "ran").read_text() == "code ran"
