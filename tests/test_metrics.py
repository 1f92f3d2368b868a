"""Tests for `tfcv.metrics`: Frechet distance, conditional accuracy, judge."""

import importlib
import json
import os

import numpy as np
import pytest
import tf_keras

from tfcv.data import load_digits
from tfcv.metrics import build_digit_classifier
from tfcv.metrics import classifier_features
from tfcv.metrics import classify
from tfcv.metrics import conditional_accuracy
from tfcv.metrics import frechet_distance
from tfcv.metrics import load_or_train_digit_classifier
from tfcv.metrics import train_digit_classifier

# `tfcv.metrics.frechet_distance` is the function; fetch the modules by name.
digit_classifier_module = importlib.import_module(
    "tfcv.metrics.digit_classifier"
)
frechet_distance_module = importlib.import_module(
    "tfcv.metrics.frechet_distance"
)


# ---------------------------------------------------------------- helpers


def _samples_with_moments(mean, covariance, count, seed):
    """`[count, F]` samples whose sample mean/covariance equal the targets."""
    rng = np.random.RandomState(seed)
    noise = rng.normal(size=(count, len(mean)))
    noise -= noise.mean(axis=0)

    # Whiten the noise exactly, then colour it with the target covariance.
    whitening = np.linalg.inv(np.linalg.cholesky(np.cov(noise, rowvar=False)))
    colouring = np.linalg.cholesky(covariance)
    # [N, F] x [F, F] x [F, F] -> [N, F]
    return noise @ whitening.T @ colouring.T + mean


def _psd_sqrt(matrix):
    """Symmetric square root of a PSD matrix by eigen-decomposition."""
    values, vectors = np.linalg.eigh(matrix)
    # [F, F] x [F] x [F, F] -> [F, F]
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _reference_commuting(mean_a, covariance_a, mean_b, covariance_b):
    """FD for commuting covariances: both are diagonal in one eigenbasis."""
    values_a, vectors = np.linalg.eigh(covariance_a)
    # [F, F] x [F, F] x [F, F] -> [F, F], diagonal since the two commute.
    values_b = np.diag(vectors.T @ covariance_b @ vectors)
    mean_term = np.sum((mean_a - mean_b) ** 2)
    return mean_term + np.sum((np.sqrt(values_a) - np.sqrt(values_b)) ** 2)


def _reference_general(features_a, features_b):
    """FD with Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))."""
    covariance_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    covariance_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    root_a = _psd_sqrt(covariance_a)
    # [F, F] x [F, F] x [F, F] -> [F, F]
    inner = np.linalg.eigvalsh(root_a @ covariance_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(inner, 0, None)))
    mean_term = np.sum((features_a.mean(0) - features_b.mean(0)) ** 2)
    return (
        mean_term
        + np.trace(covariance_a)
        + np.trace(covariance_b)
        - 2 * trace_root
    )


# ------------------------------------------------------- frechet_distance


def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.RandomState(0).normal(size=(200, 16))

    distance = frechet_distance(features, features)

    assert abs(distance) < 1e-8


