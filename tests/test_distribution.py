"""Distributed training through `tfcv train`: the same model whatever runs
it, and recovery from faults.

Every run here is a real `tfcv train` process; runs are compared through
their checkpoints (every variable of G, D, the EMA generator and both
optimizers).

- 1 replica (one_device), 4 replicas (mirrored over 4 virtual CPUs), two
  worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, 1 replica
  each) and XLA (`--jit_compile=true`) all end one step with the same
  weights within 1e-4 (the optimizers' slots, which then hold the
  gradients, within 1e-3 of each slot's scale).
- `kill -9` mid-run, then SIGTERM mid-run, then a rerun to the end: with
  `--deterministic`, the same weights as an uninterrupted run.

Adam's first update is about lr · sign(g) where |g| >> ε, so float
rounding of near-zero gradient entries (different summation orders on
different replica counts) would decide whole steps of size lr; these runs
use `--adam_epsilon=1e-3` so that the comparison is about the gradients.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import tfcv_command

ONE_STEP = [
    "--steps=1",
    "--ch=8",
    "--batch_size=8",
    "--steps_per_call=1",
    "--adam_epsilon=1e-3",
    "--ema_start=1",
    "--noevaluate",
    "--seed=3",
]


def _train(model_dir, *flags, env=None, check=True):
    result = subprocess.run(
        tfcv_command() + ["train", f"--model_dir={model_dir}", *flags],
        capture_output=True,
        text=True,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-2000:] + result.stderr[-3000:])
    return result


def _arrays(model_dir_or_checkpoint):
    """`{variable path: array}` of the latest checkpoint."""
    path = model_dir_or_checkpoint
    if os.path.isdir(path):
        path = tf.train.latest_checkpoint(path)
    assert path, f"no checkpoint in {model_dir_or_checkpoint}"
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
        and not name.startswith("save_counter")
    }


def _worst_difference(first, second):
    """Largest |difference| over every float variable of two checkpoints."""
    assert sorted(first) == sorted(second)
    assert len(first) > 100  # G, D, EMA G and the optimizers' slots
    return max(
        float(np.abs(first[name].astype(np.float64) - second[name]).max())
        for name in first
        if first[name].dtype.kind == "f"
    )


def _assert_same_model(first, second, atol=1e-4, slot_rtol=1e-3):
    """Weights (G, D, EMA G, SN and BN state) within `atol`; optimizer
    slots (after one step: the gradients and their squares, up to ~10)
    within `slot_rtol` of each slot's largest entry, as summation order
    differs between replica counts and XLA."""
    weights = {n: a for n, a in first.items() if "optimizer" not in n}
    slots = {n: a for n, a in first.items() if "optimizer" in n}
    worst_weight = max(
        float(np.abs(a.astype(np.float64) - second[n]).max())
        for n, a in weights.items()
        if a.dtype.kind == "f"
    )
    assert worst_weight <= atol, worst_weight
    for name, array in slots.items():
        if array.dtype.kind != "f":
            continue
        scale = max(float(np.abs(second[name]).max()), 1.0)
        difference = float(
            np.abs(array.astype(np.float64) - second[name]).max()
        )
        assert difference <= slot_rtol * scale, (name, difference, scale)


@pytest.fixture(scope="module")
def one_replica(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("one_replica"))
    _train(model_dir, "--strategy=one_device", "--jit_compile=false", *ONE_STEP)
    return _arrays(model_dir)


def test_four_replicas_give_the_one_replica_step(one_replica, tmp_path):
    _train(tmp_path, "--strategy=mirrored", "--virtual_cpus=4", *ONE_STEP)

    _assert_same_model(_arrays(str(tmp_path)), one_replica)


def test_xla_step_gives_the_graph_step(one_replica, tmp_path):
    _train(tmp_path, "--strategy=one_device", "--jit_compile=true", *ONE_STEP)

    _assert_same_model(_arrays(str(tmp_path)), one_replica)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_worker_processes_train_the_one_replica_model(
    one_replica, tmp_path
):
    model_dir = str(tmp_path / "run")
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        processes.append(
            subprocess.Popen(
                tfcv_command()
                + [
                    "train",
                    f"--model_dir={model_dir}",
                    "--strategy=multi_worker",
                    *ONE_STEP,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out[-2000:] + err[-3000:]

    chief = _arrays(model_dir)
    worker = _arrays(os.path.join(model_dir, ".worker-1"))
    assert _worst_difference(chief, worker) == 0.0
    _assert_same_model(chief, one_replica)
    # Only the chief wrote into model_dir.
    assert sorted(os.listdir(model_dir)) == sorted(
        [
            ".worker-1",
            "checkpoint",
            "config.json",
            "samples.png",
            "summaries",
        ]
        + [name for name in os.listdir(model_dir) if name.startswith("ckpt-")]
    )


def test_bad_tf_config_is_a_one_line_error(tmp_path):
    env = dict(os.environ, TF_CONFIG='{"cluster": {"worker": ["a:1"]}, ')
    result = _train(
        tmp_path / "run", "--strategy=multi_worker", env=env, check=False
    )

    assert result.returncode == 2
    assert "TF_CONFIG is not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def _tf_config(workers, index):
    return json.dumps(
        {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
    )


class _Lines:
    """Collects a process's stderr lines in the background."""

    def __init__(self, process):
        self.lines = []
        self._thread = threading.Thread(
            target=lambda: self.lines.extend(iter(process.stderr.readline, "")),
            daemon=True,
        )
        self._thread.start()

    def wait_for(self, text, process, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(text in line for line in list(self.lines)):
                return
            if process.poll() is not None:
                time.sleep(0.2)
                raise AssertionError("".join(self.lines)[-3000:])
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} after {timeout} s")

    def text(self):
        self._thread.join(timeout=10)
        return "".join(self.lines)


