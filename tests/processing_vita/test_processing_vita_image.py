"""VitaImageProcessor: the tile rule against an independent implementation of the original, real fixtures, colour
modes, pixel values against the original recipe (PIL resize + crop + normalise), and clear errors."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from processing_vita.image_processing_vita import VitaImageProcessor, find_tile_grid, get_num_tiles

from .media import fixture_path


def reference_closest_grid(width, height, image_size=448, min_num=1, max_num=12):
    """The original rule, written out as the reference describes it (set of grids sorted by area, tie rule)."""
    ratios = set()
    for n in range(min_num, max_num + 1):
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if min_num <= i * j <= max_num:
                    ratios.add((i, j))
    ratios = sorted(ratios, key=lambda r: r[0] * r[1])
    target = width / height
    best_diff, best = float("inf"), (1, 1)
    for r in ratios:
        diff = abs(target - r[0] / r[1])
        if diff < best_diff:
            best_diff, best = diff, r
        elif diff == best_diff:
            if width * height > 0.5 * image_size * image_size * r[0] * r[1]:
                best = r
    return best


def original_recipe_tiles(image, size, max_num=12):
    """Tiles as the original produced them: PIL resize of the whole image, crop per tile, thumbnail, normalise."""
    cols, rows = reference_closest_grid(image.width, image.height, size, 1, max_num)
    resized = image.resize((cols * size, rows * size))
    tiles = []
    for i in range(cols * rows):
        box = ((i % cols) * size, (i // cols) * size, (i % cols + 1) * size, (i // cols + 1) * size)
        tiles.append(resized.crop(box))
    if len(tiles) > 1:
        tiles.append(image.resize((size, size)))
    arr = np.stack([np.asarray(t, dtype=np.float32) / 255.0 for t in tiles])
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(((arr - mean) / std).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize(
    "size",
    [
        (448, 448),
        (896, 448),
        (448, 896),
        (1250, 1000),
        (1500, 1000),
        (2000, 1000),
        (4000, 3000),
        (3000, 4000),
        (100, 5000),
        (5000, 100),
        (10, 10),
        (1, 1),
        (2466, 1694),
        (2633, 717),
        (1920, 1080),
        (1080, 1920),
        (700, 500),
    ],
)
def test_tile_grid_matches_reference_rule_for_common_shapes(size):
    assert find_tile_grid(*size) == reference_closest_grid(*size)


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 6000),
    height=st.integers(1, 6000),
    max_num=st.integers(1, 12),
    image_size=st.sampled_from([56, 224, 448]),
)
def test_tile_grid_matches_reference_rule_for_random_shapes(width, height, max_num, image_size):
    assert find_tile_grid(width, height, image_size, 1, max_num) == reference_closest_grid(
        width, height, image_size, 1, max_num
    )


def test_exact_tie_prefers_larger_grid_only_for_large_images():
    # Aspect 1.5 is equally far from 1:1 and 2:1; the 2:1 grid wins only when the image is big enough.
    assert find_tile_grid(150, 100, 448, 1, 2) == reference_closest_grid(150, 100, 448, 1, 2) == (1, 1)
    assert find_tile_grid(1500, 1000, 448, 1, 2) == reference_closest_grid(1500, 1000, 448, 1, 2) == (2, 1)


def test_demo_photo_tiles_by_the_rule_with_thumbnail_last():
    path = fixture_path("demo1.jpg")
    image = Image.open(path)
    cols, rows = reference_closest_grid(*image.size)
    out = VitaImageProcessor()(str(path))
    assert out["image_num_patches"].tolist() == [cols * rows + 1] == [7]
    assert out["pixel_values"].shape == (7, 3, 448, 448)


def test_rgba_logo_tiles_as_four_by_one_plus_thumbnail():
    path = fixture_path("vita_log2.png")
    image = Image.open(path)
    assert image.mode == "RGBA"
    cols, rows = reference_closest_grid(*image.size)
    assert (cols, rows) == (4, 1)
    out = VitaImageProcessor(image_size=56, resize_backend="pil")(str(path))
    assert out["image_num_patches"].tolist() == [5]
    expected = original_recipe_tiles(image.convert("RGB"), 56)
    torch.testing.assert_close(out["pixel_values"], expected, atol=1e-5, rtol=0)


def test_pixel_values_equal_original_recipe_on_random_photo():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 530, 3), dtype=np.uint8))
    out = VitaImageProcessor(image_size=56, resize_backend="pil")(image)
    torch.testing.assert_close(out["pixel_values"], original_recipe_tiles(image, 56), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "RGBA", "1", "I;16"])
def test_any_colour_mode_becomes_three_channel_rgb(mode):
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    image = (
        base.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65535, (90, 120), dtype=np.uint16))
    )
    out = VitaImageProcessor(image_size=56, resize_backend="pil")(image)
    assert out["pixel_values"].shape[1] == 3
    assert torch.isfinite(out["pixel_values"]).all()
    if mode in ("L", "P", "CMYK", "LA", "RGBA", "1"):
        expected = original_recipe_tiles(image.convert("RGB"), 56)
        torch.testing.assert_close(out["pixel_values"], expected, atol=1e-5, rtol=0)


def test_numpy_hwc_chw_and_float_inputs_match_pil():
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (70, 150, 3), dtype=np.uint8)
    proc = VitaImageProcessor(image_size=56)
    ref = proc(Image.fromarray(arr))["pixel_values"]
    torch.testing.assert_close(proc(arr)["pixel_values"], ref)
    torch.testing.assert_close(proc(arr.transpose(2, 0, 1))["pixel_values"], ref)
    torch.testing.assert_close(proc(arr.astype(np.float32) / 255.0)["pixel_values"], ref)
    torch.testing.assert_close(proc(torch.from_numpy(arr.transpose(2, 0, 1).copy()))["pixel_values"], ref)


def test_batch_concatenates_tiles_and_counts_per_image():
    proc = VitaImageProcessor(image_size=56, max_dynamic_patch=6)
    images = [Image.new("RGB", (56, 56)), Image.new("RGB", (300, 100)), [Image.new("RGB", (100, 300))]]
    out = proc(images)
    counts = [get_num_tiles(56, 56, 56, 1, 6), get_num_tiles(300, 100, 56, 1, 6), get_num_tiles(100, 300, 56, 1, 6)]
    assert out["image_num_patches"].tolist() == counts
    assert out["pixel_values"].shape == (sum(counts), 3, 56, 56)


def test_single_tile_gets_no_thumbnail():
    out = VitaImageProcessor(image_size=56, max_dynamic_patch=1)(Image.new("RGB", (500, 100)))
    assert out["image_num_patches"].tolist() == [1]


def test_corrupt_and_missing_image_files_raise_clear_value_errors(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="could not be decoded"):
        VitaImageProcessor()(str(bad))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match="could not be decoded"):
        VitaImageProcessor()(str(truncated))
    with pytest.raises(ValueError, match="does not exist"):
        VitaImageProcessor()(str(tmp_path / "missing.png"))


def test_wrong_image_types_and_dtypes_raise_value_errors():
    with pytest.raises(ValueError, match="expected a PIL image"):
        VitaImageProcessor()(12345)
    with pytest.raises(ValueError, match="dtype"):
        VitaImageProcessor()(np.zeros((10, 10, 3), dtype=np.complex64))
    with pytest.raises(ValueError, match="shape"):
        VitaImageProcessor()(np.zeros((10, 10, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match="max_dynamic_patch"):
        VitaImageProcessor(min_dynamic_patch=3, max_dynamic_patch=2)


def test_save_and_load_keep_tiling_limits(tmp_path):
    proc = VitaImageProcessor(image_size=56, min_dynamic_patch=2, max_dynamic_patch=6, use_thumbnail=False)
    proc.save_pretrained(tmp_path)
    loaded = VitaImageProcessor.from_pretrained(tmp_path)
    assert (loaded.image_size, loaded.min_dynamic_patch, loaded.max_dynamic_patch, loaded.use_thumbnail) == (
        56,
        2,
        6,
        False,
    )


def test_torch_resize_backend_stays_within_two_grey_levels_of_the_original():
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).resize((1000, 560))
    fast = VitaImageProcessor(image_size=56)(image)["pixel_values"]
    exact = original_recipe_tiles(image, 56)
    assert fast.shape == exact.shape
    # Normalised units: one grey level is 1 / (255 * std) <= 0.0175.
    level = 1 / (255 * min(VitaImageProcessor().image_std))
    difference = (fast - exact).abs()
    assert difference.max() <= 2 * level + 1e-6
    assert (difference > 1e-5).float().mean() < 0.02


def test_unknown_resize_backend_is_rejected():
    with pytest.raises(ValueError, match="resize_backend is 'cv2'"):
        VitaImageProcessor(resize_backend="cv2")
