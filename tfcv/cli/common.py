"""Flags and checks shared by several commands."""

import os
import tempfile

from absl import flags

from tfcv.cli.main import UsageError

# More logical CPUs than this is a typo, and TensorFlow would try to make
# them all (minutes, gigabytes) before any check could refuse them.
MAX_VIRTUAL_CPUS = 64


# Directories this process made for its outputs, deepest last; a command
# that fails removes those still empty (`remove_new_empty_directories`).
_CREATED_DIRECTORIES = []


def _missing_directories(path):
    """`path` and its missing parents, outermost first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.insert(0, path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def remove_new_empty_directories():
    """Removes the output directories this process made, if still empty.

    Called when a command fails, so that it leaves no empty folder behind
    (a folder with anything in it is kept).
    """
    while _CREATED_DIRECTORIES:
        path = _CREATED_DIRECTORIES.pop()
        try:
            os.rmdir(path)
        except OSError:
            pass


def check_writable_directory(path, flag_name):
    """Creates `path` if needed and proves it is writable.

    Raises:
      UsageError: naming the flag when the directory cannot be written.
    """
    if not path:
        raise UsageError(f"--{flag_name} is required.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(
            f"--{flag_name}={path} is a file, not a directory; choose another "
            "path."
        )
    try:
        missing = _missing_directories(path)
        os.makedirs(path, exist_ok=True)
        _CREATED_DIRECTORIES.extend(missing)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(
            f"--{flag_name}={path} is not a writable directory "
            f"({error.strerror or error}); choose another path or fix its "
            "permissions."
        ) from error


def parse_list(flag_values, name, allowed):
    """The comma-separated values of --name, checked against `allowed`."""
    raw = flag_values[name].value or ""
    values = [value.strip() for value in raw.split(",") if value.strip()]
    if not values:
        raise UsageError(
            f"--{name} is empty; give one or more of {', '.join(allowed)}."
        )
    for value in values:
        if value not in allowed:
            raise UsageError(
                f"unknown value {value!r} in --{name}={raw}; expected "
                f"comma-separated values among {', '.join(allowed)}."
            )
    if len(set(values)) != len(values):
        raise UsageError(f"--{name}={raw} names a value twice.")
    return values


def write_atomically(path, data: bytes):
    """Writes `data` to `path` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp makes the file private (0600); results get the usual
        # permissions of a new file under the process's umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def check_step_sizes(flag_values, names):
    """Each flag in `names` is a number in (0, 1e9] (a learning rate)."""
    for name in names:
        value = flag_values[name].value
        # NOTE: `not <=` also catches NaN; 1e9 is far past any useful step
        # and keeps the value a finite float32.
        if not (value > 0 and value <= 1e9):
            raise UsageError(
                f"--{name} must be a finite number > 0 (at most 1e9), got "
                f"{value} (try the default, {flag_values[name].default:g})."
            )


def define_strategy_flags(flag_values, strategies, default="mirrored"):
    """--strategy, --virtual_cpus and --tpu of the experiment commands."""
    flags.DEFINE_enum(
        "strategy",
        default,
        list(strategies),
        "tf.distribute strategy.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "virtual_cpus",
        2,
        "Logical CPU devices for --strategy=mirrored on a machine without "
        f"GPUs (1..{MAX_VIRTUAL_CPUS}).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "tpu",
        "",
        "TPU name or grpc:// address for --strategy=tpu.",
        flag_values=flag_values,
    )


def check_strategy_flags(flag_values):
    """--virtual_cpus in range and --batch_size split evenly over it."""
    replicas = flag_values.virtual_cpus
    if not 1 <= replicas <= MAX_VIRTUAL_CPUS:
        raise UsageError(
            f"--virtual_cpus must be in 1..{MAX_VIRTUAL_CPUS}, got "
            f"{replicas}; it splits this CPU into that many logical devices "
            "(replicas)."
        )
    if flag_values.strategy == "mirrored" and flag_values.batch_size % replicas:
        raise UsageError(
            f"--batch_size={flag_values.batch_size} is not divisible by the "
            f"{replicas} replicas of --strategy=mirrored (--virtual_cpus); "
            f"pick a multiple of {replicas}."
        )


def grey_tiles_png(rows, gap: int = 4, background: int = 128) -> bytes:
    """PNG bytes of equal-size uint8 tiles laid out row by row.

    Args:
      rows: a list of rows, each a list of `[h, w]` uint8 grey images of
        one common size.
      gap: pixels between tiles.
      background: grey level of the gaps.
    """
    import io

    import numpy as np
    from PIL import Image

    height, width = rows[0][0].shape
    columns = max(len(row) for row in rows)
    picture = np.full(
        [
            len(rows) * (height + gap) - gap,
            columns * (width + gap) - gap,
        ],
        background,
        np.uint8,
    )
    for row_index, row in enumerate(rows):
        for column, tile in enumerate(row):
            top = row_index * (height + gap)
            left = column * (width + gap)
            picture[top : top + height, left : left + width] = tile
    buffer = io.BytesIO()
    Image.fromarray(picture, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(output_dir, files):
    """Writes `{file name: bytes}` into `output_dir`, all or none.

    Every file goes through a temporary file and a rename; if one write
    fails, the files this call already wrote are removed again.
    """
    written = []
    try:
        for name, data in files.items():
            path = os.path.join(output_dir, name)
            write_atomically(path, data)
            written.append(path)
    except BaseException:
        for path in written:
            os.remove(path)
        raise


def flag_definers(flag_values):
    """`(string, integer, real)`: flag definers bound to `flag_values`.

    Each takes `(name, default, help_text)`, e.g.
    `string, integer, real = flag_definers(flag_values)`.
    """

    def string(name, default, help_text):
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)

    def integer(name, default, help_text):
        flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)

    def real(name, default, help_text):
        flags.DEFINE_float(name, default, help_text, flag_values=flag_values)

    return string, integer, real
