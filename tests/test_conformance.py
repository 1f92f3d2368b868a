"""Conformance suite: every public layer of `tfcv.layers` in every setting.

Each public layer has one or more `Case`s in `CASES`: a factory for a
representative instance, example inputs with a global batch of 4 (two
examples per replica under the session's 2-replica `MirroredStrategy`) and
the extra call arguments it takes. Every case goes through the same checks:

1. `get_config` round trip (and `tf_keras` serialization by registered name),
   with equal outputs once the weights are copied;
2. SavedModel round trip through `tf.saved_model.load`, which rebuilds the
   graph without any Python class of ours;
3. `tf.train.Checkpoint` round trip, non-trainable state included;
4. one training step under `MirroredStrategy`;
5. `jit_compile=True` against the same `tf.function` without XLA;
6. mixed precision (`mixed_float16`, `mixed_bfloat16`) against float32.

Before a check, every variable is moved away from its initial value (see
`_perturb`), so that a state that is not saved, restored, copied or
replicated shows up as a difference rather than as two equal initial values.

A new public layer must join `CASES`: `test_every_public_layer_has_a_case`
fails until it does. A case whose layer is not exported fails with a message
naming it, instead of breaking the import of this module.
"""

import contextlib
import dataclasses
import json
from typing import Any
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfcv.layers

# Global batch of every case; two examples per replica on two replicas.
BATCH = 4


def _normal(*shape, seed=0):
    """Float32 normal inputs `shape` with a fixed seed."""
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _ids(*shape, vocabulary, seed=0):
    """Int32 token ids in `[0, vocabulary)`."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, vocabulary, size=shape).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Case:
    """One representative instance of a public layer.

    Attributes:
      name: the pytest id.
      layer_name: the class' name in `tfcv.layers`.
      make: builds an (unbuilt) instance from the class.
      make_inputs: returns NumPy inputs (a pair for conditional layers).
      call_kwargs: call arguments besides `training`.
    """

    name: str
    layer_name: str
    make: Callable[[type], tf_keras.layers.Layer]
    make_inputs: Callable[[], Any]
    call_kwargs: dict = dataclasses.field(default_factory=dict)

    def layer_class(self):
        """The exported class; fails the calling test when it is missing."""
        layer_class = getattr(tfcv.layers, self.layer_name, None)
        if layer_class is None or self.layer_name not in tfcv.layers.__all__:
            pytest.fail(
                f"tfcv.layers does not export {self.layer_name}; the "
                f"conformance case {self.name!r} needs it (add it to "
                "tfcv/layers/__init__.py and its __all__).",
                pytrace=False,
            )
        return layer_class

    def build(self):
        """A new instance of the case's layer (not yet built)."""
        return self.make(self.layer_class())

    def inputs(self):
        """The example inputs as tensors."""
        return tf.nest.map_structure(tf.constant, self.make_inputs())

    def input_signature(self):
        """TensorSpecs of the inputs with an unknown batch size."""
        return tf.nest.map_structure(
            lambda array: tf.TensorSpec(
                (None,) + array.shape[1:], tf.as_dtype(array.dtype)
            ),
            self.make_inputs(),
        )

    def call(self, layer, inputs, training):
        """Runs `layer` on `inputs` in the given mode."""
        return layer(inputs, training=training, **self.call_kwargs)


