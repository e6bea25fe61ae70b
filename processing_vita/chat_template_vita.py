"""The chat formats of the VITA releases and the jinja chat template built from one of them.

VITA-1.0 frames a conversation as `system:{SYS}</s>\\nuser:{Q}</s>\\nbot:`, VITA-1.5 as ChatML
(`<|im_start|>system\\n{SYS}<|im_end|>\\n<|im_start|>user\\n...`); both choose one of three system prompts by the
modality of the conversation (text, image, video) and open every answer with a state token, 1.0 followed by a space,
1.5 glued to the text. `build_chat_template` writes that as the jinja template transformers' `apply_chat_template`
runs, so a processor carries its release's format in its saved `chat_template.jinja`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .tokenization_vita import checked_state_tokens

logger = logging.getLogger(__name__)

_BASE_PROMPT = (
    "You are an AI robot and your name is VITA. \n"
    "- You are a multimodal large language model developed by the open source community. "
    "Your aim is to be helpful, honest and harmless. \n"
    "- You support the ability to communicate fluently and answer user questions in multiple languages of the user's "
    "choice. \n"
    "- If the user corrects the wrong answer you generated, you will apologize and discuss the correct answer with "
    "the user."
)
SYSTEM_PROMPTS = {
    "lang": _BASE_PROMPT,
    "image": _BASE_PROMPT
    + " \n- You must answer the question strictly according to the content of the image given by the user, and it is "
    "strictly forbidden to answer the question without the content of the image. Please note that you are seeing the "
    "image, not the video.",
    "video": _BASE_PROMPT
    + " \n- You must answer the question strictly according to the content of the video given by the user, and it is "
    "strictly forbidden to answer the question without the content of the video. Please note that you are seeing the "
    "video, not the image.",
}


def _jinja_str(s: str) -> str:
    # Jinja string literals understand Python escapes; write newlines and quotes escaped.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# How each release frames a conversation: the system block, what separates turns, a turn's opening (by role) and
# closing, and what joins an answer's state token to its text.
CHAT_FORMATS = {
    "vita-1.0": {
        "system": ("system:", "</s>"),
        "between": "\n",
        "open": {"user": "user:", "assistant": "bot:"},
        "close": "</s>",
        "state_separator": " ",
    },
    "vita-1.5": {
        "system": ("<|im_start|>system\n", "<|im_end|>"),
        "between": "\n",
        "open": {"user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"},
        "close": "<|im_end|>",
        "state_separator": "",
    },
}


# Media blocks of a user turn come first (image -> "<image>\n", video -> "<video>\n", audio -> "<audio>") in their
# order, then the text blocks, as the original prompts put media before the question.
def build_chat_template(
    system_prompts: dict[str, str] | None = None,
    state_tokens: Mapping[str, str] | None = None,
    chat_format: str = "vita-1.0",
) -> str:
    """The jinja chat template of `chat_format` ("vita-1.0": `system:...</s>\\nuser:...</s>\\nbot:`; "vita-1.5":
    ChatML) with `system_prompts` (keys "lang", "image", "video"; default the released ones) as the modality's
    default system prompt; a system message in the conversation overrides it.

    An assistant message may carry `"state"` (a `VitaState` name): its answer is then written after that state's
    token (`state_tokens`, default VITA-1.0's), as the model was trained to answer.
    """
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"chat_format {chat_format!r}; expected one of {sorted(CHAT_FORMATS)}")
    frame = CHAT_FORMATS[chat_format]
    prompts = checked_system_prompts(system_prompts)
    tokens = checked_state_tokens(state_tokens)
    token_map = "{" + ", ".join(f"{_jinja_str(name)}: {_jinja_str(token)}" for name, token in tokens.items()) + "}"
    opening = "{" + ", ".join(f"{_jinja_str(role)}: {_jinja_str(text)}" for role, text in frame["open"].items()) + "}"
    system_open, system_close = (_jinja_str(part) for part in frame["system"])
    between, close = _jinja_str(frame["between"]), _jinja_str(frame["close"])
    separator = _jinja_str(frame["state_separator"])
    return (
        "{%- set state_tokens = " + token_map + " -%}"
        "{%- set opening = " + opening + " -%}"
        "{%- set ns = namespace(image=false, video=false, system=none) -%}"
        "{%- for m in messages -%}"
        "{%- if m['content'] is string -%}"
        "{%- if '<video>' in m['content'] -%}{%- set ns.video = true -%}{%- endif -%}"
        "{%- if '<image>' in m['content'] -%}{%- set ns.image = true -%}{%- endif -%}"
        "{%- else -%}{%- for b in m['content'] -%}"
        "{%- if b['type'] == 'video' -%}{%- set ns.video = true -%}"
        "{%- elif b['type'] in ('image', 'image_url') -%}{%- set ns.image = true -%}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- if m['role'] == 'system' and ns.system is none -%}"
        "{%- if m['content'] is string -%}{%- set ns.system = m['content'] -%}"
        "{%- else -%}{%- set ns.system = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
        " | join('') -%}{%- endif -%}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if ns.system is none -%}"
        "{%- if ns.video -%}{%- set ns.system = " + _jinja_str(prompts["video"]) + " -%}"
        "{%- elif ns.image -%}{%- set ns.system = " + _jinja_str(prompts["image"]) + " -%}"
        "{%- else -%}{%- set ns.system = " + _jinja_str(prompts["lang"]) + " -%}{%- endif -%}"
        "{%- endif -%}"
        "{{- " + system_open + " + ns.system + " + system_close + " -}}"
        "{%- for m in messages if m['role'] != 'system' -%}"
        "{{- " + between + " + opening.get(m['role'], m['role'] + ':') -}}"
        "{%- if m['role'] == 'assistant' and m['state'] is defined and m['state'] -%}"
        "{{- state_tokens[m['state'] | string] + (" + separator + " if m['content'] else '') -}}{%- endif -%}"
        "{%- if m['content'] is string -%}{{- m['content'] -}}"
        "{%- else -%}"
        "{%- for b in m['content'] -%}"
        "{%- if b['type'] in ('image', 'image_url') -%}{{- '<image>\\n' -}}"
        "{%- elif b['type'] == 'video' -%}{{- '<video>\\n' -}}"
        "{%- elif b['type'] == 'audio' -%}{{- '<audio>' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- for b in m['content'] if b['type'] == 'text' -%}{{- b['text'] -}}{%- endfor -%}"
        "{%- endif -%}"
        "{{- " + close + " -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + between + " + opening['assistant'] -}}{%- endif -%}"
    )


def checked_system_prompts(system_prompts: dict[str, str] | None) -> dict[str, str]:
    if system_prompts is None:
        return dict(SYSTEM_PROMPTS)
    if set(system_prompts) != set(SYSTEM_PROMPTS) or not all(isinstance(v, str) for v in system_prompts.values()):
        raise ValueError(
            f"system_prompts has keys {sorted(system_prompts)}; expected a string for each of {sorted(SYSTEM_PROMPTS)}"
        )
    return dict(system_prompts)


CHAT_TEMPLATE = build_chat_template()


__all__ = ["CHAT_FORMATS", "CHAT_TEMPLATE", "SYSTEM_PROMPTS", "build_chat_template", "checked_system_prompts"]
