"""Export of one preset per family, reloaded in a fresh process.

For `biggan_128`, `biggan_deep_128` and `sagan_128` (at ch 8, 10 classes):
the module written by `export_generator` is loaded by a new Python process
that never built our models (`tf.saved_model.load` and `hub.load` only);
its images for fixed (z, y, truncation) must equal the in-memory EMA
generator's, through both the callable and the `serving_default`
signature (to float32 rounding, 1e-4), and an image must not depend on
the rest of its batch.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export import export_generator
from tfcv.models import MODELS
from tfcv.training.standing_statistics import collect_standing_statistics
from tfcv.training.truncation import module_truncation
from tfcv.training.truncation import truncated_latents

FAMILIES = ["biggan_128", "biggan_deep_128", "sagan_128"]

# Runs in a fresh interpreter: loads the module and writes its outputs.
_RELOAD = """
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

path, inputs_file, outputs_file = sys.argv[1:]
assert "tfcv" not in sys.modules
inputs = np.load(inputs_file)
z, y, t = inputs["z"], inputs["y"], inputs["truncation"]
serve = tf.saved_model.load(path).signatures["serving_default"]
module = hub.load(path)
np.savez(
    outputs_file,
    served=serve(z=z, y=y, truncation=t)["default"].numpy(),
    called=module({"z": z, "y": y, "truncation": t}).numpy(),
    single=serve(z=z[:1], y=y[:1], truncation=t)["default"].numpy(),
)
print(json.dumps({"tfcv_loaded": "tfcv" in sys.modules}))
"""


@pytest.mark.parametrize("preset", FAMILIES)
def test_export_reloads_in_a_fresh_process_with_identical_images(
    preset, tmp_path
):
    generator, _, config = MODELS[preset](ch=8, num_classes=10)
    z = truncated_latents(
        [4, config.dim_z], 1.0, seed=[3, FAMILIES.index(preset)]
    )
    y = tf.one_hot([0, 3, 7, 9], 10)
    generator((z, y))
    collect_standing_statistics(generator, num_batches=2, batch_size=8)
    truncation = np.float32(module_truncation(1.0))
    expected = generator((z, y), training=False, truncation=truncation)

    path = export_generator(generator, str(tmp_path / "export"))
    inputs_file = tmp_path / "inputs.npz"
    outputs_file = tmp_path / "outputs.npz"
    np.savez(inputs_file, z=z.numpy(), y=y.numpy(), truncation=truncation)
    script = tmp_path / "reload.py"
    script.write_text(_RELOAD)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(script), path, str(inputs_file), outputs_file],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"tfcv_loaded": False}

    outputs = np.load(outputs_file)
    resolution = config.resolution
    assert outputs["served"].shape == (4, resolution, resolution, 3)
    # Equal to float32 rounding: the SavedModel runs grappler-optimized
    # graphs (seen: 1.5e-5 for biggan_deep_128).
    np.testing.assert_allclose(outputs["served"], expected, atol=1e-4)
    np.testing.assert_allclose(outputs["called"], expected, atol=1e-4)
    np.testing.assert_allclose(outputs["single"], expected[:1], atol=1e-4)
    assert np.abs(outputs["served"]).max() <= 1.0
