"""Line plots with a linear or logarithmic y-axis, drawn with Pillow alone.

Enough of a plotting library for the figures of the `tfcv spherical`
commands (e.g. Spherical CNNs Fig. 3) and of Group Normalization (Fig. 1,
error against batch size): side-by-side panels, each with numeric or
categorical x ticks, "nice" linear y ticks (steps of 1, 2 or 5 × 10^k) or
decade y ticks, one coloured line with markers and capped error bars per
series, and a legend in the corner that covers the fewest points.

Non-finite values are left out: such a point gets no marker, and the line
breaks there.

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
_GUTTER = 28  # room for the rotated y label, left of the first panel
_ROW = 18  # height of one legend entry
_CAP = 4  # half width of an error bar's cap


@dataclasses.dataclass(frozen=True)
class Series:
    """One line: `label`, points `(x[k], y[k])`, optional `±y_error[k]`."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    y_error: Optional[Sequence[float]] = None


def line_plot(
    panels: Sequence[tuple],
    x_label: str,
    y_label: str,
    *,
    log_y: bool = False,
    x_tick_labels: Optional[Sequence[str]] = None,
    panel_size: tuple = (440, 360),
) -> Image.Image:
    """Draws panels side by side, each with its own y range.

    Args:
      panels: `(title, [Series, ...])` per panel, left to right; at least
        one, each with at least one series. NaN or infinite values are
        skipped (no marker, a break in the line); so are NaN errors.
      x_label: text under every panel's x-axis.
      y_label: text beside the y-axis, written upwards. The default font
        has Latin letters only (no Greek).
      log_y: whether y is logarithmic (decade ticks, a range of whole
        decades) rather than linear (ticks at 1, 2 or 5 × 10^k steps, a
        range padded around the values and their error bars, starting no
        lower than 0 if no value is negative).
      x_tick_labels: if given, x is categorical: the series' x values are
        positions `0 .. len(x_tick_labels) - 1`, evenly spaced, and the
        ticks show these strings in the given order. Otherwise every
        distinct x value of a panel gets a tick.
      panel_size: `(width, height)` of one panel in pixels (default
        440 × 360).

    Returns:
      An RGB `PIL.Image.Image` of size
      `(28 + width * len(panels), height)`.

    Raises:
      ValueError: if `panels` or a panel's series list is empty, a series'
        `x`, `y` and `y_error` differ in length, `x_tick_labels` is empty
        or an x position lies outside it, or (log y) a panel has no
        positive finite value.

    Example:
      >>> bn = Series("BN", [0, 1, 2], [3.0, 5.0, 12.0], [0.2, 0.3, 0.9])
      >>> gn = Series("GN", [0, 1, 2], [3.5, 3.4, 3.6], [0.2, 0.2, 0.3])
      >>> line_plot([("ResNet-50", [bn, gn])], "batch size",
      ...           "error (%)", x_tick_labels=["32", "8", "2"]).size
      (468, 360)
    """
    _check(panels, x_tick_labels)
    width, height = panel_size
    image = Image.new("RGB", (_GUTTER + width * len(panels), height), "white")
    draw = ImageDraw.Draw(image)
    fonts = (ImageFont.load_default(size=14), ImageFont.load_default(size=12))

    # The y label, written upwards in the left gutter.
    label = Image.new("RGB", (height, _GUTTER), "white")
    ImageDraw.Draw(label).text(
        (height // 2, _GUTTER // 2),
        y_label,
        fill=_INK,
        font=fonts[0],
        anchor="mm",
    )
    image.paste(label.rotate(90, expand=True), (0, 0))

    for index, (title, series) in enumerate(panels):
        box = (_GUTTER + index * width, 0, width, height)
        y_axis = _log_axis(series) if log_y else _linear_axis(series)
        _draw_panel(
            draw, box, title, series, x_label, fonts, y_axis, x_tick_labels
        )
    return image


def log_line_plot(
    panels: Sequence[tuple],
    x_label: str,
    y_label: str,
    panel_size: tuple = (440, 360),
) -> Image.Image:
    """Draws panels side by side; y is logarithmic, each panel its own range.

    The same as `line_plot(..., log_y=True)` with numeric x ticks.

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
    return line_plot(
        panels, x_label, y_label, log_y=True, panel_size=panel_size
    )


def _check(panels, x_tick_labels):
    """Raises `ValueError` for what `line_plot` cannot draw."""
    if not panels or any(not series for _, series in panels):
        raise ValueError(
            f"`panels` must be a non-empty list of (title, series) with at "
            f"least one series each, received {len(panels)} panel(s)."
        )
    if x_tick_labels is not None and len(x_tick_labels) == 0:
        raise ValueError("`x_tick_labels` must not be empty when given.")
    for _, series in panels:
        for line in series:
            lengths = [len(line.x), len(line.y)]
            if line.y_error is not None:
                lengths.append(len(line.y_error))
            if len(set(lengths)) > 1:
                raise ValueError(
                    f"series {line.label!r} has x, y (and y_error) of "
                    f"different lengths {lengths}."
                )
            if x_tick_labels is None:
                continue
            last = len(x_tick_labels) - 1
            outside = [
                x for x in line.x if not math.isnan(x) and not 0 <= x <= last
            ]
            if outside:
                raise ValueError(
                    f"series {line.label!r} has x positions {outside} "
                    f"outside 0 .. {last} (the {last + 1} x_tick_labels)."
                )


@dataclasses.dataclass(frozen=True)
class _Axis:
    """A y range `[low, high]` and its ticks `(value, label, grid colour)`.

    On a log axis, `low` and `high` are decades (exponents of 10).
    """

    low: float
    high: float
    ticks: tuple
    log: bool

    def position(self, y):
        """`y` clamped to the range, as a fraction of it (0 at `low`)."""
        if self.log:
            y = min(max(y, 10.0**self.low), 10.0**self.high)
            return (math.log10(y) - self.low) / (self.high - self.low)
        y = min(max(y, self.low), self.high)
        return (y - self.low) / (self.high - self.low)


def _draw_panel(draw, box, title, series, x_label, fonts, y_axis, x_labels):
    font, small = fonts
    left, top, width, height = box
    x0, y0 = left + _MARGINS[0], top + _MARGINS[1]
    x1, y1 = left + width - _MARGINS[2], top + height - _MARGINS[3]

    # x ticks: the categories, or every distinct finite x value.
    if x_labels is not None:
        ticks = list(enumerate(str(label) for label in x_labels))
    else:
        xs = {float(x) for line in series for x in line.x}
        xs = sorted(x for x in xs if math.isfinite(x)) or [0.0]
        ticks = [(x, f"{x:g}") for x in xs]
    x_low, x_high = ticks[0][0] - 0.25, ticks[-1][0] + 0.25

    def to_pixel(x, y):
        u = x0 + (x - x_low) / (x_high - x_low) * (x1 - x0)
        v = y1 - y_axis.position(y) * (y1 - y0)
        return u, v

    # Grid, ticks and tick labels.
    for value, text, colour in y_axis.ticks:
        v = y1 - y_axis.position(value) * (y1 - y0)
        draw.line([(x0, v), (x1, v)], fill=colour)
        draw.text((x0 - 6, v), text, _INK, small, anchor="rm")
    for x, text in ticks:
        u, _ = to_pixel(x, 1.0)
        draw.line([(u, y1), (u, y1 + 5)], fill=_INK)
        draw.text((u, y1 + 8), text, _INK, small, anchor="mt")
    draw.rectangle([x0, y0, x1, y1], outline=_INK)
    draw.text(((x0 + x1) / 2, top + 8), title, _INK, font, anchor="mt")
    draw.text(((x0 + x1) / 2, y1 + 28), x_label, _INK, font, anchor="mt")

    # Lines, error bars and markers, series by series.
    occupied = []  # pixels covered by data, to place the legend
    for number, line in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        for run in _finite_runs(line):
            points = [to_pixel(x, y) for x, y, _ in run]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
                occupied += _along(points)
            for (u, v), (x, y, error) in zip(points, run):
                if error > 0:
                    _, top_v = to_pixel(x, y + error)
                    _, bottom_v = to_pixel(x, y - error)
                    draw.line([(u, top_v), (u, bottom_v)], fill=colour)
                    for end in (top_v, bottom_v):
                        cap = [(u - _CAP, end), (u + _CAP, end)]
                        draw.line(cap, fill=colour)
                    occupied += _along([(u, top_v), (u, bottom_v)])
                draw.ellipse([u - 4, v - 4, u + 4, v + 4], fill=colour)
                occupied.append((u, v))

    # The legend, in the corner where it covers the fewest points.
    labels = [line.label for line in series]
    size = (
        30 + max(draw.textlength(text, small) for text in labels),
        _ROW * len(labels),
    )
    lx, ly = _legend_corner((x0, y0, x1, y1), size, occupied)
    for number, text in enumerate(labels):
        colour = PALETTE[number % len(PALETTE)]
        v = ly + _ROW * number
        draw.line([(lx, v), (lx + 24, v)], colour, 3)
        draw.text((lx + 30, v), text, _INK, small, anchor="lm")


def _finite_runs(line):
    """Runs of consecutive points `(x, y, error)` with finite x and y."""
    errors = [0.0] * len(line.y) if line.y_error is None else line.y_error
    runs, run = [], []
    for x, y, error in zip(line.x, line.y, errors):
        x, y, error = float(x), float(y), float(error)
        if math.isfinite(x) and math.isfinite(y):
            run.append((x, y, error if math.isfinite(error) else 0.0))
        elif run:
            runs.append(run)
            run = []
    return runs + [run] if run else runs


def _along(points, spacing=4.0):
    """Pixels every `spacing` pixels along a polyline through `points`."""
    samples = []
    for (u0, v0), (u1, v1) in zip(points, points[1:]):
        steps = max(1, int(math.hypot(u1 - u0, v1 - v0) / spacing))
        samples += [
            (u0 + (u1 - u0) * k / steps, v0 + (v1 - v0) * k / steps)
            for k in range(steps + 1)
        ]
    return samples


def _legend_corner(frame, size, occupied):
    """Where the first legend entry starts: `(u, v)` of its line's left end.

    Tries the top-left, top-right, bottom-left and bottom-right corners of
    `frame` and takes the first whose box (`size` plus a margin) holds the
    fewest `occupied` pixels.
    """
    x0, y0, x1, y1 = frame
    width, height = size
    best = None
    for top in (y0 + 1, y1 - 1 - height):
        for u in (x0 + 10, x1 - 10 - width):
            covered = sum(
                u - 6 <= pu <= u + width + 6 and top - 6 <= pv <= top + height
                for pu, pv in occupied
            )
            if best is None or covered < best[0]:
                best = (covered, u, top + _ROW // 2)
    return best[1], best[2]


def _log_axis(series) -> _Axis:
    """Whole decades around the positive finite values, at least one."""
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
    high = max(math.ceil(math.log10(max(values))), low + 1)
    ticks = []
    for decade in range(low, high + 1):
        ticks.append((10.0**decade, f"1e{decade}", _GREY))
        # Within short ranges, lighter lines at 2 and 5 times the decade.
        for factor in (2, 5) if high - low <= 2 and decade < high else ():
            ticks.append((factor * 10.0**decade, f"{factor}e{decade}", _PALE))
    return _Axis(low, high, tuple(ticks), log=True)


def _linear_axis(series) -> _Axis:
    """A range padded around the values and error bars, nice ticks."""
    values = []
    for line in series:
        for run in _finite_runs(line):
            for _, y, error in run:
                values += [y - error, y + error] if error > 0 else [y]
    if not values:
        low, high = 0.0, 1.0
    else:
        low, high = min(values), max(values)
    span = high - low
    if not math.isfinite(span):
        raise ValueError(
            f"series {[line.label for line in series]} span a range too "
            f"large to draw ({low:g} to {high:g})."
        )
    if span <= 1e-6 * max(abs(low), abs(high)):
        # Constant (or nearly): a range of ±10 % of the value, or ±1.
        span = 0.2 * abs(high) or 2.0
        low, high = (low + high - span) / 2, (low + high + span) / 2
    else:
        low, high = low - 0.05 * span, high + 0.05 * span
    if values and min(values) >= 0:
        low = max(low, 0.0)

    # The smallest step of 1, 2 or 5 × 10^exponent giving at most 7
    # intervals (so 3 to 8 ticks).
    exponent = math.floor(math.log10((high - low) / 7))
    for factor in (1, 2, 5, 10):
        step = factor * 10.0**exponent
        if step * 7 >= high - low:
            break
    if factor == 10:
        factor, exponent = 1, exponent + 1
    first, last = math.floor(low / step), math.ceil(high / step)
    largest = max(abs(first), abs(last)) * step
    ticks = tuple(
        (k * step, _tick_label(k * step, exponent, largest), _GREY)
        for k in range(first, last + 1)
    )
    return _Axis(first * step, last * step, ticks, log=False)


def _tick_label(value, exponent, largest) -> str:
    """`value`, a multiple of 10^`exponent`, written without excess digits.

    Plain decimals, unless the axis reaches 10^6 (`largest`, the largest
    absolute tick value) or its step is below 10^-6: then scientific
    notation, with as many digits on every tick of the axis.
    """
    if value == 0:
        return "0"
    if exponent >= -6 and largest < 1e6:
        return f"{value:.{max(0, -exponent)}f}"
    decimals = max(0, math.floor(math.log10(largest)) - exponent)
    return f"{value:.{decimals}e}"
