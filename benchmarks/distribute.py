"""GAN trainer throughput on 1, 2 and 4 replicas, and checkpoint cost.

Trains the main job's model (biggan_digits_32, ch 16, global batch 32, 2 D
steps per G step) with `mirrored` over 1, 2 and 4 virtual CPU devices,
each in its own process (virtual devices are fixed when TensorFlow
starts), one after another so they never compete. Each process warms up
(tracing), then times `--calls` calls of `--steps_per_call` steps, a
checkpoint save and a restore.

On this 2-core machine more replicas cannot be faster: the virtual devices
share the same two cores, so the table shows the cost of distribution
(per-replica work is smaller, all-reduces are added), not a speed-up. On
real devices the same code scales with the device count.

Usage: python benchmarks/distribute.py [--replicas=1,2,4] [--calls=4]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKER_FLAG = "--worker_replicas"


def _worker(replicas, calls, steps_per_call):
    """Child process: measures one replica count; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from tfcv.training.gan_trainer import GANTrainer
    from tfcv.training.gan_trainer import TrainConfig
    from tfcv.training.strategy import make_strategy
    from timing import timed

    strategy = make_strategy("mirrored", virtual_cpus=replicas)
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = GANTrainer(TrainConfig(), strategy, model_dir)
        count = tf.constant(steps_per_call)
        started = time.perf_counter()
        trainer.train_function(count)["g_loss"].numpy()
        warmup = time.perf_counter() - started
        samples = [
            timed(lambda: trainer.train_function(count)["g_loss"].numpy())
            for _ in range(calls)
        ]
        save = timed(trainer.save)
        restore = timed(trainer.restore)
        size = sum(
            os.path.getsize(os.path.join(model_dir, name))
            for name in os.listdir(model_dir)
            if name.startswith("ckpt-")
        )
    seconds = sorted(s for s, _ in samples)[len(samples) // 2]
    print(
        json.dumps(
            {
                "replicas": replicas,
                "warmup_s": warmup,
                "steps_per_s": steps_per_call / seconds,
                "others": max(o for _, o in samples),
                "save_s": save[0],
                "restore_s": restore[0],
                "checkpoint_mb": size / 2**20,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--steps_per_call", type=int, default=10)
    parser.add_argument(WORKER_FLAG, type=int, default=None)
    args = parser.parse_args()
    if args.worker_replicas:
        _worker(args.worker_replicas, args.calls, args.steps_per_call)
        return 0
    try:
        counts = [int(value) for value in args.replicas.split(",")]
    except ValueError:
        parser.error(f"--replicas must be integers, got {args.replicas}")
    if min(counts) < 1 or args.calls < 1 or args.steps_per_call < 1:
        parser.error("--replicas, --calls and --steps_per_call must be >= 1.")

    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    for count in counts:
        print(f"measuring {count} replica(s)...", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                f"{WORKER_FLAG}={count}",
                f"--calls={args.calls}",
                f"--steps_per_call={args.steps_per_call}",
            ],
            capture_output=True,
            text=True,
            cwd=here,
        )
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))

    base = rows[0]["steps_per_s"]
    print(
        "\nGAN trainer, biggan_digits_32 ch 16, global batch 32, mirrored "
        "over virtual CPUs (2 physical cores)"
    )
    print(
        f"{'replicas':>8} {'warm-up s':>9} {'steps/s':>8} {'vs first':>8} "
        f"{'others':>6} {'save s':>7} {'restore s':>9} {'ckpt MB':>8}"
    )
    for row in rows:
        print(
            f"{row['replicas']:>8} {row['warmup_s']:>9.1f} "
            f"{row['steps_per_s']:>8.2f} {row['steps_per_s'] / base:>7.2f}x "
            f"{row['others']:>5.0%} {row['save_s']:>7.2f} "
            f"{row['restore_s']:>9.2f} {row['checkpoint_mb']:>8.1f}"
        )
    print(
        "More virtual replicas share the same 2 cores: this is the cost of "
        "distribution, not a speed-up."
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
