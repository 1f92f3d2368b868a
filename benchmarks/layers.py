"""Layer step times, ours against tf-keras, measured side by side.

Times one forward+backward step (a `tf.function`, `training=True`, gradients
for the input and every trainable weight) of:
  1. GroupNormalization(groups=32): tfcv's vs tf_keras.layers', on a
     [B, 64, 64, 256] float32 map (target: ours no slower);
  2. a 3x3 Conv2D(256, padding="same") on the same map: plain, wrapped in
     tfcv's SpectralNormalization (target: <= 1.25x plain) and wrapped in
     tf_keras.layers.SpectralNormalization.

tf-keras 2.21's SpectralNormalization fails to build unless
TF_USE_LEGACY_KERAS=1 was set before TensorFlow was imported. When it fails
here, the failure is reported and the layer is timed in a child process
started with that variable, against a plain convolution timed in the same
child (the parent waits meanwhile, so the two never compete for the CPU).

Every variant is warmed up (tracing included), then the variants run in
turns, `--repeats` times each; the table shows the median. For every
repetition the script also records the share of the CPU used by other
processes (from /proc/stat minus our own CPU time) and says when it was not
idle: a second busy process makes these 2-thread timings several times
slower.

Usage: python benchmarks/layers.py [--batch=8] [--repeats=9]
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
from timing import BUSY_THRESHOLD  # noqa: E402  (benchmarks/ is on sys.path)
from timing import timed  # noqa: E402

HEIGHT, WIDTH, CHANNELS = 64, 64, 256
GROUPS = 32
WARMUP_CALLS = 2
WORKER_FLAG = "--keras_spectral_norm_worker"


def _timed(step, inputs):
    """Wall seconds of one call and other processes' share of the CPU."""
    return timed(lambda: step(inputs)[-1].numpy())


def _train_step(layer):
    """A tf.function returning d(loss)/d(inputs, weights) for `layer`."""

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            # A fixed, non-uniform upstream gradient.
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        return tape.gradient(loss, [inputs] + layer.trainable_weights)

    return step


def _measure(layers, inputs, repeats):
    """Times each layer's step in turns.

    Args:
      layers: `{name: built tf_keras layer}`.
      inputs: `[B, H, W, C]` tensor.
      repeats: repetitions per layer.

    Returns:
      `{name: [(seconds, others_share), ...]}`.
    """
    steps = {name: _train_step(layer) for name, layer in layers.items()}
    for step in steps.values():
        for _ in range(WARMUP_CALLS):
            step(inputs)[-1].numpy()
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(_timed(step, inputs))
    return samples


def _conv():
    return tf_keras.layers.Conv2D(CHANNELS, 3, padding="same")


def _built(layer, inputs):
    layer(inputs, training=True)
    return layer


def _keras_spectral_norm_worker(batch, repeats):
    """Child process: plain conv vs tf-keras SN conv; prints JSON."""
    inputs = tf.random.normal([batch, HEIGHT, WIDTH, CHANNELS], seed=0)
    layers = {
        "plain conv (child)": _built(_conv(), inputs),
        "tf-keras SN conv (child)": _built(
            tf_keras.layers.SpectralNormalization(_conv()), inputs
        ),
    }
    print(json.dumps(_measure(layers, inputs, repeats)))


def _keras_spectral_norm_in_child(batch, repeats):
    """Runs the worker with TF_USE_LEGACY_KERAS=1.

    Returns:
      `(samples, None)`, or `({}, reason)` when the child failed.
    """
    environment = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        WORKER_FLAG,
        f"--batch={batch}",
        f"--repeats={repeats}",
    ]
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return {}, f"child failed (exit {result.returncode}): {lines[-1]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), None


def _median(samples):
    return statistics.median(sample[0] for sample in samples)


def _row(name, samples, baseline=None):
    """Prints one table row; returns the median seconds."""
    seconds = [sample[0] for sample in samples]
    others = [sample[1] for sample in samples]
    disturbed = sum(share >= BUSY_THRESHOLD for share in others)
    ratio = "" if baseline is None else f"{_median(samples) / baseline:6.2f}x"
    print(
        f"  {name:<34}{1000 * _median(samples):9.1f}"
        f"{1000 * min(seconds):9.1f}{1000 * max(seconds):9.1f}  {ratio:>7}  "
        f"{100 * max(others):5.1f}%  {disturbed}/{len(samples)}"
    )
    return _median(samples)


def _header(title):
    print(f"\n{title}")
    print(
        f"  {'variant':<34}{'median':>9}{'min':>9}{'max':>9}  "
        f"{'ratio':>7}  {'others':>6}  disturbed"
    )
    print(f"  {'':<34}{'(ms)':>9}{'(ms)':>9}{'(ms)':>9}  {'':>7}  {'max':>6}")


