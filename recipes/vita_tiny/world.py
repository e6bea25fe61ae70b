"""The closed little world of vita-tiny's data: colours, shapes, counts, positions and directions, the English and
Chinese names of its numbers and colours, and the pictures, videos and captions drawn from it.

Design: the vita-tiny issue (generated images and videos of coloured shapes, one- or two-word answers). Everything is
tiny on purpose: 5 colours, 4 shapes, counts 1-4, 4 positions, 4 directions, 56 px images (one tile of the tiny
vision tower). `recipes/vita_tiny/data.py` draws the media of its rows here; `recipes/vita_tiny/pretrain_vision.py`
reads the same vocabularies, and tests draw pictures afresh with `draw_shapes_image`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SIZE = 56
# 8 frames at 2 fps: VITA samples video at 1 fps (at least 4 frames), so a 4 s clip gives it frames 0, 2, 4 and 6,
# four distinct positions along the path. At 4 fps the same 8 frames last 2 s and the sampler repeats frame 0 three
# times next to frame 4: a trained vita-tiny then told the axis of motion but guessed its sign.
VIDEO_FRAMES, VIDEO_FPS = 8, 2
COLOURS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 220), "yellow": (235, 200, 20),
           "purple": (140, 50, 180)}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = ("left", "right", "top", "bottom")
DIRECTIONS = ("left", "right", "up", "down")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ZH_NUMBERS = "零一二三四五六七八九十"
ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色"}


def _draw_shape(draw: Any, shape: str, cx: float, cy: float, size: float, fill: tuple[int, int, int]) -> None:
    h = size / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}.")


_POSITION_CENTRES = {"left": (14, 28), "right": (42, 28), "top": (28, 14), "bottom": (28, 42)}
_CELL_CENTRES = [(14, 14), (42, 14), (14, 42), (42, 42)]


def draw_shapes_image(colour: str, shape: str, count: int, position: str | None, rng: np.random.Generator) -> Any:
    """A 56 px PIL image of `count` same-coloured shapes on a light grey ground; one shape sits at `position`, several
    take distinct quadrants (so counting and position never conflict)."""
    from PIL import Image, ImageDraw

    if count not in (1, 2, 3, 4):
        raise ValueError(f"count={count}; expected 1, 2, 3 or 4.")
    grey = int(rng.integers(225, 256))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    # Shapes span one to two 14 px patches each way: a smaller shape inside one patch leaves the tiny vision tower
    # its colour but hardly its outline (a trained vita-tiny named shapes at chance level when they were 10-18 px).
    if count == 1:
        cx, cy = _POSITION_CENTRES[position]
        centres, size = [(cx, cy)], int(rng.integers(18, 25))
    else:
        cells = rng.permutation(4)[:count]
        centres, size = [_CELL_CENTRES[c] for c in cells], int(rng.integers(16, 22))
    for cx, cy in centres:
        jx, jy = rng.integers(-2, 3, 2)
        _draw_shape(draw, shape, cx + jx, cy + jy, size, COLOURS[colour])
    return image


def write_shapes_video(path: Path, colour: str, shape: str, direction: str, rng: np.random.Generator) -> None:
    """An 8-frame, 4 s, 56 px mpeg4 clip of one shape crossing the frame in `direction`."""
    import av
    from PIL import Image, ImageDraw

    size = int(rng.integers(18, 25))  # as a single shape in a picture
    lane = 28 + int(rng.integers(-8, 9))
    start, stop = 12 + int(rng.integers(0, 4)), 44 - int(rng.integers(0, 4))
    steps = np.linspace(start, stop, VIDEO_FRAMES)
    if direction in ("left", "up"):
        steps = steps[::-1]
    grey = int(rng.integers(225, 256))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = IMAGE_SIZE, IMAGE_SIZE, "yuv420p"
        for step in steps:
            image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
            cx, cy = (step, lane) if direction in ("left", "right") else (lane, step)
            _draw_shape(ImageDraw.Draw(image), shape, cx, cy, size, COLOURS[colour])
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())


def image_caption(meta: dict[str, Any]) -> str:
    """ "two red circles", "one blue square on the left"."""
    plural = "s" if meta["count"] > 1 else ""
    text = f"{NUMBERS[meta['count']]} {meta['colour']} {meta['shape']}{plural}"
    return text + " " + _position_phrase(meta["position"]) if meta["position"] else text


def video_caption(meta: dict[str, Any]) -> str:
    return f"a {meta['colour']} {meta['shape']} moving {meta['direction']}"


def _position_phrase(position: str) -> str:
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"
