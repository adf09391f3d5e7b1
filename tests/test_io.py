import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from blastscope.io import (
    PIXEL_SIZE_RANGE_UM,
    ImageInputError,
    check_pixel_size,
    read_field,
    to_rgb_uint8,
)


def test_rgb_uint8_passes_through_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    converted, notices = to_rgb_uint8(image)
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, image)
    assert notices == []


def test_grayscale_is_replicated_with_a_notice():
    converted, notices = to_rgb_uint8(np.full((20, 30), 100, dtype=np.uint8))
    assert converted.shape == (20, 30, 3)
    assert "Single-channel image" in notices[0]


def test_rgba_drops_alpha_with_a_notice():
    image = np.zeros((20, 20, 4), dtype=np.uint8)
    image[..., 0] = 200
    converted, notices = to_rgb_uint8(image)
    assert converted.shape == (20, 20, 3)
    assert int(converted[0, 0, 0]) == 200
    assert "alpha channel was dropped" in notices[0]


def test_channel_first_is_moved_last():
    converted, notices = to_rgb_uint8(np.ones((3, 20, 24), dtype=np.uint8))
    assert converted.shape == (20, 24, 3)
    assert "Channel-first" in notices[0]


def test_sixteen_bit_is_scaled_to_eight_bit():
    image = np.full((20, 20, 3), 65535, dtype=np.uint16)
    image[0, 0] = 0
    converted, notices = to_rgb_uint8(image)
    assert converted.max() == 255
    assert converted.min() == 0
    assert "16-bit" in notices[0]


def test_twelve_bit_data_in_sixteen_bit_container_keeps_its_range():
    image = np.full((20, 20, 3), 4095, dtype=np.uint16)
    converted, notices = to_rgb_uint8(image)
    assert converted.max() == 255
    assert "12-bit" in notices[0]


def test_float_in_unit_range_is_scaled():
    converted, notices = to_rgb_uint8(np.full((20, 20, 3), 0.5))
    assert int(converted[0, 0, 0]) == 128
    assert "[0, 1]" in notices[0]


def test_float_outside_unit_range_is_stretched():
    image = np.linspace(-5, 300, 20 * 20 * 3).reshape(20, 20, 3)
    converted, notices = to_rgb_uint8(image)
    assert converted.min() == 0
    assert converted.max() == 255
    assert "stretched" in notices[0]