CASES = [
    # SpectralNormalization: one case per kind of wrapped kernel.
    Case(
        name="spectral_norm_dense",
        layer_name="SpectralNormalization",
        make=lambda cls: cls(tf_keras.layers.Dense(6), power_iterations=2),
        make_inputs=lambda: _normal(BATCH, 5),
    ),
    Case(
        name="spectral_norm_conv2d",
        layer_name="SpectralNormalization",
        make=lambda cls: cls(tf_keras.layers.Conv2D(8, 3, padding="same")),
        make_inputs=lambda: _normal(BATCH, 8, 8, 3),
    ),
    Case(
        name="spectral_norm_conv2d_transpose",
        layer_name="SpectralNormalization",
        make=lambda cls: cls(
            tf_keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same")
        ),
        make_inputs=lambda: _normal(BATCH, 4, 4, 3),
    ),
    Case(
        name="spectral_norm_embedding",
        layer_name="SpectralNormalization",
        make=lambda cls: cls(tf_keras.layers.Embedding(10, 6), epsilon=1e-3),
        make_inputs=lambda: _ids(BATCH, 3, vocabulary=10),
    ),
    # SelfAttention: the authors' variant and the paper's text.
    Case(
        name="self_attention_spectral_norm_pooled",
        layer_name="SelfAttention",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 8, 8, 16),
    ),
    Case(
        name="self_attention_plain_unpooled",
        layer_name="SelfAttention",
        make=lambda cls: cls(
            key_divisor=4, spectral_norm=False, pool_keys=False
        ),
        make_inputs=lambda: _normal(BATCH, 8, 8, 16),
    ),
    # Batch norms: interpolated standing statistics at inference.
    Case(
        name="cross_replica_batch_norm",
        layer_name="CrossReplicaBatchNormalization",
        make=lambda cls: cls(standing_levels=(0.5, 1.0)),
        make_inputs=lambda: _normal(BATCH, 8, 8, 16),
        call_kwargs={"truncation": 0.75},
    ),
    Case(
        name="conditional_batch_norm",
        layer_name="ConditionalBatchNormalization",
        make=lambda cls: cls(),
        make_inputs=lambda: (
            _normal(BATCH, 8, 8, 16),
            _normal(BATCH, 5, seed=1),
        ),
    ),
    # Batch normalization for backbones (per replica, synchronized, BN*).
    Case(
        name="batch_norm",
        layer_name="BatchNormalization",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 6, 6, 8),
    ),
    Case(
        name="batch_norm_synchronized",
        layer_name="BatchNormalization",
        make=lambda cls: cls(synchronized=True),
        make_inputs=lambda: _normal(BATCH, 6, 6, 8),
    ),
    Case(
        name="frozen_batch_norm",
        layer_name="FrozenBatchNormalization",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 6, 6, 8),
    ),
    # Group and instance normalization: per-example statistics.
    Case(
        name="group_norm_rank3",
        layer_name="GroupNormalization",
        make=lambda cls: cls(groups=4),
        make_inputs=lambda: _normal(BATCH, 8, 16),
    ),
    Case(
        name="group_norm_rank4",
        layer_name="GroupNormalization",
        make=lambda cls: cls(groups=4),
        make_inputs=lambda: _normal(BATCH, 8, 8, 16),
    ),
    Case(
        name="group_norm_rank5",
        layer_name="GroupNormalization",
        make=lambda cls: cls(groups=8, epsilon=1e-3),
        make_inputs=lambda: _normal(BATCH, 4, 4, 4, 16),
    ),
    Case(
        name="instance_norm",
        layer_name="InstanceNormalization",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 8, 8, 16),
    ),
    # Retinal blur (Elsayed et al. 2018): α large enough that 16 pixels
    # need a bank of several cut-offs and interpolate between them.
    Case(
        name="retinal_blur",
        layer_name="RetinalBlur",
        make=lambda cls: cls(alpha=0.2, beta=0.05),
        make_inputs=lambda: _normal(BATCH, 16, 16, 3),
    ),
    # Spherical CNN layers at small bandwidths (b_in = 4 -> b_out = 3).
    Case(
        name="s2_convolution",
        layer_name="S2Convolution",
        make=lambda cls: cls(3, bandwidth_in=4, bandwidth_out=3),
        make_inputs=lambda: _normal(BATCH, 8, 8, 2),
    ),
    Case(
        name="so3_convolution",
        layer_name="SO3Convolution",
        make=lambda cls: cls(3, bandwidth_in=4, bandwidth_out=3),
        make_inputs=lambda: _normal(BATCH, 8, 8, 8, 2),
    ),
    Case(
        name="so3_integrate",
        layer_name="SO3Integrate",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 8, 8, 8, 3),
    ),
    Case(
        name="so3_global_max_pool",
        layer_name="SO3GlobalMaxPool",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 8, 8, 8, 3),
    ),
    Case(
        name="so3_batch_norm",
        layer_name="SO3BatchNormalization",
        make=lambda cls: cls(),
        make_inputs=lambda: _normal(BATCH, 8, 8, 8, 3),
    ),
    Case(
        name="so3_residual_block",
        layer_name="SO3ResidualBlock",
        # Four grid rotations: with the default 72, `_perturb`'s positive
        # offsets add up coherently through two convolutions to outputs
        # ~100, and float32 rounding (C++ kernels vs the pure-TF twins the
        # SavedModel and XLA use, ~3e-7 of the output's scale) exceeds the
        # per-element 1e-5 on the entries near zero.
        make=lambda cls: cls(
            3,
            bandwidth_in=4,
            bandwidth_out=3,
            kernel_grid=[[0.3, 0.0, 0.0], [0.3, 1.6, -1.6]]
            + [[0.3, 3.1, -3.1], [0.3, 4.7, -4.7]],
        ),
        make_inputs=lambda: _normal(BATCH, 8, 8, 8, 2),
    ),
]

