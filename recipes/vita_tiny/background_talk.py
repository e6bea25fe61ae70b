"""Background talk for vita-tiny beyond statements about the speaker's day: what a microphone in a home hears that is
not meant for the assistant, by kind, and which of it is held out.

Design: the vita-tiny voices issue (background talk of several kinds: commands and questions addressed to someone
else, TV/radio-like speech, backchannels; `<2>` for all of it). Each kind is a list of templates over small filler
vocabularies; the held-out split plays sentences of every kind that training never spoke (`kind_sentences` splits each
kind's sentences, not its templates, so held-out talk keeps to known words). The statements of the first background
set stay in `phrasings.py` (`background_sentences`), unchanged, so the previous held-out split can be rebuilt.
"""

from __future__ import annotations

import itertools
import random
import re

_FILLERS = {
    "name": ["Mom", "Dad", "Anna", "Tom", "Lucy", "Ben", "Grandma", "Sam"],
    "thing": ["keys", "glasses", "shoes", "gloves", "books", "socks"],
    "food": ["bread", "salt", "milk", "butter", "water", "juice"],
    "time": ["tonight", "tomorrow", "later", "at noon", "on Friday"],
    "hour": ["six", "seven", "eight", "nine", "ten"],
    "place": ["the station", "the school", "the park", "the shop", "the bridge"],
    "day": ["Monday", "the weekend", "Saturday", "Sunday"],
}  # fmt: skip
_TEMPLATES = {
    # Questions and commands to another person in the room: question-shaped, but not for the assistant.
    "addressed": ["{name}, where are my {thing}?", "{name}, can you pass the {food}?",
                  "Hey {name}, have you seen my {thing}?", "{name}, are you coming {time}?",
                  "{name}, please close the door.", "{name}, turn off the lights.", "{name}, did you buy {food}?",
                  "Can you pick me up at {place}, {name}?", "{name}, dinner is at {hour}.",
                  "{name}, your {thing} are on the table.", "Where did you put the {food}, {name}?",
                  "{name}, we leave at {hour} {time}."],
    # Speech from a television or a radio in the room.
    "media": ["And now the weather for {day}.", "Traffic is slow near {place} this morning.",
              "Stay with us, the news is back at {hour}.", "The game starts at {hour} {time}.",
              "Expect rain on {day} and sun after that.", "Police closed the road near {place}.",
              "Prices of {food} went up again this week.", "Our next guest joins us {time}.",
              "Thanks for listening, more music after the break.", "Here are the headlines at {hour} o'clock."],
}  # fmt: skip
# Short replies a listener gives while someone else talks; held out: the last three.
BACKCHANNELS = ["Mm-hmm.", "Yeah.", "Okay.", "Right.", "Uh-huh.", "I see.", "Sure.", "Oh really?", "Yeah, yeah.",
                "Okay, okay.", "Hmm.", "Oh wow.", "Got it.", "Ha ha ha.", "Exactly.", "No way.", "Fine.",
                "Oh, I see.", "Yes, right.", "Uh-huh, sure."]  # fmt: skip
HELDOUT_BACKCHANNELS = 3
BACKGROUND_KINDS = ("addressed", "media", "backchannel")


def _fill(template: str) -> list[str]:
    slots = re.findall(r"\{(\w+)\}", template)
    return [template.format(**dict(zip(slots, values))) for values in itertools.product(*(_FILLERS[s] for s in slots))]


def kind_sentences(kind: str, heldout: bool, count: int, seed: int) -> list[str]:
    """`count` sentences of one kind of background talk, from its training or its held-out share (a fifth of each
    template's fillings, by a draw that depends on `seed` only, so the two shares never meet)."""
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"Unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}.")
    if kind == "backchannel":
        pool = BACKCHANNELS[-HELDOUT_BACKCHANNELS:] if heldout else BACKCHANNELS[:-HELDOUT_BACKCHANNELS]
        return list(itertools.islice(itertools.cycle(pool), min(count, len(pool))))
    rng = random.Random(f"{seed}-{kind}")
    pools: list[list[str]] = []
    for template in _TEMPLATES[kind]:
        sentences = _fill(template)
        rng.shuffle(sentences)
        cut = max(1, len(sentences) // 5)
        pools.append(sentences[:cut] if heldout else sentences[cut:])
    # Templates in turn, so a small count still spans every template.
    mixed = [s for group in itertools.zip_longest(*pools) for s in group if s is not None]
    return mixed[:count]
