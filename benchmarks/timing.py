"""Wall-clock timing that says how busy the rest of the machine was.

A 2-thread TensorFlow timing is several times slower when another process
competes for the cores, so every timing comes with the share of the CPU
that other processes used meanwhile (from /proc/stat minus our own CPU
time). The benchmarks print it and flag disturbed repetitions.
"""

import os
import time

# A repetition counts as disturbed when other processes used this share.
BUSY_THRESHOLD = 0.05


def cpu_times():
    """`(all jiffies, idle jiffies)` of the whole machine."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def own_cpu_seconds():
    """CPU time of this process and of its finished children."""
    usage = os.times()
    return sum(usage[:4])


def timed(call):
    """Runs `call()`; returns `(wall seconds, other processes' CPU share)`.

    `call` must block until its work is done (e.g. end with `.numpy()`).
    """
    clock_hz = os.sysconf("SC_CLK_TCK")
    busy_start, idle_start = cpu_times()
    own_start = own_cpu_seconds()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    busy_end, idle_end = cpu_times()
    own = own_cpu_seconds() - own_start
    all_busy = ((busy_end - busy_start) - (idle_end - idle_start)) / clock_hz
    others = max(all_busy - own, 0.0) / (seconds * (os.cpu_count() or 1))
    return seconds, min(others, 1.0)
