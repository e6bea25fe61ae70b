"""Image processor of VITA: InternVL dynamic tiling (1..12 tiles of 448 plus a thumbnail) and ImageNet normalisation.

The tiling rule is the original's (`dynamic_preprocess` and `find_closest_aspect_ratio`). transformers' GotOcr2
`get_optimal_tiled_canvas` is close but does not match the original exactly: it orders grids of equal area differently
(the original sorts a Python `set`, GotOcr2 a nested loop), which changes the winner on exact aspect-ratio ties, and it
resizes with torchvision instead of PIL. So the rule is written here and tested against an independent implementation
of the reference rule.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Above this size the thumbnail resize runs in a helper thread (it costs about half of the grid resize).
_PARALLEL_THUMBNAIL_PIXELS = 2_000_000
_EXECUTOR: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vita-thumbnail")
    return _EXECUTOR


# Bounds on the tiling arguments: each tile is image_seq_length LLM tokens (256 for the released model) and
# 3 * image_size^2 floats, so 128 tiles of 448 px are 32768 tokens (a whole Mixtral context) and 300 MB of pixels.
MAX_DYNAMIC_PATCH_LIMIT = 128
MAX_IMAGE_SIZE = 1024
# Default bound on an image's pixels: decoding and tiling cost about 10 bytes a pixel, so 64 megapixels (an 8000 x 8000
# photo) stay under 1 GB; PIL's own bomb check only refuses beyond 179 megapixels. Configurable per processor.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


def checked_int(name: str, value: Any, low: int, high: int, hint: str) -> int:
    """`value` as an int in [low, high]; a clear `ValueError` naming `name`, the value and the range otherwise."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or not low <= value <= high:
        raise ValueError(f"{name} is {value!r}; expected an integer in [{low}, {high}]. {hint}")
    return int(value)


def check_tiling(image_size: Any, min_num: Any, max_num: Any) -> tuple[int, int, int]:
    """The tiling arguments as ints, checked: 1 <= image_size <= MAX_IMAGE_SIZE and
    1 <= min_num <= max_num <= MAX_DYNAMIC_PATCH_LIMIT (each bound keeps time and memory bounded)."""
    image_size = checked_int("image_size", image_size, 1, MAX_IMAGE_SIZE, "It is the tile side in pixels (448).")
    max_num = checked_int(
        "max_dynamic_patch", max_num, 1, MAX_DYNAMIC_PATCH_LIMIT, "It is the most tiles per image (12 released)."
    )
    min_num = checked_int(
        "min_dynamic_patch", min_num, 1, max_num, f"It must not exceed max_dynamic_patch={max_num} (1 released)."
    )
    return image_size, min_num, max_num


