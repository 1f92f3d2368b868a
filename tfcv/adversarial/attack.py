"""The iterative targeted attack on an ensemble.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195: Eq. 7 and
Appendix D (the attack with α = 2, the final rescale to ‖δ‖∞ = ε, the keep
rule: all 10 members fooled for adv, at least 7 of 10 for false), §3.1.3
(every perturbation has ‖δ‖∞ = ε) and §3.2.2 (ε = 32 for adv and 40 for
false; images rescaled to [40, 215] first). The attack is the iterative
targeted method of Kurakin et al. (2016), arXiv:1607.02533, run on the
ensemble objective J of `tfcv.adversarial.ensemble`:

  X_0 = X,
  X_{n+1} = clip_[0,255](clip_[X-ε, X+ε](X_n - α sign(∇_X J(X_n | y)))),

for n < N; then every δ = X_N - X with ‖δ‖∞ < ε is scaled up to
‖δ‖∞ = ε, and an example is kept when enough members are fooled.

In coarse mode the sign step differentiates -mean_k F_k, which has the
sign of ∇J (J = softplus(-mean_k F_k) is decreasing in it) but does not
underflow to 0 for examples the ensemble is already sure of.

The whole batch runs in one `tf.function`, cached per ensemble, groups and
keep rule; ε, α and N are tensor arguments, so new values do not retrace.
Call the public functions eagerly: they check their inputs in Python.

The conditions image, adv, flip and false that wrap this attack are in
`tfcv.adversarial.conditions`.

Shapes: `B` batch, `H W C` images, `M` members, `K` fine classes, `G`
coarse classes.

Deviations from the paper:
  - N is not given in the paper. The default is the rule of the method it
    cites, N = min(ε + 4, ⌈1.25 ε⌉) (Kurakin et al. 2016, §2.2): 36 steps
    for adv, 44 for false (with α = 2 the ball's edge is ε/2 steps away).
  - Early stop (on by default; `early_stop=False` runs the paper's fixed N
    steps): an example whose X_n (n ≥ 1) fools as many members as the keep
    rule needs is frozen, which saves gradient steps on large ensembles;
    frozen examples sit closer to the decision boundary than the paper's.
    Every example takes at least one step, so that even an image fooling
    the members unperturbed gets a δ that the ε-rescale can stretch.
  - After the ε-rescale the images are clipped to [0, 255] again (the
    paper does not say); after the [40, 215] rescale and with ε ≤ 40 the
    clip changes nothing. An example whose perturbation still misses
    ‖δ‖∞ = ε (a zero perturbation, or one shortened by that clip) is not
    kept, since §3.1.3 fixes every perturbation's norm at ε.
  - `loss="fine"` (fine-class targets, no coarse classes) is not in the
    paper; it checks this attack against other implementations of the
    iterative method.
"""

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf

from tfcv.adversarial.coarse import check_targets
from tfcv.adversarial.coarse import group_membership
from tfcv.adversarial.ensemble import VALUE_RANGE
from tfcv.adversarial.ensemble import Ensemble
from tfcv.adversarial.ensemble import _as_images
from tfcv.adversarial.ensemble import finite_logits
from tfcv.adversarial.ensemble import objective_and_fooled

__all__ = [
    "ADV_CONFIG",
    "FALSE_CONFIG",
    "VALUE_RANGE",
    "AttackConfig",
    "AttackResult",
    "rescale_intensity",
    "targeted_attack",
]

_LOSSES = ("coarse", "fine")


