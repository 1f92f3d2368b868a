"""Tests of tfcv.adversarial (Elsayed et al. 2018, Appendices C and D).

Tiny dense and convolutional classifiers on 8x8 images stand in for the
paper's ImageNet ensemble. The cross-check against cleverhans imports
`cleverhans.tf2.attacks.basic_iterative_method` (a test dependency).
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.adversarial import ADV_CONFIG
from tfcv.adversarial import FALSE_CONFIG
from tfcv.adversarial import AttackConfig
from tfcv.adversarial import Ensemble
from tfcv.adversarial import Member
from tfcv.adversarial import adv_condition
from tfcv.adversarial import coarse_ensemble_loss
from tfcv.adversarial import coarse_log_probabilities
from tfcv.adversarial import coarse_logits
from tfcv.adversarial import false_condition
from tfcv.adversarial import flip_condition
from tfcv.adversarial import image_condition
from tfcv.adversarial import inception_preprocess
from tfcv.adversarial import rescale_intensity
from tfcv.adversarial import target_coarse_logits
from tfcv.adversarial import targeted_attack
from tfcv.adversarial import validate_groups

GROUPS = [[0, 3], [1, 2, 7], [9]]
NUM_CLASSES = 10
# The bare iterative method: no early stop, rescale or intensity change.
PLAIN = dict(early_stop=False, rescale_to_epsilon=False, intensity_range=None)


def _logsumexp(values, mask):
    """NumPy float64 log Σ exp over the masked entries of the last axis."""
    masked = np.where(mask, values, -np.inf)
    top = masked.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(masked - top).sum(-1, keepdims=True)))[..., 0]


def _reference_coarse(logits, groups):
    """Eq. 6 in float64: (coarse logits, coarse probabilities), [..., G]."""
    logits = np.asarray(logits, np.float64)
    mask = np.zeros([len(groups), logits.shape[-1]], bool)
    for index, group in enumerate(groups):
        mask[index, group] = True
    inside = np.stack([_logsumexp(logits, row) for row in mask], -1)
    outside = np.stack([_logsumexp(logits, ~row) for row in mask], -1)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    probabilities = np.stack([softmax[..., row].sum(-1) for row in mask], -1)
    return inside - outside, probabilities


def _dense_model(num_classes=NUM_CLASSES, seed=0):
    initializer = tf_keras.initializers.GlorotUniform(seed=seed)
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1)),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(
                16, activation="tanh", kernel_initializer=initializer
            ),
            tf_keras.layers.Dense(num_classes, kernel_initializer=initializer),
        ]
    )


def _linear_model(seed, num_classes=NUM_CLASSES):
    initializer = tf_keras.initializers.GlorotUniform(seed=seed)
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1)),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(num_classes, kernel_initializer=initializer),
        ]
    )


def _conv_model(num_classes=NUM_CLASSES, seed=1):
    initializer = tf_keras.initializers.GlorotUniform(seed=seed)
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1)),
            tf_keras.layers.Conv2D(
                4, 3, activation="tanh", kernel_initializer=initializer
            ),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(num_classes, kernel_initializer=initializer),
        ]
    )


def _images(batch, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, [batch, 8, 8, 1])


def _mean_model(offset):
    """Two-class 'model': logits [mean(x) - offset, 0] (for exact steps)."""

    def model(images):
        # [B, H, W, C] -> [B]
        score = tf.reduce_mean(images, axis=[1, 2, 3]) - offset
        return tf.stack([score, tf.zeros_like(score)], axis=-1)

    return model


def _biased_model(bias):
    """Three-class 'model' whose verdict barely depends on the image."""

    def model(images):
        # [B, H, W, C] -> [B, 1]
        mean = tf.reduce_mean(images, axis=[1, 2, 3])[:, tf.newaxis]
        return tf.constant([bias]) + 1e-4 * mean * tf.constant([[1.0, -1, 0]])

    return model


def test_coarse_logits_match_numpy_reference():
    logits = np.random.default_rng(0).normal(0, 3, [5, NUM_CLASSES])
    expected_logits, expected_probabilities = _reference_coarse(logits, GROUPS)
    targets = np.array([0, 1, 2, 1, 0])

    actual_logits = coarse_logits(tf.constant(logits, tf.float32), GROUPS)
    log_probabilities = coarse_log_probabilities(
        tf.constant(logits, tf.float32), GROUPS
    )
    per_target = target_coarse_logits(logits, GROUPS, targets)

    np.testing.assert_allclose(actual_logits, expected_logits, atol=1e-5)
    np.testing.assert_allclose(
        np.exp(log_probabilities), expected_probabilities, atol=1e-6
    )
    np.testing.assert_allclose(
        tf.sigmoid(actual_logits), expected_probabilities, atol=1e-6
    )
    np.testing.assert_allclose(
        per_target, expected_logits[np.arange(5), targets], atol=1e-10
    )


@pytest.mark.parametrize(
    "dtype, tolerance", [("float32", 2e-3), ("float64", 0)]
)
def test_coarse_logits_are_exact_for_huge_logits(dtype, tolerance):
    logits = np.array(
        [
            [1e4, -1e4, 1e4 - 3, 5e3, -1e4, 0, 0, 0, 0, -1e4],
            [-1e4, -1e4 + 2, 1e4, -1e4, 3e3, 0, 0, 1e4, 0, 9e3],
        ]
    )
    expected, _ = _reference_coarse(logits, GROUPS)
    tensor = tf.constant(logits, dtype)

    with tf.GradientTape() as tape:
        tape.watch(tensor)
        actual = coarse_logits(tensor, GROUPS)
        log_probabilities = coarse_log_probabilities(tensor, GROUPS)
    gradient = tape.gradient(actual, tensor)

    assert np.all(np.isfinite(actual)) and np.all(np.isfinite(gradient))
    assert np.all(np.isfinite(log_probabilities))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=tolerance)
    # Row 0, group {0, 3}: log(e^1e4 + e^5e3) - log(e^(1e4 - 3) + ...) = 3.
    np.testing.assert_allclose(actual[0, 0], 3.0, rtol=0, atol=tolerance)


def test_geometric_mean_equals_averaged_coarse_logit_cross_entropy():
    members, batch = 3, 4
    logits = np.random.default_rng(1).normal(0, 4, [members, batch, 10])
    targets = np.array([0, 2, 1, 1])
    _, probabilities = _reference_coarse(logits, GROUPS)
    target_probability = probabilities[:, np.arange(batch), targets]

    # Eqs. 8-9: -log of the geometric mean, renormalized over target/other.
    yes = np.exp(np.log(target_probability).mean(axis=0))
    no = np.exp(np.log1p(-target_probability).mean(axis=0))
    expected = -np.log(yes / (yes + no))
    actual = coarse_ensemble_loss(target_coarse_logits(logits, GROUPS, targets))

    np.testing.assert_allclose(actual, expected, rtol=1e-10)


def test_ensemble_loss_matches_reference_on_keras_members():
    ensemble = Ensemble(
        [
            Member(_dense_model(), preprocess=inception_preprocess),
            Member(_conv_model(), preprocess=lambda x: x / 255.0),
        ]
    )
    images = tf.constant(_images(3), tf.float32)
    targets = np.array([2, 0, 1])

    fine_logits = ensemble.fine_logits(images).numpy()
    coarse, probabilities = _reference_coarse(fine_logits, GROUPS)
    picked = probabilities[:, np.arange(3), targets]
    yes = np.exp(np.log(picked).mean(0))
    expected = -np.log(yes / (yes + np.exp(np.log1p(-picked).mean(0))))

    np.testing.assert_allclose(
        ensemble.loss(images, targets, GROUPS), expected, rtol=1e-4
    )
    np.testing.assert_allclose(
        ensemble.coarse_logits(images, GROUPS), coarse, atol=1e-5
    )
    np.testing.assert_array_equal(
        ensemble.fooled(images, targets, GROUPS),
        coarse[:, np.arange(3), targets] > 0,
    )


def test_projection_keeps_every_step_in_ball_and_value_range():
    ensemble = Ensemble([Member(_dense_model(), inception_preprocess)])
    images = _images(4, seed=2)
    images[:, :2] = 0.0
    images[:, -2:] = 255.0
    targets = np.array([1, 2, 0, 1])

    iterates = [images.astype(np.float32)]
    for steps in range(1, 6):
        config = AttackConfig(epsilon=7.0, step_size=3.0, steps=steps, **PLAIN)
        result = targeted_attack(ensemble, images, targets, GROUPS, config)
        iterates.append(result.adversarial)

    for previous, current in zip(iterates, iterates[1:]):
        assert np.abs(current - images).max() <= 7.0 + 1e-4
        assert current.min() >= 0.0 and current.max() <= 255.0
        assert np.abs(current - previous).max() <= 3.0 + 1e-4
    assert np.abs(iterates[-1] - images).max() > 6.9  # the ball was reached


def test_epsilon_rescale_makes_norm_exactly_epsilon():
    ensemble = Ensemble([_mean_model(offset=128.0)])
    images = np.full([3, 8, 8, 1], 120.0)
    images[1] = 100.0
    images[2] = 255.0  # already fooled: one step, then rescaled

    short = targeted_attack(
        ensemble,
        images,
        [0, 0, 0],
        [[0], [1]],
        AttackConfig(rescale_to_epsilon=False),
    )
    result = targeted_attack(ensemble, images, [0, 0, 0], [[0], [1]])

    norms = np.abs(result.perturbations).max(axis=(1, 2, 3))
    assert np.abs(short.perturbations).max(axis=(1, 2, 3)).max() < 32.0
    assert result.kept.all()
    np.testing.assert_allclose(norms[result.kept], 32.0, atol=1e-4)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 255


def test_flip_is_the_vertical_flip_of_the_adv_perturbation():
    ensemble = Ensemble([Member(_conv_model(), inception_preprocess)])
    images = _images(2, seed=3)

    result = targeted_attack(ensemble, images, [1, 2], GROUPS)
    flipped = flip_condition(result)

    np.testing.assert_allclose(
        flipped - result.images, result.perturbations[:, ::-1], atol=1e-4
    )
    np.testing.assert_allclose(result.images, image_condition(images))
    assert not np.allclose(flipped, result.adversarial)
    assert flipped.min() >= 0 and flipped.max() <= 255


@pytest.mark.parametrize(
    "config, members, expected",
    [
        (AttackConfig(), 10, 10),
        (AttackConfig(min_fooled_fraction=0.7), 10, 7),
        (AttackConfig(min_fooled_fraction=0.65), 10, 7),
        (AttackConfig(min_fooled_count=7), 10, 7),
        (AttackConfig(min_fooled_fraction=0.01), 3, 1),
    ],
)
def test_required_fooled_counts_members(config, members, expected):
    assert config.required_fooled(members) == expected


def test_keep_rule_counts_fooled_members():
    fooling = [_biased_model([5.0, -5.0, 0.0])] * 7
    resisting = [_biased_model([-5.0, 5.0, 0.0])] * 3
    ensemble = Ensemble(fooling + resisting)
    images = _images(2, seed=4)
    groups = [[0], [1]]

    adv = targeted_attack(ensemble, images, [0, 0], groups)
    false = targeted_attack(ensemble, images, [0, 0], groups, FALSE_CONFIG)
    eight = targeted_attack(
        ensemble, images, [0, 0], groups, AttackConfig(min_fooled_count=8)
    )

    np.testing.assert_array_equal(adv.fooled.sum(axis=0), [7, 7])
    assert not adv.kept.any()
    assert false.kept.all()
    assert not eight.kept.any()


def test_early_stop_freezes_fooled_examples():
    ensemble = Ensemble([_mean_model(offset=100.0)])
    values = np.array([99.0, 95.0, 120.0, 50.0])
    images = values[:, None, None, None] * np.ones([4, 8, 8, 1])
    config = AttackConfig(rescale_to_epsilon=False, intensity_range=None)

    result = targeted_attack(ensemble, images, [0] * 4, [[0], [1]], config)
    longer = targeted_attack(
        ensemble,
        images,
        [0] * 4,
        [[0], [1]],
        AttackConfig(steps=60, rescale_to_epsilon=False, intensity_range=None),
    )

    # 99 -> 101 (1 step); 95 -> 101 (3); 120 fooled (1 step minimum);
    # 50 never reaches 100 within ε = 32, so it runs all N = 36 steps.
    np.testing.assert_array_equal(result.steps, [1, 3, 1, 36])
    np.testing.assert_allclose(
        result.adversarial[:, 0, 0, 0], [101, 101, 122, 82]
    )
    np.testing.assert_array_equal(result.fooled[0], [True, True, True, False])
    np.testing.assert_array_equal(
        longer.adversarial[:3], result.adversarial[:3]
    )
    np.testing.assert_array_equal(longer.steps[:3], result.steps[:3])


def test_without_early_stop_every_example_takes_all_steps():
    ensemble = Ensemble([_mean_model(offset=100.0)])
    images = np.full([2, 8, 8, 1], 99.0)

    result = targeted_attack(
        ensemble, images, [0, 0], [[0], [1]], AttackConfig(steps=5, **PLAIN)
    )

    np.testing.assert_array_equal(result.steps, [5, 5])
    np.testing.assert_allclose(result.adversarial, 109.0)


def test_adv_condition_fools_every_keras_member():
    members = [
        Member(_linear_model(seed), preprocess=lambda x: x / 32.0 - 4.0)
        for seed in (0, 1)
    ]
    ensemble = Ensemble(members)
    images = _images(6)
    targets = np.array([0, 1, 2, 0, 1, 2])

    result = adv_condition(ensemble, images, targets, GROUPS)
    flipped = ensemble.fooled(
        tf.constant(flip_condition(result)), targets, GROUPS
    )

    assert result.kept.all() and result.fooled.all()
    np.testing.assert_allclose(
        np.abs(result.perturbations).max(axis=(1, 2, 3)), 32.0, atol=1e-4
    )
    assert (result.steps < 36).all()
    assert flipped.numpy().sum() <= 1


def test_false_condition_attacks_images_outside_the_groups():
    ensemble = Ensemble([Member(_dense_model(), inception_preprocess)] * 2)
    images = _images(2, seed=5)

    result = false_condition(ensemble, images, [4, 5], [0, 2], GROUPS)

    assert np.abs(result.perturbations).max() <= 40.0 + 1e-4
    assert result.fooled.shape == (2, 2)


def test_matches_cleverhans_basic_iterative_method():
    from cleverhans.tf2.attacks.basic_iterative_method import (
        basic_iterative_method,
    )

    model = _conv_model(num_classes=5, seed=7)
    images = _images(4, seed=6).astype(np.float32)
    targets = np.array([0, 3, 1, 4])
    epsilon, step_size, steps = 10.0, 2.0, 8

    expected = basic_iterative_method(
        lambda x: model(inception_preprocess(x)),
        tf.constant(images),
        epsilon,
        step_size,
        steps,
        np.inf,
        clip_min=0,
        clip_max=255,
        y=tf.constant(targets),
        targeted=True,
        sanity_checks=False,
    )
    config = AttackConfig(
        epsilon=epsilon, step_size=step_size, steps=steps, loss="fine", **PLAIN
    )
    ensemble = Ensemble([Member(model, preprocess=inception_preprocess)])
    actual = targeted_attack(ensemble, images, targets, config=config)

    np.testing.assert_allclose(actual.adversarial, expected, atol=1e-3)
    assert np.abs(actual.perturbations).max() > epsilon - 1e-3


def _attack_error(images=None, targets=(1,), groups=((0,), (1,)), **config):
    ensemble = Ensemble([_mean_model(offset=100.0)])
    images = np.full([1, 8, 8, 1], 100.0) if images is None else images
    config = AttackConfig(**config)
    return lambda: targeted_attack(ensemble, images, targets, groups, config)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: AttackConfig(epsilon=0.0), r"`epsilon` \(ε\) must be"),
        (lambda: AttackConfig(epsilon=-3), r"`epsilon` \(ε\) must be"),
        (lambda: AttackConfig(step_size=0), r"`step_size` \(α\) must be"),
        (
            lambda: AttackConfig(epsilon=300),
            r"`epsilon` \(ε\) must be a number > 0 and <= 255 .* got 300",
        ),
        (
            lambda: AttackConfig(step_size=255.5),
            r"`step_size` \(α\) must be a number > 0 and <= 255 .* 255.5",
        ),
        (lambda: AttackConfig(steps=0), r"`steps` \(N\) must be an integer"),
        (lambda: AttackConfig(loss="mse"), "`loss` must be one of"),
        (
            lambda: AttackConfig(min_fooled_fraction=0.5, min_fooled_count=3),
            "not both",
        ),
        (
            lambda: AttackConfig(min_fooled_fraction=1.5),
            r"`min_fooled_fraction` must be in \(0, 1\]",
        ),
        (
            lambda: AttackConfig(min_fooled_count=0),
            "`min_fooled_count` must be an integer >= 1",
        ),
        (
            lambda: AttackConfig(intensity_range=(215, 40)),
            "`intensity_range` must be",
        ),
        (_attack_error(targets=[2]), "holds coarse class 2, which is not"),
        (_attack_error(targets=[0, 1]), r"`targets` must have shape \(1,\)"),
        (
            _attack_error(images=np.full([1, 8, 8, 1], 300.0)),
            r"value range \[0, 255\], found values in \[300, 300\]",
        ),
        (
            _attack_error(images=np.full([1, 8, 8, 1], np.nan)),
            "NaN or infinite",
        ),
        (
            _attack_error(images=np.zeros([8, 8, 1])),
            "must have rank 4 \\[B, H, W, C\\], got rank 3",
        ),
        (_attack_error(groups=None), "needs `groups`"),
        (
            _attack_error(loss="fine"),
            "only used with loss='coarse'",
        ),
        (_attack_error(targets=[5], groups=None, loss="fine"), "fine class 5"),
        (_attack_error(min_fooled_count=2), "exceeds the 1 ensemble members"),
        (lambda: Ensemble([]), "`members` is empty"),
        (
            lambda: validate_groups([[0, 1], [1, 2]], 5),
            "Label 1 is listed in both group 0 and group 1",
        ),
        (lambda: validate_groups([[0, 0]], 5), "listed twice in group 0"),
        (
            lambda: validate_groups([[0], [7]], 5),
            "Group 1 holds label 7, but the model outputs 5 classes",
        ),
        (lambda: validate_groups([[0], []], 5), "Group 1 is empty"),
        (lambda: validate_groups([[0, 1, 2]], 3), "covers all 3 classes"),
        (lambda: validate_groups([], 3), "`groups` is empty"),
        (lambda: validate_groups([[0.5]], 3), "not an integer fine label"),
        (lambda: validate_groups([3], 5), "Group 0 is 3, not a list"),
        (lambda: validate_groups("ab", 5), "must be a list of lists"),
        (
            lambda: coarse_logits(tf.zeros([2, 3]), [[0], [3]]),
            "holds label 3, but the model outputs 3 classes",
        ),
        (
            lambda: rescale_intensity(np.array([-1.0, 2.0])),
            r"found values in \[-1, 2\]",
        ),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_false_condition_rejects_images_of_a_group():
    ensemble = Ensemble([_dense_model()])

    with pytest.raises(ValueError, match="fine label 7, which belongs to"):
        false_condition(ensemble, _images(2), [4, 7], [0, 0], GROUPS)


def test_members_must_agree_on_logits():
    mixed = Ensemble([_dense_model(num_classes=10), _dense_model(5)])
    flat = Ensemble([lambda x: tf.reduce_mean(x, axis=[1, 2, 3])])
    images = tf.zeros([1, 8, 8, 1])

    with pytest.raises(ValueError, match="Member 1 outputs 5 classes"):
        mixed.fine_logits(images)
    with pytest.raises(ValueError, match="members must return fine logits"):
        flat.fine_logits(images)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Ensemble([3]), "Member 0 is a int"),
        (lambda: Ensemble(Member(_dense_model())), "must be a list"),
        (lambda: Member("model"), "`model` must be callable"),
        (lambda: Member(_dense_model(), preprocess=2), "`preprocess` must"),
        (
            lambda: targeted_attack("model", np.zeros([1, 8, 8, 1]), [0]),
            "`ensemble` must be an Ensemble",
        ),
    ],
)
def test_bad_types_raise_type_error(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_epsilon_and_step_size_of_255_are_accepted():
    config = AttackConfig(epsilon=255, step_size=255)

    assert (config.epsilon, config.step_size) == (255, 255)


def _nan_model(images):
    # [B, H, W, C] -> [B, 2] of NaN
    return tf.fill([tf.shape(images)[0], 2], np.nan)


@pytest.mark.parametrize(
    "second, message",
    [
        (Member(_nan_model), "Member 1 returns NaN or infinite logits"),
        (
            Member(_nan_model, name="broken"),
            "Member 1 \\('broken'\\) returns NaN or infinite logits",
        ),
        (
            tf_keras.Sequential(
                [tf_keras.layers.Lambda(lambda x: x[:, 0, :2, 0] / 0.0)],
                name="divided",
            ),
            "Member 1 \\('divided'\\) returns NaN or infinite logits",
        ),
    ],
)
def test_member_with_non_finite_logits_is_named(second, message):
    ensemble = Ensemble([_mean_model(offset=100.0), second])
    images = np.full([2, 8, 8, 1], 100.0)
    groups = [[0], [1]]

    with pytest.raises(ValueError, match=message):
        targeted_attack(ensemble, images, [1, 1], groups, ADV_CONFIG)
    with pytest.raises(ValueError, match=message):
        false_condition(ensemble, images, [0, 0], [1, 1], [[1]])


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full([1, 8, 8, 1], 300.0), r"found values in \[300, 300\]"),
        (np.full([1, 8, 8, 1], np.nan), "holds NaN or infinite values"),
        (np.zeros([8, 8, 1]), "must have rank 4"),
    ],
)
def test_ensemble_loss_and_fooled_check_images(images, message):
    ensemble = Ensemble([_mean_model(offset=100.0)])

    with pytest.raises(ValueError, match=message):
        ensemble.loss(images, [1], [[0], [1]])
    with pytest.raises(ValueError, match=message):
        ensemble.fooled(images, [1])


def test_flip_condition_needs_an_attack_result():
    with pytest.raises(TypeError, match="needs the AttackResult of adv_"):
        flip_condition(None)


def test_coarse_functions_cast_integer_logits_to_float32():
    logits = np.array([[3, -2, 0, 7, 1, 0, 0, 5, 0, -4]], np.int32)
    expected, probabilities = _reference_coarse(logits, GROUPS)

    for dtype in (tf.int32, tf.int64):
        tensor = tf.constant(logits, dtype)
        actual = coarse_logits(tensor, GROUPS)
        log_probabilities = coarse_log_probabilities(tensor, GROUPS)
        per_target = target_coarse_logits(tensor, GROUPS, [1])

        assert actual.dtype == tf.float32
        np.testing.assert_allclose(actual, expected, atol=1e-5)
        np.testing.assert_allclose(
            np.exp(log_probabilities), probabilities, atol=1e-6
        )
        np.testing.assert_allclose(per_target, expected[:, 1], atol=1e-5)
    with pytest.raises(TypeError, match="`logits` must be real numbers"):
        coarse_logits(tf.constant([[True, False]]), [[0]])
