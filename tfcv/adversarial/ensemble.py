"""An ensemble of classifiers and its attack objective.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195, Appendix D,
Eqs. 8-9, after Liu et al. (2016), arXiv:1611.02770 (attacking several
models at once makes adversarial examples transfer to unseen ones). The
ensemble's coarse probability is the geometric mean of its members' (Eq. 9)
and the attack minimizes J(X | y) = -log P_ens(y | X) (Eq. 8).

With the coarse variable "target class or not" of Appendix C, the
geometric means of the members' P_k and 1 - P_k renormalize to

  P_ens(y | X) = Π P_k^{1/M} / (Π P_k^{1/M} + Π (1 - P_k)^{1/M})
               = σ(mean_k F_k(y | X)),

because log P_k - log(1 - P_k) = F_k, the coarse logit of Eq. 6. So J is
the sigmoid cross-entropy (label 1) of the coarse logits averaged over
members: the paper's "cross entropy loss based on coarse logits averaged
across models", and how `coarse_ensemble_loss` computes it.

Fine mode (no groups): the same geometric mean over the fine softmax
distributions is the softmax of the averaged fine logits, so J is the
sparse softmax cross-entropy of the averaged logits; with one member it is
the usual targeted loss of the iterative method (Kurakin et al. 2016,
arXiv:1607.02533).

Members: a member is a classifier returning fine logits `[B, K]` (no
softmax: build Keras applications with `classifier_activation=None`) and
its own preprocessing. Images arrive on the [0, 255] scale; a member's
`preprocess` maps them to its input range (`x / 127.5 - 1`, a retinal
layer in front as in §3.1.2, or both). Anything differentiable works.

Shapes: `M` members, `B` batch, `H W C` images, `K` fine classes, `G`
coarse classes.

Deviations from the paper:
  - Whether a member is fooled is not defined in the paper. Here member k
    is fooled when its coarse probability of the target exceeds 1/2
    (F_k > 0), so the target outweighs all other fine labels together; in
    fine mode, when its top-1 class is the target.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.adversarial.coarse import _coarse_logits_from_mask
from tfcv.adversarial.coarse import _target_coarse_logits_from_mask
from tfcv.adversarial.coarse import check_targets
from tfcv.adversarial.coarse import group_membership

__all__ = [
    "VALUE_RANGE",
    "Ensemble",
    "Member",
    "coarse_ensemble_loss",
    "fine_ensemble_loss",
    "finite_logits",
    "inception_preprocess",
    "objective_and_fooled",
]

# The declared value range of all images: 8-bit intensities.
VALUE_RANGE = (0.0, 255.0)


def _as_images(images, name: str = "images", rank: int | None = 4):
    """`images` as float32, checked for rank and the value range [0, 255]."""
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if rank is not None and images.shape.rank != rank:
        raise ValueError(
            f"`{name}` must have rank 4 [B, H, W, C], got rank "
            f"{images.shape.rank} with shape {tuple(images.shape)}; add "
            "a batch axis (x[None]) or a channel axis (x[..., None])."
        )
    if rank is not None and images.shape[0] == 0:
        raise ValueError(f"`{name}` holds no images (batch size 0).")
    if not bool(tf.reduce_all(tf.math.is_finite(images))):
        raise ValueError(
            f"`{name}` holds NaN or infinite values; pass finite images on "
            "the [0, 255] scale."
        )
    low = float(tf.reduce_min(images))
    high = float(tf.reduce_max(images))
    if low < VALUE_RANGE[0] or high > VALUE_RANGE[1]:
        raise ValueError(
            f"`{name}` must lie in the value range [0, 255], found values "
            f"in [{low:g}, {high:g}]; pass 8-bit intensities (multiply "
            "[0, 1] images by 255)."
        )
    return images


def inception_preprocess(images):
    """Maps `[0, 255]` images to `[-1, 1]`, the Inception / ResNet-V2 range.

    Example:
      >>> inception_preprocess(tf.constant([0.0, 255.0]))
      <tf.Tensor: ... numpy=array([-1.,  1.], dtype=float32)>
    """
    return images / 127.5 - 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One classifier of an ensemble and its preprocessing.

    Args:
      model: a `tf_keras` classifier (or any differentiable callable)
        mapping preprocessed images to fine logits `[B, K]`; Keras layers
        and models are called with `training=False`.
      preprocess: `None` (default: identity) or a differentiable callable
        mapping `[B, H, W, C]` images on the [0, 255] scale to the model's
        input, e.g. `inception_preprocess` or a retinal-blur layer.
      name: optional label for messages.

    Example:
      >>> member = Member(classifier, preprocess=inception_preprocess)
    """

    model: Callable
    preprocess: Callable | None = None
    name: str = ""

    def __post_init__(self):
        if not callable(self.model):
            raise TypeError(
                f"`model` must be callable (a tf_keras classifier), got "
                f"{type(self.model).__name__}."
            )
        if self.preprocess is not None and not callable(self.preprocess):
            raise TypeError(
                "`preprocess` must be None or a callable on [B, H, W, C] "
                f"images, got {type(self.preprocess).__name__}."
            )

    def logits(self, images):
        """Fine logits `[B, K]` of `[B, H, W, C]` images on [0, 255]."""
        inputs = images
        if self.preprocess is not None:
            inputs = self.preprocess(images)
        if isinstance(self.model, tf_keras.layers.Layer):
            return self.model(inputs, training=False)
        return self.model(inputs)


