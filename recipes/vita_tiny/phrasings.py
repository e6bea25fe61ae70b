"""The words of vita-tiny's questions and prompts: question templates for pictures and videos, caption, say and
transcription prompts, the text QA families (English and Chinese), the background statements, the ways of asking a
spoken question (`styled_question`), and which of them are held out.

Design: the vita-tiny issue (text QA in English and Chinese for stage 1 and the vocabulary extension, held-out
phrasings). The held-out split asks with templates used nowhere in training (`templates_for` picks either side of a
list) and plays background sentences never spoken in training; its answers and fillers come from the same closed
vocabularies of `recipes/vita_tiny/world.py`, so the task stays learnable. `recipes/vita_tiny/data.py` builds the
rows from these.
"""

from __future__ import annotations

import random

from recipes.vita_tiny.world import COLOURS, NUMBERS, ZH_COLOURS, ZH_NUMBERS

# Question phrasings: each kind's own direct questions, plus shared frames filled with phrases naming the kind
# ("Tell me {x}." with "the colour of the shape"), so training pairs every frame with every kind and the answer can
# only follow the kind's words. The held-out phrasings are frame x phrase pairs used nowhere in training (both the
# frame and the phrase are, with other partners): new sentences a model trained from scratch can still read.
QUESTION_FRAMES = ["Tell me {x}.", "What is {x}?", "Can you tell me {x}?", "Please name {x}.", "I want to know {x}.",
                   "Do you know {x}?"]  # fmt: skip
HELDOUT_PHRASINGS_PER_KIND = 2


def _phrasings(direct: list[str], topics: tuple[str, str], kind_index: int) -> list[str]:
    """A kind's phrasings, its `HELDOUT_PHRASINGS_PER_KIND` held-out ones last: two frames (a different pair for
    each kind) filled with one of the kind's two phrases each."""
    n = len(QUESTION_FRAMES)
    held = [QUESTION_FRAMES[(2 * kind_index) % n].format(x=topics[0]),
            QUESTION_FRAMES[(2 * kind_index + 1) % n].format(x=topics[1])]  # fmt: skip
    framed = [frame.format(x=topic) for topic in topics for frame in QUESTION_FRAMES]
    return [q for q in dict.fromkeys(direct + framed) if q not in held] + held


IMAGE_QUESTIONS = {
    kind: _phrasings(direct, topics, i)
    for i, (kind, direct, topics) in enumerate([
        ("colour", ["What colour is the shape?", "Which colour is the shape?", "Which colour do you see?"],
         ("the colour of the shape", "the colour in the picture")),
        ("shape", ["What shape is this?", "Which shape do you see?", "What kind of shape is this?"],
         ("the kind of shape", "the shape in the picture")),
        ("count", ["How many shapes are there?", "How many shapes do you see?", "Count the shapes."],
         ("the number of shapes", "the count of shapes")),
        ("position", ["Where is the shape?", "On which side is the shape?", "Where is the shape placed?"],
         ("the position of the shape", "the side of the shape")),
    ])
}  # fmt: skip
VIDEO_QUESTIONS = {
    kind: _phrasings(direct, topics, i)
    for i, (kind, direct, topics) in enumerate([
        ("direction", ["Which way does the shape move?", "Where is the shape going?", "Which way is it moving?"],
         ("the direction of the shape", "the direction of motion")),
        ("colour", ["What colour is the moving shape?", "Which colour is the moving shape?"],
         ("the colour of the moving shape", "the colour in the video")),
        ("shape", ["What shape is moving?", "Which shape moves in the video?", "Name the moving shape."],
         ("the kind of moving shape", "the shape in the video")),
    ])
}  # fmt: skip
CAPTION_PROMPTS = {"image": ["Describe the image.", "What is in the picture?"],
                   "video": ["Describe the video.", "What happens in the video?"]}  # fmt: skip
# Stage-1 text rows that make the LLM say every sentence the later stages ask of it (captions, transcripts): the
# alignment stages keep the LLM frozen, so it must already be able to produce their words, as a pretrained LLM can.
SAY_PROMPTS = ["Say: {t}", "Repeat after me: {t}", "Please say this: {t}"]
# The last is held out. The training ones include questions, so that a question-shaped instruction ("Can you
# repeat that?") is not taken for a question to answer; each says "repeat" or "transcribe", which is how
# `recipes/evaluate.py` tells a transcription row (`DEFAULT_ASR_PATTERN`).
ASR_PROMPTS = ["Repeat what I said.", "Please repeat what I said.", "Transcribe what you heard.",
               "Could you repeat my words?", "Will you transcribe that for me?", "Repeat it back to me, please.",
               "Would you repeat that sentence?", "Can you repeat that?"]  # fmt: skip

