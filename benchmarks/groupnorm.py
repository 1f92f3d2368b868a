"""Group normalization against batch normalization: step time and memory.

Measures, for issue 8 (Wu & He 2018, "Group Normalization"):
  1. The forward+backward step time (a `tf.function`, `training=True`,
     gradients for the input and every trainable weight, loss
     `sum(y * sin(y))` in float32) of tfcv's GroupNormalization(groups=32),
     tf_keras.layers.GroupNormalization(groups=32) and tfcv's
     BatchNormalization, on [B, 56, 56, 256] and [B, 14, 14, 1024] maps, at
     B = 2 and 32, in float32 and under the mixed_float16 policy (set before
     the layers are built, inputs cast to float16). Target: tfcv GN within
     10% of BN's step time (GN/BN <= 1.10).
  2. One ResNet-50 training step at batch 2 (224x224x3 images, 1000
     classes, SGD with momentum 0.9, weight decay included in the loss)
     with GN and with BN (`tfcv.models.resnet.resnet50(norm=...)`): peak
     memory and median step time. Each model runs in its own child process
     (this script with a worker flag; the parent waits meanwhile), which
     reads its own resident set size from /proc/self/status:
       * peak: VmHWM over the whole child (import, build, tracing, steps);
       * built: VmRSS once the model and inputs exist, before any step;
       * steady: VmHWM over the timed steps only (reset through
         /proc/self/clear_refs after the warm-up steps): the footprint of
         training once traced, activations and momentum slots included;
       * +step: steady minus built, what training adds to the model.
     Freed memory the allocator keeps counts as resident, so steady is the
     steady-state footprint, not a step's own allocations.
     `tf.config.experimental.get_memory_info("CPU:0")` is not used: on CPU
     it reports zeros (checked with TensorFlow 2.21).

Every variant is warmed up (tracing included), then the variants of one
row run in turns, `--repeats` times each; tables show medians. For every
repetition the script records the share of the CPU used by other processes
(from /proc/stat minus our own CPU time); a row is flagged when that share,
averaged over its repetitions weighted by their duration, reaches
`BUSY_THRESHOLD` (one repetition of a few ms is too short for /proc/stat's
10 ms ticks to judge alone). A second busy process makes these 2-thread
timings several times slower.

`--quick` times batch 2 in float32 only, with 3 repetitions, and replaces
ResNet-50 by `resnet_reduced` (32x32 images, 10 classes) so that the run
finishes in well under a minute; `--skip_memory` leaves out part 2.

Usage: python benchmarks/groupnorm.py [--repeats=7] [--quick] [--skip_memory]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import tfcv.layers  # noqa: E402
from tfcv.layers.batch_normalization import BatchNormalization  # noqa: E402
from tfcv.models import resnet  # noqa: E402
from timing import BUSY_THRESHOLD  # noqa: E402  (benchmarks/ is on sys.path)
from timing import timed  # noqa: E402

GROUPS = 32
TARGET = 1.10  # tfcv GN / BN step time
WARMUP_CALLS = 2
MAPS = ((56, 56, 256), (14, 14, 1024))
BATCHES = (2, 32)
POLICIES = ("float32", "mixed_float16")
VARIANTS = ("tfcv GN", "keras GN", "tfcv BN")
MEMORY_BATCH = 2
MEMORY_WARMUP_STEPS = 2
WORKER_FLAG = "--memory_worker"


# ---------------------------------------------------------------- layers


def _train_step(layer):
    """A tf.function returning d(loss)/d(inputs, weights) for `layer`."""

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = tf.cast(layer(inputs, training=True), tf.float32)
            # A fixed, non-uniform upstream gradient; float32, so that the
            # sum over a whole map cannot overflow under mixed precision.
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        return tape.gradient(loss, [inputs] + layer.trainable_weights)

    return step


def _build_layers(inputs, policy):
    """The three normalizations, built under `policy`."""
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        layers = {
            "tfcv GN": tfcv.layers.GroupNormalization(groups=GROUPS),
            "keras GN": tf_keras.layers.GroupNormalization(groups=GROUPS),
            "tfcv BN": BatchNormalization(),
        }
        for layer in layers.values():
            layer(inputs, training=True)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)
    return layers


def _measure_row(shape, batch, policy, repeats):
    """Times the three layers in turns on one map.

    Returns:
      `{variant: [(seconds, others_share), ...]}`.
    """
    inputs = tf.random.normal([batch, *shape], seed=0)
    if policy == "mixed_float16":
        inputs = tf.cast(inputs, tf.float16)
    layers = _build_layers(inputs, policy)
    steps = {name: _train_step(layer) for name, layer in layers.items()}
    for step in steps.values():
        for _ in range(WARMUP_CALLS):
            step(inputs)[-1].numpy()
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(
                timed(lambda step=step: step(inputs)[-1].numpy())
            )
    return samples


def _busy(samples):
    """Other processes' CPU share over `samples`, weighted by duration.

    A share measured over one repetition of a few milliseconds is coarse
    (/proc/stat counts 10 ms ticks), so rows are judged by this mean.
    """
    seconds = sum(duration for duration, _ in samples)
    return sum(duration * share for duration, share in samples) / seconds


def _disturbed(samples):
    return sum(share >= BUSY_THRESHOLD for _, share in samples)


def _median_ms(samples):
    return 1000 * statistics.median(seconds for seconds, _ in samples)


def _layer_table(rows, repeats):
    """Times every (map, batch, policy) row; prints the table.

    Returns:
      `([(seconds, others_share), ...] of all variants, number of rows
      meeting the target)`.
    """
    print(
        f"\nForward+backward step, median ms of {repeats} repetitions, "
        f"GN groups={GROUPS};\ntarget: tfcv GN / BN <= {TARGET:.2f}; "
        "others: CPU share of other\nprocesses over the row's repetitions "
        "(time-weighted, * when >= "
        f"{100 * BUSY_THRESHOLD:.0f}%);\ndist: repetitions with >= "
        f"{100 * BUSY_THRESHOLD:.0f}% (coarse for steps of a few ms)."
    )
    print(
        f"  {'map':<10}{'B':>3} {'dtype':<5}{'tfcv GN':>8}{'kerasGN':>8}"
        f"{'tfcv BN':>8}{'GN/BN':>6}{'GN/kGN':>7} {'target':<8}"
        f"{'others':>6}  {'dist':>4}"
    )
    everything, met = [], 0
    for shape, batch, policy in rows:
        samples = _measure_row(shape, batch, policy, repeats)
        ms = {name: _median_ms(samples[name]) for name in VARIANTS}
        to_bn = ms["tfcv GN"] / ms["tfcv BN"]
        to_keras = ms["tfcv GN"] / ms["keras GN"]
        met += to_bn <= TARGET
        pairs = [pair for name in VARIANTS for pair in samples[name]]
        everything += pairs
        dtype = "f32" if policy == "float32" else "mixed"
        print(
            f"  {'x'.join(map(str, shape)):<10}{batch:>3} {dtype:<5}"
            f"{ms['tfcv GN']:8.1f}{ms['keras GN']:8.1f}{ms['tfcv BN']:8.1f}"
            f"{to_bn:6.2f}{to_keras:7.2f} "
            f"{'met' if to_bn <= TARGET else 'NOT met':<8}"
            f"{100 * _busy(pairs):5.1f}%"
            + ("*" if _busy(pairs) >= BUSY_THRESHOLD else " ")
            + f"{_disturbed(pairs):>2}/{len(pairs)}"
        )
    return everything, met


# ---------------------------------------------------------------- memory


def _memory_status():
    """`{"VmRSS": MB, "VmHWM": MB}` of this process."""
    status = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) / 1024
    return status


def _reset_peak():
    """Resets VmHWM to the current VmRSS; False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _model(norm, quick):
    if quick:
        shape = (32, 32, 3)
        return resnet.resnet_reduced(norm, 10, shape), shape, 10
    shape = (224, 224, 3)
    return resnet.resnet50(norm, 1000, shape), shape, 1000


