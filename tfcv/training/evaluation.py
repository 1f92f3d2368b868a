"""Proof that a class-conditional generator learned: judge its samples.

A classifier trained on the real training digits (the judge, see
`tfcv.metrics.digit_classifier`) labels samples of the generator. We
report the conditional accuracy (fraction of samples classified as the
class they were generated for; Odena et al. 2017 use the same idea) per
class and its mean, and the Fréchet distance between the judge's features
of the samples and of the held-out real digits (Heusel et al. 2017, with
the judge in place of Inception).
"""

import json
import os

import numpy as np
import tensorflow as tf

from tfcv.data import get_dataset
from tfcv.metrics import classifier_features
from tfcv.metrics import classify
from tfcv.metrics import conditional_accuracy
from tfcv.metrics import frechet_distance
from tfcv.metrics import load_or_train_digit_classifier
from tfcv.training.gan_trainer import generate

RESULTS_FILE = "evaluation.json"


def evaluate_generator(
    generator, judge_dir, dataset="digits", per_class=100, seed=1
):
    """Judges `generator` and returns a dict of results.

    Args:
      generator: a built generator in inference mode (standing statistics).
      judge_dir: where the judge is cached (trained on first use).
      dataset: the dataset the generator was trained on.
      per_class: samples generated per class.
      seed: latent seed of the samples.
    """
    judge, judge_accuracy = load_or_train_digit_classifier(judge_dir)
    heldout_images, _, num_classes = get_dataset(dataset, "heldout")
    labels = np.repeat(np.arange(num_classes), per_class)
    images = generate(generator, labels, seed=seed)
    side = heldout_images.shape[1]
    if images.shape[1] != side:
        # The judge sees the digits at their native 32x32.
        images = tf.image.resize(images, [side, side], "area").numpy()
    predicted = classify(judge, images)
    per_class_accuracy, mean_accuracy = conditional_accuracy(
        predicted, labels, num_classes
    )
    distance = frechet_distance(
        classifier_features(judge, images),
        classifier_features(judge, heldout_images),
    )
    return {
        "judge_heldout_accuracy": float(judge_accuracy),
        "conditional_accuracy_mean": float(mean_accuracy),
        "conditional_accuracy_per_class": [
            float(value) for value in per_class_accuracy
        ],
        "frechet_distance": float(distance),
        "samples_per_class": per_class,
    }


def format_results(results):
    """A short human-readable report."""
    per_class = "  ".join(
        f"{index}:{value:.2f}"
        for index, value in enumerate(results["conditional_accuracy_per_class"])
    )
    return "\n".join(
        [
            "judge accuracy on held-out digits: "
            f"{results['judge_heldout_accuracy']:.3f}",
            "conditional accuracy (mean): "
            f"{results['conditional_accuracy_mean']:.3f}",
            f"conditional accuracy per class: {per_class}",
            "Frechet distance (judge features, samples vs held-out): "
            f"{results['frechet_distance']:.3f}",
        ]
    )


def write_results(model_dir, results):
    path = os.path.join(model_dir, RESULTS_FILE)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(results, handle, indent=2)
    os.replace(temporary, path)
    return path
