"""BigGAN's orthogonal regularization against its formula (Eqs. 2-3)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.regularizers import OrthogonalRegularizer
from tfcv.regularizers import orthogonal_penalty


def _numpy_penalty_and_gradient(kernel, beta, mode):
    matrix = kernel.reshape(-1, kernel.shape[-1])
    gram = matrix.T @ matrix
    identity = np.eye(gram.shape[0])
    residual = (
        gram * (1 - identity) if mode == "off_diagonal" else (gram - identity)
    )
    # d/dW β‖R‖² with R symmetric and linear in WᵀW: 4 β W R.
    gradient = 4 * beta * matrix @ residual
    return beta * (residual**2).sum(), gradient.reshape(kernel.shape)


@pytest.mark.parametrize("mode", ["off_diagonal", "full"])
@pytest.mark.parametrize(
    "shape", [(6, 4), (3, 3, 2, 5), (2, 9), (20, 300), (1, 1, 3, 40)]
)
def test_penalty_and_gradient_equal_the_formula(mode, shape):
    kernel = np.random.RandomState(0).randn(*shape)
    variable = tf.Variable(kernel, dtype=tf.float32)

    with tf.GradientTape() as tape:
        value = orthogonal_penalty(variable, beta=0.3, mode=mode)
    gradient = tape.gradient(value, variable)

    expected_value, expected_gradient = _numpy_penalty_and_gradient(
        kernel, 0.3, mode
    )
    np.testing.assert_allclose(value.numpy(), expected_value, rtol=1e-5)
    # float32 round-off scales with the largest entry (~1e3 at 20 x 300).
    scale = np.abs(expected_gradient).max()
    np.testing.assert_allclose(
        gradient.numpy(), expected_gradient, rtol=1e-4, atol=2e-6 * scale
    )


def test_wide_kernel_of_biggan_128s_first_linear_is_cheap():
    # W [20, 24576] (ch 96): the [C, C] Gram matrix would need 2.4 GB and
    # a constant mask of that size cannot even be put in a graph.
    rows = np.linalg.qr(np.random.RandomState(1).randn(24576, 20))[0].T

    @tf.function
    def penalty(kernel):
        return orthogonal_penalty(kernel, beta=1.0)

    value = penalty(tf.constant(rows, tf.float32)).numpy()

    # Orthonormal rows: ‖WWᵀ‖² = 20, minus the diagonal Σ‖w_j‖⁴.
    expected = 20.0 - np.sum(np.sum(rows**2, axis=0) ** 2)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_orthogonal_kernel_has_no_penalty():
    orthogonal = np.linalg.qr(np.random.RandomState(0).randn(8, 8))[0]
    scaled = 3.0 * orthogonal[:, :5]

    full = orthogonal_penalty(tf.constant(orthogonal[:, :5]), mode="full")
    relaxed = orthogonal_penalty(tf.constant(scaled), beta=1.0)

    assert full.numpy() < 1e-10
    assert relaxed.numpy() < 1e-8


def test_regularizer_adds_its_loss_to_a_layer():
    regularizer = OrthogonalRegularizer(beta=1e-4)
    layer = tf_keras.layers.Conv2D(4, 3, kernel_regularizer=regularizer)

    layer(tf.ones([1, 5, 5, 2]))

    expected, _ = _numpy_penalty_and_gradient(
        layer.kernel.numpy(), 1e-4, "off_diagonal"
    )
    np.testing.assert_allclose(layer.losses[0].numpy(), expected, rtol=1e-5)


def test_regularizer_config_round_trips():
    regularizer = OrthogonalRegularizer(beta=2e-4, mode="full")

    restored = tf_keras.regularizers.deserialize(
        tf_keras.regularizers.serialize(regularizer)
    )

    assert isinstance(restored, OrthogonalRegularizer)
    assert restored.get_config() == {"beta": 2e-4, "mode": "full"}


def test_regularizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`beta` must be >= 0"):
        OrthogonalRegularizer(beta=-1.0)
    with pytest.raises(ValueError, match="`beta` must be >= 0 and finite"):
        OrthogonalRegularizer(beta=float("nan"))
    with pytest.raises(TypeError, match="`beta` must be a real number"):
        OrthogonalRegularizer(beta="small")
    assert OrthogonalRegularizer(beta=np.float32(0.5)).beta == 0.5
    with pytest.raises(ValueError, match="`mode` must be one of"):
        OrthogonalRegularizer(mode="diagonal")
    with pytest.raises(ValueError, match="rank >= 2"):
        orthogonal_penalty(tf.ones([3]))