def coarse_ensemble_loss(target_coarse_logits):
    """J of Eq. 8 from the members' target coarse logits.

    Args:
      target_coarse_logits: `[M, B]` coarse logits F_k(y_target | X).

    Returns:
      `[B]`: `-log σ(mean_k F_k)`, the sigmoid cross-entropy (label 1) of
      the averaged coarse logits, equal to -log of the renormalized
      geometric mean of the members' coarse probabilities (Eq. 9).

    Example:
      >>> coarse_ensemble_loss(tf.constant([[0.0], [0.0]]))
      <tf.Tensor: ... numpy=array([0.6931472], dtype=float32)>
    """
    # [M, B] -> [B]
    mean_logits = tf.reduce_mean(target_coarse_logits, axis=0)
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones_like(mean_logits), logits=mean_logits
    )


def fine_ensemble_loss(fine_logits, targets):
    """The fine-class analogue of Eq. 8: cross-entropy of averaged logits.

    Args:
      fine_logits: `[M, B, K]` members' fine logits.
      targets: `[B]` integer fine class ids.

    Returns:
      `[B]` sparse softmax cross-entropy of `mean_k l_k` and the targets.
    """
    # [M, B, K] -> [B, K]
    mean_logits = tf.reduce_mean(fine_logits, axis=0)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=mean_logits
    )


def objective_and_fooled(
    fine_logits, targets, target_membership=None, for_sign=False
):
    """J per example and which members are fooled.

    Args:
      fine_logits: `[M, B, K]` members' fine logits.
      targets: `[B]` integer targets (coarse or fine class ids).
      target_membership: `None` for fine mode, or `[B, K]` boolean, row `b`
        the fine labels of example `b`'s target coarse class.
      for_sign: in coarse mode, return `-mean_k F_k` instead of J. Per
        example J = softplus(-mean_k F_k) falls as mean_k F_k rises, so
        both have gradients of the same sign; but J's gradient underflows
        to 0 in float32 once mean_k F_k exceeds about 88, and a sign step
        would then not move the example.

    Returns:
      `(loss, fooled)`: `[B]` J (or its surrogate) and `[M, B]` boolean.
    """
    if target_membership is None:
        loss = fine_ensemble_loss(fine_logits, targets)
        predicted = tf.argmax(fine_logits, axis=-1, output_type=targets.dtype)
        return loss, tf.equal(predicted, targets[tf.newaxis])
    # [M, B, K] -> [M, B]
    target_logits = _target_coarse_logits_from_mask(
        fine_logits, target_membership
    )
    if for_sign:
        # [M, B] -> [B]
        loss = -tf.reduce_mean(target_logits, axis=0)
    else:
        loss = coarse_ensemble_loss(target_logits)
    return loss, target_logits > 0


