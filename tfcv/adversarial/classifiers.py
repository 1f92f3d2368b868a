"""The classifiers of the digits experiment: models, training, files.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195: §3.1.2 (an
ensemble of CNNs of different architectures, some with the retinal layer
in front) and Appendix E (every training batch plus the same batch
rescaled to [40, 215]).

A classifier is named after its backbone in `ARCHITECTURES`, followed by
`_retina` when a `RetinalBlur` layer sits in front (`resnet_retina`).
`load_or_train` trains each one on the digits' training split, or loads
it from a model folder whose saved settings match: `<name>.weights.h5`
holds the backbone's weights, `<name>.json` the settings it was trained
with and its held-out accuracy. `tfcv.adversarial.experiment` runs the
conditions on them.

Shapes: `B` images, `S` image side (`S' <= S` after the retina's crop),
`K` = 10 digit classes.

Deviations from the paper:
  - Tiny CNNs, an MLP and a small residual net, trained here in seconds,
    stand in for the ImageNet Inception and ResNet models: the experiment
    must run on a CPU in minutes.
  - The held-out classifiers are trained with the same [40, 215]
    augmentation (the paper's test models were public or adversarially
    trained checkpoints), so that the rescaled image condition does not
    lower their accuracy by the intensity shift alone.
"""

import dataclasses
import json
import os
import zlib
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.adversarial.conditions import image_condition
from tfcv.adversarial.ensemble import Member
from tfcv.layers.retinal_blur import RetinalBlur
from tfcv.training import supervised

if TYPE_CHECKING:
    from tfcv.adversarial.experiment import ExperimentConfig

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_HELDOUT",
    "DEFAULT_MEMBERS",
    "NUM_CLASSES",
    "Classifier",
    "build_classifier",
    "check_model_names",
    "check_model_paths",
    "load_or_train",
    "saved_classifiers",
]

NUM_CLASSES = 10
RETINA_SUFFIX = "_retina"
DEFAULT_MEMBERS = ("cnn", "wide_cnn_retina", "mlp", "resnet_retina")
DEFAULT_HELDOUT = ("lenet", "separable_cnn")
# Saved models whose settings carry another version are retrained.
_FORMAT_VERSION = 1

_layers = tf_keras.layers


def _cnn(inputs):
    """Three 3x3 convolutions, two of stride 2, and a linear read-out."""
    hidden = _layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    hidden = _layers.Conv2D(
        32, 3, strides=2, padding="same", activation="relu"
    )(hidden)
    hidden = _layers.Conv2D(
        32, 3, strides=2, padding="same", activation="relu"
    )(hidden)
    return _layers.Dense(NUM_CLASSES)(_layers.Flatten()(hidden))


def _wide_cnn(inputs):
    """Two wider convolutions with max pooling and a hidden dense layer."""
    hidden = _layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    hidden = _layers.MaxPool2D()(hidden)
    hidden = _layers.Conv2D(64, 3, padding="same", activation="relu")(hidden)
    hidden = _layers.MaxPool2D()(hidden)
    hidden = _layers.Dense(64, activation="relu")(_layers.Flatten()(hidden))
    return _layers.Dense(NUM_CLASSES)(hidden)


def _mlp(inputs):
    """Two hidden dense layers on the flattened pixels."""
    hidden = _layers.Dense(128, activation="relu")(_layers.Flatten()(inputs))
    hidden = _layers.Dense(64, activation="relu")(hidden)
    return _layers.Dense(NUM_CLASSES)(hidden)


def _resnet(inputs):
    """A strided stem and two pre-activation residual blocks."""
    hidden = _layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    for filters, stride in ((32, 1), (64, 2)):
        shortcut = hidden
        if stride != 1:
            shortcut = _layers.Conv2D(filters, 1, strides=stride)(hidden)
        branch = _layers.ReLU()(hidden)
        branch = _layers.Conv2D(
            filters, 3, strides=stride, padding="same", activation="relu"
        )(branch)
        branch = _layers.Conv2D(filters, 3, padding="same")(branch)
        hidden = _layers.Add()([shortcut, branch])
    hidden = _layers.ReLU()(hidden)
    return _layers.Dense(NUM_CLASSES)(_layers.Flatten()(hidden))


def _lenet(inputs):
    """LeNet-5's shape: 5x5 tanh convolutions with average pooling."""
    hidden = _layers.Conv2D(6, 5, padding="same", activation="tanh")(inputs)
    hidden = _layers.AveragePooling2D()(hidden)
    hidden = _layers.Conv2D(16, 5, padding="same", activation="tanh")(hidden)
    hidden = _layers.AveragePooling2D()(hidden)
    hidden = _layers.Dense(84, activation="tanh")(_layers.Flatten()(hidden))
    return _layers.Dense(NUM_CLASSES)(hidden)