@pytest.fixture(autouse=True)
def _kill_leftover_workers():
    """Workers a failed test leaves behind would hold ports and cores."""
    yield
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()
    _STARTED.clear()


_STARTED = []


def _start_worker(model_dir, tf_config, *flags):
    process = _popen_worker(model_dir, tf_config, *flags)
    _STARTED.append(process)
    return process


def _popen_worker(model_dir, tf_config, *flags):
    return subprocess.Popen(
        tfcv_command()
        + [
            "train",
            f"--model_dir={model_dir}",
            "--strategy=multi_worker",
            *ONE_STEP,
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CONFIG=tf_config),
    )


def test_lone_worker_gives_up_after_the_cluster_timeout(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    process = _start_worker(
        tmp_path / "run", _tf_config(workers, 0), "--cluster_timeout=3"
    )

    out, err = process.communicate(timeout=120)

    assert process.returncode == 1, out + err
    message = err.strip().splitlines()[-1]
    assert f"did not start (first: worker:1 at {workers[1]})" in message
    assert "within --cluster_timeout=3 s" in message
    assert not os.path.exists(tmp_path / "run")


def test_lone_worker_stops_on_sigterm_while_waiting(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    process = _start_worker(tmp_path / "run", _tf_config(workers, 1))
    lines = _Lines(process)
    lines.wait_for("Joining the cluster", process)
    time.sleep(2.0)  # Inside TensorFlow's wait by now.

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)

    assert process.returncode == 143
    assert "stopped by SIGTERM while waiting" in lines.text()
    assert not os.path.exists(tmp_path / "run")


def test_sigterm_before_the_first_step_is_honoured_under_multi_worker(
    tmp_path,
):
    model_dir = tmp_path / "run"
    tf_config = _tf_config([f"127.0.0.1:{_free_port()}"], 0)
    process = _start_worker(model_dir, tf_config, "--steps=50")
    lines = _Lines(process)
    lines.wait_for("Joined the cluster", process)

    # Models are still being built: TensorFlow's runtime has its own SIGTERM
    # handler by now, which must not swallow the signal.
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=300)

    assert process.returncode == 143, lines.text()[-3000:]
    assert "(stopped by SIGTERM)" in out
    step = int(tf.train.latest_checkpoint(model_dir).rsplit("-", 1)[1])
    assert step < 50


