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
