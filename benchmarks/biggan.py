"""BigGAN-128 throughput on this CPU: graph mode against XLA, side by side.

For BigGAN-128 (Appendix B, Table 4; 1,000 classes) at channel multiplier
96 (the paper's) and 32, measures images per second of
  1. G forward at inference (batch 8);
  2. one G+D training step (batch 8): a D step on [real; fake] and a G step
     with BigGAN's orthogonal regularization, hinge losses, Adam(0, 0.999),
     both under cross-replica batch norm and spectral norm in training mode
     (the GAN trainer's step without the data pipeline and EMA);
each as a plain `tf.function` (graph) and with `jit_compile=True` (XLA),
and prints the XLA/graph speed ratio. Compilation is warmed up and
reported separately. Variants run in turns, `--repeats` times each; the
median is shown, with other processes' share of the CPU during the
measurements (disturbed repetitions are flagged).

Usage: python benchmarks/biggan.py [--ch=32,96] [--batch=8] [--repeats=3]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from timing import BUSY_THRESHOLD  # noqa: E402  (benchmarks/ is on sys.path)
from timing import timed  # noqa: E402
from tfcv.losses import hinge_discriminator_loss  # noqa: E402
from tfcv.losses import hinge_generator_loss  # noqa: E402
from tfcv.models import biggan_128  # noqa: E402
from tfcv.regularizers import orthogonal_penalty  # noqa: E402

ORTHOGONAL_BETA = 1e-4


def _inputs(config, batch, seed):
    z = tf.random.stateless_normal([batch, config.dim_z], [seed, 1])
    labels = tf.random.stateless_uniform(
        [batch], [seed, 2], maxval=config.num_classes, dtype=tf.int32
    )
    real = tf.random.stateless_uniform(
        [batch, config.resolution, config.resolution, 3], [seed, 3], -1, 1
    )
    return real, z, tf.one_hot(labels, config.num_classes)


def _forward(generator, jit):
    @tf.function(jit_compile=jit)
    def forward(real, z, y):
        del real
        return generator((z, y), training=False)

    return forward


def _train_step(generator, discriminator, jit):
    g_optimizer = tf_keras.optimizers.Adam(5e-5, beta_1=0.0, beta_2=0.999)
    d_optimizer = tf_keras.optimizers.Adam(2e-4, beta_1=0.0, beta_2=0.999)
    g_optimizer.build(generator.trainable_variables)
    d_optimizer.build(discriminator.trainable_variables)
    regularized = generator.orthogonal_regularization_variables()

    @tf.function(jit_compile=jit)
    def step(real, z, y):
        fake = generator((z, y), training=True)
        with tf.GradientTape() as tape:
            logits = discriminator(
                (tf.concat([real, fake], 0), tf.concat([y, y], 0)),
                training=True,
            )
            real_logits, fake_logits = tf.split(logits, 2)
            d_loss = hinge_discriminator_loss(real_logits, fake_logits)
        variables = discriminator.trainable_variables
        d_optimizer.apply_gradients(
            zip(tape.gradient(d_loss, variables), variables)
        )
        with tf.GradientTape() as tape:
            logits = discriminator(
                (generator((z, y), training=True), y), training=True
            )
            g_loss = hinge_generator_loss(logits) + tf.add_n(
                [orthogonal_penalty(k, ORTHOGONAL_BETA) for k in regularized]
            )
        variables = generator.trainable_variables
        g_optimizer.apply_gradients(
            zip(tape.gradient(g_loss, variables), variables)
        )
        return g_loss

    return step


def _measure(ch, batch, repeats):
    """`{(task, mode): (warm-up s, [(seconds, others), ...])}` for one ch."""
    generator, discriminator, config = biggan_128(ch=ch)
    real, z, y = _inputs(config, batch, seed=0)
    generator((z, y))
    discriminator((real, y))
    calls = {}
    for jit in (False, True):
        mode = "xla" if jit else "graph"
        calls[("G forward", mode)] = _forward(generator, jit)
        calls[("G+D step", mode)] = _train_step(generator, discriminator, jit)
    results = {}
    for key, call in calls.items():
        print(f"  ch {ch}: warming up {key[0]} ({key[1]})...", flush=True)
        started = time.perf_counter()
        call(real, z, y).numpy()
        results[key] = (time.perf_counter() - started, [])
    for repeat in range(repeats):
        print(f"  ch {ch}: repetition {repeat + 1}/{repeats}", flush=True)
        for key, call in calls.items():
            results[key][1].append(timed(lambda: call(real, z, y).numpy()))
    return results


def _report(ch, batch, results):
    print(f"\nBigGAN-128, ch {ch}, batch {batch} (this CPU, 2 threads)")
    print(
        f"{'task':<10} {'mode':<6} {'first call s':>12} {'median s':>9} "
        f"{'images/s':>9} {'others':>7}"
    )
    medians = {}
    for (task, mode), (warmup, samples) in results.items():
        seconds = statistics.median(s for s, _ in samples)
        others = max(o for _, o in samples)
        medians[(task, mode)] = seconds
        flag = "  (busy)" if others > BUSY_THRESHOLD else ""
        print(
            f"{task:<10} {mode:<6} {warmup:>12.1f} {seconds:>9.3f} "
            f"{batch / seconds:>9.2f} {others:>6.0%}{flag}"
        )
    for task in ("G forward", "G+D step"):
        ratio = medians[(task, "graph")] / medians[(task, "xla")]
        print(f"{task}: XLA is {ratio:.2f}x the speed of graph mode")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ch", default="32,96")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        widths = [int(value) for value in args.ch.split(",")]
    except ValueError:
        parser.error(f"--ch must be comma-separated integers, got {args.ch}")
    if min(widths) < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--ch, --batch and --repeats must be positive.")
    started = time.time()
    for ch in widths:
        _report(ch, args.batch, _measure(ch, args.batch, args.repeats))
    print(f"\nTotal time {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
