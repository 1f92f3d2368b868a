"""Adversarial examples that fool an ensemble, and whether they transfer.

The machine half of Elsayed et al. (2018), arXiv:1802.08195, on the
digits (tfcv.adversarial.experiment): trains an ensemble of classifiers
of different architectures, some with the retinal layer in front, and
held-out classifiers the attack never sees (each training batch plus the
same batch rescaled to [40, 215], Appendix E); attacks the ensemble with
every held-out image of a group class toward the other class of its group
(adv: ε = 32, all members fooled), flips the perturbations upside down
(flip), and pushes digits of no group toward a group class (false: ε = 40,
70 % of the members fooled). Writes to --output_dir:

  tables.md     Tables Supp.2-6 of the paper for the digits: top-1
                accuracy, coarse two-way accuracy on image / adv / flip,
                attack success of adv / flip / false, per ensemble member
                and per held-out model, one number per group in a cell
  grid.png      columns of examples; rows image, adv, flip and the
                perturbation x10 on grey, then false examples
  results.json  every number, the settings and the run time

With --model_dir, classifiers saved there with matching settings are
loaded instead of trained, and new ones are saved there.

Measured with the defaults (1,438 training digits at 32 pixels, 8 epochs,
all 359 held-out digits, groups {1, 7} and {2, 5}, one device of a 2-core
CPU shared with other work): 123 s (25-41 s when --model_dir holds the
classifiers). adv fools every member on every kept example (97 of 143) by
construction, and the held-out models on 97.9 % and 68.0 % of them; flip
hits the target on 0.0 % and 1.0 % and changes their two-way prediction
on 0.0 % and 1.0 %; false succeeds on 90.9 % and 64.9 %. With --groups=3:8
flip changes 15-26 % of the held-out predictions: 3 and 8 differ by
strokes on the left that an upside-down flip keeps in place, so 3:8 is a
weak flip control.

Example:
  tfcv attack --output_dir=runs/attack --model_dir=runs/attack_models
  tfcv attack --output_dir=/tmp/quick --epochs=1 --images_per_class=4 \\
      --groups=1:7
"""

import json
import time

from absl import flags
from absl import logging

from tfcv.adversarial import classifiers
from tfcv.adversarial import experiment
from tfcv.adversarial.report import grid_png
from tfcv.adversarial.report import tables_markdown
from tfcv.cli.common import MAX_VIRTUAL_CPUS
from tfcv.cli.common import check_step_sizes
from tfcv.cli.common import check_writable_directory
from tfcv.cli.common import flag_definers
from tfcv.cli.common import write_outputs
from tfcv.cli.main import UsageError

DEFAULTS = experiment.ExperimentConfig()
STRATEGIES = ("default", "one_device", "mirrored")


def define_flags(flag_values):
    string, integer, real = flag_definers(flag_values)
    string(
        "output_dir",
        None,
        "Directory for tables.md, grid.png and results.json (required).",
    )
    string(
        "model_dir",
        None,
        "Directory of trained classifiers: those saved with matching "
        "settings are loaded, the others trained and saved there.",
    )
    names = ", ".join(classifiers.ARCHITECTURES)
    string(
        "members",
        ",".join(DEFAULTS.members),
        f"Comma-separated ensemble members among {names}; append "
        "_retina for a retinal layer in front.",
    )
    string(
        "heldout",
        ",".join(DEFAULTS.heldout),
        "Comma-separated held-out classifiers (never attacked), named as "
        "for --members; may be empty.",
    )
    string(
        "groups",
        experiment.format_groups(DEFAULTS.groups),
        "Comma-separated groups of two classes of digits, e.g. 3:8,1:7; "
        "join digits of one class with + (4+9:7).",
    )
    real(
        "epsilon",
        DEFAULTS.adv.epsilon,
        "ε of the adv condition on the [0, 255] scale (paper: 32).",
    )
    real(
        "false_epsilon",
        DEFAULTS.false.epsilon,
        "ε of the false condition on the [0, 255] scale (paper: 40).",
    )
    real(
        "step_size",
        DEFAULTS.adv.step_size,
        "α, the attack's step on the [0, 255] scale (paper: 2).",
    )
    real(
        "false_keep_fraction",
        DEFAULTS.false.min_fooled_fraction,
        "Fraction of members a false example must fool to be kept "
        "(paper: 7 of 10).",
    )
    integer(
        "image_size", DEFAULTS.image_size, "Side the digits are upsampled to."
    )
    integer("epochs", DEFAULTS.epochs, "Passes over the training digits.")
    integer(
        "batch_size",
        DEFAULTS.batch_size,
        "Clean images per training step (global); each step also sees "
        "their copies rescaled to [40, 215].",
    )
    real(
        "learning_rate",
        DEFAULTS.learning_rate,
        "Adam's initial step (cosine-decayed to 0).",
    )
    integer("seed", DEFAULTS.seed, "Base seed of the classifiers.")
    real(
        "retina_alpha",
        DEFAULTS.retina_alpha,
        "α of the retinal layer's Eq. 2 (strong: see the module notes of "
        "tfcv.adversarial.experiment).",
    )
    real("retina_beta", DEFAULTS.retina_beta, "β of Eq. 2 in radians.")
    integer(
        "images_per_class",
        DEFAULTS.images_per_class,
        "Held-out images per digit to attack; 0 for all.",
    )
    integer("examples", 8, "Columns of grid.png (1..32).")
    flags.DEFINE_enum(
        "strategy",
        "default",
        list(STRATEGIES),
        "tf.distribute strategy for training.",
        flag_values=flag_values,
    )
    integer(
        "virtual_cpus",
        2,
        "Logical CPU devices for --strategy=mirrored on a machine without "
        f"GPUs (1..{MAX_VIRTUAL_CPUS}).",
    )