_BY_CASE = pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)

# Relative and absolute tolerance of the mixed-precision comparisons.
_MIXED_TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def _perturb(layer, seed=0):
    """Adds a positive offset to every variable, trainable or not.

    Positive offsets keep variances positive; they move γ of
    `SelfAttention` off 0 and every state off its initializer.
    """
    rng = np.random.RandomState(seed)
    for variable in layer.weights:
        value = variable.numpy()
        variable.assign(value + rng.uniform(0.1, 0.3, value.shape))


def _snapshot(layer):
    return [variable.numpy().copy() for variable in layer.weights]


def _restore(layer, state):
    for variable, value in zip(layer.weights, state):
        variable.assign(value)


def _built(case, seed=0):
    """An instance after one training call, with perturbed variables."""
    layer = case.build()
    case.call(layer, case.inputs(), training=True)
    _perturb(layer, seed)
    return layer


def _as_float32(tensor):
    return tf.cast(tensor, tf.float32).numpy()


def _assert_close(actual, expected, tolerance):
    actual = tf.nest.flatten(actual)
    expected = tf.nest.flatten(expected)
    assert len(actual) == len(expected)
    for first, second in zip(actual, expected):
        np.testing.assert_allclose(
            _as_float32(first),
            _as_float32(second),
            rtol=tolerance,
            atol=tolerance,
        )


@contextlib.contextmanager
def _global_policy(name):
    """Sets the global dtype policy, restoring float32 on the way out."""
    tf_keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_every_public_layer_has_a_case():
    covered = {case.layer_name for case in CASES}

    without_case = sorted(set(tfcv.layers.__all__) - covered)
    not_exported = sorted(covered - set(tfcv.layers.__all__))

    assert not without_case, (
        f"Public layers without a conformance case: {without_case}; add a "
        "Case for each to CASES in tests/test_conformance.py."
    )
    assert not not_exported, (
        f"Conformance cases name layers that tfcv.layers does not export: "
        f"{not_exported}; export them in tfcv/layers/__init__.py."
    )


@_BY_CASE
def test_get_config_round_trips(case):
    layer = _built(case)
    inputs = case.inputs()

    config = layer.get_config()
    restored = type(layer).from_config(config)
    serialized = json.loads(json.dumps(tf_keras.layers.serialize(layer)))
    deserialized = tf_keras.layers.deserialize(serialized)
    case.call(restored, inputs, training=False)
    restored.set_weights(layer.get_weights())

    assert restored.get_config() == config
    assert type(deserialized) is type(layer)
    assert deserialized.get_config() == config
    for training in (False, True):
        _assert_close(
            case.call(restored, inputs, training),
            case.call(layer, inputs, training),
            1e-6,
        )


@_BY_CASE
def test_saved_model_round_trips(case, tmp_path):
    layer = _built(case)
    inputs = case.inputs()
    module = tf.Module()
    module.layer = layer
    module.serve = tf.function(
        lambda inputs: case.call(layer, inputs, training=False),
        input_signature=[case.input_signature()],
    )
    expected = case.call(layer, inputs, training=False)
    first = tf.nest.map_structure(lambda tensor: tensor[:1], inputs)
    expected_first = tf.nest.map_structure(lambda tensor: tensor[:1], expected)

    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))

    assert not isinstance(loaded, tf_keras.layers.Layer)
    _assert_close(loaded.serve(inputs), expected, 1e-5)
    # One example alone: inference must not depend on the rest of the batch.
    _assert_close(loaded.serve(first), expected_first, 1e-5)


