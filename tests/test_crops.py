from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blastscope.crops import (
    CropCutter,
    CropError,
    background_fill,
    cell_crop,
    crop_tensor,
    crops_to_uint8,
    extract_crops,
    uint8_to_crops,
)

BCCD_IMAGES = Path(__file__).parent / "data" / "bccd" / "images"


@pytest.fixture
def noise_image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)


def test_crop_at_native_pixel_size_is_the_image_window(noise_image):
    # 21 px window at 0.5 µm/px: crop pixel (i, j) is image pixel (centre - 10 + i, ...).
    centres = np.array([[50, 60], [10, 20], [30.0, 90]])
    crops = extract_crops(
        noise_image, centres, pixel_size_um=0.5, window_um=10.5, out_pixel_size_um=0.5
    )
    assert crops.shape == (3, 21, 21, 3)
    assert crops.dtype == np.uint8
    for crop, (y, x) in zip(crops, centres.astype(int), strict=True):
        np.testing.assert_array_equal(crop, noise_image[y - 10 : y + 11, x - 10 : x + 11])


def test_crop_keeps_physical_size_when_resampling():
    # A disc of radius 20 px at 0.25 µm/px is 10 µm across; at 0.5 µm/px it spans ~20 crop px.
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 <= 20**2
    image = np.full((200, 200, 3), 230, np.uint8)
    image[disc] = (60, 20, 120)
    crop = extract_crops(
        image, np.array([[100, 100]]), pixel_size_um=0.25, window_um=24, out_pixel_size_um=0.5
    )[0]
    assert crop.shape == (48, 48, 3)
    dark = crop[..., 0] < 145
    width = dark.any(axis=0).sum()
    assert 19 <= width <= 22
    assert abs(dark.sum() - np.pi * 10**2) < 25
    rows, cols = np.nonzero(dark)
    assert abs(rows.mean() - 23.5) < 0.25  # still centred (the window's centre is at 23.5)
    assert abs(cols.mean() - 23.5) < 0.25


def test_zoom_out_shows_a_cell_shrunk_about_the_same_centre():
    """zoom_out=2 covers twice the window in the same crop: the 10 µm disc spans ~10 crop px."""
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 <= 20**2
    image = np.full((200, 200, 3), 230, np.uint8)
    image[disc] = (60, 20, 120)
    cutter = CropCutter(image, pixel_size_um=0.25, window_um=24, out_pixel_size_um=0.5)
    crops = cutter.cut(np.array([[100, 100], [100, 100]]), zoom_out=np.array([1.0, 2.0]))
    widths = [(crop[0] < 145 / 255).any(axis=0).sum().item() for crop in crops]
    assert 19 <= widths[0] <= 22
    assert 9 <= widths[1] <= 11
    rows, cols = np.nonzero((crops[1, 0] < 145 / 255).numpy())
    assert abs(rows.mean() - 23.5) < 0.5
    assert abs(cols.mean() - 23.5) < 0.5
    with pytest.raises(CropError, match="zoom_out"):
        cutter.cut(np.array([[100, 100]]), zoom_out=np.array([0.5]))


def test_downsampled_crops_are_anti_aliased():
    # A one-pixel checkerboard at 0.1 µm/px averages to grey at 0.5 µm/px instead of aliasing.
    yy, xx = np.mgrid[:400, :400]
    board = np.where((yy + xx) % 2 == 0, 255, 0).astype(np.uint8)[..., None].repeat(3, axis=-1)
    crop = extract_crops(
        board, np.array([[200.0, 200.0]]), pixel_size_um=0.1, window_um=16, out_pixel_size_um=0.5
    )[0]
    assert crop.min() >= 120
    assert crop.max() <= 135


def test_border_crops_are_padded_with_background_not_black(noise_image):
    image = np.full((60, 60, 3), (235, 220, 225), np.uint8)
    crops = extract_crops(
        image, np.array([[0, 0], [59, 59]]), pixel_size_um=0.5, window_um=20, out_pixel_size_um=0.5
    )
    assert crops.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(crops[0], np.broadcast_to([235, 220, 225], (40, 40, 3)))
    np.testing.assert_array_equal(crops[1], np.broadcast_to([235, 220, 225], (40, 40, 3)))


def test_given_fill_colour_pads_outside_the_image(noise_image):
    crops = extract_crops(
        noise_image,
        np.array([[0, 0]]),
        pixel_size_um=0.5,
        window_um=10.5,
        out_pixel_size_um=0.5,
        fill=(10, 20, 30),
    )
    np.testing.assert_array_equal(crops[0, :10, :10], np.broadcast_to([10, 20, 30], (10, 10, 3)))
    np.testing.assert_array_equal(crops[0, 10:, 10:], noise_image[:11, :11])


def test_default_fill_is_the_median_background_colour():
    image = np.full((50, 50, 3), (240, 230, 220), np.uint8)
    labels = np.zeros((50, 50), np.int32)
    image[:40], labels[:40] = (90, 40, 120), 1  # a cell covers most of the field
    np.testing.assert_array_equal(background_fill(image, labels), [240, 230, 220])
    np.testing.assert_array_equal(background_fill(image), [90, 40, 120])


