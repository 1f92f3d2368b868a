"""Coarse classes from fine logits: coarse log-probabilities and logits.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195, Appendix C,
Eq. 6. A coarse class y ("dog") is a set `S_y` of fine labels (the 118
ImageNet dog breeds); its probability is the sum of the fine softmax
probabilities of its labels, and its coarse logit is the log-odds of `S_y`
against all other fine labels `S_other` (labels of other coarse classes
and labels of no coarse class alike):

  P(y | X) = Σ_{i ∈ S_y} softmax(l)_i = σ(F(y | X)),
  F(y | X) = log Σ_{i ∈ S_y} exp(l_i) - log Σ_{i ∈ S_other} exp(l_i).

Both sums are taken with `reduce_logsumexp` over masked logits, so fine
logits of any magnitude (1e4 and beyond) give finite, exact results, and
the gradients stay finite too.

Groups are given as a list of lists of fine label ids, one list per coarse
class; coarse class `g` is the `g`-th list. The groups must be disjoint and
non-empty, and no group may hold every fine label (its `S_other` would be
empty); fine labels outside every group are allowed.

Shapes: `B` batch (any leading axes `...` work the same), `K` fine
classes, `G` coarse classes.

Deviations from the paper: None.
"""

import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "coarse_log_probabilities",
    "coarse_logits",
    "group_membership",
    "target_coarse_logits",
    "validate_groups",
]


