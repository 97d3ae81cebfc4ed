import json

import numpy as np
import pytest
from PIL import Image

from fgaseg_hf.visualization import (
    class_colours,
    coverage,
    render_overlay,
    save_label_map,
    save_overlay,
)

NAMES = ["sky", "building", "road", "tree", "person", "car"]


def blend(rgb, colour, alpha):
    """The documented blend of render_overlay, for one pixel."""
    a = round(alpha * 256)
    return [(int(p) * (256 - a) + int(c) * a + 128) // 256 for p, c in zip(rgb, colour)]


def quadrant_map(height, width):
    """Classes 0, 2, 5 only: 0 on the top half, 2 bottom-left, 5 bottom-right."""
    label_map = np.zeros((height, width), dtype=np.int64)
    label_map[height // 2 :, : width // 2] = 2
    label_map[height // 2 :, width // 2 :] = 5
    return label_map


def test_colours_distinct_and_deterministic():
    colours = class_colours(1000)
    assert colours.shape == (1000, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 1000
    np.testing.assert_array_equal(colours, class_colours(1000))
    np.testing.assert_array_equal(colours[:10], class_colours(10))
    assert class_colours(0).shape == (0, 3)
    # neighbours differ clearly, not by a rounding step
    assert np.abs(colours[1:].astype(int) - colours[:-1]).sum(axis=1).min() > 60


def test_coverage_hand_made():
    label_map = np.array([[0, 0, 1], [2, 7, -1]])
    np.testing.assert_allclose(coverage(label_map, 4), [2 / 6, 1 / 6, 1 / 6, 0.0])
    assert coverage(label_map, 4).dtype == np.float64
    with pytest.raises(ValueError, match="empty"):
        coverage(np.zeros((0, 3), dtype=int), 4)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (1, 1), (10, 20, 30)),
        Image.new("RGB", (37, 23), (200, 100, 50)),
        Image.new("RGB", (640, 480), (90, 90, 90)),
        Image.new("P", (64, 48), 3),
        Image.new("L", (50, 40), 128),
        Image.new("RGBA", (30, 20), (1, 2, 3, 4)),
    ],
    ids=["1x1", "37x23", "640x480", "palette", "gray", "rgba"],
)
def test_overlay_keeps_size_and_mode(image):
    label_map = quadrant_map(image.height, image.width)
    overlay, legend = render_overlay(image, label_map, NAMES)
    assert overlay.size == image.size
    assert overlay.mode == "RGB"
    assert legend


def test_legend_data():
    label_map = np.zeros((40, 100), dtype=np.int32)
    label_map[:, 60:] = 4  # 40 %
    label_map[:, 90:] = 1  # 10 %, leaving 4 at 30 % and 0 at 60 %
    _, legend = render_overlay(Image.new("RGB", (100, 40)), label_map, NAMES)
    assert [entry["id"] for entry in legend] == [0, 4, 1]
    assert [entry["name"] for entry in legend] == ["sky", "person", "building"]
    np.testing.assert_allclose([entry["fraction"] for entry in legend], [0.6, 0.3, 0.1])
    assert sum(entry["fraction"] for entry in legend) == pytest.approx(1.0)
    colours = class_colours(len(NAMES))
    for entry in legend:
        assert entry["colour"] == colours[entry["id"]].tolist()
        assert all(type(c) is int for c in entry["colour"])
    json.dumps(legend)  # plain Python types only


def test_pixel_far_from_legend_is_blended():
    image = Image.new("RGB", (640, 480), (30, 60, 90))
    label_map = quadrant_map(480, 640)
    for alpha in (0.5, 0.3):
        overlay, _ = render_overlay(image, label_map, NAMES, alpha=alpha)
        colour = class_colours(len(NAMES))[5]
        assert list(overlay.getpixel((600, 450))) == blend((30, 60, 90), colour, alpha)
    # a boundary pixel is darker than the blended fill next to it
    assert sum(overlay.getpixel((319, 450))) < sum(overlay.getpixel((310, 450)))


def test_legend_is_drawn_in_corner():
    image = Image.new("RGB", (640, 480), (30, 60, 90))
    label_map = quadrant_map(480, 640)
    overlay = np.asarray(render_overlay(image, label_map, NAMES)[0])
    expected = blend((30, 60, 90), class_colours(len(NAMES))[0], 0.5)
    assert (overlay[5:30, 5:30] != expected).any()


def test_mismatched_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        render_overlay(Image.new("RGB", (37, 23)), np.zeros((37, 23), dtype=int), NAMES)
    with pytest.raises(ValueError, match="2-D"):
        render_overlay(Image.new("RGB", (4, 3)), np.zeros((3, 4, 1), dtype=int), NAMES)


@pytest.mark.parametrize("bad_id", [-1, len(NAMES), 1000])
def test_out_of_range_ids_raise(bad_id):
    label_map = np.zeros((23, 37), dtype=int)
    label_map[5, 5] = bad_id
    with pytest.raises(ValueError, match="class ids"):
        render_overlay(Image.new("RGB", (37, 23)), label_map, NAMES)


def test_float_label_map_raises():
    with pytest.raises(ValueError, match="integer"):
        render_overlay(Image.new("RGB", (4, 3)), np.zeros((3, 4)), NAMES)


def test_save_overlay_round_trips_legend(tmp_path):
    overlay, legend = render_overlay(Image.new("RGB", (37, 23)), quadrant_map(23, 37), NAMES)
    path = tmp_path / "overlay.png"
    save_overlay(path, overlay, legend)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert json.loads(saved.text["legend"]) == legend
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(overlay))


@pytest.mark.parametrize(("high", "mode"), [(255, "L"), (1000, "I;16"), (65535, "I;16")])
def test_save_label_map_round_trips(tmp_path, high, mode):
    label_map = np.random.default_rng(0).integers(0, high + 1, size=(23, 37))
    label_map[0, 0] = high
    path = tmp_path / "labels.png"
    save_label_map(path, label_map)
    with Image.open(path) as saved:
        assert saved.mode == mode
        np.testing.assert_array_equal(np.asarray(saved).astype(np.int64), label_map)


def test_save_label_map_rejects_negative(tmp_path):
    with pytest.raises(ValueError, match="negative"):
        save_label_map(tmp_path / "labels.png", np.array([[0, -1]]))
