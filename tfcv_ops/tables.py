"""Wigner-d tables of the β-stage of the S² and SO(3) FFTs, with caches.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §4 and Appendix C: after the FFT over α and γ, the SO(3)
FFT contracts the β axis with samples of `d^l_{mn}(β_j)`. For a grid of
bandwidth `b_grid` (`J = 2 b_grid` angles `β_j`, see `grids`) and degrees
`l < b_spec` we store one real table per transform:

  - S²:    `T2[j, l² + m + l] = d^l_{m0}(β_j)`, shape `[J, b_spec²]`;
  - SO(3): `T3[j, p(l, m, n)] = d^l_{mn}(β_j)`, shape `[J, P(b_spec)]`,

in the packed layouts of `layout`. The float64 master comes from
`wigner_d_matrix` (Risbo's recursion); other dtypes are cast from it. Each
table is built once per process and kept in memory per
`(kind, b_grid, b_spec, dtype)`. An optional on-disk cache (off by default;
on when `TFCV_OPS_CACHE_DIR` names a directory or `cache_dir` is passed)
stores the float64 masters; files are written to a temporary name and
renamed (safe with concurrent writers) and are checked on load (shape and
SHA-256), being rebuilt when they do not match.

Shape letters: `J = 2 b_grid` β samples, `P = b (4b² - 1) / 3`.

Deviations from the paper:
  - The paper's implementation evaluates the tables with `lie_learn`; we
    use Risbo's recursion (stable, no factorials).
"""

import hashlib
import os
import tempfile
import threading

from absl import logging
import numpy as np
import tensorflow as tf

from tfcv_ops import grids
from tfcv_ops import layout
from tfcv_ops import wigner

CACHE_DIR_ENV = "TFCV_OPS_CACHE_DIR"
_FILE_VERSION = 1

# Entries (float64) of the Wigner-d rows evaluated at once for an S² table:
# 64 MB.
_CHUNK_ENTRIES = 2**23

_lock = threading.Lock()
_memory_cache = {}


def s2_table(
    b_grid: int, b_spec: int, dtype=tf.float64, cache_dir=None
) -> np.ndarray:
    """The S² table `T2[j, l² + m + l] = d^l_{m0}(β_j)`.

    Args:
      b_grid: grid bandwidth (`J = 2 b_grid` angles),
        `1..S2_MAX_GRID_BANDWIDTH` (256).
      b_spec: degree bound (`l < b_spec`), `1..min(b_grid,
        S2_MAX_BANDWIDTH)` (at most 64).
      dtype: `tf.float64` (default) or `tf.float32`.
      cache_dir: directory of the on-disk cache; `None` (default) reads
        `TFCV_OPS_CACHE_DIR` (no disk cache when unset), `""` disables it.

    Returns:
      Read-only NumPy array `[2 b_grid, b_spec²]` of `dtype`.

    Raises:
      ValueError: if a bandwidth is out of range, `b_spec > b_grid`, or
        `dtype` is not float32/float64.

    Example:
      >>> s2_table(4, 2).shape
      (8, 4)
    """
    return _table("s2", b_grid, b_spec, dtype, cache_dir)


def so3_table(
    b_grid: int, b_spec: int, dtype=tf.float64, cache_dir=None
) -> np.ndarray:
    """The SO(3) table `T3[j, p(l, m, n)] = d^l_{mn}(β_j)`.

    Args:
      b_grid: grid bandwidth (`J = 2 b_grid`), `1..SO3_MAX_BANDWIDTH`.
      b_spec: degree bound (`l < b_spec`), `1..b_grid`.
      dtype: `tf.float64` (default) or `tf.float32`.
      cache_dir: as in `s2_table`.

    Returns:
      Read-only NumPy array `[2 b_grid, P(b_spec)]` of `dtype`.

    Raises:
      ValueError: as `s2_table`.

    Example:
      >>> so3_table(4, 2).shape
      (8, 10)
    """
    return _table("so3", b_grid, b_spec, dtype, cache_dir)


def clear_memory_cache() -> None:
    """Forgets every table built in this process (they are rebuilt lazily)."""
    with _lock:
        _memory_cache.clear()


