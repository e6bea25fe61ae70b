"""Browser tests of what the Space says when something is wrong (issue "fail clearly on anything bad").

The app is served in this process on the random tiny VITA (what it answers does not matter here) and driven by
Playwright in the system Chromium. Each test checks what a visitor sees in the DOM:
    - a text file renamed `.png` is named and called unreadable beside the input (gradio's image component used to
      fail first, with no message), with no server path or errno;
    - an empty wav is said to be empty, by its name;
    - a validation error ("type a question") leaves the conversation in view, with no red "Error" pill anywhere;
    - two problems in quick succession are both listed, and still are after gradio's 10 s toast timer;
    - the header lists every limit, the 2,000 characters of a typed question among them;
    - an unreadable picture in the real-time tab is named beside it and emptied.
"""

import os
import time
from pathlib import Path

import pytest

from tests.spaces_demo.conftest import free_port
from tests.spaces_demo.test_browser import _settled_badges

# gradio 6.31 warns about its own use of pandas when it serves in this process.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::gradio.queueing")]

NOTICE = "#vita-chat-notice .vita-notice"


@pytest.fixture(scope="module")
def space_url(tiny_runtime):
    from spaces_demo.page import CSS, build_demo

    demo = build_demo(runtime=tiny_runtime, tts="none", max_new_tokens=8)
    port = free_port()
    limits = demo.vita_space.limits
    demo.queue().launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        css=CSS,
        quiet=True,
        max_file_size=limits.max_file_size,
    )
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def page(browser, space_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(space_url)
    page.wait_for_selector("#vita-text textarea", timeout=60_000)
    yield page
    context.close()


@pytest.fixture
def files(tmp_path):
    """A text file renamed `.png` and an empty (0-byte) `.wav`, as a visitor might pick them."""
    (tmp_path / "notes.png").write_text("These are my shopping notes, not a picture.\n")
    (tmp_path / "empty.wav").write_bytes(b"")
    return tmp_path


def _notices(page, count: int, timeout: float = 30.0) -> list[str]:
    """The problems listed beside the question, once there are at least `count` of them (latest first)."""
    page.wait_for_function(f"document.querySelectorAll('{NOTICE}').length >= {count}", timeout=timeout * 1000)
    page.wait_for_function(
        "document.querySelector('#vita-chatbot [data-testid=status-tracker]')?.classList.contains('hide') ?? true",
        timeout=timeout * 1000,
    )
    return page.eval_on_selector_all(NOTICE, "ns => ns.map(n => n.innerText.trim())")


def _error_marks(page) -> dict[str, list[str]]:
    """What gradio shows when an event fails: a red "Error" pill in a component's status tracker, an error toast."""
    visible = "es => es.filter(e => e.offsetParent !== null).map(e => e.innerText.trim())"
    return {
        "pills": page.eval_on_selector_all("[data-testid=status-tracker] .error", visible),
        "toasts": page.eval_on_selector_all(".toast-body.error", visible),
    }


def _upload(page, target: str, path: Path) -> None:
    page.set_input_files(f"{target} input[type=file]", str(path))
    time.sleep(1.0)  # the upload request and the component's own update


def _screenshot(page, name: str) -> None:
    """Keep a full-page screenshot for a person (or a CI artifact) when $VITA_SCREENSHOT_DIR is set."""
    if os.environ.get("VITA_SCREENSHOT_DIR"):
        Path(os.environ["VITA_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(os.environ["VITA_SCREENSHOT_DIR"]) / name), full_page=True)


def _shows_no_server_path(message: str) -> None:
    assert "/tmp" not in message and "gradio" not in message.lower(), message
    assert "errno" not in message.lower() and "[Err" not in message, message


def test_a_text_file_renamed_png_is_named_and_called_unreadable_beside_the_input(page, files):
    _upload(page, "#vita-image", files / "notes.png")
    page.fill("#vita-text textarea", "What colour is the shape?")
    page.click("#vita-send")
    notices = _notices(page, 1)
    assert len(notices) == 1, notices
    assert "'notes.png' cannot be read" in notices[0] and "PNG, JPEG or WebP" in notices[0], notices
    _shows_no_server_path(notices[0])
    assert _error_marks(page) == {"pills": [], "toasts": []}
    assert page.inner_text("#vita-chatbot").count("What colour is the shape?") == 0  # nothing was asked
    assert page.input_value("#vita-text textarea") == "What colour is the shape?"  # the question is kept to resend
    _screenshot(page, "space-unreadable-image.png")


def test_an_empty_wav_is_said_to_be_empty(page, files):
    _upload(page, "#vita-audio", files / "empty.wav")
    page.click("#vita-send")
    notices = _notices(page, 1)
    assert len(notices) == 1 and "'empty.wav' is empty" in notices[0], notices
    assert "common audio format" not in notices[0]
    _shows_no_server_path(notices[0])
    assert _error_marks(page) == {"pills": [], "toasts": []}


def test_a_validation_error_keeps_the_conversation_in_view_without_error_pills(page):
    page.fill("#vita-text textarea", "What colour is the shape?")
    page.click("#vita-send")
    _settled_badges(page, 1)
    before = page.inner_text("#vita-chatbot")
    page.click("#vita-send")  # nothing typed, nothing uploaded
    notices = _notices(page, 1)
    assert len(notices) == 1 and notices[0].startswith("Type a question or give audio"), notices
    assert page.inner_text("#vita-chatbot") == before and "What colour is the shape?" in before
    assert page.locator("#vita-chatbot .vita-badge").count() == 1
    # Nothing lies over the answer (gradio's status tracker covers a component that failed): what the browser finds
    # at the badge's centre is the badge.
    on_top = page.eval_on_selector(
        "#vita-chatbot .vita-badge",
        "b => { const r = b.getBoundingClientRect();"
        " return b.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }",
    )
    assert on_top
    assert _error_marks(page) == {"pills": [], "toasts": []}
    # A question that goes through clears the list.
    page.fill("#vita-text textarea", "And how many shapes?")
    page.click("#vita-send")
    _settled_badges(page, 2)
    assert page.locator(NOTICE).count() == 0


def test_two_problems_in_quick_succession_are_both_listed_and_stay(page, files):
    page.click("#vita-send")  # nothing typed
    first = _notices(page, 1)
    started = time.monotonic()
    _upload(page, "#vita-image", files / "notes.png")
    page.fill("#vita-text textarea", "What colour is the shape?")
    page.click("#vita-send")
    both = _notices(page, 2)
    assert time.monotonic() - started < 10  # within gradio's toast timer
    assert len(both) == 2 and both[1] == first[0], both  # the latest first
    assert "'notes.png' cannot be read" in both[0] and both[1].startswith("Type a question"), both
    time.sleep(max(0.0, 11 - (time.monotonic() - started)))  # past the 10 s a toast would have lasted
    assert page.eval_on_selector_all(NOTICE, "ns => ns.map(n => n.innerText.trim())") == both
    assert all(page.locator(NOTICE).nth(index).is_visible() for index in range(2))
    assert _error_marks(page) == {"pills": [], "toasts": []}
    page.fill("#vita-text textarea", "")
    page.click("#vita-send")
    assert _notices(page, 3)[0].startswith("Type a question")
    page.click("#vita-send")  # the same problem again counts up instead of taking another line
    page.wait_for_function(f"document.querySelector('{NOTICE}').innerText.includes('(2 times)')", timeout=30_000)
    assert page.locator(NOTICE).count() == 3
    _screenshot(page, "space-notices.png")


def test_the_header_lists_every_limit(page):
    header = " ".join(page.inner_text("#vita-header").split())
    for limit in (
        "50 MB a file",
        "audio 60 s",
        "video 30 s",
        "images 16 megapixels",
        "typed questions 2,000 characters",
        "10 minutes of streaming per conversation",
    ):
        assert limit in header, (limit, header)


def test_an_unreadable_realtime_picture_is_named_beside_it_and_emptied(page, files):
    page.get_by_role("tab", name="Real-time").click()
    _upload(page, "#vita-live-image", files / "notes.png")
    page.wait_for_selector("#vita-live-notice .vita-notice", timeout=30_000)
    time.sleep(1.0)  # emptying the picture fires its change event once more: the notice must survive it
    notices = page.eval_on_selector_all("#vita-live-notice .vita-notice", "ns => ns.map(n => n.innerText.trim())")
    assert len(notices) == 1 and "'notes.png' cannot be read" in notices[0], notices
    _shows_no_server_path(notices[0])
    assert page.locator("#vita-live-image img").count() == 0  # the refused picture is gone from the input
    assert _error_marks(page) == {"pills": [], "toasts": []}
