"""The truncation trick draws a truncated normal (BigGAN §4.1)."""

import numpy as np
import pytest
from scipy import stats

from tfcv.training.truncation import truncated_latents


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