def _table(kind, b_grid, b_spec, dtype, cache_dir) -> np.ndarray:
    """Memory cache -> disk cache -> build, for one kind of table."""
    if kind == "s2":
        grid_maximum = grids.S2_MAX_GRID_BANDWIDTH
        spectrum_maximum = grids.S2_MAX_BANDWIDTH
    else:
        grid_maximum = spectrum_maximum = grids.SO3_MAX_BANDWIDTH
    b_grid = grids.check_bandwidth("b_grid", b_grid, grid_maximum)
    b_spec = grids.check_bandwidth("b_spec", b_spec, spectrum_maximum)
    if b_spec > b_grid:
        raise ValueError(
            f"`b_spec` must be at most `b_grid` (a grid of bandwidth b "
            f"resolves degrees l < b only), received b_spec={b_spec} and "
            f"b_grid={b_grid}; truncate the spectrum or use a finer grid."
        )
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64):
        raise ValueError(
            f"`dtype` must be float32 or float64, received {dtype.name}; "
            f"tables are real and built in float64."
        )

    key = (kind, b_grid, b_spec, dtype.name)
    with _lock:
        if key in _memory_cache:
            return _memory_cache[key]
        master_key = (kind, b_grid, b_spec, "float64")
        master = _memory_cache.get(master_key)
        if master is None:
            master = _load_or_build(kind, b_grid, b_spec, cache_dir)
            master.setflags(write=False)
            _memory_cache[master_key] = master
        if dtype == tf.float64:
            return master
        table = master.astype(dtype.as_numpy_dtype)
        table.setflags(write=False)
        _memory_cache[key] = table
        return table


def _build(kind: str, b_grid: int, b_spec: int) -> np.ndarray:
    """Evaluates the float64 table with `wigner_d_matrix`."""
    beta, _ = grids.s2_grid(b_grid)
    if kind == "so3":
        # [J] -> [J, P(b_spec)]
        return np.ascontiguousarray(_wigner_d(b_spec, beta))

    # Column n = 0 of each degree: p(l, m, 0), in S² order l² + m + l.
    columns = np.concatenate(
        [
            layout.so3_spectrum_size(l)
            + (np.arange(2 * l + 1)) * (2 * l + 1)
            + l
            for l in range(b_spec)
        ]
    )

    # NOTE: S² grids go up to b_grid = 256 (`grids`), where the full
    # Wigner-d rows [J, P(b_spec)] would be 1.4 GB at b_spec = 64 for a
    # table of 17 MB; chunks of angles keep them under _CHUNK_ENTRIES.
    chunk = max(1, _CHUNK_ENTRIES // layout.so3_spectrum_size(b_spec))
    table = np.empty([len(beta), len(columns)])  # [J, b_spec^2]
    for start in range(0, len(beta), chunk):
        rows = _wigner_d(b_spec, beta[start : start + chunk])  # [j, P]
        table[start : start + chunk] = rows[:, columns]
    return table


def _wigner_d(b_spec: int, beta: np.ndarray) -> np.ndarray:
    """`d^l_{mn}(β_j)` for `l < b_spec`: float64 `[J, P(b_spec)]`."""
    # Tables are constants: build eagerly even when called while tracing.
    with tf.init_scope():
        return wigner.wigner_d_matrix(b_spec - 1, beta).numpy()


def _expected_shape(kind: str, b_grid: int, b_spec: int):
    if kind == "so3":
        return (2 * b_grid, layout.so3_spectrum_size(b_spec))
    return (2 * b_grid, layout.s2_spectrum_size(b_spec))


def _checksum(table: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()


def _cache_path(cache_dir: str, kind: str, b_grid: int, b_spec: int) -> str:
    name = f"tfcv_{kind}_table_v{_FILE_VERSION}_g{b_grid}_s{b_spec}.npz"
    return os.path.join(cache_dir, name)


def _resolve_cache_dir(cache_dir):
    """`None` -> `$TFCV_OPS_CACHE_DIR` or no cache; `""` -> no cache."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV, "")
    return os.fspath(cache_dir) or None


def _load_or_build(kind, b_grid, b_spec, cache_dir) -> np.ndarray:
    """Reads a verified table from the disk cache, else builds (and saves)."""
    cache_dir = _resolve_cache_dir(cache_dir)
    if cache_dir is None:
        return _build(kind, b_grid, b_spec)

    path = _cache_path(cache_dir, kind, b_grid, b_spec)
    table = _read_verified(path, _expected_shape(kind, b_grid, b_spec))
    if table is not None:
        return table
    table = _build(kind, b_grid, b_spec)
    _write_atomically(path, table)
    return table


def _read_verified(path: str, shape) -> np.ndarray:
    """The table in `path` if it loads and matches `shape` and its checksum."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            table = np.array(stored["table"])
            checksum = str(stored["sha256"])
    except Exception:  # pylint: disable=broad-except
        # Missing, truncated or foreign files all mean "rebuild".
        return None
    if (
        table.shape != tuple(shape)
        or table.dtype != np.float64
        or _checksum(table) != checksum
    ):
        return None
    return table


def _write_atomically(path: str, table: np.ndarray) -> None:
    """Writes to a temporary file in the same directory, then renames it."""
    directory = os.path.dirname(path)
    temporary = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=directory, prefix=".tfcv_table_", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, table=table, sha256=np.array(_checksum(table)))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        logging.log_first_n(
            logging.WARNING,
            "tfcv_ops: could not write the table cache %s (%s); tables are "
            "rebuilt in each process.",
            1,
            path,
            error,
        )
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