def test_frechet_distance_matches_closed_form_for_commuting_covariances():
    rng = np.random.RandomState(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    # Shared eigenvectors, distinct eigenvalues: the covariances commute.
    # [F, F] x [F] x [F, F] -> [F, F]
    covariance_a = (rotation * np.arange(1.0, 7.0)) @ rotation.T
    covariance_b = (rotation * np.linspace(0.2, 5.0, 6)) @ rotation.T
    features_a = _samples_with_moments(mean_a, covariance_a, 300, seed=2)
    features_b = _samples_with_moments(mean_b, covariance_b, 400, seed=3)

    distance = frechet_distance(features_a, features_b)

    expected = _reference_commuting(mean_a, covariance_a, mean_b, covariance_b)
    np.testing.assert_allclose(distance, expected, rtol=1e-9)


def test_frechet_distance_matches_eigen_reference_for_general_covariances():
    rng = np.random.RandomState(4)
    features_a = rng.normal(size=(150, 8)) @ rng.normal(size=(8, 8))
    features_b = rng.normal(size=(120, 8)) @ rng.normal(size=(8, 8)) + 1.0

    distance = frechet_distance(features_a, features_b)

    expected = _reference_general(features_a, features_b)
    np.testing.assert_allclose(distance, expected, rtol=1e-8)


def test_frechet_distance_is_symmetric():
    rng = np.random.RandomState(5)
    features_a = rng.normal(size=(50, 5))
    features_b = rng.uniform(size=(70, 5))

    forward = frechet_distance(features_a, features_b)
    backward = frechet_distance(features_b, features_a)

    np.testing.assert_allclose(forward, backward, rtol=1e-9)


def test_frechet_distance_of_one_feature_is_mean_and_std_gap():
    rng = np.random.RandomState(6)
    features_a = rng.normal(size=(40, 1))
    features_b = rng.normal(loc=2.0, scale=3.0, size=(60, 1))

    distance = frechet_distance(features_a, features_b)

    mean_gap = features_a.mean() - features_b.mean()
    std_gap = features_a.std(ddof=1) - features_b.std(ddof=1)
    np.testing.assert_allclose(distance, mean_gap**2 + std_gap**2, rtol=1e-9)


@pytest.mark.parametrize("same", [True, False])
def test_frechet_distance_handles_singular_covariances(same):
    # Fewer samples than features and dead (all-zero) features.
    rng = np.random.RandomState(7)
    features_a = np.maximum(rng.normal(size=(5, 20)), 0.0)
    features_a[:, :6] = 0.0
    features_b = features_a if same else np.maximum(rng.normal(size=(7, 20)), 0)

    distance = frechet_distance(features_a, features_b)

    expected = _reference_general(features_a, features_b)
    np.testing.assert_allclose(distance, expected, atol=1e-5)


def test_frechet_distance_retries_with_epsilon_when_sqrtm_fails(monkeypatch):
    rng = np.random.RandomState(8)
    features_a = rng.normal(size=(30, 4))
    features_b = rng.normal(size=(30, 4))
    real_sqrtm = frechet_distance_module.scipy.linalg.sqrtm
    calls = []

    def failing_once(matrix):
        calls.append(matrix)
        if len(calls) == 1:
            return np.full_like(matrix, np.nan)
        return real_sqrtm(matrix)

    monkeypatch.setattr(
        frechet_distance_module.scipy.linalg, "sqrtm", failing_once
    )

    distance = frechet_distance(features_a, features_b, epsilon=1e-3)

    covariance_a = np.cov(features_a, rowvar=False) + 1e-3 * np.eye(4)
    covariance_b = np.cov(features_b, rowvar=False) + 1e-3 * np.eye(4)
    np.testing.assert_allclose(calls[1], covariance_a @ covariance_b)
    expected = _reference_general(features_a, features_b)
    assert len(calls) == 2
    assert np.isfinite(distance)
    assert abs(distance - expected) < 1e-2


def test_frechet_distance_discards_tiny_imaginary_parts(monkeypatch):
    rng = np.random.RandomState(9)
    features_a = rng.normal(size=(30, 3))
    features_b = rng.normal(size=(30, 3))
    real_sqrtm = frechet_distance_module.scipy.linalg.sqrtm
    monkeypatch.setattr(
        frechet_distance_module.scipy.linalg,
        "sqrtm",
        lambda matrix: real_sqrtm(matrix) + 1e-9j,
    )

    distance = frechet_distance(features_a, features_b)

    expected = _reference_general(features_a, features_b)
    assert isinstance(distance, float)
    np.testing.assert_allclose(distance, expected, rtol=1e-8)


def test_frechet_distance_raises_when_sqrtm_fails_even_with_epsilon(
    monkeypatch,
):
    features = np.random.RandomState(10).normal(size=(10, 3))
    monkeypatch.setattr(
        frechet_distance_module.scipy.linalg,
        "sqrtm",
        lambda matrix: np.full_like(matrix, np.nan),
    )

    with pytest.raises(ValueError, match="even with `epsilon`"):
        frechet_distance(features, features)


@pytest.mark.parametrize(
    "features_a, features_b, message",
    [
        (np.zeros((4,)), np.zeros((4, 2)), "`features_a` must be a 2-D"),
        (np.zeros((4, 2)), np.zeros((4, 2, 1)), "`features_b` must be a 2-D"),
        (np.zeros((1, 2)), np.zeros((4, 2)), "at least 2 rows"),
        (np.zeros((4, 2)), np.zeros((1, 2)), "`features_b` must have at le"),
        (np.zeros((4, 0)), np.zeros((4, 0)), "at least 1 feature column"),
        (np.full((4, 2), np.nan), np.zeros((4, 2)), "only finite values"),
        (np.zeros((4, 2)), np.zeros((4, 3)), "same feature width"),
    ],
)
def test_frechet_distance_rejects_bad_features(features_a, features_b, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(features_a, features_b)


@pytest.mark.parametrize("epsilon", [0.0, -1e-6, float("nan")])
def test_frechet_distance_rejects_bad_epsilon(epsilon):
    features = np.random.RandomState(11).normal(size=(5, 2))

    with pytest.raises(ValueError, match="`epsilon` must be a finite float"):
        frechet_distance(features, features, epsilon=epsilon)


# --------------------------------------------------- conditional_accuracy


def test_conditional_accuracy_on_hand_made_labels():
    requested = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 0, 1, 2])

    per_class, mean = conditional_accuracy(predicted, requested, 3)

    np.testing.assert_allclose(per_class, [3 / 4, 1.0, 1 / 3])
    assert mean == pytest.approx((3 / 4 + 1.0 + 1 / 3) / 3)
    assert isinstance(mean, float)