def test_tf_config_naming_one_address_twice_is_a_one_line_error(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    process = _start_worker(tmp_path / "run", _tf_config([address, address], 0))

    out, err = process.communicate(timeout=120)

    assert process.returncode == 2
    assert f"lists the address {address} for more than one task" in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def test_sigterm_to_one_worker_stops_every_worker_at_one_saved_step(
    tmp_path,
):
    model_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    flags = ("--steps=200", "--checkpoint_every=100", "--summary_every=100")
    chief, other = [
        _start_worker(model_dir, _tf_config(workers, index), *flags)
        for index in range(2)
    ]
    lines = _Lines(other)
    lines.wait_for("Training biggan", other)
    time.sleep(5.0)  # Into the steps.

    other.send_signal(signal.SIGTERM)
    chief_out, _ = chief.communicate(timeout=300)
    other.wait(timeout=300)

    assert chief.returncode == other.returncode == 143, lines.text()[-2000:]
    assert "another worker was stopped by SIGTERM" in chief_out
    step = int(chief_out.split("Stopped at step ")[1].split()[0])
    assert 0 < step < 200
    assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{step}")


@pytest.mark.parametrize(
    "tf_config, flags, message",
    [
        (
            _tf_config(["127.0.0.1:99999"], 0),
            ["--strategy=multi_worker"],
            "port 1-65535",
        ),
        (
            _tf_config(["127.0.0.1:2222", "127.0.0.1:2223"], 1),
            ["--strategy=mirrored"],
            "TF_CONFIG names a cluster of 2 tasks but --strategy=mirrored",
        ),
        (None, ["--virtual_cpus=10000000"], "--virtual_cpus must be at most"),
        (
            _tf_config(["localhost:2222", "127.0.0.1:2222"], 1),
            ["--strategy=multi_worker"],
            "are the same endpoint",
        ),
    ],
    ids=[
        "port_out_of_range",
        "tf_config_without_multi_worker",
        "cpus",
        "one_endpoint_two_names",
    ],
)
def test_cluster_misconfigurations_are_one_line_errors(
    tmp_path, tf_config, flags, message
):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = tf_config

    result = _train(tmp_path / "run", *ONE_STEP, *flags, env=env, check=False)

    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


KILL_FLAGS = [
    "--steps=24",
    "--ch=8",
    "--batch_size=8",
    "--steps_per_call=1",
    "--checkpoint_every=4",
    "--summary_every=24",
    "--ema_start=1",
    "--noevaluate",
    "--deterministic",
    "--strategy=one_device",
    "--jit_compile=false",
]


def _start(model_dir):
    return subprocess.Popen(
        tfcv_command() + ["train", f"--model_dir={model_dir}", *KILL_FLAGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(model_dir, step, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        # The state file names a checkpoint only once it is complete.
        latest = tf.train.latest_checkpoint(model_dir)
        if latest and int(latest.rsplit("-", 1)[1]) >= step:
            return
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1][-3000:])
        time.sleep(0.05)
    raise AssertionError(f"no ckpt-{step} after {timeout} s")


def test_killed_then_preempted_run_ends_with_the_uninterrupted_weights(
    tmp_path,
):
    straight = str(tmp_path / "straight")
    _train(straight, *KILL_FLAGS)

    interrupted = str(tmp_path / "interrupted")
    process = _start(interrupted)
    _wait_for_checkpoint(interrupted, 4, process)
    process.kill()  # SIGKILL: no chance to save
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = tf.train.latest_checkpoint(interrupted)
    assert int(killed_at.rsplit("-", 1)[1]) < 24

    process = _start(interrupted)
    resumed_from = int(killed_at.rsplit("-", 1)[1])
    _wait_for_checkpoint(interrupted, resumed_from + 4, process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 143, out
    assert "(stopped by SIGTERM)" in out

    _train(interrupted, *KILL_FLAGS)

    assert _worst_difference(_arrays(interrupted), _arrays(straight)) == 0.0


def test_bfloat16_run_keeps_float32_variables_and_exports_float32(
    one_replica, tmp_path
):
    model_dir = str(tmp_path / "run")
    _train(
        model_dir,
        "--strategy=one_device",
        "--jit_compile=false",
        "--mixed_precision=bfloat16",
        *ONE_STEP,
    )
    arrays = _arrays(model_dir)

    assert {a.dtype for a in arrays.values() if a.dtype.kind == "f"} == {
        np.dtype("float32")
    }
    # The step really ran in bfloat16: its gradients (Adam's slots after
    # one step) are not the float32 ones, but point the same way.
    for optimizer in ("g_optimizer", "d_optimizer"):
        names = sorted(
            name
            for name in arrays
            if name.startswith(optimizer) and arrays[name].size > 1
        )
        ours = np.concatenate([arrays[name].ravel() for name in names])
        reference = np.concatenate(
            [one_replica[name].ravel() for name in names]
        )
        assert not np.array_equal(ours, reference)
        assert np.corrcoef(ours, reference)[0, 1] > 0.98, optimizer

    subprocess.run(
        tfcv_command()
        + ["export", f"--model_dir={model_dir}", f"--export_dir={tmp_path}/e"],
        check=True,
        capture_output=True,
    )
    module = tf.saved_model.load(str(tmp_path / "e" / "1"))
    images = module.signatures["serving_default"](
        z=tf.random.normal([2, 80]),
        y=tf.one_hot([1, 2], 10),
        truncation=tf.constant(1.0),
    )["default"]
    assert images.dtype == tf.float32
    assert np.isfinite(images.numpy()).all()


def test_xla_with_cpu_mirrored_is_a_usage_error(tmp_path):
    result = _train(
        tmp_path / "run",
        "--strategy=mirrored",
        "--jit_compile=true",
        check=False,
    )

    assert result.returncode == 2
    assert "--jit_compile=true cannot compile" in result.stderr
    assert not os.path.exists(tmp_path / "run")
