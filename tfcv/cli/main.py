"""Entry point of the `tfcv` console script.

`tfcv <command> [--flag=value ...]` where each command lives in its own
module under `tfcv.cli` with a `define_flags(flag_values)` function, a
`main(flags)` function and a module docstring that is its help text.

A user mistake (a bad flag, a `ValueError` or `OSError` raised by the
library) ends with one line `tfcv <command>: error: ...` on stderr and exit
status 2; set `TFCV_DEBUG=1` to see the traceback instead.
"""

import importlib
import os
import sys

COMMANDS = {
    "train": "Train a class-conditional GAN (the main job).",
    "export": "Export the EMA generator as a TF-Hub / TF Serving module.",
    "sample": "Write a sample grid from a model_dir or an exported module.",
    "evaluate": "Judge a trained generator: conditional accuracy and FD.",
    "attack": "Adversarial examples fooling an ensemble; transfer to held-out "
    "models (Elsayed et al. 2018, Tables Supp.2-6).",
}

# Commands with sub-commands: `tfcv <group> <name>` runs the module
# `tfcv.cli.<group>_<name>`.
GROUPS = {
    "spherical": {
        "equivariance": "Measure the equivariance error of S²/SO(3) "
        "convolution stacks (Spherical CNNs §5.1, Fig. 3).",
        "mnist": "Spherical MNIST: planar vs spherical CNN, NR/R "
        "regimes (Spherical CNNs §5.2, Table 1).",
        "shapes": "3D shapes: meshes ray-cast onto the sphere, rotation-"
        "invariant classification (Spherical CNNs §5.3).",
        "molecules": "QM7 atomization energies: per-atom potential spheres, "
        "S²/SO(3) ResNet + DeepSets (Spherical CNNs §5.4, Table 3).",
    },
    "groupnorm": {
        "sweep": "BN vs GN as the batch per replica shrinks: error table "
        "and plot (Group Normalization Table 2, Fig. 1; Table 3 groups).",
    },
}
COMMANDS["spherical"] = "Spherical CNNs: `tfcv spherical <name>` (see --help)."
COMMANDS["groupnorm"] = (
    "Group Normalization: `tfcv groupnorm <name>` (see --help)."
)

USAGE = "usage: tfcv <command> [--flag=value ...]   (tfcv <command> --help)"


class UsageError(Exception):
    """A mistake on the command line, reported in one line."""


def _print_commands(stream):
    stream.write(USAGE + "\n\ncommands:\n")
    for name, summary in COMMANDS.items():
        stream.write(f"  {name:<10}{summary}\n")


def _help_text(command, module, flag_values):
    text = [f"usage: tfcv {command} [--flag=value ...]", ""]
    text.append((module.__doc__ or "").strip())
    text.append("")
    text.append("flags:")
    for flag in sorted(flag_values._flags().values(), key=lambda f: f.name):
        if flag.name in ("help", "helpfull", "helpshort", "helpxml"):
            continue
        text.append(f"  --{flag.name}: {flag.help}")
        # Flags without a default say in their help what applies instead.
        if flag.default is not None:
            text.append(f"    (default: {flag.default_as_str})")
    return "\n".join(text) + "\n"