def test_conditional_accuracy_marks_unrequested_classes_nan():
    requested = [0, 0, 2, 2]
    predicted = [0, 3, 2, 2]

    per_class, mean = conditional_accuracy(predicted, requested, 4)

    np.testing.assert_array_equal(np.isnan(per_class), [0, 1, 0, 1])
    np.testing.assert_allclose(per_class[[0, 2]], [0.5, 1.0])
    assert mean == pytest.approx(0.75)


@pytest.mark.parametrize("num_classes", [0, -3, 2.0, True, "10"])
def test_conditional_accuracy_rejects_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="`num_classes` must be an integer"):
        conditional_accuracy([0, 1], [0, 1], num_classes)


@pytest.mark.parametrize(
    "predicted, requested, message",
    [
        (np.zeros((2, 2), int), [0, 1], "`predicted_labels` must be a 1-D"),
        ([0, 1], np.zeros((2, 1), int), "`requested_labels` must be a 1-D"),
        ([0.0, 1.0], [0, 1], "`predicted_labels` must hold integers"),
        ([0, 1], [0.5, 1.0], "`requested_labels` must hold integers"),
        ([0, 3], [0, 1], r"`predicted_labels` must lie in \[0, 3\)"),
        ([0, 1], [-1, 1], r"`requested_labels` must lie in \[0, 3\)"),
        ([0, 1, 2], [0, 1], "must have the same shape"),
        (np.zeros(0, int), np.zeros(0, int), "must not be empty"),
    ],
)
def test_conditional_accuracy_rejects_bad_labels(predicted, requested, message):
    with pytest.raises(ValueError, match=message):
        conditional_accuracy(predicted, requested, 3)


# ------------------------------------------------------- digit classifier


@pytest.fixture(scope="module")
def digits():
    """`(train_images, train_labels, heldout_images, heldout_labels)`."""
    return (*load_digits("train"), *load_digits("heldout"))


@pytest.fixture(scope="module")
def trained(digits):
    """A judge trained for a few epochs, and its held-out accuracy."""
    return train_digit_classifier(*digits, epochs=5, seed=0)


def test_train_digit_classifier_reaches_95_percent_heldout(trained, digits):
    model, accuracy = trained

    predictions = classify(model, digits[2])

    assert accuracy >= 0.95
    assert accuracy == pytest.approx(np.mean(predictions == digits[3]))


def test_classifier_features_are_penultimate_layer(trained, digits):
    model, _ = trained

    features = classifier_features(model, digits[2][:300], batch_size=128)

    assert features.shape == (300, 128)
    assert features.dtype == np.float32
    assert np.all(features >= 0.0)
    # The logits are the last layer applied to the features.
    logits_layer = model.get_layer("logits")
    logits = logits_layer(features).numpy()
    np.testing.assert_array_equal(
        np.argmax(logits, -1), classify(model, digits[2][:300])
    )


def test_train_digit_classifier_is_deterministic_given_seed(digits):
    subset = (digits[0][:96], digits[1][:96], digits[2][:32], digits[3][:32])

    first, _ = train_digit_classifier(*subset, epochs=1, seed=3)
    second, _ = train_digit_classifier(*subset, epochs=1, seed=3)
    other = build_digit_classifier(seed=4)

    first_weights, second_weights = first.get_weights(), second.get_weights()
    for weight, same in zip(first_weights, second_weights, strict=True):
        np.testing.assert_array_equal(weight, same)
    initial = build_digit_classifier(seed=3).get_weights()
    assert not np.array_equal(initial[0], other.get_weights()[0])
    assert not np.array_equal(initial[0], first.get_weights()[0])


