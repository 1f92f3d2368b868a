"""Scores of the digits experiment: accuracy and attack success per model.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195: §4.1 with
Tables Supp.2-6 (accuracy and attack success on the ensemble members and
on held-out models) and Appendix C, Eq. 6 (coarse logits).

Each classifier sees the kept examples of every condition of
`tfcv.adversarial.experiment.attack_conditions`. Coarse accuracy is the
prediction restricted to the two classes of the image's group; attack
success is a coarse probability of the target above 1/2 (F > 0 in Eq. 6).
Numbers are percentages per group and pooled over the groups, `None`
where a group kept no example.

Shapes: `B` examples, `S` image side, `G` groups (2G coarse classes).

Deviations from the paper:
  - Tables give image accuracy on the kept adv examples, so that image,
    adv and flip are measured on the same images; the analogue of Table
    Supp.2 is the top-1 accuracy on the whole held-out split.
  - For flip, besides the share classified as the target, we report the
    share whose two-way prediction differs from the image condition's
    (§4.1: flip "changed the test model predictions" on < 1.5 %).
"""

import numpy as np
import tensorflow as tf

from tfcv.adversarial.classifiers import _split_name
from tfcv.adversarial.coarse import coarse_logits

__all__ = ["experiment_metrics"]


def _coarse_logits(member, images, classes, batch_size=256):
    """`[B, 2G]` coarse logits (Eq. 6) of one classifier, NumPy."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size])
        outputs.append(coarse_logits(member.logits(batch), classes).numpy())
    if not outputs:
        return np.zeros([0, len(classes)], np.float32)
    return np.concatenate(outputs)


def _percent(values):
    """Mean of booleans in percent, or None for no values."""
    values = np.asarray(values)
    return None if values.size == 0 else float(100.0 * values.mean())


def _scores(member, images, targets, groups_of, classes):
    """Two-way predictions and target hits of one classifier.

    Args:
      member: the classifier's `Member`.
      images: `[B, S, S, 1]` on [0, 255].
      targets: `[B]` target coarse classes; `groups_of`: `[B]` groups.
      classes: the 2G coarse classes.

    Returns:
      `(side, hit)`: `[B]` 0/1, the class of the group ahead when the
      prediction is restricted to the group's two classes; `[B]` bool, the
      coarse probability of the target exceeds 1/2 (Eq. 6: F > 0).
    """
    logits = _coarse_logits(member, images, classes)
    rows = np.arange(len(targets))
    first = 2 * groups_of
    side = (logits[rows, first + 1] > logits[rows, first]).astype(int)
    return side, logits[rows, targets] > 0


def _model_metrics(member, result, classes, group_count):
    """One classifier's numbers on the kept examples.

    Returns:
      `{"per_group": [numbers] * G, "pooled": numbers}`, where numbers
      holds percentages (None without examples): `image_`, `adv_`,
      `flip_accuracy_pct` (two-way accuracy), `adv_`, `flip_`,
      `false_success_pct` (target hit), `flip_changed_pct` (two-way
      prediction differs from image's), `false_choice_pct` (two-way
      choice of the target), and the counts `examples`, `false_examples`.
    """
    adv, false = result["adv"], result["false"]
    targets = result["adv_targets"][adv.kept]
    groups_of = result["adv_groups"][adv.kept]
    false_targets = result["false_targets"][false.kept]
    false_groups = result["false_groups"][false.kept]
    # The true class of an adv example is the other one of its group.
    true_side = 1 - targets % 2

    # Every condition through the classifier, kept examples only.
    image, _ = _scores(
        member, adv.images[adv.kept], targets, groups_of, classes
    )
    adv_side, adv_hit = _scores(
        member, adv.adversarial[adv.kept], targets, groups_of, classes
    )
    flip_side, flip_hit = _scores(
        member, result["flip"][adv.kept], targets, groups_of, classes
    )
    false_side, false_hit = _scores(
        member,
        false.adversarial[false.kept],
        false_targets,
        false_groups,
        classes,
    )

    def numbers(chosen, false_chosen):
        truth = true_side[chosen]
        return {
            "image_accuracy_pct": _percent(image[chosen] == truth),
            "adv_accuracy_pct": _percent(adv_side[chosen] == truth),
            "flip_accuracy_pct": _percent(flip_side[chosen] == truth),
            "adv_success_pct": _percent(adv_hit[chosen]),
            "flip_success_pct": _percent(flip_hit[chosen]),
            "flip_changed_pct": _percent(flip_side[chosen] != image[chosen]),
            "false_success_pct": _percent(false_hit[false_chosen]),
            "false_choice_pct": _percent(
                false_side[false_chosen] == false_targets[false_chosen] % 2
            ),
            "examples": int(np.sum(chosen)),
            "false_examples": int(np.sum(false_chosen)),
        }

    per_group = [
        numbers(groups_of == group_id, false_groups == group_id)
        for group_id in range(group_count)
    ]
    pooled = numbers(np.ones_like(targets, bool), np.ones_like(false_hit))
    return {"per_group": per_group, "pooled": pooled}


def experiment_metrics(
    classifiers: list,
    result: dict,
    classes: list,
    group_names: list,
    num_members: int,
) -> dict:
    """All numbers of the tables, JSON-ready (percentages, None if empty).

    Args:
      classifiers: the `Classifier`s, members first, then held-out ones.
      result: `attack_conditions`' dictionary of the conditions.
      classes: the 2G coarse classes (lists of digits).
      group_names: the G groups as written on the command line (`3:8`).
      num_members: how many of `classifiers` are ensemble members.

    Returns:
      `{"groups": [counts] * G, "models": {name: numbers}}`: per group
      the adv and false examples attempted and kept; per classifier
      `_model_metrics`' numbers plus its role, retina, parameters,
      top-1 accuracies, whether it was loaded and its training time.
    """
    group_count = len(group_names)
    models = {}
    for index, classifier in enumerate(classifiers):
        numbers = _model_metrics(
            classifier.member, result, classes, group_count
        )
        numbers.update(
            role="member" if index < num_members else "heldout",
            retina=_split_name(classifier.name)[1],
            parameters=classifier.parameters,
            accuracy_pct=100.0 * classifier.accuracy,
            accuracy_rescaled_pct=100.0 * classifier.accuracy_rescaled,
            loaded=classifier.loaded,
            train_seconds=classifier.seconds,
        )
        models[classifier.name] = numbers
    groups = []
    for group_id, name in enumerate(group_names):
        in_group = result["adv_groups"] == group_id
        false_in_group = result["false_groups"] == group_id
        groups.append(
            {
                "group": name,
                "adv_attempted": int(in_group.sum()),
                "adv_kept": int(result["adv"].kept[in_group].sum()),
                "false_attempted": int(false_in_group.sum()),
                "false_kept": int(result["false"].kept[false_in_group].sum()),
            }
        )
    return {"groups": groups, "models": models}
