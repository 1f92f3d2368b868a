"""A progress bar for long work: step, rate, ETA and the latest losses.

On a terminal the bar redraws in place; otherwise (logs, CI) it prints a
line every `line_every` seconds so that output stays readable.
"""

import sys
import time


class ProgressBar:
    """Prints `[#####.....] step/total  rate it/s  ETA  name=value ...`.

    Args:
      total: the step at which the work ends.
      initial: the step it starts from (after a resume).
      stream: where to write (default stderr).
      line_every: seconds between lines when not on a terminal.
    """

    def __init__(self, total, initial=0, stream=None, line_every=15.0):
        self.total = total
        self.initial = initial
        self.stream = stream or sys.stderr
        self.line_every = line_every
        self.start_time = time.time()
        self.last_line = 0.0
        self.first_update = None
        self.interactive = hasattr(self.stream, "isatty") and (
            self.stream.isatty()
        )

    def update(self, step, values=None, force=False):
        now = time.time()
        self._latest = (step, values)
        if not self.interactive and not force:
            if now - self.last_line < self.line_every:
                return
        self._printed = step
        self.last_line = now
        elapsed = max(now - self.start_time, 1e-9)

        # The rate since the first update leaves out start-up (tracing);
        # until a second update there is no honest rate, so no ETA.
        if self.first_update is None:
            self.first_update = (now, step)
            rate = float("nan")
        else:
            first_time, first_step = self.first_update
            rate = (step - first_step) / max(now - first_time, 1e-9)
        remaining = (self.total - step) / rate if rate > 0 else float("nan")
        rate_text = "--" if rate != rate else f"{rate:.2f}"  # NaN: unknown
        width = 24
        filled = int(width * step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        text = (
            f"[{bar}] {step}/{self.total}  {rate_text} step/s  "
            f"elapsed {_clock(elapsed)}  ETA {_clock(remaining)}"
        )
        if values:
            text += "  " + "  ".join(
                f"{name}={float(value):.3f}" for name, value in values.items()
            )
        if self.interactive:
            self.stream.write("\r" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        # Logs (not a terminal) end on the last state, not an older line.
        latest = getattr(self, "_latest", None)
        if latest and getattr(self, "_printed", None) != latest[0]:
            self.update(*latest, force=True)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds):
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