class Ensemble:
    """Classifiers attacked together, each with its own preprocessing.

    Args:
      members: a non-empty sequence of `Member`s; a bare classifier stands
        for `Member(classifier)` (no preprocessing). All members must
        output the same number `K` of fine classes.

    Attributes:
      members: the members, a tuple.
      traced_attacks: a cache of the attack's `tf.function`s, so that
        attacking the same ensemble again does not retrace.

    Example:
      >>> ensemble = Ensemble([
      ...     Member(inception_v3, preprocess=inception_preprocess),
      ...     Member(resnet_50, preprocess=retinal_then_scale),
      ... ])
      >>> ensemble.loss(images, targets, groups=[[281, 282], [151]])
    """

    def __init__(self, members):
        if isinstance(members, Member) or not hasattr(members, "__iter__"):
            raise TypeError(
                "`members` must be a list of Member objects or classifiers, "
                f"got {type(members).__name__}; wrap one model in a list."
            )
        members = list(members)
        if not members:
            raise ValueError(
                "`members` is empty; an ensemble needs at least one "
                "classifier, e.g. Ensemble([Member(model)])."
            )
        resolved = []
        for index, member in enumerate(members):
            if not isinstance(member, Member):
                if not callable(member):
                    raise TypeError(
                        f"Member {index} is a {type(member).__name__}, not a "
                        "Member or a callable classifier."
                    )
                member = Member(member)
            resolved.append(member)
        self.members = tuple(resolved)
        # `tfcv.adversarial.attack`'s traced functions, by setting.
        self.traced_attacks = {}

    def __len__(self):
        return len(self.members)

    def fine_logits(self, images):
        """The members' fine logits.

        Args:
          images: `[B, H, W, C]` float images on the [0, 255] scale.

        Returns:
          `[M, B, K]` logits.

        Raises:
          ValueError: if a member's output is not `[B, K]` or the members
            disagree on `K`.
        """
        outputs = []
        for index, member in enumerate(self.members):
            logits = tf.convert_to_tensor(member.logits(images))
            if logits.shape.rank != 2:
                raise ValueError(
                    f"Member {index} returned shape {tuple(logits.shape)}; "
                    "members must return fine logits [B, K], so flatten or "
                    "pool the model's output."
                )
            if outputs and logits.shape[-1] != outputs[0].shape[-1]:
                raise ValueError(
                    f"Member {index} outputs {logits.shape[-1]} classes but "
                    f"member 0 outputs {outputs[0].shape[-1]}; all members "
                    "must share one label space."
                )
            outputs.append(logits)
        # M x [B, K] -> [M, B, K]
        return tf.stack(outputs, axis=0)

    def coarse_logits(self, images, groups):
        """Every member's coarse logits (Eq. 6): `[M, B, G]`."""
        fine_logits = self.fine_logits(images)
        membership = group_membership(groups, fine_logits.shape[-1])
        # [M, B, K] with [G, K] -> [M, B, G]
        return _coarse_logits_from_mask(fine_logits, tf.constant(membership))

    def _targets_and_membership(self, fine_logits, targets, groups):
        """Targets as an int32 tensor and the `[B, K]` target mask."""
        targets = np.asarray(targets)
        num_classes = fine_logits.shape[-1]
        if groups is None:
            check_targets(targets, num_classes, "fine class")
            return tf.constant(targets, tf.int32), None
        membership = group_membership(groups, num_classes)
        check_targets(targets, len(membership), "coarse class")
        return tf.constant(targets, tf.int32), tf.constant(membership[targets])

    def loss(self, images, targets, groups=None):
        """J(X | y_target) of Eq. 8 per example.

        Args:
          images: `[B, H, W, C]` float images on the [0, 255] scale.
          targets: `[B]` coarse class ids in `[0, G)`, or fine class ids in
            `[0, K)` when `groups` is `None`.
          groups: `None` (fine mode) or `G` lists of fine label ids.

        Returns:
          `[B]` losses.

        Raises:
          ValueError: for images of the wrong rank or outside [0, 255],
            bad targets or bad groups.
        """
        fine_logits = self.fine_logits(_as_images(images))
        targets, membership = self._targets_and_membership(
            fine_logits, targets, groups
        )
        return objective_and_fooled(fine_logits, targets, membership)[0]

    def fooled(self, images, targets, groups=None):
        """Which members classify each image as its target: `[M, B]` bool.

        Arguments as for `loss`.
        """
        fine_logits = self.fine_logits(_as_images(images))
        targets, membership = self._targets_and_membership(
            fine_logits, targets, groups
        )
        return objective_and_fooled(fine_logits, targets, membership)[1]


def _member_label(index, member) -> str:
    """`Member 1 ('mlp')`, or `Member 1` for an unnamed model."""
    name = member.name or getattr(member.model, "name", "")
    if isinstance(name, str) and name:
        return f"Member {index} ({name!r})"
    return f"Member {index}"


def finite_logits(ensemble, images):
    """`ensemble.fine_logits(images)`, eagerly checked to be finite.

    Args:
      ensemble: an `Ensemble`.
      images: `[B, H, W, C]` float32 images on the [0, 255] scale.

    Returns:
      `[M, B, K]` logits.

    Raises:
      ValueError: naming the first member with a NaN or infinite logit.
    """
    fine_logits = ensemble.fine_logits(images)
    if not fine_logits.dtype.is_floating:
        return fine_logits
    # [M, B, K] -> [M]
    finite = tf.reduce_all(tf.math.is_finite(fine_logits), axis=[1, 2])
    for index, ok in enumerate(finite.numpy()):
        if not ok:
            raise ValueError(
                f"{_member_label(index, ensemble.members[index])} returns "
                "NaN or infinite logits on the clean images, so the attack "
                "could not fool it; check the model's weights and its "
                "preprocessing."
            )
    return fine_logits
