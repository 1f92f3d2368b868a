"""Export a generator as a TF2 Reusable SavedModel with a serving signature.

The module follows the interface of the published BigGAN TF-Hub modules so
that code written for them works with ours:

  module = hub.load(path)
  images = module({"z": z, "y": y, "truncation": truncation})
  # z [B, dim_z] float32 (truncated normal times truncation),
  # y [B, K] float32 one-hot (or a class mixture), truncation scalar;
  # images [B, R, R, 3] float32 in [-1, 1].

`truncation` may be left out (1.0). `hub.KerasLayer(path)` works inside a
tf_keras model, called on `{"z": ..., "y": ...}` (a dict with "truncation"
works too). For fine-tuning, `hub.KerasLayer(path, trainable=True)` uses
the module's `trainable_variables`, its `regularization_losses` (BigGAN's
orthogonal regularization of the kernels, β = 1e-4, Eq. 3) and its
`training` argument (batch statistics and spectral-norm updates when true).
For TF Serving, the `serving_default` signature takes `z`, `y` and
`truncation` and returns `{"default": images}`; the same function is also
the `default` signature, the name the published BigGAN modules use, so
`module.signatures["default"](z=z, y=y, truncation=t)["default"]` works on
both.

The EMA weights and standing batch-norm statistics are baked in, so the
image for a given (z, y) does not depend on the rest of the batch. Only
stock TensorFlow ops are used. The SavedModel is written into a hidden
temporary folder and renamed to `<export_dir>/<version>/` only once it is
complete and has been reloaded and checked, so an interrupted export never
leaves a version folder that looks valid.
"""

import os
import shutil

import numpy as np
import tensorflow as tf

from tfcv.regularizers import orthogonal_penalty

OUTPUT_KEY = "default"
# BigGAN's orthogonal regularization strength (§3.1, Appendix C).
ORTHOGONAL_BETA = 1e-4


class GeneratorModule(tf.train.Checkpoint):
    """The exported object: callable, with Reusable SavedModel attributes.

    A `tf.train.Checkpoint` rather than a `tf.Module`, because the Reusable
    SavedModel attributes `variables` and `trainable_variables` must be
    saved as plain attributes (a `tf.Module` computes them as properties,
    which are not saved, so a reloaded module would have none to fine-tune).
    """

    def __init__(self, generator):
        super().__init__()
        self._generator = generator
        config = generator.config
        self.dim_z = config.dim_z
        self.num_classes = config.num_classes
        self.resolution = config.resolution
        self.variables = list(generator.variables)
        self.trainable_variables = list(generator.trainable_variables)

        # Reusable SavedModel attributes (TF-Hub).
        self._regularized = list(
            generator.orthogonal_regularization_variables()
        )
        self.regularization_losses = [
            tf.function(self._orthogonal_regularization, input_signature=[])
        ]
        self.__call__ = tf.function(self._generate)

    def _orthogonal_regularization(self):
        if not self._regularized:
            return tf.constant(0.0)
        return tf.add_n(
            [
                orthogonal_penalty(kernel, ORTHOGONAL_BETA)
                for kernel in self._regularized
            ]
        )

    def _generate(self, inputs, training=False):
        z = tf.convert_to_tensor(inputs["z"], tf.float32)
        y = tf.convert_to_tensor(inputs["y"], tf.float32)
        truncation = tf.convert_to_tensor(
            inputs.get("truncation", 1.0), tf.float32
        )

        # Input checks that hold for every caller (Assert is a stock op).
        checks = [
            tf.debugging.assert_rank(
                truncation, 0, message="`truncation` must be a scalar"
            ),
            tf.debugging.assert_equal(
                tf.shape(z)[0],
                tf.shape(y)[0],
                message="`z` and `y` must have the same batch size",
            ),
            tf.debugging.assert_positive(
                truncation, message="`truncation` must be > 0"
            ),
        ]
        with tf.control_dependencies(checks):
            z = tf.identity(z)
        images = self._generator(
            (z, y), training=training, truncation=truncation
        )
        return tf.cast(images, tf.float32)

    def input_specs(self, with_truncation=True):
        specs = {
            "z": tf.TensorSpec([None, self.dim_z], tf.float32, name="z"),
            "y": tf.TensorSpec([None, self.num_classes], tf.float32, name="y"),
        }
        if with_truncation:
            specs["truncation"] = tf.TensorSpec([], tf.float32, "truncation")
        return specs

    def serving_signature(self):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, self.dim_z], tf.float32, name="z"),
                tf.TensorSpec([None, self.num_classes], tf.float32, name="y"),
                tf.TensorSpec([], tf.float32, name="truncation"),
            ]
        )
        def serve(z, y, truncation):
            images = self.__call__({"z": z, "y": y, "truncation": truncation})
            return {OUTPUT_KEY: images}

        return serve


def next_version(export_dir):
    """One more than the largest numbered version folder (1 if none)."""
    if not os.path.isdir(export_dir):
        return 1
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_generator(generator, export_dir, version=None, check=True):
    """Writes `generator` as `<export_dir>/<version>/` and returns the path.

    Args:
      generator: a built generator with standing statistics collected.
      export_dir: parent folder of the numbered versions.
      version: positive integer, default the next free number.
      check: reload the SavedModel before publishing it and compare its
        output with the generator's.

    Raises:
      ValueError: if the version folder exists or `version` is not positive.
      OSError: if `export_dir` cannot be written.
    """
    version = next_version(export_dir) if version is None else version
    if not isinstance(version, int) or version < 1:
        raise ValueError(
            f"`version` must be a positive integer, got {version}."
        )
    final_path = os.path.join(export_dir, str(version))
    if os.path.exists(final_path):
        raise ValueError(
            f"{final_path} already exists; exports are never overwritten. "
            "Pick another --version or remove it."
        )
    os.makedirs(export_dir, exist_ok=True)
    temporary = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)

    module = GeneratorModule(generator)
    for with_truncation in (True, False):
        for training in (False, True):
            module.__call__.get_concrete_function(
                module.input_specs(with_truncation), training=training
            )
    serve = module.serving_signature()
    try:
        tf.saved_model.save(
            module,
            temporary,
            signatures={"serving_default": serve, "default": serve},
        )
        if check:
            _check_export(module, temporary)
        os.rename(temporary, final_path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final_path


def _check_export(module, path):
    """Reloads the SavedModel and compares it with the live generator."""
    restored = tf.saved_model.load(path)
    z = tf.random.stateless_truncated_normal([4, module.dim_z], seed=[7, 7])
    y = tf.one_hot([0, 1, 2, 3], module.num_classes)
    inputs = {"z": z, "y": y, "truncation": tf.constant(1.0)}
    expected = module.__call__(inputs).numpy()
    served = restored.signatures["serving_default"](**inputs)[OUTPUT_KEY]
    for actual in (restored(inputs).numpy(), served.numpy()):
        if not np.allclose(actual, expected, atol=1e-5):
            raise ValueError(
                "The reloaded export differs from the generator (max "
                f"|diff| {np.abs(actual - expected).max():.3g}); not "
                "published."
            )
