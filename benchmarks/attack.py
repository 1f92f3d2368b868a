"""Iterative targeted attack: iterations per second, ours vs cleverhans.

Measures `tfcv.adversarial.targeted_attack` (Elsayed et al. 2018, Eq. 7):
  1. on an ensemble of 4 small CNN classifiers (random weights, 10
     classes, coarse groups {3, 8} and {1, 7}, the adv condition's
     settings otherwise), without and with a `RetinalBlur` layer in front
     of every member (the same models and weights otherwise);
  2. on one of those CNNs alone (no retinal layer, fine-class targets, no
     early stop, rescale or intensity change: the setting of the
     cleverhans cross-check in tests/test_adversarial.py) against
     `cleverhans.tf2.attacks.basic_iterative_method` called identically.
     Target: ours no slower than cleverhans.
The inputs are 64 real digits (`tfcv.data.digits`, held-out split, classes
1, 3, 7 and 8) upsampled to 32x32x3 on the [0, 255] scale.

How: early stopping is off, so every example takes all N steps. Each
variant runs at a short and a long N; the time per iteration is the slope
(t_long - t_short) / (N_long - N_short) of the median call times, which
leaves out what a call costs once (input checks, an eager forward pass for
the class count, the intensity rescale, the copies to NumPy). Iterations/s
is its inverse; one iteration is a step on the whole batch. Ours is one
`tf.function` per ensemble (a `tf.while_loop` over the steps); cleverhans
loops eagerly in Python around a traced gradient. Every variant is first
called once on a fresh ensemble or model function (tracing included; shown
as "first call") and warmed up, then the variants of a section run in
turns, `--repeats` times each; tables show medians. For every repetition
the script records the share of the CPU used by other processes (from
/proc/stat minus our own CPU time); a row is flagged when that share,
averaged over its repetitions weighted by their duration, reaches
`BUSY_THRESHOLD`. A second busy process makes these 2-thread timings
several times slower. Part 2 also checks that both attacks return the
same images (max |difference|), so that both did the same work.

Columns: first = seconds of the first call at the short N (tracing
included; the Keras models are built before); t(N) = median seconds of a
call with N steps; ms/it and it/s from the slope; ratio = it/s over the
section's first row; others = other processes' CPU share (weighted mean);
disturbed = repetitions at or above `BUSY_THRESHOLD`.

`--quick` uses N = 2 and 8 with 3 repetitions (well under 30 s).

Usage: python benchmarks/attack.py [--repeats=5] [--steps=4,36] [--quick]
         [--alpha=ALPHA]  (RetinalBlur's α; default the layer's own)
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from tfcv.adversarial import AttackConfig  # noqa: E402
from tfcv.adversarial import Ensemble  # noqa: E402
from tfcv.adversarial import Member  # noqa: E402
from tfcv.adversarial import inception_preprocess  # noqa: E402
from tfcv.adversarial import targeted_attack  # noqa: E402
from tfcv.data.digits import load_digits  # noqa: E402
from tfcv.layers.retinal_blur import RetinalBlur  # noqa: E402
from timing import BUSY_THRESHOLD  # noqa: E402  (benchmarks/ is on sys.path)
from timing import timed  # noqa: E402

BATCH = 64
IMAGE_SIZE = 32
NUM_CLASSES = 10
NUM_MEMBERS = 4
GROUPS = [[3, 8], [1, 7]]
EPSILON, STEP_SIZE = 32.0, 2.0
WARMUP_CALLS = 1
# The bare iterative method (as in tests/test_adversarial.py).
PLAIN = dict(early_stop=False, rescale_to_epsilon=False, intensity_range=None)


def _digits():
    """64 digits of classes 1, 3, 7, 8 on [0, 255] and their coarse ids.

    Returns:
      `(images [B, 32, 32, 3] float32, labels [B], coarse [B])`.
    """
    images, labels = load_digits("heldout", image_size=IMAGE_SIZE)
    # [-1, 1] -> [0, 255]
    images = np.clip((images + 1.0) * 127.5, 0.0, 255.0)
    owner = {label: group for group, ids in enumerate(GROUPS) for label in ids}
    chosen = np.flatnonzero(np.isin(labels, list(owner)))[:BATCH]
    labels = labels[chosen]
    coarse = np.array([owner[int(label)] for label in labels])
    return images[chosen].astype(np.float32), labels, coarse


def _cnn(seed):
    """A small random-weight CNN: any square size -> 10 fine logits."""
    initializer = tf_keras.initializers.HeNormal(seed=seed)

    def conv(filters):
        return tf_keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=initializer,
        )

    return tf_keras.Sequential(
        [
            tf_keras.Input((None, None, 3)),
            conv(16),
            tf_keras.layers.MaxPooling2D(),
            conv(32),
            tf_keras.layers.MaxPooling2D(),
            conv(64),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(
                NUM_CLASSES,
                kernel_initializer=tf_keras.initializers.GlorotUniform(seed),
            ),
        ]
    )


def _retinal_preprocess(alpha):
    """A fresh RetinalBlur, then the [-1, 1] scaling."""
    retina = RetinalBlur() if alpha is None else RetinalBlur(alpha=alpha)

    def preprocess(images):
        return inception_preprocess(retina(images))

    preprocess.retina = retina
    return preprocess


def _ensemble(models, alpha=None, retinal=False):
    """A fresh Ensemble (no traced attack yet) of `models`."""
    members = []
    for model in models:
        preprocess = inception_preprocess
        if retinal:
            preprocess = _retinal_preprocess(alpha)
        members.append(Member(model, preprocess=preprocess))
    return Ensemble(members)


def _ours(ensemble, images, targets, groups, steps, **settings):
    """A call of our attack with `steps` steps (blocks until done)."""
    config = AttackConfig(
        epsilon=EPSILON, step_size=STEP_SIZE, steps=steps, **settings
    )

    def call():
        return targeted_attack(ensemble, images, targets, groups, config)

    return call


def _cleverhans(model_fn, images, targets, steps):
    """A call of cleverhans' basic iterative method (blocks until done)."""
    from cleverhans.tf2.attacks.basic_iterative_method import (
        basic_iterative_method,
    )

    images = tf.constant(images)
    targets = tf.constant(targets)

    def call():
        return basic_iterative_method(
            model_fn,
            images,
            EPSILON,
            STEP_SIZE,
            steps,
            np.inf,
            clip_min=0,
            clip_max=255,
            y=targets,
            targeted=True,
            sanity_checks=False,
        ).numpy()

    return call


