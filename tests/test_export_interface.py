"""The exported module against the public BigGAN TF-Hub interface.

A mock stands in for the published modules (which cannot be downloaded
here): a SavedModel with their `default` signature (`z`, `y`, `truncation`
in; `default` out). The same caller code must work on it and on ours. The
fine-tuning attributes of a Reusable SavedModel are checked too.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from export.hub_module import ORTHOGONAL_BETA
from export.hub_module import export_generator
from tfcv.models import BigGANConfig
from tfcv.models import BigGANGenerator
from tfcv.regularizers import orthogonal_penalty
from tfcv.training.standing_statistics import collect_standing_statistics

DIM_Z, NUM_CLASSES, SIDE = 80, 10, 32


def images_for(module, z, y, truncation):
    """Caller code written against the published BigGAN modules."""
    outputs = module.signatures["default"](
        z=tf.constant(z), y=tf.constant(y), truncation=tf.constant(truncation)
    )
    return outputs["default"].numpy()


class _PublicModuleMock(tf.Module):
    """The published modules' signature, with a trivial generator."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(
            np.random.RandomState(0)
            .randn(DIM_Z + NUM_CLASSES, 3)
            .astype(np.float32)
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, DIM_Z], tf.float32, name="z"),
            tf.TensorSpec([None, NUM_CLASSES], tf.float32, name="y"),
            tf.TensorSpec([], tf.float32, name="truncation"),
        ]
    )
    def generate(self, z, y, truncation):
        # [B, D + K] x [D + K, 3] -> [B, 1, 1, 3] -> [B, R, R, 3]
        colour = tf.matmul(tf.concat([z / truncation, y], 1), self.weights)
        images = tf.tanh(colour)[:, None, None, :]
        return {"default": tf.tile(images, [1, SIDE, SIDE, 1])}


@pytest.fixture(scope="module")
def generator():
    model = BigGANGenerator(BigGANConfig(ch=4), name="ema")
    model((tf.zeros([2, DIM_Z]), tf.one_hot([0, 1], NUM_CLASSES)))
    collect_standing_statistics(model, num_batches=2, batch_size=8)
    return model


@pytest.fixture(scope="module")
def exported(generator, tmp_path_factory):
    return export_generator(generator, str(tmp_path_factory.mktemp("hub")))


def test_caller_code_works_on_the_public_mock_and_on_ours(exported, tmp_path):
    mock = _PublicModuleMock()
    tf.saved_model.save(
        mock, str(tmp_path / "mock"), signatures={"default": mock.generate}
    )
    z = 0.5 * np.random.RandomState(1).randn(3, DIM_Z).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 4, 9]]

    for path in (str(tmp_path / "mock"), exported):
        images = images_for(hub.load(path), z, y, 0.5)

        assert images.shape == (3, SIDE, SIDE, 3)
        assert images.dtype == np.float32
        assert np.abs(images).max() <= 1.0


def test_default_and_serving_signatures_agree(exported):
    module = hub.load(exported)
    z = np.random.RandomState(2).randn(2, DIM_Z).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[3, 7]]

    default = images_for(module, z, y, 1.0)
    served = module.signatures["serving_default"](
        z=tf.constant(z), y=tf.constant(y), truncation=tf.constant(1.0)
    )["default"].numpy()

    np.testing.assert_array_equal(default, served)


def test_regularization_loss_is_the_orthogonal_penalty(generator, exported):
    module = hub.load(exported)

    (loss,) = [function() for function in module.regularization_losses]

    expected = sum(
        orthogonal_penalty(kernel, ORTHOGONAL_BETA).numpy()
        for kernel in generator.orthogonal_regularization_variables()
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert loss.numpy() > 0


def test_fine_tuning_through_a_trainable_keras_layer(exported):
    layer = hub.KerasLayer(exported, trainable=True)
    z_input = tf_keras.Input([DIM_Z])
    y_input = tf_keras.Input([NUM_CLASSES])
    model = tf_keras.Model(
        [z_input, y_input], layer({"z": z_input, "y": y_input})
    )
    z = np.random.RandomState(3).randn(4, DIM_Z).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 1, 2, 3]]

    before = [variable.numpy().copy() for variable in model.trainable_weights]
    inference = model([z, y], training=False).numpy()
    with tf.GradientTape() as tape:
        images = model([z, y], training=True)
        loss = tf.reduce_mean(tf.square(images)) + tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_weights)
    tf_keras.optimizers.SGD(0.1).apply_gradients(
        zip(gradients, model.trainable_weights)
    )

    assert model.trainable_weights and model.losses
    assert all(gradient is not None for gradient in gradients)
    # Training mode normalizes with the batch's own statistics.
    assert not np.allclose(images.numpy(), inference, atol=1e-4)
    unchanged = [
        new.name
        for old, new in zip(before, model.trainable_weights)
        if np.array_equal(old, new.numpy())
    ]
    # Only attention's f, g, h stay: γ = 0 (untrained) gates their gradient.
    assert len(unchanged) == 3
    assert all("attention" in name for name in unchanged), unchanged
