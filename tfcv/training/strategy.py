"""Builds the `tf.distribute` strategy named on the command line.

Trainers call `make_strategy` once, before TensorFlow runs any op (virtual
CPU devices can only be configured then), and never special-case the
strategy afterwards.

Names: `default` (no distribution), `one_device`, `mirrored` (all local
GPUs; on a CPU-only machine the CPU is split into `virtual_cpus` logical
devices so that cross-replica code really runs with several replicas),
`multi_worker` (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`) and
`tpu` (`TPUStrategy` on the TPU at `tpu_address`).
"""

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def configure_virtual_cpus(count: int) -> None:
    """Splits the first CPU into `count` logical devices (if not done yet).

    Raises:
      ValueError: if `count` < 1, or TensorFlow already initialized the
        devices with a different split.
    """
    if count < 1:
        raise ValueError(f"`virtual_cpus` must be >= 1, got {count}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    if count == 1 and current is None:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as error:
        raise ValueError(
            f"Cannot split the CPU into {count} virtual devices: TensorFlow "
            "was already initialized. Configure devices before running ops."
        ) from error


def make_strategy(
    name: str = "mirrored", virtual_cpus: int = 2, tpu_address: str = ""
) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    Args:
      name: one of `STRATEGIES`.
      virtual_cpus: logical CPU devices for `mirrored` (and `one_device`'s
        placement) when no GPU is present; `>= 1`.
      tpu_address: the TPU's name or `grpc://` address for `tpu`.

    Raises:
      ValueError: for an unknown `name` or a bad `virtual_cpus`.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}; expected one of {STRATEGIES}."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_address
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()

    gpus = tf.config.list_physical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if gpus:
        return tf.distribute.MirroredStrategy()
    configure_virtual_cpus(virtual_cpus)
    devices = [f"/cpu:{index}" for index in range(virtual_cpus)]
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and ("chief" not in resolver.cluster_spec().as_dict())
    )