def _measure(calls, repeats):
    """Warms up, then times `{key: call}` in turns.

    Returns:
      `{key: [(seconds, others_share), ...]}`.
    """
    for call in calls.values():
        for _ in range(WARMUP_CALLS):
            call()
    samples = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            samples[key].append(timed(call))
    return samples


def _median(samples):
    return statistics.median(seconds for seconds, _ in samples)


def _busy(samples):
    """Other processes' CPU share, weighted by the repetitions' durations."""
    total = sum(seconds for seconds, _ in samples)
    return sum(seconds * share for seconds, share in samples) / total


def _header(title, steps):
    short, long = steps
    print(f"\n{title}")
    print(
        f"  {'variant':<26}{'first':>7}{f't(N={short})':>9}"
        f"{f't(N={long})':>9}{'ms/it':>8}{'it/s':>7}{'ratio':>7}"
        f"{'others':>8}  disturbed"
    )
    print(f"  {'':<26}{'(s)':>7}{'(s)':>9}{'(s)':>9}{'':>22}{'mean':>8}")


def _row(name, first, short, long, steps, baseline=None):
    """Prints one row; returns iterations per second (from the slope)."""
    per_step = (_median(long) - _median(short)) / (steps[1] - steps[0])
    rate = 1.0 / per_step if per_step > 0 else float("nan")
    both = short + long
    busy = _busy(both)
    disturbed = sum(share >= BUSY_THRESHOLD for _, share in both)
    ratio = "" if baseline is None else f"{rate / baseline:6.2f}x"
    flag = "  DISTURBED" if busy >= BUSY_THRESHOLD else ""
    print(
        f"  {name:<26}{first:7.2f}{_median(short):9.3f}{_median(long):9.3f}"
        f"{1000 * per_step:8.1f}{rate:7.1f}{ratio:>7}{100 * busy:7.1f}%"
        f"  {disturbed}/{len(both)}{flag}"
    )
    return rate


def _first_call(call):
    """Seconds of a first call (tracing included)."""
    return timed(call)[0]


def _ensemble_section(models, images, coarse, steps, repeats, alpha):
    """Part 1: the 4-member ensemble without and with RetinalBlur."""
    targets = 1 - coarse  # the other class of the image's group
    variants = {
        "ensemble": False,
        "ensemble + RetinalBlur": True,
    }
    calls, firsts, ensembles = {}, {}, {}
    for name, retinal in variants.items():
        ensemble = _ensemble(models, alpha, retinal)
        ensembles[name] = ensemble
        settings = dict(early_stop=False)
        firsts[name] = _first_call(
            _ours(ensemble, images, targets, GROUPS, steps[0], **settings)
        )
        for count in steps:
            calls[name, count] = _ours(
                ensemble, images, targets, GROUPS, count, **settings
            )
    samples = _measure(calls, repeats)

    retina = ensembles["ensemble + RetinalBlur"].members[0].preprocess.retina
    _header(
        f"Part 1: {NUM_MEMBERS}-member ensemble, coarse targets, batch "
        f"{BATCH} x {IMAGE_SIZE}x{IMAGE_SIZE}x3 (RetinalBlur: "
        f"{retina.resolved_cutoff_frequencies.size} cut-offs, "
        f"alpha={retina.alpha:.4g}, output "
        f"{retina.compute_output_shape([1, IMAGE_SIZE, IMAGE_SIZE, 3])[1]}"
        "px)",
        steps,
    )
    baseline = None
    rates = {}
    for name in variants:
        rates[name] = _row(
            name,
            firsts[name],
            samples[name, steps[0]],
            samples[name, steps[1]],
            steps,
            baseline,
        )
        baseline = baseline or rates[name]
    return rates, samples