def test_stack_is_refused_with_the_fix():
    with pytest.raises(ImageInputError, match=r"looks like a stack.*pick one plane"):
        to_rgb_uint8(np.ones((5, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="looks like a stack"):
        to_rgb_uint8(np.ones((7, 32, 32), dtype=np.uint8))


def test_two_channel_image_names_the_accepted_shapes():
    with pytest.raises(ImageInputError, match=r"2 channels") as raised:
        to_rgb_uint8(np.ones((32, 32, 2), dtype=np.uint8))
    message = str(raised.value)
    for shape in ("(Y, X)", "(Y, X, 3)", "(Y, X, 4)"):
        assert shape in message
    assert "image[0]" not in message


def test_all_zero_image_is_refused():
    with pytest.raises(ImageInputError, match="empty"):
        to_rgb_uint8(np.zeros((32, 32, 3), dtype=np.uint8))


def test_nan_and_negative_and_bool_images_are_refused():
    with pytest.raises(ImageInputError, match="NaN"):
        to_rgb_uint8(np.full((32, 32, 3), np.nan))
    with pytest.raises(ImageInputError, match="negative"):
        to_rgb_uint8(np.full((32, 32, 3), -3, dtype=np.int16))
    with pytest.raises(ImageInputError, match="Unsupported pixel type"):
        to_rgb_uint8(np.ones((32, 32, 3), dtype=bool))


def test_tiny_image_is_refused():
    with pytest.raises(ImageInputError, match="too small"):
        to_rgb_uint8(np.ones((4, 4, 3), dtype=np.uint8))


def test_pixel_size_is_read_from_ome_tiff(tmp_path):
    path = tmp_path / "field.ome.tif"
    image = np.full((64, 48, 3), 200, dtype=np.uint8)
    tifffile.imwrite(
        path, image, photometric="rgb", metadata={"PhysicalSizeX": 0.25, "axes": "YXS"}
    )
    field = read_field(path)
    assert field.image.shape == (64, 48, 3)
    assert field.pixel_size_um == pytest.approx(0.25)
    assert len(field.sha256) == 64


def test_pixel_size_is_read_from_tiff_resolution_tags(tmp_path):
    path = tmp_path / "field.tif"
    # 40,000 pixels per centimetre = 0.25 µm per pixel
    tifffile.imwrite(
        path,
        np.full((32, 32, 3), 180, dtype=np.uint8),
        photometric="rgb",
        resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )
    assert read_field(path).pixel_size_um == pytest.approx(0.25)


def test_given_pixel_size_wins_over_metadata_with_a_notice(tmp_path):
    path = tmp_path / "field.tif"
    tifffile.imwrite(
        path,
        np.full((32, 32, 3), 180, dtype=np.uint8),
        photometric="rgb",
        resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )
    field = read_field(path, pixel_size_um=0.5)
    assert field.pixel_size_um == 0.5
    assert "instead of the file's 0.25" in field.notices[0]


def test_jpeg_has_no_pixel_size(bccd_fields):
    field = read_field(bccd_fields[0])
    assert field.pixel_size_um is None
    assert field.image.shape == (480, 640, 3)


def test_missing_and_corrupt_files_name_the_problem(tmp_path):
    with pytest.raises(ImageInputError, match="No image file"):
        read_field(tmp_path / "absent.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageInputError, match=r"Could not read broken\.png"):
        read_field(broken)


def test_out_of_range_pixel_size_is_refused(bccd_fields):
    with pytest.raises(ImageInputError, match=r"between 0\.02 and 5 µm per pixel.*got 250"):
        read_field(bccd_fields[0], pixel_size_um=250.0)


def test_pixel_sizes_in_the_light_microscope_range_pass_numbers_and_numeric_strings():
    assert PIXEL_SIZE_RANGE_UM == (0.02, 5.0)
    assert check_pixel_size(0.25) == 0.25
    assert check_pixel_size(np.float32(0.5)) == pytest.approx(0.5)
    assert check_pixel_size(" 0.25 ") == 0.25
    assert check_pixel_size(5) == 5.0
    assert isinstance(check_pixel_size("1e-1"), float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10.0, r"between 0\.02 and 5 µm per pixel .*; got 10\."),
        (1e6, r"got 1e\+06"),
        (250.0, "nanometres"),
        (0.00025, "millimetres"),
        (0.0, "between 0.02 and 5"),
        (-0.2, "between 0.02 and 5"),
        (float("nan"), "between 0.02 and 5"),
        (float("inf"), "between 0.02 and 5"),
        ("0.25 um", "not a number"),
        ("abc", "not a number"),
        (True, "not a number"),
        ([0.25], "not a number"),
    ],
)
def test_pixel_sizes_outside_the_range_or_not_numbers_are_refused(value, message):
    with pytest.raises(ImageInputError, match=message) as raised:
        check_pixel_size(value, "pixel_size_um")
    assert "pixel_size_um" in str(raised.value)


@pytest.mark.parametrize(
    ("size", "unit", "shown"), [(0.25, "mm", "250 µm"), (1e9, "µm", "1e+09 µm")]
)
def test_an_implausible_metadata_pixel_size_is_ignored_with_a_notice(tmp_path, size, unit, shown):
    path = tmp_path / "field.ome.tif"
    image = np.full((64, 48, 3), 200, dtype=np.uint8)
    metadata = {"PhysicalSizeX": size, "PhysicalSizeXUnit": unit, "axes": "YXS"}
    tifffile.imwrite(path, image, photometric="rgb", metadata=metadata)
    field = read_field(path)
    assert field.pixel_size_um is None
    (notice,) = field.notices
    assert shown in notice
    assert "--pixel-size" in notice
    given = read_field(path, pixel_size_um=0.25)
    assert given.pixel_size_um == 0.25


def test_a_multi_page_tiff_uses_the_first_page_and_says_so(tmp_path):
    path = tmp_path / "pages.tif"
    first = np.full((40, 40, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, first, photometric="rgb")
    for value in (120, 60):
        tifffile.imwrite(
            path, np.full((30, 30, 3), value, np.uint8), photometric="rgb", append=True
        )
    field = read_field(path)
    np.testing.assert_array_equal(field.image, first)
    (notice,) = field.notices
    assert "3 images" in notice
    assert "image 1 of 3" in notice


def test_a_tiff_page_stack_uses_the_first_page_and_says_so(tmp_path):
    path = tmp_path / "stack.tif"
    pages = np.stack([np.full((40, 40, 3), value, np.uint8) for value in (200, 120, 60, 30)])
    tifffile.imwrite(path, pages, photometric="rgb")
    field = read_field(path)
    np.testing.assert_array_equal(field.image, pages[0])
    assert any("image 1 of 4" in notice for notice in field.notices)


def test_empty_and_damaged_images_say_so_without_suggesting_a_plugin(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"empty\.png.*is empty \(0 bytes\)") as raised:
        read_field(empty)
    assert "pip install" not in str(raised.value)
    iio.imwrite(tmp_path / "whole.png", np.full((40, 40, 3), 200, np.uint8))
    data = (tmp_path / "whole.png").read_bytes()
    for name, content in (("cut.png", data[: len(data) // 2]), ("junk.jpg", b"hello" * 20)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageInputError, match="damaged") as raised:
            read_field(tmp_path / name)
        assert "pip install" not in str(raised.value)
        assert name in str(raised.value)
