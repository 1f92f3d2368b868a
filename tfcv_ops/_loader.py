"""Loads the custom-op library `_tfcv_ops.so`, or says once why it cannot.

`setup.py` compiles `tfcv_ops/cc/*.cc` into `tfcv_ops/_tfcv_ops.so` against
the TensorFlow installed at build time. The library is loaded lazily, on the
first call that wants a custom op, with `tf.load_op_library`. When the file is
missing or does not load (typically because it was built for another
TensorFlow version), `load_library` returns `None`, the ops fall back to their
pure-TensorFlow twins, and one warning per process says so and how to rebuild.

Override: when the environment variable `TFCV_OPS_LIBRARY` is set (to the
path of a compiled library), that file is loaded instead of the packaged
`_tfcv_ops.so`; it is read once, at the first load, and a path assigned to
`LIBRARY_PATH` in code wins over it. Use it to test a development build
without replacing the installed library:
`TFCV_OPS_LIBRARY=/tmp/dev/_tfcv_ops.so python -m pytest tests/...`.
"""

import os
import threading

from absl import logging
import tensorflow as tf

LIBRARY_FILENAME = "_tfcv_ops.so"
LIBRARY_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), LIBRARY_FILENAME
)
_PACKAGED_PATH = LIBRARY_PATH
# Names a library to load instead of LIBRARY_PATH (read at the first load).
LIBRARY_OVERRIDE_ENV_VAR = "TFCV_OPS_LIBRARY"

_lock = threading.Lock()
_state = {"attempted": False, "library": None, "error": None}
# The process-wide default of every op's `use_custom_op` (see
# `tfcv_ops.set_use_custom_op`): None, True or False.
default_use_custom_op = {"value": None}
_missing_ops_warned = set()


def _load(path: str):
    """Returns `(library, None)` on success, `(None, reason)` otherwise."""
    if not os.path.isfile(path):
        return None, f"{path} does not exist"
    try:
        return tf.load_op_library(path), None
    except Exception as error:  # pylint: disable=broad-except
        # Undefined symbols (another TF build), a truncated file, an op
        # registered twice: any failure means "use the pure path".
        return None, f"{path} failed to load: {error}".strip()


@tf.autograph.experimental.do_not_convert
def load_library():
    """Loads the custom-op library once per process.

    Returns:
      The module returned by `tf.load_op_library` (its ops are attributes such
      as `tfcv_wigner_d_matrix`), or `None` when the library is unavailable.
      In that case one warning per process names the reason.

    Example:
      >>> library = load_library()
      >>> library is None or hasattr(library, "tfcv_wigner_d_matrix")
      True
    """
    with _lock:
        if not _state["attempted"]:
            _state["attempted"] = True
            library, error = _load(library_path())
            _state["library"] = library
            _state["error"] = error
            if library is None:
                logging.warning(
                    "tfcv_ops: the custom-op library is not available (%s); "
                    "using the pure-TensorFlow twins instead (same results, "
                    "slower). To build it, run `pip install "
                    "--no-build-isolation -e .` in the tfcv source tree; "
                    "see BUILD.md.",
                    error,
                )
        return _state["library"]


def library_path() -> str:
    """Returns the library to load: `$TFCV_OPS_LIBRARY` if set, else ours.

    A path assigned to `LIBRARY_PATH` in code (tests do this) takes
    precedence over the environment variable.

    Example:
      >>> library_path().endswith(".so")
      True
    """
    if LIBRARY_PATH != _PACKAGED_PATH:
        return LIBRARY_PATH
    override = os.environ.get(LIBRARY_OVERRIDE_ENV_VAR, "").strip()
    return override or LIBRARY_PATH


def load_error():
    """Returns why the library failed to load, else `None`."""
    with _lock:
        return _state["error"]


def custom_ops_available() -> bool:
    """Returns whether the compiled custom ops can be used in this process.

    The first call tries to load the library (and warns once if it cannot).

    Example:
      >>> isinstance(custom_ops_available(), bool)
      True
    """
    return load_library() is not None


@tf.autograph.experimental.do_not_convert
def library_op(name: str):
    """The op `name` (e.g. `tfcv_so3_mm`) of the loaded library, or None.

    A library that loads but lacks the op (built from other sources, or not
    ours at all) is reported by one warning per op; the caller then runs
    the pure-TensorFlow twin.
    """
    library = load_library()
    if library is None:
        return None
    op = getattr(library, name, None)
    if op is None:
        with _lock:
            if name not in _missing_ops_warned:
                _missing_ops_warned.add(name)
                logging.warning(
                    "tfcv_ops: the custom-op library %s has no op %s (built "
                    "from other sources?); using the pure-TensorFlow twin. "
                    "Rebuild with `pip install --no-build-isolation -e .`.",
                    library_path(),
                    name,
                )
    return op