def _separable_cnn(inputs):
    """Depthwise-separable convolutions with max pooling."""
    hidden = _layers.SeparableConv2D(32, 3, padding="same", activation="relu")(
        inputs
    )
    hidden = _layers.MaxPool2D()(hidden)
    hidden = _layers.SeparableConv2D(64, 3, padding="same", activation="relu")(
        hidden
    )
    hidden = _layers.MaxPool2D()(hidden)
    return _layers.Dense(NUM_CLASSES)(_layers.Flatten()(hidden))


# Backbones: preprocessed `[B, S', S', 1]` images -> logits `[B, K]`.
ARCHITECTURES = {
    "cnn": _cnn,
    "wide_cnn": _wide_cnn,
    "mlp": _mlp,
    "resnet": _resnet,
    "lenet": _lenet,
    "separable_cnn": _separable_cnn,
}


def _split_name(name: str) -> tuple[str, bool]:
    """`(architecture, retina)` of a classifier name like `cnn_retina`."""
    if name.endswith(RETINA_SUFFIX):
        return name[: -len(RETINA_SUFFIX)], True
    return name, False


def check_model_names(members, heldout, labels=("`members`", "`heldout`")):
    """Checks the classifier names of the ensemble and the held-out set.

    A name is an architecture of `ARCHITECTURES`, optionally followed by
    `_retina` (a `RetinalBlur` layer in front), e.g. `resnet_retina`.

    Args:
      members: names of the ensemble members; at least one.
      heldout: names of the held-out classifiers (may be empty).
      labels: how the two arguments are named in messages.

    Raises:
      ValueError: for an empty ensemble, an unknown architecture, a name
        listed twice, or a classifier both attacked and held out.
    """
    if not members:
        raise ValueError(
            f"{labels[0]} is empty; the attack needs an ensemble of at "
            f"least one classifier, e.g. {','.join(DEFAULT_MEMBERS)}."
        )
    choices = ", ".join(ARCHITECTURES)
    for names, label in ((members, labels[0]), (heldout, labels[1])):
        for name in names:
            if _split_name(name)[0] not in ARCHITECTURES:
                raise ValueError(
                    f"{label} names {name!r}, which is not a classifier; use "
                    f"one of {choices}, optionally followed by "
                    f"{RETINA_SUFFIX}."
                )
        if len(set(names)) != len(names):
            raise ValueError(f"{label} lists a classifier twice: {names}.")
    both = sorted(set(members) & set(heldout))
    if both:
        raise ValueError(
            f"{both[0]!r} is in both {labels[0]} and {labels[1]}; a "
            "held-out classifier must not be attacked."
        )


def build_classifier(name: str, config: "ExperimentConfig"):
    """The preprocessing, the backbone and both chained, for `name`.

    Returns:
      `(preprocess, backbone, model)`: `preprocess` maps `[B, S, S, 1]`
      images on [0, 255] through the retinal layer (for `*_retina` names)
      to [-1, 1]; `backbone` maps its output to logits `[B, K]`; `model`
      is `backbone(preprocess(x))`, the classifier that is trained.
    """
    architecture, retina = _split_name(name)
    size = config.image_size
    steps = [tf_keras.Input((size, size, 1))]
    if retina:
        # Eqs. 1-5 with the paper's geometry and S pixels (Appendix B).
        steps.append(
            RetinalBlur(alpha=config.retina_alpha, beta=config.retina_beta)
        )
    steps.append(_layers.Rescaling(1.0 / 127.5, offset=-1.0))
    preprocess = tf_keras.Sequential(steps, name=f"{name}_preprocess")

    # [B, S', S', 1] -> [B, K]
    inputs = tf_keras.Input(preprocess.output_shape[1:])
    outputs = ARCHITECTURES[architecture](inputs)
    backbone = tf_keras.Model(inputs, outputs, name=name)
    images = tf_keras.Input((size, size, 1))
    model = tf_keras.Model(images, backbone(preprocess(images)))
    return preprocess, backbone, model


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained classifier and how it came about.

    Attributes:
      name: its name, e.g. `resnet_retina`.
      member: the `Member(backbone, preprocess)` the attack and the
        measurements call.
      model: the whole classifier, `[B, S, S, 1]` on [0, 255] -> `[B, K]`.
      loaded: True if its weights came from the model folder.
      seconds: training time (0 when loaded).
      parameters: trainable parameters.
      accuracy: top-1 accuracy on the held-out split, [0, 255] images.
      accuracy_rescaled: the same on images rescaled to [40, 215].
    """

    name: str
    member: Member
    model: tf_keras.Model
    loaded: bool
    seconds: float
    parameters: int
    accuracy: float
    accuracy_rescaled: float


def _model_seed(name: str, seed: int) -> int:
    """A seed per classifier that does not depend on the list order."""
    return (seed * 1000003 + zlib.crc32(name.encode())) % (2**31 - 1)


def _model_settings(name: str, config: "ExperimentConfig") -> dict:
    """What a trained classifier depends on (saved beside it)."""
    architecture, retina = _split_name(name)
    settings = {
        "format_version": _FORMAT_VERSION,
        "name": name,
        "architecture": architecture,
        "retina": retina,
        "image_size": config.image_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": _model_seed(name, config.seed),
        "rescale_augmentation": list(config.adv.intensity_range or []),
    }
    if retina:
        settings.update(
            retina_alpha=config.retina_alpha, retina_beta=config.retina_beta
        )
    return settings


def _with_rescaled_copies(intensity_range):
    """A dataset map adding each batch's rescaled copy (Appendix E)."""
    low, high = intensity_range

    def add(images, labels):
        rescaled = low + images * ((high - low) / 255.0)

        # [B, S, S, 1] x 2 -> [B, 2, S, S, 1] -> [2B, S, S, 1]: each image
        # beside its copy, so every replica's share holds both versions.
        both = tf.stack([images, rescaled], axis=1)
        both = tf.reshape(both, [-1, *images.shape[1:]])
        return both, tf.repeat(labels, 2)

    return add