def run(argv=None):
    """Runs `tfcv` with `argv` (default `sys.argv`); returns via sys.exit."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        _print_commands(sys.stdout if len(argv) >= 2 else sys.stderr)
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        sys.stderr.write(
            f"tfcv: error: unknown command {command!r}; expected one of "
            f"{', '.join(COMMANDS)}.\n"
        )
        sys.exit(2)
    if command in GROUPS:
        sys.exit(_run_group(command, argv[2:]))
    sys.exit(run_command(command, argv[2:]))


def _run_group(group, arguments):
    """`tfcv <group> <name> ...`: runs the sub-command `name`."""
    names = GROUPS[group]
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        stream = sys.stdout if arguments else sys.stderr
        stream.write(
            f"usage: tfcv {group} <name> [--flag=value ...]   "
            f"(tfcv {group} <name> --help)\n\n{group} commands:\n"
        )
        for name, summary in names.items():
            stream.write(f"  {name:<14}{summary}\n")
        return 0 if arguments else 2
    name = arguments[0]
    if name not in names:
        sys.stderr.write(
            f"tfcv {group}: error: unknown command {name!r}; expected one "
            f"of {', '.join(names)}.\n"
        )
        return 2
    return run_command(
        f"{group} {name}", arguments[1:], module_name=f"{group}_{name}"
    )


def run_command(command, arguments, module_name=None):
    """Parses `arguments` for `command` and runs it; returns the exit code.

    `module_name` is the module under `tfcv.cli` (default: `command`).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_import_tensorflow()
    from absl import flags
    from absl import logging

    module = importlib.import_module(f"tfcv.cli.{module_name or command}")
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    if any(arg in ("-h", "--help", "--helpfull") for arg in arguments):
        sys.stdout.write(_help_text(command, module, flag_values))
        return 0
    prefix = f"tfcv {command}: error:"
    try:
        leftover = flag_values([f"tfcv {command}"] + list(arguments))
        if len(leftover) > 1:
            raise UsageError(
                f"unexpected argument {leftover[1]!r}; flags take the form "
                "--name=value."
            )
        module.validate(flag_values)
    except (flags.Error, UsageError, ValueError) as error:
        _remove_new_empty_directories()
        sys.stderr.write(f"{prefix} {_one_line(error)}\n")
        return 2

    flags.FLAGS.mark_as_parsed()
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    logging.set_stderrthreshold(logging.INFO)
    logging.get_absl_handler().addFilter(_only_our_info)
    code = 1
    try:
        code = _run_main(module, flag_values, command, prefix, tf)
        return code
    finally:
        if code:
            _remove_new_empty_directories()


def _remove_new_empty_directories():
    """A failed command leaves no empty output folder behind."""
    from tfcv.cli import common

    common.remove_new_empty_directories()


def _run_main(module, flag_values, command, prefix, tf):
    """`module.main`, with our failures as one line and an exit status."""
    try:
        return module.main(flag_values) or 0
    except (UsageError, ValueError, OSError) as error:
        if os.environ.get("TFCV_DEBUG"):
            raise
        sys.stderr.write(f"{prefix} {_one_line(error)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"tfcv {command}: interrupted.\n")
        return 130
    except tf.errors.UnavailableError as error:
        # Another worker of a multi-worker run stopped or was lost.
        if os.environ.get("TFCV_DEBUG"):
            raise
        sys.stderr.write(
            f"{prefix} lost contact with another worker "
            f"({_one_line(error)[:160]}); restart every worker with the same "
            "command to resume from the chief's newest checkpoint.\n"
        )
        return 1
    except RuntimeError as error:
        # Failures of the work itself (e.g. a diverged training run):
        # status 1, unlike the usage errors above.
        if os.environ.get("TFCV_DEBUG") or not _is_ours(error):
            raise
        sys.stderr.write(f"{prefix} {_one_line(error)}\n")
        return getattr(error, "exit_code", 1)


def _is_ours(error):
    return type(error).__module__.startswith("tfcv.")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _only_our_info(record):
    """Keeps warnings from everyone but INFO lines only from tfcv itself."""
    if record.levelno > 20:
        return True
    return os.path.abspath(record.pathname).startswith(_PACKAGE_DIR + os.sep)


def _quiet_import_tensorflow():
    """Imports TensorFlow and lists its devices, keeping the chatter quiet.

    TensorFlow 2.21 logs CUDA probing and absl initialization notes at
    import and at device discovery whatever TF_CPP_MIN_LOG_LEVEL says; they
    would bury our one-line errors. What it writes is shown only if this
    fails. Listing physical devices does not initialize them, so virtual
    CPU devices can still be configured afterwards.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _one_line(error):
    # Keras wraps a layer's error as "Exception encountered when calling
    # layer ...", then a blank line, then the real message: show that one.
    text = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(text) > 1 and text[0].startswith("Exception encountered when"):
        text = text[1:]
    message = text[0] if text else type(error).__name__
    if isinstance(error, OSError) and error.filename:
        message = f"{error.strerror or message}: {error.filename}"
    return message


if __name__ == "__main__":
    run()
