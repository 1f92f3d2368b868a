"""The four conditions of the experiment: image, adv, flip and false.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195: §3.2.2 (the
conditions image, adv, flip and false; ε = 32 and 40; images rescaled to
[40, 215] first) and Appendix D (the keep rule: all 10 members fooled for
adv, at least 7 of 10 for false). adv and false run the iterative targeted
attack of `tfcv.adversarial.attack`; flip reuses adv's perturbations.

The conditions (§3.2.2), all on the [0, 255] scale:
  image: the clean image rescaled to [40, 215] (`image_condition`).
  adv:   image + δ_adv, pushed to the other class of its group, ε = 32,
         kept when every member is fooled (`adv_condition`).
  flip:  image + δ_adv flipped upside down (along H), clipped to
         [0, 255] (`flip_condition`): the same perturbation statistics
         without the attack.
  false: an image from no group class, pushed toward a group class,
         ε = 40, kept when at least 7 of 10 members are fooled
         (`false_condition`).

Shapes: `B` batch, `H W C` images, `K` fine classes, `G` coarse classes.

Deviations from the paper:
  - The paper does not say whether flip images are clipped; they are
    clipped to [0, 255] here (a no-op within [40, 215] and ε ≤ 40).
"""

import numpy as np

from tfcv.adversarial.attack import ADV_CONFIG
from tfcv.adversarial.attack import FALSE_CONFIG
from tfcv.adversarial.attack import VALUE_RANGE
from tfcv.adversarial.attack import AttackConfig
from tfcv.adversarial.attack import AttackResult
from tfcv.adversarial.attack import _as_images
from tfcv.adversarial.attack import _num_classes
from tfcv.adversarial.attack import rescale_intensity
from tfcv.adversarial.attack import targeted_attack
from tfcv.adversarial.coarse import check_targets
from tfcv.adversarial.coarse import group_membership
from tfcv.adversarial.ensemble import Ensemble

__all__ = [
    "adv_condition",
    "false_condition",
    "flip_condition",
    "image_condition",
]


def image_condition(images, config: AttackConfig = ADV_CONFIG) -> np.ndarray:
    """The image condition: clean `[B, H, W, C]` images, rescaled.

    Returns the images rescaled to `config.intensity_range` (unchanged
    when it is `None`), as float32 NumPy: the X that adv and flip add
    their perturbations to.
    """
    images = _as_images(images)
    if config.intensity_range is not None:
        images = rescale_intensity(images, config.intensity_range)
    return images.numpy()


def adv_condition(
    ensemble: Ensemble,
    images,
    targets,
    groups,
    config: AttackConfig = ADV_CONFIG,
) -> AttackResult:
    """The adv condition: `targeted_attack` with ε = 32, all members fooled.

    `targets` should name, for each image, the other coarse class of its
    group (a cat image gets the dog class).
    """
    return targeted_attack(ensemble, images, targets, groups, config)


def flip_condition(result: AttackResult) -> np.ndarray:
    """The flip condition: X + δ_adv flipped upside down, in [0, 255].

    Args:
      result: the adv condition's `AttackResult`.

    Returns:
      `[B, H, W, C]` float32: `clip(X + δ[:, ::-1], 0, 255)`, the
      perturbation reversed along the height axis.

    Raises:
      TypeError: if `result` is not an `AttackResult`.
    """
    if not isinstance(result, AttackResult):
        raise TypeError(
            "flip_condition needs the AttackResult of adv_condition, got "
            f"{type(result).__name__}; call flip_condition(adv_condition("
            "ensemble, images, targets, groups))."
        )
    # Reverse H in [B, H, W, C].
    flipped = result.perturbations[:, ::-1]
    return np.clip(result.images + flipped, *VALUE_RANGE).astype(np.float32)


def false_condition(
    ensemble: Ensemble,
    images,
    labels,
    targets,
    groups,
    config: AttackConfig = FALSE_CONFIG,
) -> AttackResult:
    """The false condition: images from no group, pushed to a group class.

    Args:
      ensemble: the `Ensemble` to fool.
      images: `[B, H, W, C]` clean images on the [0, 255] scale.
      labels: `[B]` their true fine class ids, none of them in `groups`.
      targets: `[B]` coarse class ids in `[0, G)`.
      groups: `G` lists of fine label ids.
      config: default `FALSE_CONFIG` (ε = 40, 7 of 10 members fooled).

    Raises:
      ValueError: if an image's label belongs to a group, plus the errors
        of `targeted_attack`.
    """
    if config.loss != "coarse":
        raise ValueError(
            "The false condition needs loss='coarse' (targets are coarse "
            f"classes), got loss={config.loss!r}."
        )
    checked = _as_images(images)
    labels = np.asarray(labels)
    if labels.shape != (checked.shape[0],):
        raise ValueError(
            f"`labels` must have shape ({checked.shape[0]},), one fine class "
            f"id per image, got shape {labels.shape}."
        )
    num_classes = _num_classes(ensemble, checked)
    check_targets(labels, num_classes, "fine class", "labels")
    membership = group_membership(groups, num_classes)
    # [G, K] -> [K]: the coarse class owning each fine label, or -1.
    owner = np.where(membership.any(axis=0), membership.argmax(axis=0), -1)
    inside = np.flatnonzero(owner[labels] >= 0)
    if inside.size:
        index = int(inside[0])
        raise ValueError(
            f"Image {index} has fine label {int(labels[index])}, which "
            f"belongs to coarse class {int(owner[labels[index]])}; the false "
            "condition needs images from outside every group."
        )
    return targeted_attack(ensemble, images, targets, groups, config)