def _train(name, config, data, strategy, progress):
    """Trains classifier `name`; returns `(model, parts, seconds)`."""
    examples = len(data["train_images"])
    supervised.check_batch_size(
        config.batch_size, strategy.num_replicas_in_sync, examples, "images"
    )
    total = config.epochs * (examples // config.batch_size)
    seed = _model_seed(name, config.seed)
    parts = {}

    def build():
        parts["preprocess"], parts["backbone"], model = build_classifier(
            name, config
        )
        return model

    model, optimizer = supervised.model_and_optimizer(
        strategy, build, config.learning_rate, total, seed
    )

    # Appendix E: each batch plus the same images rescaled to [40, 215].
    dataset = (
        tf.data.Dataset.from_tensor_slices(
            (data["train_images"], data["train_labels"])
        )
        .shuffle(examples, seed=seed)
        .batch(config.batch_size, drop_remainder=True)
        .repeat(config.epochs)
        .map(_with_rescaled_copies(config.adv.intensity_range or (0, 255)))
    )
    dataset = strategy.experimental_distribute_dataset(dataset)

    def loss_fn(labels, logits):
        return tf_keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        )

    train_step = supervised.make_train_step(
        model, optimizer, strategy, 2 * config.batch_size, loss_fn
    )
    _, seconds = supervised.run_steps(
        train_step, dataset, total, progress=progress
    )
    return model, parts, seconds


def _model_paths(model_dir, name):
    return (
        os.path.join(model_dir, f"{name}.json"),
        os.path.join(model_dir, f"{name}.weights.h5"),
    )


def _saved_matches(name, config, model_dir) -> bool:
    """Whether `model_dir` holds `name`'s files with matching settings.

    A missing or unreadable `<name>.json` (say, a corrupt one) counts as
    no match: the classifier is trained again and both files replaced.
    """
    settings_path, weights_path = _model_paths(model_dir, name)
    if not (os.path.isfile(settings_path) and os.path.isfile(weights_path)):
        return False
    try:
        with open(settings_path) as stream:
            saved = json.load(stream).get("settings")
    except (OSError, ValueError, AttributeError):
        return False
    return saved == config.model_settings(name)


def saved_classifiers(names, config, model_dir) -> list[str]:
    """The names among `names` that `load_or_train` will load."""
    if not model_dir:
        return []
    return [name for name in names if _saved_matches(name, config, model_dir)]


def _short_reason(error) -> str:
    """`error`'s first line (at most 100 characters), for one-line errors."""
    text = str(error).strip()
    if "shape mismatch" in text.lower():
        return "shape mismatch: weights of another architecture"
    reason = (text.splitlines() or [type(error).__name__])[0].strip()
    return reason if len(reason) <= 100 else reason[:97] + "..."


def _load(name, config, model_dir, strategy):
    """The saved classifier `name` if its settings match, else None.

    Raises:
      ValueError: if the settings match but the weights cannot be loaded
        (a corrupt or truncated file, or another architecture's).
    """
    if not _saved_matches(name, config, model_dir):
        return None
    settings_path, weights_path = _model_paths(model_dir, name)
    with strategy.scope():
        preprocess, backbone, model = build_classifier(name, config)
    try:
        backbone.load_weights(weights_path)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{weights_path} cannot be loaded ({_short_reason(error)}); "
            f"delete it and {settings_path} to retrain."
        ) from None
    return model, {"preprocess": preprocess, "backbone": backbone}