def _is_real(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_intensity_range(intensity_range):
    """Raises unless `intensity_range` is `(low, high)` within [0, 255]."""
    if (
        not isinstance(intensity_range, (tuple, list))
        or len(intensity_range) != 2
        or not all(_is_real(value) for value in intensity_range)
        or not VALUE_RANGE[0] <= intensity_range[0] < intensity_range[1]
        or not intensity_range[1] <= VALUE_RANGE[1]
    ):
        raise ValueError(
            "`intensity_range` must be (low, high) with 0 <= low < high <= "
            f"255, got {intensity_range!r}; the paper uses (40, 215)."
        )


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Settings of the iterative targeted attack; the defaults are adv's.

    Attributes:
      epsilon: ε, the L∞ bound on the [0, 255] scale, in `(0, 255]`
        (default 32, the adv condition, §3.2.2; false uses 40).
      step_size: α, the step on the [0, 255] scale, in `(0, 255]`
        (default 2, Appendix D).
      steps: N, an `int >= 1`, or `None` (default) for
        `min(ε + 4, ⌈1.25 ε⌉)` (see the module's deviations).
      min_fooled_fraction: keep rule as a fraction of the members in
        `(0, 1]`, rounded up (0.7 of 10 members is 7; false uses 0.7).
      min_fooled_count: keep rule as a member count `>= 1`. Give at most
        one of the two; with neither, every member must be fooled (adv).
      early_stop: freeze an example once it fools as many members as the
        keep rule needs, after at least one step (default True; False
        runs all N steps).
      rescale_to_epsilon: scale every perturbation with ‖δ‖∞ < ε up to ε
        after the loop (default True, Appendix D).
      intensity_range: `(low, high)` the clean images are rescaled to
        first (default (40, 215), §3.2.2), or `None` to use them as given.
      loss: `"coarse"` (default, Eqs. 6-9) or `"fine"` (fine-class
        targets, the cross-entropy of the averaged fine logits).

    Example:
      >>> AttackConfig(epsilon=40.0, min_fooled_fraction=0.7).num_steps
      44
    """

    epsilon: float = 32.0
    step_size: float = 2.0
    steps: int | None = None
    min_fooled_fraction: float | None = None
    min_fooled_count: int | None = None
    early_stop: bool = True
    rescale_to_epsilon: bool = True
    intensity_range: tuple[float, float] | None = (40.0, 215.0)
    loss: str = "coarse"

    def __post_init__(self):
        # Above 255 the ε-ball holds the whole value range, and the
        # ε-rescale could never reach ‖δ‖∞ = ε: nothing would be kept.
        if not _is_real(self.epsilon) or not 0 < self.epsilon <= 255:
            raise ValueError(
                "`epsilon` (ε) must be a number > 0 and <= 255 on the "
                f"[0, 255] scale, got {self.epsilon!r} (the paper uses 32 "
                "for adv and 40 for false)."
            )
        if not _is_real(self.step_size) or not 0 < self.step_size <= 255:
            raise ValueError(
                "`step_size` (α) must be a number > 0 and <= 255 on the "
                f"[0, 255] scale, got {self.step_size!r} (the paper uses 2)."
            )
        if self.steps is not None and (
            not _is_integer(self.steps) or self.steps < 1
        ):
            raise ValueError(
                f"`steps` (N) must be an integer >= 1 or None, got "
                f"{self.steps!r}; None picks min(ε + 4, ⌈1.25 ε⌉)."
            )
        fraction, count = self.min_fooled_fraction, self.min_fooled_count
        if fraction is not None and count is not None:
            raise ValueError(
                "Give `min_fooled_fraction` or `min_fooled_count`, not both "
                f"(got {fraction!r} and {count!r})."
            )
        if fraction is not None and (
            not _is_real(fraction) or not 0 < fraction <= 1
        ):
            raise ValueError(
                f"`min_fooled_fraction` must be in (0, 1], got {fraction!r}; "
                "e.g. 0.7 keeps examples fooling 7 of 10 members."
            )
        if count is not None and (not _is_integer(count) or count < 1):
            raise ValueError(
                f"`min_fooled_count` must be an integer >= 1, got {count!r}."
            )
        if self.intensity_range is not None:
            _check_intensity_range(self.intensity_range)
        if self.loss not in _LOSSES:
            raise ValueError(
                f"`loss` must be one of {_LOSSES}, got {self.loss!r}."
            )

    @property
    def num_steps(self) -> int:
        """N: `steps`, or `min(ε + 4, ⌈1.25 ε⌉)` when it is `None`."""
        if self.steps is not None:
            return int(self.steps)
        return int(math.ceil(min(self.epsilon + 4, 1.25 * self.epsilon)))

    def required_fooled(self, num_members: int) -> int:
        """How many of `num_members` members must be fooled to keep."""
        if self.min_fooled_count is not None:
            if self.min_fooled_count > num_members:
                raise ValueError(
                    f"`min_fooled_count`={self.min_fooled_count} exceeds "
                    f"the {num_members} ensemble members; use at most "
                    f"{num_members}."
                )
            return int(self.min_fooled_count)
        if self.min_fooled_fraction is None:
            return num_members
        # 0.7 * 10 may round to 7.000000000000001: forgive the last bits.
        required = math.ceil(self.min_fooled_fraction * num_members - 1e-9)
        return max(1, int(required))


# The paper's two attacked conditions (§3.2.2, Appendix D).
ADV_CONFIG = AttackConfig()
FALSE_CONFIG = AttackConfig(epsilon=40.0, min_fooled_fraction=0.7)


@dataclasses.dataclass(frozen=True, eq=False)
class AttackResult:
    """What `targeted_attack` returns; NumPy arrays on the [0, 255] scale.

    Attributes:
      images: `[B, H, W, C]` float32 clean images X the attack started
        from (after the intensity rescale): the image condition.
      adversarial: `[B, H, W, C]` float32 X_adv.
      perturbations: `[B, H, W, C]` float32 δ = X_adv - X.
      fooled: `[M, B]` bool, member k classifies X_adv as the target.
      kept: `[B]` bool, the keep rule holds (and ‖δ‖∞ = ε when the
        ε-rescale is on).
      steps: `[B]` int32, gradient steps applied to each example.
    """

    images: np.ndarray
    adversarial: np.ndarray
    perturbations: np.ndarray
    fooled: np.ndarray
    kept: np.ndarray
    steps: np.ndarray


def rescale_intensity(images, intensity_range=(40.0, 215.0)):
    """Maps `[0, 255]` images affinely onto `intensity_range` (§3.2.2).

    The paper shows clean images in [40, 255 - 40] so that perturbations
    of up to ε = 40 never need clipping.

    Args:
      images: float or integer images of any shape, values in [0, 255].
      intensity_range: `(low, high)`, `0 <= low < high <= 255` (default
        (40, 215)).

    Returns:
      A float32 tensor of the same shape: `low + x (high - low) / 255`.

    Raises:
      ValueError: for values outside [0, 255] or a bad range.

    Example:
      >>> rescale_intensity(tf.constant([0.0, 255.0]))
      <tf.Tensor: ... numpy=array([ 40., 215.], dtype=float32)>
    """
    _check_intensity_range(intensity_range)
    images = _as_images(images, rank=None)
    low, high = float(intensity_range[0]), float(intensity_range[1])
    return low + images * ((high - low) / VALUE_RANGE[1])


def _rescale_to_epsilon(images, adversarial, epsilon):
    """Scales each δ with 0 < ‖δ‖∞ < ε to ‖δ‖∞ = ε, then clips to [0, 255].

    Args:
      images: `[B, H, W, C]` clean images X.
      adversarial: `[B, H, W, C]` X_N.
      epsilon: scalar ε.

    Returns:
      `[B, H, W, C]`; examples with a zero or full-length δ are unchanged.
    """
    perturbation = adversarial - images
    # [B, H, W, C] -> [B, 1, 1, 1]
    norms = tf.reduce_max(tf.abs(perturbation), axis=[1, 2, 3], keepdims=True)
    short = tf.logical_and(norms > 0, norms < epsilon)
    scale = tf.math.divide_no_nan(epsilon, norms)
    rescaled = tf.clip_by_value(images + perturbation * scale, *VALUE_RANGE)
    return tf.where(short, rescaled, adversarial)


def _build_attack(ensemble, membership, required, early_stop, rescale):
    """The batched attack as one `tf.function` (see the module docstring).

    Args:
      ensemble: the `Ensemble`.
      membership: `[G, K]` bool NumPy mask, or `None` for fine targets.
      required: members that must be fooled (the early-stop test).
      early_stop: freeze examples that meet `required`.
      rescale: scale short perturbations up to ε after the loop.
    """
    groups_mask = None if membership is None else tf.constant(membership)

    def evaluate(images, targets, target_membership):
        fine_logits = ensemble.fine_logits(images)
        return objective_and_fooled(
            fine_logits, targets, target_membership, for_sign=True
        )

    @tf.function(reduce_retracing=True)
    def attack(images, targets, epsilon, step_size, num_steps):
        target_membership = None
        if groups_mask is not None:
            # [G, K] gathered by [B] -> [B, K]
            target_membership = tf.gather(groups_mask, targets)
        lower = images - epsilon
        upper = images + epsilon

        def step(index, adversarial, active, steps_taken):
            with tf.GradientTape() as tape:
                tape.watch(adversarial)
                loss, fooled = evaluate(adversarial, targets, target_membership)
                total = tf.reduce_sum(loss)
            gradient = tape.gradient(
                total,
                adversarial,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

            # Early stop: freeze examples that fool enough members already
            # (after one step, so that δ has a direction to rescale).
            if early_stop:
                # [M, B] -> [B]
                num_fooled = tf.reduce_sum(tf.cast(fooled, tf.int32), axis=0)
                reached = tf.logical_and(num_fooled >= required, index > 0)
                active = tf.logical_and(active, tf.logical_not(reached))

            # Eq. 7: a signed step, then the ε-ball, then the value range.
            stepped = adversarial - step_size * tf.sign(gradient)
            projected = tf.clip_by_value(stepped, lower, upper)
            projected = tf.clip_by_value(projected, *VALUE_RANGE)

            # Only active examples move: [B] -> [B, 1, 1, 1].
            moving = tf.reshape(active, [-1, 1, 1, 1])
            adversarial = tf.where(moving, projected, adversarial)
            steps_taken += tf.cast(active, tf.int32)
            return index + 1, adversarial, active, steps_taken

        def keep_going(index, adversarial, active, steps_taken):
            return tf.logical_and(index < num_steps, tf.reduce_any(active))

        batch = tf.shape(images)[0]
        start = (
            tf.constant(0),
            images,
            tf.ones([batch], tf.bool),
            tf.zeros([batch], tf.int32),
        )
        _, adversarial, _, steps_taken = tf.while_loop(keep_going, step, start)

        # Appendix D: scale every perturbation with ‖δ‖∞ < ε up to ε.
        if rescale:
            adversarial = _rescale_to_epsilon(images, adversarial, epsilon)

        _, fooled = evaluate(adversarial, targets, target_membership)
        return adversarial, fooled, steps_taken

    return attack


def _traced_attack(ensemble, membership, required, early_stop, rescale):
    """`_build_attack`'s function, traced once per ensemble and setting."""
    key = (
        None if membership is None else membership.shape,
        None if membership is None else membership.tobytes(),
        required,
        early_stop,
        rescale,
    )
    # Kept on the ensemble (the functions refer to it), so both die together.
    traced = ensemble.traced_attacks
    if key not in traced:
        traced[key] = _build_attack(
            ensemble, membership, required, early_stop, rescale
        )
    return traced[key]


def _num_classes(ensemble, images) -> int:
    """`K`, from the members' (finite) logits of the first image."""
    return int(finite_logits(ensemble, images[:1]).shape[-1])


def _target_sets(num_classes, targets, groups, loss):
    """Checks targets and groups; the `[G, K]` mask, or `None` (fine)."""
    if loss == "fine":
        if groups is not None:
            raise ValueError(
                "`groups` is only used with loss='coarse'; pass groups=None "
                "with loss='fine' (targets are then fine class ids)."
            )
        check_targets(targets, num_classes, "fine class")
        return None
    if groups is None:
        raise ValueError(
            "loss='coarse' needs `groups`, the coarse classes as lists of "
            "fine label ids; or use AttackConfig(loss='fine')."
        )
    membership = group_membership(groups, num_classes)
    check_targets(targets, len(membership), "coarse class")
    return membership


def targeted_attack(
    ensemble: Ensemble,
    images,
    targets,
    groups=None,
    config: AttackConfig = ADV_CONFIG,
) -> AttackResult:
    """The iterative targeted attack of Eq. 7 on an ensemble, batched.

    Args:
      ensemble: the `Ensemble` to fool (M members).
      images: `[B, H, W, C]` clean images on the [0, 255] scale (any real
        or integer dtype; computed in float32).
      targets: `[B]` integer targets y_target: coarse class ids in
        `[0, G)`, or fine class ids in `[0, K)` with `loss="fine"`.
      groups: `G` lists of fine label ids (coarse classes), required with
        `loss="coarse"`, `None` with `loss="fine"`.
      config: an `AttackConfig` (default `ADV_CONFIG`: ε = 32, α = 2,
        every member fooled).

    Returns:
      An `AttackResult`.

    Raises:
      TypeError: if `ensemble` or `config` has the wrong type.
      ValueError: for images of the wrong rank or outside [0, 255], a
        member whose logits of the clean images are not finite, targets
        that are not `[B]` ids of a coarse (or fine) class, bad
        groups, or a keep rule that needs more members than there are.

    Example:
      >>> result = targeted_attack(ensemble, images, targets=[1, 0],
      ...                          groups=[[281, 282], [151]])
      >>> result.adversarial[result.kept]
    """
    if not isinstance(ensemble, Ensemble):
        raise TypeError(
            f"`ensemble` must be an Ensemble, got {type(ensemble).__name__};"
            " wrap models as Ensemble([Member(model, preprocess)])."
        )
    if not isinstance(config, AttackConfig):
        raise TypeError(
            f"`config` must be an AttackConfig, got {type(config).__name__}."
        )
    images = _as_images(images)
    targets = np.asarray(targets)
    if targets.shape != (images.shape[0],):
        raise ValueError(
            f"`targets` must have shape ({images.shape[0]},), one id per "
            f"image, got shape {targets.shape}."
        )

    # §3.2.2: clean images in [40, 215], so that X ± ε stays in [0, 255].
    if config.intensity_range is not None:
        images = rescale_intensity(images, config.intensity_range)

    # One eager pass: K, and no member returns NaN or inf on X.
    num_classes = int(finite_logits(ensemble, images).shape[-1])

    # The target sets: fine classes, or the coarse classes of `groups`.
    membership = _target_sets(num_classes, targets, groups, config.loss)
    required = config.required_fooled(len(ensemble))

    attack = _traced_attack(
        ensemble,
        membership,
        required,
        config.early_stop,
        config.rescale_to_epsilon,
    )
    adversarial, fooled, steps = attack(
        images,
        tf.constant(targets, tf.int32),
        tf.constant(config.epsilon, tf.float32),
        tf.constant(config.step_size, tf.float32),
        tf.constant(config.num_steps, tf.int32),
    )

    # The keep rule (Appendix D), plus ‖δ‖∞ = ε after the rescale.
    images = images.numpy()
    adversarial = adversarial.numpy()
    fooled = fooled.numpy()
    perturbations = adversarial - images
    kept = fooled.sum(axis=0) >= required
    if config.rescale_to_epsilon:
        norms = np.abs(perturbations).max(axis=(1, 2, 3))
        kept &= np.isclose(norms, config.epsilon, rtol=1e-5, atol=1e-4)
    return AttackResult(
        images=images,
        adversarial=adversarial,
        perturbations=perturbations,
        fooled=fooled,
        kept=kept,
        steps=steps.numpy(),
    )
