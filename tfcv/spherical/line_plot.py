"""Line plots with a logarithmic y-axis, drawn with Pillow alone.

Enough of a plotting library for the figures of the `tfcv spherical`
commands (e.g. Spherical CNNs Fig. 3): side-by-side panels, each with
integer x ticks, decade y ticks, one coloured line with markers and
error bars per series, and a legend.

Deviations from the paper:
  None.
"""

import dataclasses
import math
from typing import Optional
from typing import Sequence

from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

# Line colours, in the order series are given (colour-blind safe).
PALETTE = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
)
_GREY = (200, 200, 200)
_PALE = (232, 232, 232)
_INK = (30, 30, 30)
# Margins of a panel: left (tick labels), top (title), right, bottom.
_MARGINS = (78, 34, 16, 52)


@dataclasses.dataclass(frozen=True)
class Series:
    """One line: `label`, points `(x[k], y[k])`, optional `±y_error[k]`."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    y_error: Optional[Sequence[float]] = None


def log_line_plot(
    panels: Sequence[tuple],
    x_label: str,
    y_label: str,
    panel_size: tuple = (440, 360),
) -> Image.Image:
    """Draws panels side by side; y is logarithmic, each panel its own range.

    Args:
      panels: `(title, [Series, ...])` per panel, left to right; at least
        one, each with at least one series.
      x_label: text under every panel's x-axis.
      y_label: text beside the y-axis, written upwards. The default font
        has Latin letters only (no Greek).
      panel_size: `(width, height)` of one panel in pixels (default
        440 × 360).

    Returns:
      An RGB `PIL.Image.Image`.

    Raises:
      ValueError: if `panels` or a panel's series list is empty, or a
        series has no positive finite value to put on a log axis.

    Example:
      >>> line = Series("b = 8", [1, 2], [1e-7, 2e-7])
      >>> log_line_plot([("linear", [line])], "layers", "Delta").size
      (468, 360)
    """
    if not panels or any(not series for _, series in panels):
        raise ValueError(
            f"`panels` must be a non-empty list of (title, series) with at "
            f"least one series each, received {len(panels)} panel(s)."
        )
    gutter = 28  # room for the rotated y label
    width, height = panel_size
    image = Image.new("RGB", (gutter + width * len(panels), height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)

    # The y label, written upwards in the left gutter.
    label = Image.new("RGB", (height, gutter), "white")
    ImageDraw.Draw(label).text(
        (height // 2, gutter // 2), y_label, fill=_INK, font=font, anchor="mm"
    )
    image.paste(label.rotate(90, expand=True), (0, 0))

    for index, (title, series) in enumerate(panels):
        box = (gutter + index * width, 0, width, height)
        _draw_panel(draw, box, title, series, x_label, font, small)
    return image


def _draw_panel(draw, box, title, series, x_label, font, small):
    left, top, width, height = box
    x0, y0 = left + _MARGINS[0], top + _MARGINS[1]
    x1, y1 = left + width - _MARGINS[2], top + height - _MARGINS[3]

    # Ranges: integer x ticks; y in whole decades around the data.
    xs = sorted({float(x) for line in series for x in line.x})
    low, high = _decades(series)
    x_low, x_high = xs[0] - 0.25, xs[-1] + 0.25

    def to_pixel(x, y):
        y = min(max(y, 10.0**low), 10.0**high)
        u = x0 + (x - x_low) / (x_high - x_low) * (x1 - x0)
        v = y1 - (math.log10(y) - low) / (high - low) * (y1 - y0)
        return u, v

    # Grid, ticks and tick labels.
    for decade in range(low, high + 1):
        _, v = to_pixel(xs[0], 10.0**decade)
        draw.line([(x0, v), (x1, v)], fill=_GREY)
        draw.text((x0 - 6, v), f"1e{decade}", _INK, small, anchor="rm")

        # Within short ranges, lighter lines at 2 and 5 times the decade.
        for factor in (2, 5) if high - low <= 2 and decade < high else ():
            _, v = to_pixel(xs[0], factor * 10.0**decade)
            draw.line([(x0, v), (x1, v)], fill=_PALE)
            draw.text((x0 - 6, v), f"{factor}e{decade}", _INK, small, "rm")
    for x in xs:
        u, _ = to_pixel(x, 10.0**low)
        draw.line([(u, y1), (u, y1 + 5)], fill=_INK)
        draw.text((u, y1 + 8), f"{x:g}", _INK, small, anchor="mt")
    draw.rectangle([x0, y0, x1, y1], outline=_INK)
    draw.text(((x0 + x1) / 2, top + 8), title, _INK, font, anchor="mt")
    draw.text(((x0 + x1) / 2, y1 + 28), x_label, _INK, font, anchor="mt")

    # Lines, markers, error bars, then the legend in the top-left corner.
    for number, line in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        points = [to_pixel(x, y) for x, y in zip(line.x, line.y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        errors = line.y_error or [0.0] * len(points)
        for (u, v), x, y, error in zip(points, line.x, line.y, errors):
            if error > 0:
                _, top_v = to_pixel(x, y + error)
                _, bottom_v = to_pixel(x, max(y - error, 1e-300))
                draw.line([(u, top_v), (u, bottom_v)], fill=colour)
            draw.ellipse([u - 4, v - 4, u + 4, v + 4], fill=colour)
        legend_v = y0 + 10 + 18 * number
        draw.line([(x0 + 10, legend_v), (x0 + 34, legend_v)], colour, 3)
        draw.text((x0 + 40, legend_v), line.label, _INK, small, anchor="lm")


def _decades(series) -> tuple:
    """Whole decades `(low, high)`, `low < high`, holding every value."""
    values = [
        float(y)
        for line in series
        for y in line.y
        if math.isfinite(float(y)) and float(y) > 0
    ]
    if not values:
        raise ValueError(
            f"series {[line.label for line in series]} have no positive "
            f"finite value to draw on a logarithmic axis."
        )
    low = math.floor(math.log10(min(values)))
    high = math.ceil(math.log10(max(values)))
    return low, max(high, low + 1)