def _names(flag_values, name):
    text = flag_values[name].value or ""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_groups(text):
    """`"3:8,1+2:7"` -> `(((3,), (8,)), ((1, 2), (7,)))`; UsageError."""
    groups = []
    for item in (text or "").split(","):
        sides = item.strip().split(":")
        try:
            if len(sides) != 2:
                raise ValueError
            pair = tuple(
                tuple(int(digit) for digit in side.split("+")) for side in sides
            )
        except ValueError:
            raise UsageError(
                f"--groups={text}: malformed group {item.strip()!r}; write "
                "pairs of digits such as 3:8,1:7 (join digits of one "
                "class with +)."
            ) from None
        groups.append(pair)
    return groups


def _check_number(flag_values, name, low, high, paper):
    value = flag_values[name].value
    # NOTE: `not <=` also catches NaN.
    if not (value > low and value <= high):
        raise UsageError(
            f"--{name} must be a number > {low:g} and <= {high:g}, got "
            f"{value:g} (the paper uses {paper})."
        )


def _check_integer(flag_values, name, low, high):
    value = flag_values[name].value
    if not low <= value <= high:
        raise UsageError(f"--{name} must be in {low}..{high}, got {value}.")


def experiment_config(flag_values):
    """The `ExperimentConfig` of the (validated) flags."""
    from tfcv.adversarial import AttackConfig

    try:
        adv = AttackConfig(
            epsilon=flag_values.epsilon, step_size=flag_values.step_size
        )
        false = AttackConfig(
            epsilon=flag_values.false_epsilon,
            step_size=flag_values.step_size,
            min_fooled_fraction=flag_values.false_keep_fraction,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    return experiment.ExperimentConfig(
        members=_names(flag_values, "members"),
        heldout=_names(flag_values, "heldout"),
        groups=parse_groups(flag_values.groups),
        image_size=flag_values.image_size,
        epochs=flag_values.epochs,
        batch_size=flag_values.batch_size,
        learning_rate=flag_values.learning_rate,
        seed=flag_values.seed,
        retina_alpha=flag_values.retina_alpha,
        retina_beta=flag_values.retina_beta,
        adv=adv,
        false=false,
        images_per_class=flag_values.images_per_class,
    )


def validate(flag_values):
    if not flag_values.output_dir:
        raise UsageError("--output_dir is required.")
    _check_number(flag_values, "epsilon", 0, 255, 32)
    _check_number(flag_values, "false_epsilon", 0, 255, 40)
    _check_number(flag_values, "step_size", 0, 255, 2)
    _check_number(flag_values, "false_keep_fraction", 0, 1, "7 of 10")
    _check_number(flag_values, "retina_alpha", 0, 1e3, "no value")
    _check_number(flag_values, "retina_beta", 0, 1e3, "no value")
    check_step_sizes(flag_values, ("learning_rate",))
    _check_integer(flag_values, "image_size", 16, 64)
    _check_integer(flag_values, "epochs", 1, 10000)
    _check_integer(flag_values, "batch_size", 1, 1438)
    _check_integer(flag_values, "images_per_class", 0, 10000)
    _check_integer(flag_values, "examples", 1, 32)
    _check_integer(flag_values, "virtual_cpus", 1, MAX_VIRTUAL_CPUS)
    if flag_values.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {flag_values.seed}.")
    replicas = flag_values.virtual_cpus
    if flag_values.strategy == "mirrored" and flag_values.batch_size % replicas:
        raise UsageError(
            f"--batch_size={flag_values.batch_size} is not divisible by the "
            f"{replicas} replicas of --strategy=mirrored (--virtual_cpus); "
            f"pick a multiple of {replicas}."
        )
    try:
        classifiers.check_model_names(
            _names(flag_values, "members"),
            _names(flag_values, "heldout"),
            labels=("--members", "--heldout"),
        )
        experiment.check_groups(
            parse_groups(flag_values.groups),
            label=f"--groups={flag_values.groups}",
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    experiment_config(flag_values)
    if flag_values.model_dir:
        check_writable_directory(flag_values.model_dir, "model_dir")
        # Before any training: a folder where a file is to be saved.
        classifiers.check_model_paths(
            _names(flag_values, "members") + _names(flag_values, "heldout"),
            flag_values.model_dir,
        )
    check_writable_directory(flag_values.output_dir, "output_dir")


def _command(flag_values):
    parts = ["tfcv attack"]
    for name in sorted(flag_values._flags()):
        flag = flag_values[name]
        if flag.present and name not in ("help", "helpfull", "helpshort"):
            parts.append(f"--{name}={flag.value}")
    return " ".join(parts)


def _summary(metrics):
    """Pooled numbers of the claims: members fooled, transfer, flip."""
    summary = {}
    for name, numbers in metrics["models"].items():
        pooled = numbers["pooled"]
        summary[name] = {
            key: pooled[key]
            for key in (
                "adv_success_pct",
                "flip_success_pct",
                "flip_changed_pct",
                "false_success_pct",
            )
        }
    return summary


def _settings(config, flag_values):
    settings = {
        field: getattr(config, field)
        for field in (
            "members",
            "heldout",
            "image_size",
            "epochs",
            "batch_size",
            "learning_rate",
            "seed",
            "retina_alpha",
            "retina_beta",
            "images_per_class",
        )
    }
    settings["groups"] = experiment.format_groups(config.groups)
    for name in ("adv", "false"):
        attack = getattr(config, name)
        settings[name] = {
            "epsilon": attack.epsilon,
            "step_size": attack.step_size,
            "steps": attack.num_steps,
            "min_fooled_fraction": attack.min_fooled_fraction,
            "early_stop": attack.early_stop,
            "intensity_range": list(attack.intensity_range),
        }
    settings["strategy"] = flag_values.strategy
    settings["model_dir"] = flag_values.model_dir
    return settings


def _plan_line(config, model_dir):
    """How many classifiers are loaded from `model_dir`, how many trained."""
    names = list(config.members) + list(config.heldout)
    count = (
        f"{len(config.members)} members and {len(config.heldout)} held-out "
        "classifiers"
    )
    loaded = len(classifiers.saved_classifiers(names, config, model_dir))
    if not loaded:
        return f"Training {count}, {config.epochs} epochs each."
    trained = len(names) - loaded
    if not trained:
        return f"Loading all {count} from {model_dir}."
    return (
        f"Of {count}, loading {loaded} from {model_dir} and training "
        f"{trained}, {config.epochs} epochs each."
    )


def _nothing_kept_line(result):
    """A warning if adv or false kept no example, else None."""
    empty = []
    for condition, flag in (("adv", "epsilon"), ("false", "false_epsilon")):
        kept = getattr(result, condition).kept
        if not kept.any():
            empty.append((condition, len(kept), flag))
    if not empty:
        return None
    counts = " and ".join(
        f"{condition} (0 of {total} attacked)" for condition, total, _ in empty
    )
    raise_flags = " / ".join(f"--{flag}" for _, _, flag in empty)
    return (
        f"No example was kept for {counts}; raise {raise_flags} (the "
        "number of steps grows with ε) or --step_size."
    )


def main(flag_values):
    from tfcv.training.strategy import make_strategy

    started = time.time()
    config = experiment_config(flag_values)
    strategy = make_strategy(flag_values.strategy, flag_values.virtual_cpus)

    def on_classifier(classifier):
        logging.info(
            "%s: %s, top-1 %.1f%% (%.1f%% on [40, 215]), %d parameters.",
            classifier.name,
            "loaded"
            if classifier.loaded
            else f"trained in {classifier.seconds:.0f} s",
            100 * classifier.accuracy,
            100 * classifier.accuracy_rescaled,
            classifier.parameters,
        )

    logging.info(_plan_line(config, flag_values.model_dir))
    result = experiment.run_experiment(
        config,
        strategy=strategy,
        model_dir=flag_values.model_dir,
        on_classifier=on_classifier,
    )
    seconds = time.time() - started
    metrics = result.metrics
    warning = _nothing_kept_line(result)
    if warning:
        logging.warning(warning)
    command = _command(flag_values)
    report = {
        "settings": _settings(config, flag_values),
        "groups": metrics["groups"],
        "models": metrics["models"],
        "summary": _summary(metrics),
        "command": command,
        "run_seconds": seconds,
    }
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    write_outputs(
        flag_values.output_dir,
        {
            "results.json": (text + "\n").encode(),
            "tables.md": tables_markdown(metrics, command, seconds).encode(),
            "grid.png": grid_png(result, flag_values.examples),
        },
    )
    for name, numbers in report["summary"].items():
        role = metrics["models"][name]["role"]
        print(
            f"{name:<16} {role:<8} "
            + "  ".join(
                f"{key.replace('_pct', '')} "
                + ("-" if value is None else f"{value:5.1f}%")
                for key, value in numbers.items()
            )
        )
    print(f"run time {seconds:.0f} s; wrote {flag_values.output_dir}")
    return 0
