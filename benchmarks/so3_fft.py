"""The S² / SO(3) FFTs of `tfcv_ops`: C++ kernels, pure-TF twin, NumPy.

Spherical CNNs (Cohen et al., 2018), §4.1: a generalized FFT is a planar
FFT over the angles α (and γ) followed by a contraction of the β axis
with Wigner-d tables. For each bandwidth `b` this measures, side by side in
one process, with batch x channels = 64:
  1. SO(3) forward + inverse transform (`so3_fft` then `so3_ifft`);
  2. S² forward + inverse transform;
  3. `so3_mm` (4 -> 16 channels, batch 4: 64 products per degree);
each with the C++ kernels (graph mode), the pure-TensorFlow twin in graph
mode and under XLA (`jit_compile=True`), and a direct NumPy implementation
of the same equations (NumPy FFTs and one `einsum` per degree). It then
times building the Wigner tables at b = 32 and 64 (cold, memory cache
cleared) and reports the peak resident memory of the process.

Targets (issue: tfcv_ops): C++ forward + inverse SO(3) at b = 32 at least
1.5x faster than the twin in graph mode; the b = 64 table under 10 s. The
printed growth of the SO(3) time from b = 16 to 32 is compared with the
factor 16 that O(b⁴) work (the β contraction) predicts.

Usage: python benchmarks/so3_fft.py [--bandwidths=8,16,32] [--repeats=5]
"""

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfcv_ops  # noqa: E402
from timing import BUSY_THRESHOLD  # noqa: E402  (benchmarks/ is on sys.path)
from timing import timed  # noqa: E402
from tfcv_ops import tables  # noqa: E402

BATCH = 64  # batch x channels of the transforms


def _numpy_so3_round_trip(grid, b):
    """Eqs. 8-9 in NumPy: FFTs over (α, γ) and one einsum per degree."""
    n = 2 * b
    weights = tfcv_ops.quadrature_weights(b)  # [J]
    table = tables.so3_table(b, b, tf.float64)  # [J, P]
    spectral = np.fft.ifft2(grid) * weights[:, None, None]  # [B, J, N, N]
    spectrum = []
    for l in range(b):
        d = _block(table, l)  # [J, 2l+1, 2l+1]
        m = np.arange(-l, l + 1) % n
        block = spectral[:, :, m][:, :, :, m]  # [B, J, 2l+1, 2l+1]
        spectrum.append(np.einsum("bjmn,jmn->bmn", block, d))
    inverse = np.zeros_like(spectral)
    for l, coefficients in enumerate(spectrum):
        d = _block(table, l)
        m = np.arange(-l, l + 1) % n
        inverse[:, :, m[:, None], m[None, :]] += (2 * l + 1) * np.einsum(
            "bmn,jmn->bjmn", coefficients, d
        )
    return np.fft.fft2(inverse)


def _numpy_s2_round_trip(grid, b):
    n = 2 * b
    weights = tfcv_ops.quadrature_weights(b)
    table = tables.s2_table(b, b, tf.float64)  # [J, b²]
    spectral = np.fft.ifft(grid) * weights[:, None]  # [B, J, N]
    inverse = np.zeros_like(spectral)
    for l in range(b):
        d = table[:, l * l : (l + 1) ** 2]  # [J, 2l+1]
        m = np.arange(-l, l + 1) % n
        coefficients = np.einsum("bjm,jm->bm", spectral[:, :, m], d)
        inverse[:, :, m] += (2 * l + 1) * coefficients[:, None, :] * d
    return np.fft.fft(inverse)


def _numpy_so3_mm(x, y, b):
    out = []
    for l in range(b):
        start, side = l * (4 * l * l - 1) // 3, 2 * l + 1
        xl = x[..., start : start + side * side].reshape(
            *x.shape[:2], side, side
        )
        yl = y[..., start : start + side * side].reshape(
            *y.shape[:2], side, side
        )
        # [B, C, m, k] x [C, O, n, k] -> [B, O, m, n]
        out.append(
            np.einsum("bcmk,conk->bomn", xl, yl.conj()).reshape(
                x.shape[0], y.shape[1], -1
            )
        )
    return np.concatenate(out, axis=-1)


def _block(table, l):
    start, side = l * (4 * l * l - 1) // 3, 2 * l + 1
    return table[:, start : start + side * side].reshape(-1, side, side)