@_BY_CASE
def test_checkpoint_round_trips(case, tmp_path):
    layer = _built(case)
    inputs = case.inputs()
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    fresh = case.build()
    case.call(fresh, inputs, training=False)

    status = tf.train.Checkpoint(layer=fresh).restore(path)

    status.assert_consumed()
    for saved, restored in zip(_snapshot(layer), _snapshot(fresh)):
        np.testing.assert_array_equal(restored, saved)
    for training in (False, True):
        _assert_close(
            case.call(fresh, inputs, training),
            case.call(layer, inputs, training),
            1e-6,
        )


@_BY_CASE
def test_training_step_under_mirrored_strategy(case, mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        layer = case.build()
        case.call(layer, case.inputs(), training=False)
        _perturb(layer)
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.1)
    dataset = tf.data.Dataset.from_tensors(case.make_inputs())
    distributed = next(iter(strategy.experimental_distribute_dataset(dataset)))
    before = [variable.numpy() for variable in layer.trainable_variables]

    @tf.function
    def train_step(inputs):
        def replica_step(inputs):
            with tf.GradientTape() as tape:
                outputs = case.call(layer, inputs, training=True)
                # Mean over the global batch: replica gradients are summed.
                loss = tf.reduce_mean(tf.square(outputs))
                loss /= strategy.num_replicas_in_sync
            variables = layer.trainable_variables
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return strategy.run(replica_step, args=(inputs,))

    train_step(distributed)

    assert strategy.num_replicas_in_sync == 2
    for variable, old in zip(layer.trainable_variables, before):
        assert not np.allclose(variable.numpy(), old), variable.name
    for variable in layer.weights:
        replicas = [
            component.numpy()
            for component in strategy.experimental_local_results(variable)
        ]
        assert len(replicas) == 2, variable.name
        assert np.all(np.isfinite(replicas[0])), variable.name
        if variable.synchronization == tf.VariableSynchronization.ON_READ:
            # Per-replica state by design (tf-keras' BN moving averages of
            # each replica's own statistics); reading averages the copies.
            continue
        np.testing.assert_array_equal(replicas[1], replicas[0], variable.name)


@_BY_CASE
@pytest.mark.parametrize("training", [False, True])
def test_jit_compile_matches_graph(case, training):
    layer = _built(case)
    inputs = case.inputs()
    start = _snapshot(layer)

    def forward(inputs):
        return case.call(layer, inputs, training=training)

    expected = tf.function(forward)(inputs)
    expected_state = _snapshot(layer)
    _restore(layer, start)
    actual = tf.function(forward, jit_compile=True)(inputs)

    _assert_close(actual, expected, 1e-5)
    _assert_close(_snapshot(layer), expected_state, 1e-5)


@_BY_CASE
@pytest.mark.parametrize("policy", sorted(_MIXED_TOLERANCE))
def test_mixed_precision_matches_float32(case, policy):
    inputs = case.inputs()
    reference = case.build()
    case.call(reference, inputs, training=False)
    tolerance = _MIXED_TOLERANCE[policy]

    with _global_policy(policy):
        layer = case.build()
        case.call(layer, inputs, training=False)
        _perturb(layer)
        reference.set_weights(layer.get_weights())
        outputs = {
            training: case.call(layer, inputs, training)
            for training in (False, True)
        }
    expected = {
        training: case.call(reference, inputs, training)
        for training in (False, True)
    }

    assert tf_keras.mixed_precision.global_policy().name == "float32"
    assert layer.compute_dtype == policy.split("_")[1]
    for variable in layer.weights:
        assert variable.dtype == tf.float32, variable.name
    for training in (False, True):
        for tensor in tf.nest.flatten(outputs[training]):
            assert tensor.dtype == layer.compute_dtype, training
            assert np.all(np.isfinite(_as_float32(tensor))), training
        _assert_close(outputs[training], expected[training], tolerance)
    _assert_close(_snapshot(layer), _snapshot(reference), tolerance)