def _group_norm_section(inputs, repeats):
    """Times both GroupNormalizations; returns (ratio, samples)."""
    samples = _measure(
        {
            "tfcv GroupNormalization": _built(
                tfcv.layers.GroupNormalization(GROUPS), inputs
            ),
            "tf_keras GroupNormalization": _built(
                tf_keras.layers.GroupNormalization(GROUPS), inputs
            ),
        },
        inputs,
        repeats,
    )
    _header(f"Forward+backward, GroupNormalization(groups={GROUPS})")
    baseline = _median(samples["tf_keras GroupNormalization"])
    for name, variant_samples in samples.items():
        _row(name, variant_samples, baseline)
    return _median(samples["tfcv GroupNormalization"]) / baseline, samples


def _spectral_norm_section(inputs, batch, repeats):
    """Times the three convolutions; returns (ours, tf-keras', samples).

    The ratios are to the plain convolution; tf-keras' is None when it ran
    nowhere. Samples of a child process are included.
    """
    convs = {
        "plain conv": _built(_conv(), inputs),
        "tfcv SN conv": _built(
            tfcv.layers.SpectralNormalization(_conv()), inputs
        ),
    }
    failure = None
    try:
        convs["tf-keras SN conv"] = _built(
            tf_keras.layers.SpectralNormalization(_conv()), inputs
        )
    except Exception as error:  # noqa: BLE001 - reported in the table.
        first_line = (str(error).splitlines() or [""])[0]
        failure = f"{type(error).__name__}: {first_line}"
    samples = _measure(convs, inputs, repeats)
    child_samples, child_failure = {}, None
    if failure:
        child_samples, child_failure = _keras_spectral_norm_in_child(
            batch, repeats
        )

    _header(f"Forward+backward, 3x3 Conv2D({CHANNELS})")
    plain = _median(samples["plain conv"])
    for name, variant_samples in samples.items():
        _row(name, variant_samples, plain)
    ours = _median(samples["tfcv SN conv"]) / plain
    if not failure:
        return ours, _median(samples["tf-keras SN conv"]) / plain, samples
    print(f"  {'tf-keras SN conv':<34}failed to build: {failure}")
    if not child_samples:
        print(f"  {'':<34}{child_failure}")
        return ours, None, samples
    print("  in a child process with TF_USE_LEGACY_KERAS=1:")
    child_plain = _row(
        "plain conv (child)", child_samples["plain conv (child)"]
    )
    child_keras = _row(
        "tf-keras SN conv (child)",
        child_samples["tf-keras SN conv (child)"],
        child_plain,
    )
    return ours, child_keras / child_plain, {**samples, **child_samples}


def _summary(group_norm_ratio, ours_sn_ratio, keras_sn_ratio, samples):
    """Prints the ratios against their targets and the machine's state."""
    print("\nRatios (median step times)")
    print(
        f"  tfcv GN / tf_keras GN        {group_norm_ratio:5.2f}  "
        "(target <= 1.00: "
        f"{'met' if group_norm_ratio <= 1.0 else 'NOT met'})"
    )
    print(
        f"  tfcv SN conv / plain conv    {ours_sn_ratio:5.2f}  "
        "(target <= 1.25: "
        f"{'met' if ours_sn_ratio <= 1.25 else 'NOT met'})"
    )
    if keras_sn_ratio is None:
        print("  tf-keras SN conv / plain     n/a (tf-keras SN did not run)")
    else:
        print(f"  tf-keras SN conv / plain     {keras_sn_ratio:5.2f}")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(WORKER_FLAG, action="store_true", help="internal")
    args = parser.parse_args()
    if args.keras_spectral_norm_worker:
        _keras_spectral_norm_worker(args.batch, args.repeats)
        return 0

    started = time.time()
    shape = [args.batch, HEIGHT, WIDTH, CHANNELS]
    inputs = tf.random.normal(shape, seed=0)
    print(
        f"TensorFlow {tf.__version__}, tf-keras {tf_keras.__version__}, "
        f"{os.cpu_count()} CPUs; inputs {tuple(shape)} float32; "
        f"{WARMUP_CALLS} warm-up calls, then {args.repeats} repetitions "
        "per variant in turns."
    )
    group_norm_ratio, norm_samples = _group_norm_section(inputs, args.repeats)
    ours_sn_ratio, keras_sn_ratio, conv_samples = _spectral_norm_section(
        inputs, args.batch, args.repeats
    )
    _summary(
        group_norm_ratio,
        ours_sn_ratio,
        keras_sn_ratio,
        {**norm_samples, **conv_samples},
    )
    print(f"Total time {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
