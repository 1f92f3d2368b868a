"""Test setup: 2 virtual CPU devices before TensorFlow runs any op.

Cross-replica code (batch statistics, gradient all-reduce) must really run
with several replicas, so the CPU is split into two logical devices here,
before any test touches TensorFlow.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_VIRTUAL_CPUS = 2

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_VIRTUAL_CPUS
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tfcv_command():
    """The `tfcv` console script of the environment running the tests."""
    candidate = os.path.join(os.path.dirname(sys.executable), "tfcv")
    if os.path.exists(candidate):
        return [candidate]
    return [sys.executable, "-m", "tfcv.cli.main"]


_STRATEGY = {}


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy for the whole session.

    Several MirroredStrategy objects in one process number their collective
    ops alike, and their all-reduces then collide; programs make one.
    """
    if "mirrored" not in _STRATEGY:
        devices = [f"/cpu:{index}" for index in range(NUM_VIRTUAL_CPUS)]
        _STRATEGY["mirrored"] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGY["mirrored"]
