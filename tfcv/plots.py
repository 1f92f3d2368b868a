"""Line plots drawn with Pillow alone, for figures of any tfcv command.

Re-exports `tfcv.spherical.line_plot`: `Series` (one line with optional
error bars), `line_plot` (linear or log y, numeric or categorical x) and
`log_line_plot` (log y, numeric x).
"""

from tfcv.spherical.line_plot import Series
from tfcv.spherical.line_plot import line_plot
from tfcv.spherical.line_plot import log_line_plot

__all__ = ["Series", "line_plot", "log_line_plot"]
