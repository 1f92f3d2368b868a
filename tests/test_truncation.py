"""The truncation trick draws a truncated normal (BigGAN §4.1)."""

import numpy as np
import pytest
from scipy import stats

from tfcv.training.samples import interpolation_latents
from tfcv.training.truncation import module_truncation
from tfcv.training.truncation import truncated_latents
from tfcv.training.truncation import truncated_normal_std


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_latents_follow_the_truncated_normal(threshold):
    z = truncated_latents([200, 100], threshold, seed=[3, 4]).numpy()

    assert np.abs(z).max() <= threshold
    # Resampling (not clipping): no mass piles up at the bounds.
    assert np.mean(np.abs(z) > 0.999 * threshold) < 0.01
    reference = stats.truncnorm(-threshold, threshold)
    assert stats.kstest(z.ravel(), reference.cdf).pvalue > 0.01


def test_same_seed_gives_the_same_latents():
    first = truncated_latents([4, 8], 1.0, seed=[1, 2]).numpy()
    again = truncated_latents([4, 8], 1.0, seed=[1, 2]).numpy()

    np.testing.assert_array_equal(first, again)


def test_threshold_must_be_a_finite_positive_number():
    with pytest.raises(TypeError, match="`threshold` must be a real number"):
        truncated_latents([2, 2], "1", seed=[0, 0])
    with pytest.raises(ValueError, match="`threshold` must be a finite"):
        truncated_latents([2, 2], 0.0, seed=[0, 0])
    with pytest.raises(ValueError, match="`threshold` must be a finite"):
        truncated_latents([2, 2], float("inf"), seed=[0, 0])


@pytest.mark.parametrize("threshold", [0.3, 1.0, 2.0, 3.5])
def test_truncated_normal_std_matches_scipy(threshold):
    expected = stats.truncnorm(-threshold, threshold).std()

    assert truncated_normal_std(threshold) == pytest.approx(expected, 1e-12)


def test_module_truncation_matches_the_variance_of_resampled_latents():
    # The published modules' z = t * truncnorm(+-2): t = 1 is threshold 2.
    assert module_truncation(2.0) == pytest.approx(1.0, abs=1e-12)
    scaled = module_truncation(0.5) * truncated_latents([4000, 50], 2.0, [5, 6])
    resampled = truncated_latents([4000, 50], 0.5, seed=[7, 8])

    assert np.std(scaled) == pytest.approx(np.std(resampled), rel=0.01)
    assert module_truncation(0.5) < module_truncation(1.0) < 1.0


def test_z_strip_keeps_the_class_and_moves_between_two_latents():
    z, y = interpolation_latents("z", [3, 1], 5, 8, 10, seed=0, threshold=1.0)
    z, y = z.numpy().reshape(2, 5, 8), y.numpy().reshape(2, 5, 10)

    assert (y.argmax(-1) == [[3] * 5, [1] * 5]).all() and (y.max(-1) == 1).all()
    # Evenly spaced steps on the segment between the two ends.
    np.testing.assert_allclose(
        np.diff(z, axis=1), np.diff(z, axis=1)[:, :1].repeat(4, 1), atol=1e-6
    )
    assert np.abs(z[:, 0] - z[:, -1]).max() > 0.1
    assert np.abs(z).max() <= 1.0


def test_class_strip_keeps_z_and_blends_to_the_next_class():
    z, y = interpolation_latents(
        "class", [3, 1], 3, 8, 10, seed=0, threshold=1.0
    )
    z, y = z.numpy().reshape(2, 3, 8), y.numpy().reshape(2, 3, 10)

    np.testing.assert_array_equal(z, z[:, :1].repeat(3, 1))
    np.testing.assert_allclose(y[0, 1, [3, 1]], [0.5, 0.5])
    np.testing.assert_allclose(y[1, 2, 3], 1.0)  # row 1 ends at class 3
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