def _cleverhans_section(model, images, labels, steps, repeats):
    """Part 2: one model, fine targets, ours vs cleverhans."""
    targets = (labels + 1) % NUM_CLASSES

    def model_fn(x):
        return model(inception_preprocess(x))

    ensemble = Ensemble([Member(model, preprocess=inception_preprocess)])
    calls, firsts = {}, {}
    firsts["cleverhans BIM"] = _first_call(
        _cleverhans(model_fn, images, targets, steps[0])
    )
    firsts["tfcv targeted_attack"] = _first_call(
        _ours(ensemble, images, targets, None, steps[0], loss="fine", **PLAIN)
    )
    for count in steps:
        calls["cleverhans BIM", count] = _cleverhans(
            model_fn, images, targets, count
        )
        calls["tfcv targeted_attack", count] = _ours(
            ensemble, images, targets, None, count, loss="fine", **PLAIN
        )
    samples = _measure(calls, repeats)

    theirs = calls["cleverhans BIM", steps[1]]()
    ours = calls["tfcv targeted_attack", steps[1]]().adversarial
    difference = float(np.abs(theirs - ours).max())

    _header(
        "Part 2: one CNN, fine targets, no retinal layer: ours vs cleverhans",
        steps,
    )
    rates = {}
    baseline = None
    for name in ("cleverhans BIM", "tfcv targeted_attack"):
        rates[name] = _row(
            name,
            firsts[name],
            samples[name, steps[0]],
            samples[name, steps[1]],
            steps,
            baseline,
        )
        baseline = baseline or rates[name]
    print(
        f"  max |ours - cleverhans| after N={steps[1]}: {difference:.2g} "
        "(on [0, 255])"
    )
    return rates, samples


def _summary(ensemble_rates, versus_rates, samples):
    print("\nSummary (iterations/s from the slopes)")
    plain = ensemble_rates["ensemble"]
    retinal = ensemble_rates["ensemble + RetinalBlur"]
    print(
        f"  RetinalBlur costs the ensemble attack {plain / retinal:5.2f}x "
        "the time per iteration"
    )
    ours = versus_rates["tfcv targeted_attack"]
    theirs = versus_rates["cleverhans BIM"]
    print(
        f"  ours / cleverhans iterations/s   {ours / theirs:5.2f}  "
        f"(target >= 1.00: {'met' if ours >= theirs else 'NOT met'})"
    )
    shares = [share for runs in samples.values() for _, share in runs]
    disturbed = sum(share >= BUSY_THRESHOLD for share in shares)
    print(
        f"\nOther processes used up to {100 * max(shares):.1f}% of the CPU "
        f"during a repetition; {disturbed} of {len(shares)} repetitions were "
        f"disturbed (>= {100 * BUSY_THRESHOLD:.0f}%)."
        + (
            " The machine was NOT idle: timings are pessimistic and ratios "
            "less reliable."
            if disturbed
            else " The machine was idle."
        )
    )


def _steps(text):
    values = [int(value) for value in text.split(",")]
    if len(values) != 2 or not 1 <= values[0] < values[1]:
        raise argparse.ArgumentTypeError(
            f"--steps must be two increasing counts >= 1, got {text!r}"
        )
    return tuple(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--steps", type=_steps, default=(4, 36), help="short,long N"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--alpha", type=float, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 3, (2, 8)
    tf.get_logger().setLevel("ERROR")  # no retracing notices

    started = time.time()
    images, labels, coarse = _digits()
    models = [_cnn(seed) for seed in range(NUM_MEMBERS)]
    for model in models:
        model(images[:1])  # build the weights outside the timings
    print(
        f"TensorFlow {tf.__version__}, tf-keras {tf_keras.__version__}, "
        f"{os.cpu_count()} CPUs; batch {BATCH} digits "
        f"{IMAGE_SIZE}x{IMAGE_SIZE}x3 on [0, 255]; eps={EPSILON:g}, "
        f"alpha={STEP_SIZE:g}; N = {args.steps[0]} and {args.steps[1]}; "
        f"{WARMUP_CALLS} warm-up call, then {args.repeats} repetitions per "
        "variant in turns."
    )
    ensemble_rates, ensemble_samples = _ensemble_section(
        models, images, coarse, args.steps, args.repeats, args.alpha
    )
    versus_rates, versus_samples = _cleverhans_section(
        models[0], images, labels, args.steps, args.repeats
    )
    _summary(
        ensemble_rates, versus_rates, {**ensemble_samples, **versus_samples}
    )
    print(f"Total time {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
