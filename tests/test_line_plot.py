"""Tests of the Pillow line plots (`tfcv.plots`)."""

import math

import numpy as np
import pytest
from PIL import Image

from tfcv import plots
from tfcv.spherical import line_plot as module

LABELS = ["32", "16", "8", "4", "2"]


def _bn_gn():
    positions = list(range(5))
    bn = plots.Series(
        "BN", positions, [3.0, 3.6, 5.2, 8.1, 12.0], [0.2, 0.2, 0.4, 0.6, 0.9]
    )
    gn = plots.Series(
        "GN", positions, [3.5, 3.4, 3.6, 3.5, 3.6], [0.2, 0.1, 0.2, 0.2, 0.3]
    )
    return bn, gn


def _colours(image):
    pixels = np.asarray(image).reshape(-1, 3).astype(np.int64)
    codes = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
    return {(int(c) >> 16, int(c) >> 8 & 255, int(c) & 255) for c in codes}


@pytest.mark.parametrize("count", [1, 2])
def test_linear_plot_is_rgb_of_the_expected_size(count):
    panels = [(f"panel {k}", list(_bn_gn())) for k in range(count)]

    image = plots.line_plot(panels, "batch size", "error (%)")

    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == (28 + 440 * count, 360)
    small = plots.line_plot(panels, "x", "y", panel_size=(300, 200))
    assert small.size == (28 + 300 * count, 200)


def test_series_get_distinct_colours():
    image = plots.line_plot([("t", list(_bn_gn()))], "x", "y")

    colours = _colours(image)
    assert module.PALETTE[0] in colours
    assert module.PALETTE[1] in colours
    assert module.PALETTE[2] not in colours


@pytest.mark.parametrize(
    "y, y_error",
    [
        ([1.0, math.nan, 3.0], [0.1, 0.1, math.nan]),
        ([math.nan, math.nan, math.nan], None),
        ([4.0, 4.0, 4.0], None),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([-2.5, -2.5, -2.5], None),
        ([7.0, math.inf, 7.0], [0.5, 0.5, 0.5]),
    ],
)
def test_nan_and_constant_values_are_drawn(y, y_error):
    line = plots.Series("s", [1, 2, 3], y, y_error)

    image = plots.line_plot([("t", [line])], "x", "y")

    assert image.size == (468, 360)


def test_a_single_point_is_drawn_in_its_colour():
    line = plots.Series("only", [0.5], [1.2345e-7], [1e-8])

    image = plots.line_plot([("t", [line])], "x", "y")

    assert module.PALETTE[0] in _colours(image)


def test_categorical_x_with_batch_size_labels():
    image = plots.line_plot(
        [("ResNet-50", list(_bn_gn()))],
        "batch size per device",
        "error (%)",
        x_tick_labels=LABELS,
    )

    assert image.size == (468, 360)
    assert module.PALETTE[1] in _colours(image)


def test_categorical_positions_outside_the_labels_are_refused():
    line = plots.Series("s", [0, 5], [1.0, 2.0])

    with pytest.raises(ValueError, match="outside 0 .. 4"):
        plots.line_plot([("t", [line])], "x", "y", x_tick_labels=LABELS)


def test_series_of_different_lengths_are_refused():
    line = plots.Series("s", [0, 1, 2], [1.0, 2.0, 3.0], [0.1])

    with pytest.raises(ValueError, match="different lengths"):
        plots.line_plot([("t", [line])], "x", "y")


def test_linear_ticks_are_nice_and_hold_the_error_bars():
    bn, gn = _bn_gn()

    axis = module._linear_axis([bn, gn])

    labels = [label for _, label, _ in axis.ticks]
    assert labels == ["2", "4", "6", "8", "10", "12", "14"]
    assert axis.low <= 3.0 - 0.2 and axis.high >= 12.0 + 0.9
    constant = module._linear_axis([plots.Series("c", [1], [4.0])])
    assert constant.low < 4.0 < constant.high
    large = module._linear_axis([plots.Series("c", [1, 2], [2.5e6, 3.1e6])])
    assert {label for _, label, _ in large.ticks} >= {"2.5e+06", "3.0e+06"}


def test_legend_moves_away_from_the_data():
    frame = (0, 0, 200, 100)
    top_left = [(20, 10), (30, 12), (40, 15)]

    u, v = module._legend_corner(frame, (60, 36), top_left)

    assert u > 100 and v < 50
    assert module._legend_corner(frame, (60, 36), []) == (10, 10)


def test_log_plot_still_works():
    lines = [
        plots.Series("b = 4", [1, 2, 3], [1e-7, 3e-6, 2e-5], [1e-8] * 3),
        plots.Series("b = 8", [1, 2, 3], [2e-7, math.nan, 9e-6]),
    ]

    image = plots.log_line_plot([("a", lines), ("b", lines)], "x", "y")
    same = plots.line_plot([("a", lines), ("b", lines)], "x", "y", log_y=True)

    assert image.mode == "RGB" and image.size == (908, 360)
    assert np.array_equal(np.asarray(image), np.asarray(same))
    assert module.PALETTE[1] in _colours(image)
    with pytest.raises(ValueError, match="no positive finite"):
        plots.log_line_plot([("a", [plots.Series("b", [1], [0.0])])], "x", "y")