def _variants(b, repeats):
    """`{workload: {implementation: callable}}` for bandwidth `b`."""
    rng = np.random.default_rng(b)
    so3_grid = rng.normal(size=(BATCH, 2 * b, 2 * b, 2 * b)).astype(np.float32)
    s2_grid = rng.normal(size=(BATCH, 2 * b, 2 * b)).astype(np.float32)
    size = tfcv_ops.so3_spectrum_size(b)
    x = (rng.normal(size=(4, 4, size)) + 1j).astype(np.complex64)
    y = (rng.normal(size=(4, 16, size)) + 1j).astype(np.complex64)

    def so3(use_custom_op):
        def run(grid):
            spectrum = tfcv_ops.so3_fft(grid, use_custom_op=use_custom_op)
            return tfcv_ops.so3_ifft(spectrum, use_custom_op=use_custom_op)

        return run

    def s2(use_custom_op):
        def run(grid):
            spectrum = tfcv_ops.s2_fft(grid, use_custom_op=use_custom_op)
            return tfcv_ops.s2_ifft(spectrum, use_custom_op=use_custom_op)

        return run

    def mm(use_custom_op):
        return lambda a, c: tfcv_ops.so3_mm(a, c, use_custom_op=use_custom_op)

    workloads = {
        "so3 fwd+inv": (so3, (so3_grid,), _numpy_so3_round_trip, (so3_grid, b)),
        "s2 fwd+inv": (s2, (s2_grid,), _numpy_s2_round_trip, (s2_grid, b)),
        "so3_mm": (mm, (x, y), _numpy_so3_mm, (x, y, b)),
    }
    variants = {}
    for name, (make, args, numpy_call, numpy_args) in workloads.items():
        tensors = [tf.constant(a) for a in args]
        functions = {
            "c++": tf.function(make(True)),
            "tf graph": tf.function(make(False)),
            "tf xla": tf.function(make(None), jit_compile=True),
        }
        calls = {
            key: (lambda f=f, t=tensors: f(*t).numpy())
            for key, f in functions.items()
        }
        calls["numpy"] = lambda c=numpy_call, a=numpy_args: c(*a)
        if not tfcv_ops.custom_ops_available():
            del calls["c++"]
        variants[name] = calls
    return variants


def _measure(calls, repeats):
    """Median seconds per implementation, run in turns; warm-up excluded."""
    for call in calls.values():
        call()  # trace, compile, build tables
    seconds = {key: [] for key in calls}
    disturbed = 0
    for _ in range(repeats):
        for key, call in calls.items():
            elapsed, others = timed(call)
            seconds[key].append(elapsed)
            disturbed += others > BUSY_THRESHOLD
    return {k: statistics.median(v) for k, v in seconds.items()}, disturbed


def _table_build_seconds(b):
    tables.clear_memory_cache()
    started = time.perf_counter()
    tables.so3_table(b, b, tf.float32, cache_dir="")
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandwidths", default="8,16,32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    bandwidths = [int(b) for b in args.bandwidths.split(",")]

    print(
        f"custom ops available: {tfcv_ops.custom_ops_available()}; "
        f"batch x channels = {BATCH}; float32/complex64; median of "
        f"{args.repeats}; {os.cpu_count()} cores"
    )
    header = (
        f"{'b':>3} {'workload':<12} {'c++ ms':>9} {'tf graph':>9} "
        f"{'tf xla':>9} {'numpy':>9} {'graph/c++':>9} {'xla/c++':>9} "
        f"{'numpy/c++':>9}"
    )
    print(
        "ratios: time of the named implementation / C++ time (> 1: C++ is "
        "faster); '(k disturbed)': k timings ran while other processes used "
        f"more than {BUSY_THRESHOLD:.0%} of the CPU, so the row is noisy"
    )
    print(header)
    so3_times = {}
    for b in bandwidths:
        for name, calls in _variants(b, args.repeats).items():
            medians, disturbed = _measure(calls, args.repeats)
            ms = {k: 1e3 * v for k, v in medians.items()}
            reference = ms.get("c++", float("nan"))
            if name == "so3 fwd+inv":
                so3_times[b] = ms
            print(
                f"{b:>3} {name:<12} {reference:9.1f} {ms['tf graph']:9.1f} "
                f"{ms['tf xla']:9.1f} {ms['numpy']:9.1f} "
                f"{ms['tf graph'] / reference:8.2f}x "
                f"{ms['tf xla'] / reference:8.2f}x "
                f"{ms['numpy'] / reference:8.2f}x"
                + (f"  ({disturbed} disturbed)" if disturbed else "")
            )
        sys.stdout.flush()

    if 16 in so3_times and 32 in so3_times:
        for key in ("c++", "tf graph"):
            if key in so3_times[32]:
                growth = so3_times[32][key] / so3_times[16][key]
                print(
                    f"SO(3) fwd+inv growth b=16 -> 32 ({key}): {growth:.1f}x "
                    "(O(b^4) predicts 16x; the FFTs grow as b^3 log b)"
                )
    for b in (32, 64):
        print(f"SO(3) table build at b={b}: {_table_build_seconds(b):.2f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MB")


if __name__ == "__main__":
    main()
