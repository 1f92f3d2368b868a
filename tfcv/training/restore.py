"""Restoring the newest checkpoint that can be read.

A crash or a full disk during a save can leave the newest checkpoint
truncated. Training, export and sampling then fall back to the previous
checkpoint with a warning instead of failing (issue: faults), down to the
oldest one kept.
"""

import os

from absl import logging


def restore_newest_readable(checkpoint, paths, model_dir):
    """Restores the newest of `paths` that reads; returns it (None if none).

    Args:
      checkpoint: a `tf.train.Checkpoint` whose objects all exist in the
        checkpoints (objects the checkpoints hold beyond them are fine).
      paths: checkpoint prefixes, oldest first (as
        `CheckpointManager.checkpoints`).
      model_dir: the folder, for messages.

    Raises:
      ValueError: if there are checkpoints but none can be read.
    """
    last_error = ""
    for path in reversed(list(paths)):
        try:
            status = checkpoint.restore(path)
            status.assert_existing_objects_matched()
            status.expect_partial()
        except Exception as error:  # noqa: BLE001 (any unreadable file)
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            last_error = f"{type(error).__name__}: {first_line}"
            logging.warning(
                "Checkpoint %s cannot be read (%s); trying the previous one.",
                path,
                last_error,
            )
            continue
        return path
    if paths:
        names = ", ".join(os.path.basename(path) for path in paths)
        raise ValueError(
            f"--model_dir {model_dir}: none of its checkpoints ({names}) can "
            f"be read (last: {last_error}); move them away to start again "
            "from step 0."
        )
    return None
