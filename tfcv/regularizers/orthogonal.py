"""Orthogonal regularization of weight matrices (BigGAN).

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, §3.1: Eq. 2, the
full penalty `R_β(W) = β ‖WᵀW − I‖²_F`, and Eq. 3, the relaxed penalty
BigGAN trains with, `R_β(W) = β ‖WᵀW ⊙ (1 − I)‖²_F`, which only pushes
filters apart and leaves their norms free (β = 1e-4 in the paper).

A kernel of any rank is viewed as a matrix `W [N, C_out]` with one column
per filter: Dense `[in, out]` as it is, Conv2D `[h, w, in, out]` reshaped
to `[h·w·in, out]`. The penalty therefore acts on the `C_out × C_out`
Gram matrix of the filters; for a wide `W` (N < C_out) it is computed from
the smaller `N × N` Gram matrix, which has the same Frobenius norm.

Deviations from the paper: None. (The authors' PyTorch code applies the
gradient `2 (W Wᵀ ⊙ (1 − I)) W` directly, half the gradient of Eq. 3; we
implement Eq. 3 as written, so its gradient is `4 β W (WᵀW ⊙ (1 − I))`.
Note also that a Conv2DTranspose kernel `[h, w, out, in]` has the *input*
channels last, so the penalty decorrelates its input channels.)
"""

import math
import numbers

import tensorflow as tf
import tf_keras

MODES = ("off_diagonal", "full")


def orthogonal_penalty(kernel, beta=1e-4, mode="off_diagonal"):
    """`β ‖WᵀW ⊙ (1 − I)‖²_F` (Eq. 3) or `β ‖WᵀW − I‖²_F` (Eq. 2).

    Args:
      kernel: a weight tensor of rank >= 2, `[..., C_out]`.
      beta: `float >= 0`, β of Eqs. 2-3 (default 1e-4).
      mode: `"off_diagonal"` (Eq. 3, BigGAN's choice) or `"full"` (Eq. 2).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: if `kernel` has rank < 2 or `mode` is unknown.
    """
    if mode not in MODES:
        raise ValueError(
            f"`mode` must be one of {MODES}, got {mode!r}: "
            "'off_diagonal' is BigGAN's Eq. 3, 'full' its Eq. 2."
        )
    if kernel.shape.rank is not None and kernel.shape.rank < 2:
        raise ValueError(
            "Orthogonal regularization needs a kernel of rank >= 2, got "
            f"shape {tuple(kernel.shape)}; apply it to Dense or "
            "convolution kernels, not to biases or gains."
        )
    kernel = tf.cast(kernel, tf.float32)
    # [..., C_out] -> W [N, C_out].
    columns = kernel.shape[-1]
    if columns is None:
        columns = tf.shape(kernel)[-1]
    matrix = tf.reshape(kernel, [-1, columns])
    rows = matrix.shape[0]
    # The Gram matrix's diagonal: squared filter norms [C_out].
    norms = tf.reduce_sum(tf.square(matrix), axis=0)
    if isinstance(columns, int) and rows is not None and rows < columns:
        # Wide W: ‖WᵀW‖²_F = ‖WWᵀ‖²_F, so the [N, N] Gram matrix serves
        # (BigGAN-128's first linear, W [20, 24576]: its [C, C] Gram
        # matrix would take 2.4 GB). With N < C the off-diagonal part is
        # a large share of the total, so the subtraction stays accurate.
        small = tf.matmul(matrix, matrix, transpose_b=True)
        off_diagonal = tf.reduce_sum(tf.square(small)) - tf.reduce_sum(
            tf.square(norms)
        )
    else:
        gram = tf.matmul(matrix, matrix, transpose_a=True)
        off_diagonal = tf.reduce_sum(
            tf.square(tf.linalg.set_diag(gram, tf.zeros_like(norms)))
        )
    if mode == "off_diagonal":
        return beta * off_diagonal
    # Eq. 2: the off-diagonal part plus the diagonal's distance from 1.
    return beta * (off_diagonal + tf.reduce_sum(tf.square(norms - 1.0)))


@tf_keras.utils.register_keras_serializable(package="tfcv")
class OrthogonalRegularizer(tf_keras.regularizers.Regularizer):
    """BigGAN's orthogonal regularization as a Keras kernel regularizer.

    Args:
      beta: `float >= 0`, β of BigGAN Eqs. 2-3 (default 1e-4, the paper's).
      mode: `"off_diagonal"` (Eq. 3, default) or `"full"` (Eq. 2).

    Example:
      >>> dense = tf_keras.layers.Dense(
      ...     8, kernel_regularizer=OrthogonalRegularizer())
      >>> _ = dense(tf.ones([2, 4]))
      >>> len(dense.losses)
      1
    """

    def __init__(self, beta=1e-4, mode="off_diagonal"):
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
            raise TypeError(
                "`beta` must be a real number >= 0, got "
                f"{type(beta).__name__} {beta!r}."
            )
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"`beta` must be >= 0 and finite, got {beta!r}.")
        orthogonal_penalty(tf.zeros([1, 1]), 0.0, mode)  # validates mode
        self.beta = float(beta)
        self.mode = mode

    def __call__(self, kernel):
        return orthogonal_penalty(kernel, self.beta, self.mode)

    def get_config(self):
        return {"beta": self.beta, "mode": self.mode}
