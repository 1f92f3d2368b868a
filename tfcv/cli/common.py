"""Flags and checks shared by several commands."""

import os
import tempfile

from tfcv.cli.main import UsageError


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
        os.makedirs(path, exist_ok=True)
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
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