def check_model_paths(names, model_dir):
    """Raises a ValueError if a file to write in `model_dir` is a folder.

    `load_or_train` runs it before any training, so that a finished
    training run does not fail to save.
    """
    for name in names:
        settings_path, weights_path = _model_paths(model_dir, name)
        for path in (
            weights_path,
            settings_path,
            _temporary_path(model_dir, os.path.basename(weights_path)),
            _temporary_path(model_dir, os.path.basename(settings_path)),
        ):
            if os.path.lexists(path) and not os.path.isfile(path):
                raise ValueError(
                    f"{path} exists but is not a file, so {name} could not "
                    "be saved there; remove it or pick another model folder."
                )


def _temporary_path(model_dir, file_name):
    return os.path.join(model_dir, f".tmp-{file_name}")


def _replace(temporary, path, write):
    """Runs `write(temporary)`, then moves it to `path`; no leftovers."""
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.isfile(temporary):
            os.remove(temporary)
        if not isinstance(error, OSError):
            raise
        raise OSError(
            f"{path} could not be written ({_short_reason(error)}); check "
            "the model folder's permissions and free space."
        ) from None


def _save(name, config, model_dir, backbone, info):
    """Writes the backbone's weights, then its settings (the commit mark)."""
    settings_path, weights_path = _model_paths(model_dir, name)
    _replace(
        _temporary_path(model_dir, os.path.basename(weights_path)),
        weights_path,
        backbone.save_weights,
    )
    record = {"settings": config.model_settings(name), **info}

    def write_settings(temporary):
        with open(temporary, "w") as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write("\n")

    _replace(
        _temporary_path(model_dir, os.path.basename(settings_path)),
        settings_path,
        write_settings,
    )


def _top1(model, images, labels, batch_size=256) -> float:
    """Top-1 accuracy of `model` on NumPy images (eager, no retracing)."""
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size])
        # [B, K] -> [B]
        predicted = np.argmax(model(batch, training=False).numpy(), axis=-1)
        correct += int(np.sum(predicted == labels[start : start + batch_size]))
    return correct / max(len(images), 1)


def load_or_train(
    names,
    config: "ExperimentConfig",
    data: dict,
    strategy=None,
    model_dir: str | None = None,
    progress: bool = True,
    on_classifier=None,
) -> list[Classifier]:
    """Loads each classifier from `model_dir` or trains (and saves) it.

    A saved classifier is used only if the settings saved beside it equal
    `config.model_settings(name)`; otherwise it is trained again and its
    files are replaced.

    Args:
      names: classifier names.
      config: the `ExperimentConfig`.
      data: `tfcv.adversarial.experiment.load_data`'s dictionary.
      strategy: a `tf.distribute` strategy (default: the current one).
      model_dir: a folder for `<name>.weights.h5` and `<name>.json`, or
        `None` to train without saving.
      progress: show a progress bar while training.
      on_classifier: `None` or a callable run with each `Classifier`.

    Returns:
      The `Classifier`s, in the order of `names`.

    Raises:
      ValueError: before any training, if a file to write in `model_dir`
        exists but is not a file (a folder); or if matching weights cannot
        be loaded (corrupt, truncated or another architecture's).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if model_dir:
        os.makedirs(model_dir, exist_ok=True)
        check_model_paths(names, model_dir)
    rescaled = image_condition(data["test_images"], config.adv)
    classifiers = []
    for name in names:
        found = _load(name, config, model_dir, strategy) if model_dir else None
        seconds = 0.0
        if found is None:
            model, parts, seconds = _train(
                name, config, data, strategy, progress
            )
        else:
            model, parts = found
        classifier = Classifier(
            name=name,
            member=Member(parts["backbone"], parts["preprocess"], name=name),
            model=model,
            loaded=found is not None,
            seconds=seconds,
            parameters=supervised.count_trainable(model),
            accuracy=_top1(model, data["test_images"], data["test_labels"]),
            accuracy_rescaled=_top1(model, rescaled, data["test_labels"]),
        )
        if found is None and model_dir:
            info = {
                "accuracy": classifier.accuracy,
                "accuracy_rescaled": classifier.accuracy_rescaled,
                "train_seconds": seconds,
            }
            _save(name, config, model_dir, parts["backbone"], info)
        if on_classifier is not None:
            on_classifier(classifier)
        classifiers.append(classifier)
    return classifiers