_OBJECTS = {"banana": "yellow", "lemon": "yellow", "tomato": "red", "strawberry": "red", "grape": "purple",
            "plum": "purple", "leaf": "green", "frog": "green", "blueberry": "blue", "sapphire": "blue"}  # fmt: skip
_ZH_OBJECTS = {"香蕉": "yellow", "柠檬": "yellow", "西红柿": "red", "草莓": "red", "葡萄": "purple", "茄子": "purple",
               "树叶": "green", "青蛙": "green", "蓝莓": "blue", "大海": "blue"}  # fmt: skip
_OPPOSITES = [("left", "right"), ("up", "down"), ("top", "bottom"), ("big", "small"), ("hot", "cold"),
              ("day", "night"), ("fast", "slow"), ("open", "closed")]  # fmt: skip
_ZH_OPPOSITES = [("左", "右"), ("上", "下"), ("大", "小"), ("冷", "热"), ("白天", "黑夜"), ("快", "慢"), ("开", "关")]
_SIDES = {"triangle": "three", "square": "four", "diamond": "four"}
_ENGLISH_WORDS = {**{ZH_COLOURS[c]: c for c in COLOURS}, **{ZH_NUMBERS[i]: NUMBERS[i] for i in range(1, 11)}}


def _both_ways(pairs: list[tuple[str, str]]) -> list[tuple[dict[str, str], str]]:
    return [({"w": a}, b) for a, b in pairs] + [({"w": b}, a) for a, b in pairs]


# family -> (templates, [(fillers, answer)]); answers are single words so exact match is a fair score.
TEXT_FAMILIES: dict[str, tuple[list[str], list[tuple[dict[str, str], str]]]] = {
    "add": (["What is {a} plus {b}?", "How much is {a} plus {b}?", "Add {a} and {b}.",
             "What do you get when you add {a} and {b}?"],
            [({"a": NUMBERS[a], "b": NUMBERS[b]}, NUMBERS[a + b]) for a in range(6) for b in range(6) if a + b <= 10]),
    "object_colour": (["What colour is a {obj}?", "What is the colour of a {obj}?", "Tell me the colour of a {obj}.",
                       "Which colour does a {obj} have?"], [({"obj": o}, c) for o, c in _OBJECTS.items()]),
    "opposite": (["What is the opposite of {w}?", "Give me the opposite of {w}.", "Which word is the opposite of {w}?",
                  "What word means the opposite of {w}?"], _both_ways(_OPPOSITES)),
    "sides": (["How many sides does a {s} have?", "How many sides has a {s}?", "Count the sides of a {s}.",
               "What is the number of sides of a {s}?"], [({"s": s}, n) for s, n in _SIDES.items()]),
    "to_chinese": (["How do you say {w} in Chinese?", "What is {w} in Chinese?", "Translate {w} into Chinese.",
                    "What is the Chinese word for {w}?"], [({"w": e}, z) for z, e in _ENGLISH_WORDS.items()]),
    "zh_add": (["{a}加{b}等于几？", "{a}加{b}是多少？", "请计算{a}加{b}。", "{a}和{b}相加得多少？"],
               [({"a": ZH_NUMBERS[a], "b": ZH_NUMBERS[b]}, ZH_NUMBERS[a + b])
                for a in range(6) for b in range(6) if a + b <= 10]),
    "zh_object_colour": (["{obj}是什么颜色的？", "{obj}的颜色是什么？", "请说出{obj}的颜色。",
                          "{obj}通常是什么颜色？"],
                         [({"obj": o}, ZH_COLOURS[c]) for o, c in _ZH_OBJECTS.items()]),
    "zh_opposite": (["{w}的反义词是什么？", "请说出{w}的反义词。", "和{w}意思相反的词是什么？", "{w}的相反词是什么？"],
                    _both_ways(_ZH_OPPOSITES)),
    "zh_to_english": (["{w}用英语怎么说？", "{w}的英文是什么？", "把{w}翻译成英语。", "{w}翻译成英文是什么？"],
                      [({"w": z}, e) for z, e in _ENGLISH_WORDS.items()]),
}  # fmt: skip
ENGLISH_FAMILIES = [f for f in TEXT_FAMILIES if not f.startswith("zh_")]

