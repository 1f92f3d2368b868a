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

import json
import os
import socket

import tensorflow as tf
from absl import logging

from tfcv.training.rendezvous import ClusterJoinError  # noqa: F401 (API)
from tfcv.training.rendezvous import rendezvous

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


def check_tf_config(raw):
    """Validates a `TF_CONFIG` string for `multi_worker`; returns it parsed.

    Expected: `{"cluster": {"worker": ["host:port", ...]}, "task":
    {"type": "worker", "index": i}}` (a `chief` job may be listed too).

    Raises:
      ValueError: naming what is wrong and the expected form.
    """
    example = (
        'e.g. {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error.msg} at character "
            f"{error.pos}); {example}."
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f'TF_CONFIG has no "cluster" mapping; {example}.')
    for job, addresses in cluster.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(
                isinstance(a, str)
                and a.rpartition(":")[2].isdigit()
                and 0 < int(a.rpartition(":")[2]) < 65536
                for a in addresses
            )
        ):
            raise ValueError(
                f"TF_CONFIG cluster job {job!r} must be a non-empty list of "
                f'"host:port" strings (port 1-65535), got {addresses!r}.'
            )
    addresses = [a for tasks in cluster.values() for a in tasks]
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ValueError(
            f"TF_CONFIG lists the address {repeated[0]} for more than one "
            "task; every task needs its own host:port."
        )
    _check_distinct_endpoints(addresses)
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(
            f'TF_CONFIG has no "task" with a "type" and "index"; {example}.'
        )
    job, index = task.get("type"), task.get("index", 0)
    if job not in cluster:
        raise ValueError(
            f"TF_CONFIG task type {job!r} is not a job of the cluster "
            f"({', '.join(sorted(cluster))})."
        )
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or not (0 <= index < len(cluster[job]))
    ):
        raise ValueError(
            f"TF_CONFIG task index {index!r} does not name one of the "
            f"{len(cluster[job])} {job!r} tasks (0 to "
            f"{len(cluster[job]) - 1})."
        )
    return config


def _check_distinct_endpoints(addresses):
    """Refuses two addresses that name one endpoint (localhost:P and
    127.0.0.1:P). Names this machine cannot resolve are left to the
    rendezvous."""
    seen = {}
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port))
        except (OSError, UnicodeError):
            continue
        for endpoint in {info[4][:2] for info in infos}:
            if endpoint in seen and seen[endpoint] != address:
                raise ValueError(
                    f"TF_CONFIG addresses {seen[endpoint]} and {address} "
                    f"are the same endpoint ({endpoint[0]}:{endpoint[1]}); "
                    "every task needs its own host:port."
                )
            seen[endpoint] = address


def make_strategy(
    name: str = "mirrored",
    virtual_cpus: int = 2,
    tpu_address: str = "",
    cluster_timeout: float = 0.0,
    stop=None,
    run_flags=None,
) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    Args:
      name: one of `STRATEGIES`.
      virtual_cpus: logical CPU devices for `mirrored` (and `one_device`'s
        placement) when no GPU is present; `>= 1`.
      tpu_address: the TPU's name or `grpc://` address for `tpu`.
      cluster_timeout: `multi_worker` only: seconds to wait for every task
        of `TF_CONFIG` to start; `0` waits forever.
      stop: `multi_worker` only: a `PreemptionFlag`; a SIGTERM while
        waiting for the cluster ends the wait.
      run_flags: `multi_worker` only: the flags every task must share (a
        JSON-serializable dict); a task started otherwise is refused.

    Raises:
      ValueError: for an unknown `name`, a bad `virtual_cpus`, a malformed
        `TF_CONFIG` (multi_worker) or no `tpu_address` (tpu).
      ClusterJoinError: if the cluster did not form within
        `cluster_timeout` or a SIGTERM came first.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}; expected one of {STRATEGIES}."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu":
        if not tpu_address:
            raise ValueError(
                "--strategy=tpu needs --tpu=<TPU name or grpc://host:port>."
            )
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_address
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        # Without TF_CONFIG this process is a cluster of one worker.
        if os.environ.get("TF_CONFIG") is not None:
            config = check_tf_config(os.environ["TF_CONFIG"])
            count = sum(len(tasks) for tasks in config["cluster"].values())
            logging.info(
                "Joining the cluster of TF_CONFIG (%d tasks); this waits "
                "until every task has started the same command.",
                count,
            )
            rendezvous(config, run_flags or {}, cluster_timeout, stop)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        if stop is not None:
            # TensorFlow's runtime replaced the SIGTERM handler while it
            # connected (a C++ one, which Python cannot see): take it back.
            stop.install()
        logging.info(
            "Joined the cluster: %d replicas in all.",
            strategy.num_replicas_in_sync,
        )
        return strategy

    gpus = tf.config.list_physical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if gpus:
        return tf.distribute.MirroredStrategy()
    configure_virtual_cpus(virtual_cpus)
    devices = [f"/cpu:{index}" for index in range(virtual_cpus)]
    return tf.distribute.MirroredStrategy(devices)


def task_id(strategy: tf.distribute.Strategy):
    """This worker's index in a multi-worker cluster, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    return resolver.task_id


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