def _memory_worker(norm, quick, repeats):
    """Child process: one model's training steps; prints JSON."""
    tf_keras.utils.set_random_seed(0)
    model, shape, classes = _model(norm, quick)
    images = tf.random.normal([MEMORY_BATCH, *shape], seed=1)
    labels = tf.random.uniform([MEMORY_BATCH], 0, classes, tf.int32, seed=2)
    optimizer = tf_keras.optimizers.SGD(0.1, momentum=0.9)
    cross_entropy = tf_keras.losses.SparseCategoricalCrossentropy(
        from_logits=True
    )

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = cross_entropy(labels, logits) + tf.add_n(model.losses)
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss

    built = _memory_status()["VmRSS"]
    first, _ = timed(lambda: step().numpy())
    for _ in range(MEMORY_WARMUP_STEPS - 1):
        step().numpy()
    before = _memory_status()
    reset = _reset_peak()
    samples = [timed(lambda: step().numpy()) for _ in range(repeats)]
    after = _memory_status()
    report = {
        "norm": norm,
        "parameters": int(
            sum(tf.size(weight) for weight in model.trainable_weights)
        ),
        "built_mb": built,
        # The reset lowers VmHWM: the whole-child peak is the larger one.
        "peak_mb": max(before["VmHWM"], after["VmHWM"]),
        "step_peak_mb": after["VmHWM"] if reset else None,
        "first_step_s": first,
        "samples": samples,
    }
    print(json.dumps(report))