def _label_id(value, group_index: int) -> int:
    """One fine label id of group `group_index` as an `int`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise ValueError(
            f"Group {group_index} holds {value!r}, which is not an integer "
            "fine label id; list label ids as ints, e.g. [[281, 282], [151]]."
        )
    return int(value)


def validate_groups(groups, num_classes: int) -> tuple[tuple[int, ...], ...]:
    """Checks coarse-class groups against a model with `num_classes` outputs.

    Args:
      groups: a sequence of `G >= 1` sequences of fine label ids; group `g`
        is the set `S_g` of coarse class `g`.
      num_classes: `K`, the number of fine classes the model outputs.

    Returns:
      The groups as a tuple of tuples of Python ints.

    Raises:
      ValueError: if `groups` is empty, a group is empty, holds a
        non-integer, a negative id or an id `>= K`, lists an id twice,
        shares an id with another group, or covers all `K` classes.

    Example:
      >>> validate_groups([[0, 1], [3]], num_classes=5)
      ((0, 1), (3,))
    """
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__"):
        raise ValueError(
            f"`groups` must be a list of lists of fine label ids, got "
            f"{groups!r}; e.g. [[281, 282], [151]] for cats and dogs."
        )
    groups = list(groups)
    if not groups:
        raise ValueError(
            "`groups` is empty; give at least one coarse class as a list of "
            "fine label ids, e.g. [[281, 282], [151]]."
        )
    owner = {}
    result = []
    for group_index, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not hasattr(group, "__iter__"):
            raise ValueError(
                f"Group {group_index} is {group!r}, not a list of fine label "
                "ids; wrap a single id in a list, e.g. [151]."
            )
        labels = tuple(_label_id(value, group_index) for value in group)
        if not labels:
            raise ValueError(
                f"Group {group_index} is empty; give every coarse class at "
                "least one fine label id."
            )
        for label in labels:
            if not 0 <= label < num_classes:
                raise ValueError(
                    f"Group {group_index} holds label {label}, but the model "
                    f"outputs {num_classes} classes (ids 0..{num_classes - 1})"
                    "; use ids of the model's classes."
                )
            if label in owner:
                where = (
                    f"twice in group {group_index}"
                    if owner[label] == group_index
                    else f"in both group {owner[label]} and group {group_index}"
                )
                raise ValueError(
                    f"Label {label} is listed {where}; coarse classes must "
                    "not overlap, so list each fine label in one group only."
                )
            owner[label] = group_index
        if len(labels) == num_classes:
            raise ValueError(
                f"Group {group_index} covers all {num_classes} classes; the "
                "coarse logit needs at least one label outside the group "
                "(S_other), so leave some labels out of it."
            )
        result.append(labels)
    return tuple(result)


def group_membership(groups, num_classes: int) -> np.ndarray:
    """The `[G, K]` boolean mask: entry `(g, i)` is true if `i ∈ S_g`.

    Args:
      groups: coarse classes as lists of fine label ids (validated with
        `validate_groups`).
      num_classes: `K`.

    Returns:
      A NumPy `bool` array `[G, K]`.

    Example:
      >>> group_membership([[0, 1], [3]], 4).astype(int)
      array([[1, 1, 0, 0],
             [0, 0, 0, 1]])
    """
    groups = validate_groups(groups, num_classes)
    membership = np.zeros([len(groups), num_classes], dtype=bool)
    for group_index, labels in enumerate(groups):
        membership[group_index, list(labels)] = True
    return membership


def _as_logits(logits):
    """`logits` as a float tensor: integer logits become float32."""
    logits = tf.convert_to_tensor(logits)
    if logits.dtype.is_integer:
        return tf.cast(logits, tf.float32)
    if not logits.dtype.is_floating:
        raise TypeError(
            f"`logits` must be real numbers, got dtype {logits.dtype.name}; "
            "pass float logits, e.g. tf.cast(logits, tf.float32)."
        )
    return logits


def _num_classes(logits) -> int:
    """`K`, the static size of the last axis of `logits`."""
    if logits.shape.rank is None or logits.shape.rank < 1:
        raise ValueError(
            "`logits` must have a class axis last, [..., K]; got shape "
            f"{tuple(logits.shape) if logits.shape.rank else ()}."
        )
    if logits.shape[-1] is None:
        raise ValueError(
            "The class axis (last) of `logits` must be known statically; got "
            f"shape {tuple(logits.shape.as_list())}."
        )
    return int(logits.shape[-1])


def _masked_logsumexp(logits, mask):
    """log Σ_{i: mask_i} exp(l_i) along the last axis (`mask` broadcasts)."""
    minus_infinity = tf.constant(-np.inf, logits.dtype)
    masked = tf.where(mask, logits, minus_infinity)
    return tf.reduce_logsumexp(masked, axis=-1)


def _coarse_logits_from_mask(logits, membership):
    """Eq. 6 for a `[G, K]` boolean mask: `[..., K] -> [..., G]`."""
    # [..., K] -> [..., 1, K], broadcast against [G, K] -> [..., G, K]
    expanded = logits[..., tf.newaxis, :]
    inside = _masked_logsumexp(expanded, membership)
    outside = _masked_logsumexp(expanded, tf.logical_not(membership))
    return inside - outside


def _target_coarse_logits_from_mask(logits, target_membership):
    """Coarse logit of each example's own target: `[..., B, K] -> [..., B]`.

    Args:
      logits: `[..., B, K]` fine logits.
      target_membership: `[B, K]` boolean, row `b` the target set of
        example `b` (it broadcasts over the leading axes).
    """
    inside = _masked_logsumexp(logits, target_membership)
    outside = _masked_logsumexp(logits, tf.logical_not(target_membership))
    return inside - outside


def coarse_logits(logits, groups):
    """Coarse logits F(y | X) of every coarse class (Eq. 6).

    Args:
      logits: `[..., K]` fine logits (float16/32/64; integer logits are
        cast to float32), e.g. `[B, K]`.
      groups: `G` lists of fine label ids (see `validate_groups`).

    Returns:
      `[..., G]` coarse logits, `log Σ_{S_y} exp(l) - log Σ_{S_other} exp(l)`;
      `tf.sigmoid` of them is the coarse probability P(y | X).

    Raises:
      ValueError: if the groups are invalid for `K` or `K` is unknown.

    Example:
      >>> coarse_logits(tf.zeros([1, 4]), [[0, 1]])
      <tf.Tensor: ... numpy=array([[0.]], dtype=float32)>
    """
    logits = _as_logits(logits)
    membership = group_membership(groups, _num_classes(logits))
    return _coarse_logits_from_mask(logits, tf.constant(membership))


def coarse_log_probabilities(logits, groups):
    """Coarse log-probabilities log P(y | X) of every coarse class (Eq. 6).

    Args:
      logits: `[..., K]` fine logits.
      groups: `G` lists of fine label ids (see `validate_groups`).

    Returns:
      `[..., G]`: `log Σ_{i ∈ S_y} softmax(l)_i`, computed as
      `logsumexp(l over S_y) - logsumexp(l)`.

    Raises:
      ValueError: if the groups are invalid for `K` or `K` is unknown.

    Example:
      >>> tf.exp(coarse_log_probabilities(tf.zeros([1, 4]), [[0, 1], [2]]))
      <tf.Tensor: ... numpy=array([[0.5 , 0.25]], dtype=float32)>
    """
    logits = _as_logits(logits)
    membership = group_membership(groups, _num_classes(logits))
    # [..., K] -> [..., 1, K], broadcast against [G, K] -> [..., G, K]
    inside = _masked_logsumexp(
        logits[..., tf.newaxis, :], tf.constant(membership)
    )
    return inside - tf.reduce_logsumexp(logits, axis=-1, keepdims=True)


def target_coarse_logits(logits, groups, targets):
    """The coarse logit of each example's target class, F(y_target | X).

    Args:
      logits: `[..., B, K]` fine logits, e.g. `[M, B, K]` for `M` models.
      groups: `G` lists of fine label ids (see `validate_groups`).
      targets: `[B]` integer coarse class ids in `[0, G)`.

    Returns:
      `[..., B]` coarse logits; cheaper than gathering from
      `coarse_logits` (one masked pass per example instead of `G`).

    Raises:
      ValueError: if the groups are invalid or a target is not in
        `[0, G)`.

    Example:
      >>> target_coarse_logits(tf.zeros([2, 3]), [[0], [1, 2]], [0, 1])
      <tf.Tensor: ... numpy=array([-0.6931472,  0.6931472], dtype=float32)>
    """
    logits = _as_logits(logits)
    membership = group_membership(groups, _num_classes(logits))
    targets = np.asarray(targets)
    check_targets(targets, len(membership), "coarse class")
    # [G, K] gathered by [B] -> [B, K]
    target_membership = tf.constant(membership[targets])
    return _target_coarse_logits_from_mask(logits, target_membership)


def check_targets(
    targets: np.ndarray, num_targets: int, kind: str, name: str = "targets"
):
    """Raises a `ValueError` unless `targets` are ints in `[0, num_targets)`.

    Args:
      targets: `[B]` NumPy array of class ids.
      num_targets: `G` (coarse classes) or `K` (fine classes).
      kind: what an id names, for the message ("coarse class").
      name: the argument's name, for the message.
    """
    if targets.ndim != 1:
        raise ValueError(
            f"`{name}` must be a vector [B] of {kind} ids, got shape "
            f"{targets.shape}."
        )
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer {kind} ids, got dtype "
            f"{targets.dtype}; e.g. np.array([1, 0])."
        )
    outside = targets[(targets < 0) | (targets >= num_targets)]
    if outside.size:
        raise ValueError(
            f"`{name}` holds {kind} {int(outside[0])}, which is not one of "
            f"the {num_targets} {kind}es 0..{num_targets - 1}; "
            + (
                "give the index of a group in `groups`."
                if kind == "coarse class"
                else "give a class id the model outputs."
            )
        )
