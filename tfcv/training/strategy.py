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
import time

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")

# Seconds between polls of the other tasks' ports.
_JOIN_POLL_SECONDS = 0.25


class ClusterJoinError(RuntimeError):
    """The other workers did not show up, or a SIGTERM came first.

    `exit_code` is the status the command ends with: 1 for a timeout, 143
    (128 + SIGTERM) for a preemption. Nothing has been written yet.
    """

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


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
                isinstance(a, str) and a.rpartition(":")[2].isdigit()
                for a in addresses
            )
        ):
            raise ValueError(
                f"TF_CONFIG cluster job {job!r} must be a non-empty list of "
                f'"host:port" strings, got {addresses!r}.'
            )
    addresses = [a for tasks in cluster.values() for a in tasks]
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ValueError(
            f"TF_CONFIG lists the address {repeated[0]} for more than one "
            "task; every task needs its own host:port."
        )
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


def make_strategy(
    name: str = "mirrored",
    virtual_cpus: int = 2,
    tpu_address: str = "",
    cluster_timeout: float = 0.0,
    stop=None,
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
            wait_for_cluster(config, cluster_timeout, stop)
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


def wait_for_cluster(config, timeout, stop=None):
    """Returns once every other task of `config` accepts connections.

    `MultiWorkerMirroredStrategy()` blocks in C++, holding the interpreter,
    until every task has joined: a missing task would make it wait forever
    and deaf to SIGTERM. So first, in Python: this task listens on its own
    TF_CONFIG port (closing it again before TensorFlow takes the port) and
    polls the others' ports until all answer, watching the clock and
    `stop`. A task that dies after this rendezvous still stalls the join.

    Args:
      config: parsed `TF_CONFIG` (see `check_tf_config`).
      timeout: seconds to wait; `0` waits forever.
      stop: a `PreemptionFlag` or None; when it is set the wait ends.

    Raises:
      ValueError: if this task's port is taken by another process.
      ClusterJoinError: on timeout (exit status 1) or SIGTERM (143).
    """
    task = config["task"]
    own = config["cluster"][task["type"]][task.get("index", 0)]
    others = [
        address
        for tasks in config["cluster"].values()
        for address in tasks
        if address != own
    ]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(own.rpartition(":")[2])))
    except OSError as error:
        listener.close()
        raise ValueError(
            f"cannot listen on {own}, this task's address in TF_CONFIG "
            f"({error.strerror}); another process uses the port: stop it "
            "or pick a free port for this task."
        ) from None
    started = time.monotonic()
    pending = list(others)
    try:
        listener.listen(len(others) + 8)
        while pending:
            pending = [a for a in pending if not _answers(a)]
            if not pending:
                break
            if stop is not None and stop.requested:
                raise ClusterJoinError(
                    "stopped by SIGTERM while waiting for the other workers "
                    "of TF_CONFIG; nothing was written.",
                    exit_code=143,
                )
            if timeout and time.monotonic() - started > timeout:
                raise ClusterJoinError(
                    f"{len(pending)} task(s) of TF_CONFIG did not start "
                    f"within --cluster_timeout={timeout:g} s (first: "
                    f"{pending[0]}); start the same command on every task "
                    "(or raise --cluster_timeout; 0 waits forever).",
                    exit_code=1,
                )
            time.sleep(_JOIN_POLL_SECONDS)
    finally:
        listener.close()
    logging.info(
        "All %d tasks are up after %.1f s.",
        len(others) + 1,
        time.monotonic() - started,
    )


def _answers(address):
    """Whether `host:port` accepts a TCP connection now."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), 1.0):
            return True
    except OSError:
        return False