def test_mask_to_cell_fills_other_cells_and_keeps_background():
    image = np.full((40, 40, 3), 200, np.uint8)
    labels = np.zeros((40, 40), np.int32)
    image[10:20, 10:20], labels[10:20, 10:20] = 50, 1
    image[10:20, 22:30], labels[10:20, 22:30] = 100, 2
    crops = extract_crops(
        image,
        np.array([[15, 15], [15, 26]]),
        pixel_size_um=1.0,
        window_um=31,
        out_pixel_size_um=1.0,
        labels=labels,
        cell_labels=np.array([1, 2]),
        mask_to_cell=True,
        fill=(255, 255, 255),
    )
    first = crops[0]  # crop pixel (i, j) = image pixel (i, j), window 0..30
    assert (first[10:20, 10:20] == 50).all()
    assert (first[10:20, 22:30] == 255).all()  # cell 2 is masked out
    assert (first[25:, :] == 200).all()  # background kept
    second = crops[1]  # window starts at column 11
    assert (second[10:20, 11:19] == 100).all()
    assert (second[10:20, :9] == 255).all()


def test_chunked_extraction_equals_one_chunk(noise_image):
    rng = np.random.default_rng(1)
    centres = rng.uniform(-5, 125, (37, 2))
    whole = extract_crops(
        noise_image, centres, pixel_size_um=0.4, window_um=12, out_pixel_size_um=0.5
    )
    chunked = extract_crops(
        noise_image, centres, pixel_size_um=0.4, window_um=12, out_pixel_size_um=0.5, chunk_size=5
    )
    np.testing.assert_array_equal(whole, chunked)


def test_crop_tensor_matches_extract_crops_on_real_smear():
    image = np.asarray(Image.open(BCCD_IMAGES / "BloodImage_00000.jpg").convert("RGB"))
    centres = np.array([[240.0, 320.0], [5.0, 630.0], [470.0, 3.0]])
    kwargs = {"pixel_size_um": 0.1, "window_um": 6.4, "out_pixel_size_um": 0.133}
    tensor = crop_tensor(image, centres, **kwargs)
    assert tensor.shape == (3, 3, 48, 48)
    assert tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0
    assert float(tensor.max()) <= 1
    np.testing.assert_array_equal(crops_to_uint8(tensor), extract_crops(image, centres, **kwargs))
    back = uint8_to_crops(extract_crops(image, centres, **kwargs))
    assert torch.allclose(back, tensor, atol=0.5 / 255 + 1e-6)


def test_no_cells_give_an_empty_crop_array(noise_image):
    crops = extract_crops(
        noise_image, np.zeros((0, 2)), pixel_size_um=0.5, window_um=24, out_pixel_size_um=0.5
    )
    assert crops.shape == (0, 48, 48, 3)


def test_crop_errors_name_the_fix(noise_image):
    with pytest.raises(CropError, match=r"shape \(Y, X, 3\).*to_rgb_uint8"):
        extract_crops(
            noise_image[..., 0], np.zeros((1, 2)), pixel_size_um=1, window_um=8, out_pixel_size_um=1
        )
    with pytest.raises(CropError, match="pixel_size_um must be a positive number"):
        extract_crops(
            noise_image, np.zeros((1, 2)), pixel_size_um=0, window_um=8, out_pixel_size_um=1
        )
    with pytest.raises(CropError, match="mask_to_cell=True needs the labels image"):
        extract_crops(
            noise_image,
            np.zeros((1, 2)),
            pixel_size_um=1,
            window_um=8,
            out_pixel_size_um=1,
            mask_to_cell=True,
        )
    with pytest.raises(CropError, match="labels image has shape"):
        CropCutter(
            noise_image,
            pixel_size_um=1,
            window_um=8,
            out_pixel_size_um=1,
            labels=np.zeros((5, 5), np.int32),
        )
    with pytest.raises(CropError, match="less than one pixel wide"):
        extract_crops(
            noise_image, np.zeros((1, 2)), pixel_size_um=1, window_um=0.1, out_pixel_size_um=1
        )
    with pytest.raises(CropError, match=r"centres_yx must have shape \(N, 2\)"):
        extract_crops(
            noise_image, np.zeros((4, 3)), pixel_size_um=1, window_um=8, out_pixel_size_um=1
        )


@pytest.mark.parametrize("pixel_size_um", [0.5, 0.24, 0.1])  # pooling 1, 2 and 5 pixels
def test_one_cells_crop_from_its_neighbourhood_equals_the_crop_from_the_field(pixel_size_um):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    labels = np.zeros((300, 260), np.int32)
    labels[100:140, 90:130] = 7
    labels[0:30, 0:25] = 3
    fill = background_fill(image, labels)
    for centre, label in (((120.3, 110.6), 7), ((5.0, 4.0), 3), ((299.0, 259.0), 7)):
        expected = extract_crops(
            image,
            np.array([centre]),
            pixel_size_um=pixel_size_um,
            window_um=24.0,
            out_pixel_size_um=0.5,
            labels=labels,
            cell_labels=np.array([label]),
            mask_to_cell=True,
            fill=fill,
        )[0]
        crop = cell_crop(
            image,
            centre,
            pixel_size_um=pixel_size_um,
            window_um=24.0,
            out_pixel_size_um=0.5,
            labels=labels,
            cell_label=label,
            mask_to_cell=True,
            fill=fill,
        )
        # the same pixels up to float32 rounding of the sampling grid (a neighbourhood's
        # normalised coordinates differ from the field's in the last bits)
        assert np.abs(crop.astype(int) - expected).max() <= 1
        assert (crop == expected).mean() > 0.95