def test_random_shifts_move_a_pixel_within_max_shift():
    image = np.full((1, 9, 9, 3), -1.0, np.float32)
    image[0, 4, 4] = 1.0
    rng = np.random.RandomState(0)

    shifted = digit_classifier_module._random_shifts(
        np.repeat(image, 50, axis=0), 2, rng
    )

    assert shifted.shape == (50, 9, 9, 3)
    for picture in shifted:
        rows, cols = np.nonzero(picture[..., 0] == 1.0)
        assert len(rows) == 1
        assert abs(rows[0] - 4) <= 2 and abs(cols[0] - 4) <= 2
    assert len({tuple(np.argwhere(p[..., 0] > 0)[0]) for p in shifted}) > 5


def test_build_digit_classifier_shapes():
    model = build_digit_classifier(num_classes=7, image_size=16)

    logits = model(np.zeros((2, 16, 16, 3), np.float32))

    assert logits.shape == (2, 7)
    assert model.get_layer("features").output_shape == (None, 128)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "`num_classes` must be an integer >= 2"),
        ({"image_size": 4}, "`image_size` must be an integer >= 8"),
        ({"image_size": 32.0}, "`image_size` must be an integer >= 8"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
    ],
)
def test_build_digit_classifier_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_digit_classifier(**kwargs)


def _bad_training_inputs():
    """`(argument index or name, bad value, message)` triples."""
    return [
        ("epochs", 0, "`epochs` must be an integer >= 1"),
        ("seed", -1, "`seed` must be an integer >= 0"),
        ("batch_size", 0, "`batch_size` must be an integer >= 1"),
        ("num_classes", 1, "`num_classes` must be an integer >= 2"),
        (0, np.zeros((4, 8, 8)), r"`train_images` must be a non-empty"),
        (0, np.zeros((4, 8, 8, 1)), r"`train_images` must be a non-empty"),
        (0, np.zeros((0, 8, 8, 3)), r"`train_images` must be a non-empty"),
        (0, np.zeros((4, 8, 6, 3)), r"`train_images` must be a non-empty"),
        (2, np.zeros((4, 16, 16, 3)), r"must have image shape \(8, 8, 3\)"),
        (1, np.zeros(3, int), r"`train_labels` must be integer .* \(4,\)"),
        (1, np.zeros(4), r"`train_labels` must be integer"),
        (3, np.array([0, 1, 2, 10]), r"`heldout_labels` must lie in \[0, 10"),
        (3, np.array([0, -1, 2, 3]), r"`heldout_labels` must lie in \[0, 10"),
    ]


@pytest.mark.parametrize("where, value, message", _bad_training_inputs())
def test_train_digit_classifier_rejects_bad_arguments(where, value, message):
    arguments = [
        np.zeros((4, 8, 8, 3), np.float32),
        np.arange(4),
        np.zeros((4, 8, 8, 3), np.float32),
        np.arange(4),
    ]
    keywords = {}
    if isinstance(where, int):
        arguments[where] = value
    else:
        keywords[where] = value

    with pytest.raises(ValueError, match=message):
        train_digit_classifier(*arguments, **keywords)


@pytest.mark.parametrize(
    "images, batch_size, message",
    [
        (np.zeros((2, 16, 16, 3)), 8, r"must have image shape \(32, 32, 3\)"),
        (np.zeros((2, 32, 32)), 8, "`images` must be a non-empty"),
        (np.zeros((2, 32, 32, 3)), 0, "`batch_size` must be an integer >= 1"),
    ],
)
@pytest.mark.parametrize("function", [classify, classifier_features])
def test_classify_and_features_reject_bad_inputs(
    function, images, batch_size, message
):
    model = build_digit_classifier()

    with pytest.raises(ValueError, match=message):
        function(model, images, batch_size=batch_size)


