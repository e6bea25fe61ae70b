"""Tests of the page's notices (`spaces_demo/notices.py`, `handlers.py`): what cannot be asked is listed beside the
input, not raised.

The page's events (`VitaSpace.chat_page`, `realtime_image_page`) take the uploads as gradio's `FileData` dicts (the
events do not preprocess) and never raise for the visitor's mistakes: the problems go to a notice list (the latest
first), the conversation is skipped (it stays as it was) and only the refused inputs are emptied. The Python handlers
(`chat`, `realtime_image`) keep raising `gr.Error` with the same messages. The limits are listed in one wording by the
page's header and the Space README.
"""

import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import soundfile

from spaces_demo import notices as space_notices
from spaces_demo.handlers import NO_QUESTION, VitaSpace
from spaces_demo.limits import Limits, describe_limits
from spaces_demo.notices import add_notices, notices_html, plain_error
from spaces_demo.page import build_demo

SPACE_DIR = Path(space_notices.__file__).resolve().parent
VISITOR = SimpleNamespace(session_hash="visitor")


def _file_data(path: Path, orig_name: str | None = None) -> dict:
    """What a `preprocess=False` event receives for an upload (gradio's `FileData.model_dump()`)."""
    return {"path": str(path), "url": None, "size": None, "orig_name": orig_name or path.name, "mime_type": None}


def _is_skip(value) -> bool:
    return value == gr.skip()


@pytest.fixture
def space(tiny_runtime, upload_root):
    space = VitaSpace(tiny_runtime, max_new_tokens=4, upload_root=str(upload_root))
    yield space
    space.unload(VISITOR)


def test_notices_list_the_latest_first_count_repeats_and_escape_the_text():
    notices = add_notices(None, ["first"])
    notices = add_notices(notices, ["second", "second"])
    assert notices == [("second", 2), ("first", 1)]
    assert len(add_notices(notices, [str(index) for index in range(10)])) == space_notices.NOTICES_KEPT
    shown = notices_html(add_notices([], ["The image '<b>${x}{{y}}</b>.png' cannot be read"]))
    assert "<b>" not in shown and "${" not in shown and "{{" not in shown and "&lt;b&gt;" in shown
    assert 'role="alert"' in shown and notices_html([]) == ""
    assert "(2 times)" in notices_html(notices)


def test_a_refused_question_is_listed_and_changes_nothing_else(space, upload_root):
    (upload_root / "notes.png").write_text("not a picture")
    (upload_root / "empty.wav").write_bytes(b"")
    outputs = list(
        space.chat_page(
            "What colour is the shape?",
            _file_data(upload_root / "notes.png"),
            None,
            _file_data(upload_root / "empty.wav"),
            None,
            [("an older problem", 1)],
            VISITOR,
        )
    )
    assert len(outputs) == 1
    chatbot, session, text, image, video, audio, notices, shown = outputs[0]
    assert _is_skip(chatbot) and _is_skip(session) and _is_skip(text)  # the conversation and the question stay
    assert image is None and _is_skip(video) and audio is None  # only the refused files are emptied
    problems = [problem for problem, _ in notices]
    assert len(problems) == 3 and problems[2] == "an older problem"
    assert "'notes.png' cannot be read" in problems[1] and "'empty.wav' is empty" in problems[0]
    assert "notes.png" in shown and "empty.wav" in shown and str(upload_root) not in shown
    assert space.open_sessions() == 0  # nothing was asked


def test_the_visitors_file_name_is_the_one_named(space, upload_root):
    stored = upload_root / "0f3a9c" / "upload.bin"
    stored.parent.mkdir()
    stored.write_text("not a picture")
    *_, (_, _, _, _, _, _, notices, _) = space.chat_page(
        "Hi?", _file_data(stored, "holiday photo.png"), None, None, None, [], VISITOR
    )
    assert notices[0][0].startswith("The image 'holiday photo.png' cannot be read"), notices
    assert "0f3a9c" not in notices[0][0] and "upload.bin" not in notices[0][0]


