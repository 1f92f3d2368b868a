"""Hinge losses against NumPy, and the embedded digits split."""

import numpy as np
import pytest

from tfcv.data import get_dataset
from tfcv.data import load_digits
from tfcv.losses import hinge_discriminator_loss
from tfcv.losses import hinge_generator_loss


def test_hinge_losses_match_numpy():
    real = np.array([2.0, 0.5, -1.0], np.float32)
    fake = np.array([-2.0, 0.3, 1.0], np.float32)

    d_loss = hinge_discriminator_loss(real, fake).numpy()
    g_loss = hinge_generator_loss(fake).numpy()

    expected = np.maximum(0, 1 - real) + np.maximum(0, 1 + fake)
    np.testing.assert_allclose(d_loss, expected)
    np.testing.assert_allclose(g_loss, -fake)


def test_hinge_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="real_logits"):
        hinge_discriminator_loss(np.ones([2, 1]), np.ones([2]))
    with pytest.raises(ValueError, match="same batch size"):
        hinge_discriminator_loss(np.ones([2]), np.ones([3]))
    with pytest.raises(ValueError, match="fake_logits"):
        hinge_generator_loss(np.ones([2, 1]))


def test_digits_split_is_disjoint_stratified_and_complete():
    train_images, train_labels = load_digits("train")
    heldout_images, heldout_labels = load_digits("heldout")
    all_images, _ = load_digits("all")

    assert len(train_images) + len(heldout_images) == len(all_images) == 1797
    assert train_images.shape[1:] == (32, 32, 3)
    assert -1.0 <= train_images.min() and train_images.max() <= 1.0
    fractions = np.bincount(heldout_labels) / np.bincount(
        np.concatenate([train_labels, heldout_labels])
    )
    np.testing.assert_allclose(fractions, 0.2, atol=0.01)
    train_set = {image.tobytes() for image in train_images}
    assert not any(image.tobytes() in train_set for image in heldout_images)


def test_digits_resize_keeps_8x8_content():
    images, _ = load_digits("all", image_size=8)
    from sklearn.datasets import load_digits as sklearn_digits

    original = sklearn_digits().images / 16.0 * 2 - 1
    np.testing.assert_allclose(images[..., 0], original, atol=1e-6)


def test_data_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="image_size"):
        load_digits("train", image_size=4)
    with pytest.raises(ValueError, match="Unknown dataset"):
        get_dataset("imagenet")