def test_classifier_features_rejects_model_without_features_layer():
    inputs = tf_keras.Input((32, 32, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.Flatten()(inputs))

    with pytest.raises(ValueError, match="must have a layer named 'features'"):
        classifier_features(model, np.zeros((1, 32, 32, 3)))


# -------------------------------------------------- load_or_train cache


@pytest.fixture
def fake_training(monkeypatch):
    """Replaces training by building an untrained model; counts the calls."""
    calls = []

    def fake_train(*arguments, epochs, seed, batch_size):
        calls.append({"epochs": epochs, "seed": seed})
        return build_digit_classifier(seed=seed), 0.5 + 0.01 * len(calls)

    monkeypatch.setattr(
        digit_classifier_module, "train_digit_classifier", fake_train
    )
    return calls


def test_load_or_train_caches_model_and_accuracy(tmp_path, fake_training):
    images = load_digits("heldout")[0][:64]

    model, accuracy = load_or_train_digit_classifier(str(tmp_path), epochs=1)
    cached, cached_accuracy = load_or_train_digit_classifier(
        str(tmp_path), epochs=1
    )

    assert len(fake_training) == 1
    assert cached_accuracy == accuracy == pytest.approx(0.51)
    assert sorted(os.listdir(tmp_path)) == [
        "digit_classifier.json",
        "digit_classifier.keras",
    ]
    with open(tmp_path / "digit_classifier.json", encoding="utf-8") as file:
        assert json.load(file)["heldout_accuracy"] == pytest.approx(0.51)
    np.testing.assert_allclose(
        cached(images, training=False), model(images, training=False)
    )
    np.testing.assert_array_equal(
        classifier_features(cached, images), classifier_features(model, images)
    )


def test_load_or_train_retrains_when_settings_change(tmp_path, fake_training):
    directory = str(tmp_path)
    load_or_train_digit_classifier(directory, epochs=1, seed=0)

    _, accuracy = load_or_train_digit_classifier(directory, epochs=1, seed=1)
    _, again = load_or_train_digit_classifier(directory, epochs=1, seed=1)

    assert [call["seed"] for call in fake_training] == [0, 1]
    assert accuracy == again == pytest.approx(0.52)


def test_load_or_train_ignores_an_incomplete_cache(tmp_path, fake_training):
    load_or_train_digit_classifier(str(tmp_path), epochs=1)
    os.remove(tmp_path / "digit_classifier.json")
    (tmp_path / ".tmp-1-digit_classifier.json").write_text("{}")

    _, accuracy = load_or_train_digit_classifier(str(tmp_path), epochs=1)

    assert len(fake_training) == 2
    assert accuracy == pytest.approx(0.52)


@pytest.mark.parametrize("content", ["[1, 2]", "{}", "{not json"])
def test_load_or_train_ignores_an_unreadable_record(
    tmp_path, fake_training, content
):
    load_or_train_digit_classifier(str(tmp_path), epochs=1)
    (tmp_path / "digit_classifier.json").write_text(content)

    _, accuracy = load_or_train_digit_classifier(str(tmp_path), epochs=1)

    assert len(fake_training) == 2
    assert accuracy == pytest.approx(0.52)


def test_load_or_train_leaves_no_files_when_saving_fails(tmp_path, monkeypatch):
    def failing_save(path):
        with open(path, "w", encoding="utf-8") as file:
            file.write("partial")
        raise OSError("disk full")

    monkeypatch.setattr(
        digit_classifier_module,
        "train_digit_classifier",
        lambda *arguments, **keywords: (_ModelWithSave(failing_save), 0.5),
    )

    with pytest.raises(OSError, match="disk full"):
        load_or_train_digit_classifier(str(tmp_path), epochs=1)

    assert os.listdir(tmp_path) == []


class _ModelWithSave:
    """Stands in for a model whose `save` is given."""

    def __init__(self, save):
        self.save = save


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 4}, "`image_size` must be an integer >= 8"),
        ({"image_size": 32.0}, "`image_size` must be an integer >= 8"),
        ({"epochs": 0}, "`epochs` must be an integer >= 1"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
    ],
)
def test_load_or_train_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_or_train_digit_classifier(str(tmp_path), **kwargs)

    assert os.listdir(tmp_path) == []


def test_load_or_train_accepts_numpy_integers(tmp_path, fake_training):
    _, accuracy = load_or_train_digit_classifier(
        str(tmp_path), epochs=np.int64(1), seed=np.int32(0)
    )

    assert accuracy == pytest.approx(0.51)
    assert fake_training == [{"epochs": 1, "seed": 0}]