def test_no_question_is_a_notice_a_question_clears_the_notices(space, upload_root):
    *_, (chatbot, session, *_, notices, shown) = space.chat_page("  ", None, None, None, None, [], VISITOR)
    assert _is_skip(chatbot) and _is_skip(session) and notices == [(NO_QUESTION, 1)] and NO_QUESTION in shown
    rate = 16_000
    clip = upload_root / "question.wav"
    soundfile.write(str(clip), np.zeros(rate // 2, np.float32), rate, subtype="PCM_16")
    *_, last = space.chat_page("", None, None, _file_data(clip), None, notices, VISITOR)  # audio alone is a question
    chatbot, session, text, image, video, audio, notices, shown = last
    assert len(chatbot) == 2 and session.turns[0].audio is not None
    assert (text, image, video, audio, notices, shown) == ("", None, None, None, [], "")


def test_a_failing_model_is_a_notice_and_the_conversation_shows_the_turn(space, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(2, "No such file or directory", "/srv/uploads/4b1d/clip.mp4")

    monkeypatch.setattr("spaces_demo.runtime.run_turn", broken)
    *_, last = space.chat_page("What colour is the shape?", None, None, None, None, [], VISITOR)
    chatbot, session, *_, notices, shown = last
    assert "vita-error" in chatbot[-1]["content"] and session.turns[-1].error
    assert notices == [("The model failed on this question: No such file or directory: 'clip.mp4'", 1)]
    with pytest.raises(gr.Error, match="The model failed on this question"):  # the Python handler still raises
        list(space.chat("What colour is the shape?", None, None, None, None, VISITOR))


def test_the_python_handler_raises_every_problem_at_once(space, upload_root):
    (upload_root / "notes.png").write_text("not a picture")
    with pytest.raises(gr.Error) as raised:
        next(space.chat("x" * 2001, str(upload_root / "notes.png"), None, None, None, VISITOR))
    assert "2001 characters; the limit is 2000" in raised.value.message
    assert "'notes.png' cannot be read" in raised.value.message


def test_a_refused_realtime_picture_is_listed_beside_it_and_emptied(space, upload_root):
    from PIL import Image

    (upload_root / "notes.png").write_text("not a picture")
    handler, picture, notices, shown = space.realtime_image_page(
        _file_data(upload_root / "notes.png"), None, [], VISITOR
    )
    assert _is_skip(handler) and picture is None and "'notes.png' cannot be read" in notices[0][0]
    assert "notes.png" in shown and space.open_sessions() == 0
    # Emptying the picture (what the refusal does) keeps the notice; a good picture clears it.
    assert all(_is_skip(value) for value in space.realtime_image_page(None, None, notices, VISITOR)[1:])
    Image.new("RGB", (64, 48), "red").save(upload_root / "red.png")
    handler, picture, notices, shown = space.realtime_image_page(
        _file_data(upload_root / "red.png"), None, [], VISITOR
    )
    assert handler is not None and _is_skip(picture) and (notices, shown) == ([], "")
    with pytest.raises(gr.Error, match="'notes.png' cannot be read"):
        space.realtime_image(str(upload_root / "notes.png"), None, VISITOR)


def test_plain_errors_have_no_errno_and_no_folders():
    assert plain_error(OSError(2, "No such file or directory", "/srv/uploads/x/a b.wav")) == (
        "No such file or directory: 'a b.wav'"
    )
    assert plain_error(ValueError("shape 3/4 does not match a/b")) == "shape 3/4 does not match a/b"


def test_the_page_wires_unprocessed_uploads_and_notices(tiny_runtime):
    demo = build_demo(runtime=tiny_runtime, tts="none")
    space = demo.vita_space
    events = {fn.fn: fn for fn in demo.fns.values()}
    send, picture = events[space.chat_page], events[space.realtime_image_page]
    assert sorted(trigger for _, trigger in send.targets) == ["click", "submit"]
    assert [trigger for _, trigger in picture.targets] == ["change"]
    notices = {
        block.elem_id: block
        for block in demo.blocks.values()
        if block.elem_id in ("vita-chat-notice", "vita-live-notice")
    }
    assert not send.preprocess and notices["vita-chat-notice"] in send.outputs
    assert notices["vita-chat-notice"] not in send.show_progress_on and len(send.show_progress_on) == 5
    assert not picture.preprocess and notices["vita-live-notice"] in picture.outputs


def test_the_header_and_the_readme_list_every_limit(tiny_runtime):
    wording = describe_limits(Limits())
    demo = build_demo(runtime=tiny_runtime, tts="none")
    header = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "vita-header")
    assert f"Limits: {wording}." in header["props"]["value"]
    readme = " ".join((SPACE_DIR / "README.md").read_text().split())
    assert f"Limits: {wording}." in readme
    for number in re.findall(r"\d[\d,.]*", wording):
        assert number in header["props"]["value"]