def _first_met_grids(min_num: int, max_num: int) -> Any:
    """The distinct grids of the original comprehension (n in min..max, columns and rows in 1..n), in the order it
    first meets them: at n = min_num every grid with both sides <= n, then for each larger n the grids whose longer
    side is n ((1, n) .. (k, n), then (n, 1) .. (n, n)). O(max log max) instead of the comprehension's O(max^3)."""
    for n in range(min_num, max_num + 1):
        if n == min_num:
            yield from ((i, j) for i in range(1, n + 1) for j in range(1, n + 1) if min_num <= i * j <= max_num)
            continue
        low = max(1, -(-min_num // n))
        yield from ((i, n) for i in range(low, min(n - 1, max_num // n) + 1))
        yield from ((n, j) for j in range(low, min(n, max_num // n) + 1))


@lru_cache(maxsize=64)
def candidate_grids(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """All (columns, rows) grids with min_num <= columns*rows <= max_num, in the original's order.

    The original builds a Python `set` and sorts it by area with a stable sort, so grids of equal area keep the set's
    iteration order. That order is deterministic in CPython (small-int tuple hashes are not randomised) and it decides
    exact ties, so it is reproduced rather than replaced by a "nicer" order: the set is filled in the order the
    original's comprehension first inserts each grid (repeated inserts change nothing), which gives the same table.
    """
    grids: set[tuple[int, int]] = set()
    for grid in _first_met_grids(min_num, max_num):
        grids.add(grid)
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


@lru_cache(maxsize=4096)
def find_tile_grid(
    width: int, height: int, image_size: int = 448, min_num: int = 1, max_num: int = 12
) -> tuple[int, int]:
    """(columns, rows) grid for a `width` x `height` image by VITA/InternVL's closest-aspect-ratio rule.

    A strictly smaller difference between width/height and columns/rows wins; on an exact tie the later (larger) grid
    wins only when the image area exceeds half the area of that grid's tiles.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"Image size is {width}x{height}; expected positive width and height.")
    image_size, min_num, max_num = check_tiling(image_size, min_num, max_num)
    aspect_ratio = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def get_num_tiles(
    width: int, height: int, image_size: int = 448, min_num: int = 1, max_num: int = 12, use_thumbnail: bool = True
) -> int:
    """Tiles produced for one image (grid tiles plus the thumbnail when the grid has more than one tile)."""
    cols, rows = find_tile_grid(width, height, image_size, min_num, max_num)
    n = cols * rows
    return n + 1 if use_thumbnail and n > 1 else n


def _array_to_pil(arr: np.ndarray, index: int) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or 0 in arr.shape:
        raise ValueError(
            f"Image {index} is an array of shape {arr.shape}; expected (H, W), (H, W, C) or (C, H, W) with C in "
            "1, 3, 4 and H, W >= 1."
        )
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"Image {index} contains NaN or inf; expected finite pixel values.")
        # Float images are taken as [0, 1] (the transformers convention) unless they are clearly 0..255.
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"Image {index} has dtype {arr.dtype} with values in {low}..{high}; expected 0..255 (8-bit). Scale "
                "16-bit pixels to 8 bits (x // 257) or pass floats in [0, 1]."
            )
        arr = arr.astype(np.uint8)
    else:
        raise ValueError(
            f"Image {index} has dtype {arr.dtype}; expected uint8, integers in 0..255 or floats in [0, 1]."
        )
    return Image.fromarray(arr)


def _check_pixels(image: Image.Image, index: int, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"Image {index}{name} is {width}x{height} pixels; expected at least 1x1.")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"Image {index}{name} is {width}x{height} = {width * height:,} pixels; expected at most "
            f"max_image_pixels={max_pixels:,} (decoding and tiling cost about 10 bytes a pixel). Downscale the "
            "image, or raise max_image_pixels on the image processor."
        )


def _checked_max_pixels(value: Any) -> int | None:
    if value is None:
        return None
    return checked_int("max_image_pixels", value, 1, 2**62, "Pass a pixel count such as 64_000_000, or None.")


def load_image(image: Any, index: int = 0, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open a path, bytes, numpy array, torch tensor or PIL image and convert it to 8-bit RGB.

    Images of more than `max_pixels` pixels (None: no bound) are refused; files before they are decoded."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        name = "<bytes>" if isinstance(image, (bytes, bytearray)) else str(image)
        if not isinstance(image, (bytes, bytearray)) and not Path(image).is_file():
            raise ValueError(f"Image {index}: file {name!r} does not exist; expected a path to an image file.")
        try:
            with warnings.catch_warnings():
                # Our own bound (max_pixels) decides below, with a message that names it.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                pil = Image.open(source)
            _check_pixels(pil, index, f" ({name!r})", max_pixels)
            # Decoding is lazy; force it here so truncated files fail with a clear message.
            pil.load()
        except Image.DecompressionBombError as err:
            raise ValueError(
                f"Image {index}: {name!r} is refused by PIL as a decompression bomb ({err}); expected at most "
                f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (PIL's limit). Downscale the image."
            ) from err
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(
                f"Image {index}: {name!r} could not be decoded ({err}); expected a readable image file "
                "(JPEG, PNG, ...)."
            ) from err
        # No EXIF rotation: the original feeds the stored pixel orientation, and the tile grid depends on it.
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, torch.Tensor):
        arr = image.detach().cpu()
        pil = _array_to_pil(arr.numpy() if arr.dtype != torch.bfloat16 else arr.float().numpy(), index)
    elif isinstance(image, np.ndarray):
        pil = _array_to_pil(image, index)
    else:
        raise ValueError(
            f"Image {index} has type {type(image).__name__}; expected a PIL image, a path, bytes, a numpy array or a "
            "torch tensor."
        )
    _check_pixels(pil, index, "", max_pixels)
    return to_rgb(pil)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as the original's `Image.open(...).convert("RGB")`: alpha is dropped, not composited."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale would be clipped by PIL's convert; rescale to 8 bits first.
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max(initial=0.0)
        arr = arr / (65535.0 if hi > 255 else 255.0) if hi > 1.0 else arr
        image = Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def flatten_images(images: Any) -> list[Any]:
    """Flatten one image, a list of images or a per-sample nested list into a flat list (empty samples vanish)."""
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        flat: list[Any] = []
        for item in images:
            flat.extend(flatten_images(item))
        return flat
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def _tile_with_torch(image: Image.Image, image_size: int, cols: int, rows: int, with_thumb: bool) -> torch.Tensor:
    """The grid and the thumbnail with torch's antialiased bicubic resize on uint8: (n_tiles, 3, S, S)."""
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8
    grid = F.interpolate(pixels, size=(rows * image_size, cols * image_size), mode="bicubic", antialias=True)
    # (1, 3, rows*S, cols*S) -> (rows*cols, 3, S, S), row-major like the original's crops.
    tiles = grid[0].view(3, rows, image_size, cols, image_size).permute(1, 3, 0, 2, 4)
    tiles = tiles.reshape(-1, 3, image_size, image_size)
    if with_thumb:
        thumb = F.interpolate(pixels, size=(image_size, image_size), mode="bicubic", antialias=True)
        tiles = torch.cat([tiles, thumb], dim=0)
    return tiles


class VitaImageProcessor(BaseImageProcessor):
    r"""Dynamic-resolution image processor of VITA (InternVL tiling).

    Each image is converted to RGB, a (columns, rows) grid with `min_dynamic_patch` <= columns*rows <=
    `max_dynamic_patch` is chosen by the closest aspect ratio (original tie rule), the whole image is resized to
    (columns*image_size, rows*image_size) with bicubic resampling and cut row-major into tiles; with more than one tile
    and `use_thumbnail`, an `image_size` x `image_size` resize of the whole image is appended last. Tiles are scaled
    to [0, 1] and normalised with ImageNet mean/std.

    `resize_backend`: "torch" (default) resizes with torch's antialiased bicubic kernel on uint8, about twice as fast
    as PIL on large photos (a 12-megapixel photo tiles in well under 150 ms) and within 2 grey levels of PIL on a
    fraction of a percent of the pixels; "pil" reproduces the original preprocessing bit for bit (PIL bicubic).

    Bounds keep time and memory finite for any input: `image_size` <= 1024, `max_dynamic_patch` <= 128 tiles, and
    `max_image_pixels` (default 64 megapixels; None for no bound) refuses larger images with a `ValueError` naming the
    limit, files before they are decoded.

    Returns `pixel_values` (all tiles of all images, (N_tiles, 3, image_size, image_size)) and `image_num_patches`
    (tiles per image).
    """

    model_input_names = ["pixel_values", "image_num_patches"]

    def __init__(
        self,
        image_size: int = 448,
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        use_thumbnail: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        resize_backend: str = "torch",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if resize_backend not in ("torch", "pil"):
            raise ValueError(f"resize_backend is {resize_backend!r}; expected 'torch' (fast) or 'pil' (bit-exact).")
        self.resize_backend = resize_backend
        self.image_size, self.min_dynamic_patch, self.max_dynamic_patch = check_tiling(
            image_size, min_dynamic_patch, max_dynamic_patch
        )
        self.max_image_pixels = _checked_max_pixels(max_image_pixels)
        self.use_thumbnail = bool(use_thumbnail)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Tiles for an image of this size (transformers' name for it, used by vLLM-style token budgeting)."""
        kw = images_kwargs or {}
        return get_num_tiles(
            width,
            height,
            kw.get("image_size", self.image_size),
            kw.get("min_dynamic_patch", self.min_dynamic_patch),
            kw.get("max_dynamic_patch", self.max_dynamic_patch),
            kw.get("use_thumbnail", self.use_thumbnail),
        )

    def tile_image(
        self, image: Image.Image, image_size: int, min_num: int, max_num: int, use_thumbnail: bool
    ) -> torch.Tensor:
        """Tiles of one RGB image as uint8 (n_tiles, 3, S, S), row-major, thumbnail last."""
        cols, rows = find_tile_grid(image.width, image.height, image_size, min_num, max_num)
        with_thumb = use_thumbnail and cols * rows > 1
        if self.resize_backend == "torch":
            return _tile_with_torch(image, image_size, cols, rows, with_thumb)
        thumb_job = None
        if with_thumb and image.width * image.height >= _PARALLEL_THUMBNAIL_PIXELS:
            # PIL releases the GIL while resampling: the thumbnail of a big photo is computed beside the grid,
            # which keeps results bit-identical (splitting one resize into boxes does not).
            thumb_job = _executor().submit(image.resize, (image_size, image_size), Image.Resampling.BICUBIC)
        resized = image.resize((cols * image_size, rows * image_size), Image.Resampling.BICUBIC)
        grid = torch.from_numpy(np.array(resized))
        # (rows*S, cols*S, 3) -> (rows*cols, 3, S, S): one copy instead of cropping each tile through PIL.
        tiles = grid.view(rows, image_size, cols, image_size, 3).permute(0, 2, 4, 1, 3)
        tiles = tiles.reshape(-1, 3, image_size, image_size)
        if with_thumb:
            thumb = (
                thumb_job.result()
                if thumb_job is not None
                else image.resize((image_size, image_size), Image.Resampling.BICUBIC)
            )
            tiles = torch.cat([tiles, torch.from_numpy(np.array(thumb)).permute(2, 0, 1).unsqueeze(0)], dim=0)
        return tiles

    def normalize_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> float32 ImageNet-normalised tiles: x / 255 / std - mean / std in two in-place ops."""
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        return tiles.to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)

    def preprocess(
        self,
        images: Any,
        image_size: int | None = None,
        min_dynamic_patch: int | None = None,
        max_dynamic_patch: int | None = None,
        use_thumbnail: bool | None = None,
        return_tensors: str | None = "pt",
        max_image_pixels: int | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tile and normalise one image or a (possibly nested) list of images."""
        image_size, min_num, max_num = check_tiling(
            self.image_size if image_size is None else image_size,
            self.min_dynamic_patch if min_dynamic_patch is None else min_dynamic_patch,
            self.max_dynamic_patch if max_dynamic_patch is None else max_dynamic_patch,
        )
        max_pixels = self.max_image_pixels if max_image_pixels is None else _checked_max_pixels(max_image_pixels)
        use_thumbnail = self.use_thumbnail if use_thumbnail is None else use_thumbnail
        flat = flatten_images(images)
        if not flat:
            raise ValueError("No images were given; expected at least one image.")
        all_tiles = []
        num_patches = []
        for index, image in enumerate(flat):
            tiles = self.tile_image(load_image(image, index, max_pixels), image_size, min_num, max_num, use_thumbnail)
            all_tiles.append(tiles)
            num_patches.append(int(tiles.shape[0]))
        pixel_values = self.normalize_tiles(torch.cat(all_tiles, dim=0))
        data = {"pixel_values": pixel_values, "image_num_patches": torch.tensor(num_patches, dtype=torch.long)}
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


# save_pretrained then writes auto_map and copies these files, so AutoX(..., trust_remote_code=True) can load them.
VitaImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_DYNAMIC_PATCH_LIMIT",
    "MAX_IMAGE_SIZE",
    "VitaImageProcessor",
    "candidate_grids",
    "check_tiling",
    "checked_int",
    "find_tile_grid",
    "get_num_tiles",
    "load_image",
]
