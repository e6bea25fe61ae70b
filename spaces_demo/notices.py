"""The notices of the VITA Space: what a visitor cannot ask, listed beside the input it concerns.

Problems the visitor can fix (no question, a file too long, empty or unreadable) are notices, not errors: the page's
events (`VitaSpace.chat_page`, `VitaSpace.realtime_image_page` in `handlers.py`) list them beside the input
(`#vita-chat-notice`, `#vita-live-notice`, the latest first, each kept until a question goes through) and leave the
conversation and the other inputs as they were. A raised `gr.Error` would mark every output with a red "Error" pill
and hide the conversation behind them, and gradio 6.31 merges toasts of one kind into one that closes with the first
one's timer.

Here: the notice list as a value (`Notice`, `add_notices`: a repeat counts up, at most `NOTICES_KEPT`), its HTML
(`notices_html`), `Refused` (what was given cannot be asked: every problem at once) and `plain_error` (an exception's
text without errno or server folders).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence

logger = logging.getLogger(__name__)

NOTICES_KEPT = 5  # problems listed beside an input, the latest first
Notice = tuple[str, int]  # a problem shown beside an input and how many times in a row it came


class Refused(Exception):
    """What a visitor gave cannot be asked (no error of the program): `problems` says each thing wrong, `bad` the
    inputs to empty."""

    def __init__(self, problems: list[str], bad: frozenset[str] = frozenset()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.bad = bad


def _html_text(text: str) -> str:
    """Text for a `gr.HTML` value: escaped, and `$ { }` as entities so gradio's template never reads them."""
    return html.escape(text).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def add_notices(notices: Sequence[Notice] | None, problems: Sequence[str]) -> list[Notice]:
    """The notice list after `problems` (the latest first, at most NOTICES_KEPT); a problem repeating the latest one
    counts up instead of taking another line."""
    kept = list(notices or [])
    for problem in problems:
        if kept and kept[0][0] == problem:
            kept[0] = (problem, kept[0][1] + 1)
        else:
            kept.insert(0, (problem, 1))
    return kept[:NOTICES_KEPT]


def notices_html(notices: Sequence[Notice] | None) -> str:
    """The notice list as the page shows it beside the input ("" when there is nothing to say)."""
    if not notices:
        return ""
    items = "".join(
        f'<li class="vita-notice">{_html_text(problem)}'
        + (f'<span class="vita-notice-count">({count} times)</span>' if count > 1 else "")
        + "</li>"
        for problem, count in notices
    )
    return f'<ul class="vita-notices" role="alert">{items}</ul>'


def plain_error(error: BaseException) -> str:
    """An exception's text for the visitor: no errno, and each absolute path cut to its file name (an upload's
    folder on the server is nobody's business)."""
    text = re.sub(r"\[Errno -?\d+\]\s*", "", str(error))
    return re.sub(r"(?<![\w.])(?:/[^/\s'\"]+)+/([^/\s'\"]+)", r"\1", text)