# Background talk: statements about the speaker's day, never addressed to the assistant. Train and held-out splits
# take disjoint sentences (not templates) so held-out transcription still uses words seen in training.
_BACKGROUND_TEMPLATES = ["I will buy some {food} {time}.", "My {person} is coming home {time}.",
                         "We should water the {plant} {time}.", "The {food} is on the kitchen table.",
                         "I left my {thing} at the office.", "My {person} lost the {thing} {time}."]  # fmt: skip
_BACKGROUND_FILLERS = {"food": ["bread", "milk", "apples", "rice", "cheese"],
                       "time": ["later", "tomorrow", "tonight", "this evening", "on Sunday"],
                       "person": ["brother", "sister", "mother", "father", "friend"],
                       "plant": ["flowers", "garden", "roses", "tree"],
                       "thing": ["keys", "phone", "bag", "umbrella"]}  # fmt: skip


def templates_for(templates: list[str], heldout: bool, n_heldout: int = 1) -> list[str]:
    """The held-out (last `n_heldout`) or the training phrasings of a list."""
    return templates[-n_heldout:] if heldout else templates[:-n_heldout]


def background_sentences() -> list[str]:
    """Every background sentence: each template with each filling, sorted."""
    return sorted({t.format(**dict(zip(_BACKGROUND_FILLERS, c))) for t in _BACKGROUND_TEMPLATES
                   for c in _combinations(t)})  # fmt: skip


def _combinations(template: str) -> list[tuple[str, ...]]:
    """Every filling of `template`, as tuples over all filler slots in `_BACKGROUND_FILLERS` order."""
    import itertools

    slots = list(_BACKGROUND_FILLERS)
    choices = [_BACKGROUND_FILLERS[s] if "{" + s + "}" in template else [""] for s in slots]
    return list(itertools.product(*choices))


def covering_sentences(sentences: list[str], n: int) -> list[str]:
    """`n` of `sentences`, those bringing unseen words first, so the training talk spans the whole filler vocabulary
    that the held-out sentences draw from."""
    seen: set[str] = set()
    first, rest = [], []
    for sentence in sentences:
        words = set(sentence.lower().rstrip(".").split())
        (first if words - seen else rest).append(sentence)
        seen |= words
    return (first + rest)[:n]


# Ways of asking the assistant, for spoken questions only: a filler or a courtesy before the question, a terse
# question about a picture, or a pause inside the question ("|", spoken as silence). The held-out split asks with
# the last entries of each list, never heard in training.
ASK_PREFIXES = ["Um, ", "Uh, ", "Excuse me, ", "Hey, ", "Hello, ", "So, ", "Okay, ", "Sorry, ", "Hmm, ", "Well, "]
ASK_SUFFIXES = [" Please.", " Thanks.", " Thank you."]
HELDOUT_ASK_STYLES = 3  # of the prefixes; one of the suffixes
TERSE_IMAGE_QUESTIONS = {"colour": ["What colour?", "Colour?", "The colour?"],
                         "shape": ["What shape?", "Shape?", "Which shape?"],
                         "count": ["How many?", "How many of them?", "Count?"],
                         "position": ["Where?", "Which side?", "Where is it?"]}  # fmt: skip
ASK_STYLES = ("prefix", "suffix", "pause")


def styled_question(question: str, style: str, rng: random.Random, heldout: bool) -> str:
    """`question` asked in `style` (one of `ASK_STYLES`), from the training or the held-out styles."""
    if style == "prefix":
        prefix = rng.choice(templates_for(ASK_PREFIXES, heldout, HELDOUT_ASK_STYLES))
        return prefix + question[0].lower() + question[1:]
    if style == "suffix":
        return question + rng.choice(templates_for(ASK_SUFFIXES, heldout))
    if style == "pause":
        words = question.split()
        if len(words) < 3:
            return question
        cut = rng.randint(1, len(words) - 1)
        return " ".join(words[:cut]) + " | " + " ".join(words[cut:])
    raise ValueError(f"Unknown ask style {style!r}; expected one of {ASK_STYLES}.")


def spoken_words(text: str) -> str:
    """What a styled text says: its pause marks dropped (the transcript of its clip)."""
    return " ".join(text.replace("|", " ").split())