def _memory_in_child(norm, quick, repeats):
    """Runs the worker for `norm`; returns (report, None) or (None, why)."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"{WORKER_FLAG}={norm}",
        f"--repeats={repeats}",
    ] + (["--quick"] if quick else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return None, f"child failed (exit {result.returncode}): {lines[-1]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), None


def _memory_table(quick, repeats):
    """Runs GN and BN children one after the other; prints the table.

    Returns:
      `[(seconds, others_share), ...]` of the timed steps.
    """
    name = (
        "resnet_reduced (32x32x3, 10 classes)"
        if quick
        else ("ResNet-50 (224x224x3, 1000 classes)")
    )
    print(
        f"\nTraining step of {name}, batch {MEMORY_BATCH},\n"
        "SGD, one child process per normalization"
    )
    print(
        f"  {'norm':<5}{'peak':>7}{'built':>7}{'steady':>7}{'+step':>7}"
        f"{'first':>7}{'median':>8}{'min':>8} {'others':>6}  {'dist':>4}"
    )
    print(
        f"  {'':<5}{'(MB)':>7}{'(MB)':>7}{'(MB)':>7}{'(MB)':>7}"
        f"{'(s)':>7}{'(ms)':>8}{'(ms)':>8}"
    )
    reports, pairs = {}, []
    for norm in ("gn", "bn"):
        report, failure = _memory_in_child(norm, quick, repeats)
        if report is None:
            print(f"  {norm:<5}{failure}")
            continue
        reports[norm] = report
        samples = report["samples"]
        pairs += samples
        steady = report["step_peak_mb"]
        steady_text, added_text = "n/a", "n/a"
        if steady is not None:
            steady_text = f"{steady:.0f}"
            added_text = f"{steady - report['built_mb']:.0f}"
        print(
            f"  {norm:<5}{report['peak_mb']:7.0f}{report['built_mb']:7.0f}"
            f"{steady_text:>7}{added_text:>7}{report['first_step_s']:7.1f}"
            f"{_median_ms(samples):8.0f}"
            f"{1000 * min(seconds for seconds, _ in samples):8.0f} "
            f"{100 * _busy(samples):5.1f}%"
            + ("*" if _busy(samples) >= BUSY_THRESHOLD else " ")
            + f"{_disturbed(samples):>2}/{len(samples)}"
        )
    if len(reports) == 2:
        gn, bn = reports["gn"], reports["bn"]
        time_ratio = _median_ms(gn["samples"]) / _median_ms(bn["samples"])
        steady_ratios = ""
        if gn["step_peak_mb"] and bn["step_peak_mb"]:
            steady_ratio = gn["step_peak_mb"] / bn["step_peak_mb"]
            added_ratio = (gn["step_peak_mb"] - gn["built_mb"]) / (
                bn["step_peak_mb"] - bn["built_mb"]
            )
            steady_ratios = (
                f", steady {steady_ratio:.2f}x, +step {added_ratio:.2f}x"
            )
        print(
            f"  GN / BN: peak {gn['peak_mb'] / bn['peak_mb']:.2f}x"
            f"{steady_ratios}, step time {time_ratio:.2f}x.\n"
            f"  Trainable parameters: GN {gn['parameters']:,}, "
            f"BN {bn['parameters']:,}."
        )
    print(
        "  peak: VmHWM of the whole child (import, build, tracing, steps);"
        "\n  built: VmRSS with the model and inputs built; steady: "
        "VmHWM\n  over the timed steps (reset after the warm-up steps); "
        "+step: steady\n  minus built; first: first step, tracing included."
    )
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument(WORKER_FLAG, choices=("gn", "bn"), help="internal")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    if args.memory_worker:
        _memory_worker(args.memory_worker, args.quick, repeats)
        return 0

    started = time.time()
    batches = BATCHES[:1] if args.quick else BATCHES
    policies = POLICIES[:1] if args.quick else POLICIES
    rows = [
        (shape, batch, policy)
        for shape in MAPS
        for batch in batches
        for policy in policies
    ]
    print(
        f"TensorFlow {tf.__version__}, tf-keras {tf_keras.__version__}, "
        f"{os.cpu_count()} CPUs; {WARMUP_CALLS} warm-up calls, then "
        f"{repeats} repetitions per variant in turns."
    )
    samples, met = _layer_table(rows, repeats)
    print(f"  tfcv GN within {TARGET:.2f}x of BN in {met} of {len(rows)} rows.")
    if not args.skip_memory:
        samples += _memory_table(args.quick, repeats)
    busy = _busy(samples)
    print(
        f"\nOther processes used {100 * busy:.1f}% of the CPU over all timed "
        f"repetitions (time-weighted); {_disturbed(samples)} of "
        f"{len(samples)} repetitions reached "
        f"{100 * BUSY_THRESHOLD:.0f}%."
        + (
            " The machine was NOT idle: timings are pessimistic and ratios "
            "less reliable."
            if busy >= BUSY_THRESHOLD
            else " The machine was close to idle."
        )
    )
    print(f"Total time {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
