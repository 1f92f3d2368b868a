"""benchmarks/groupnorm.py --quick runs and prints tables that parse."""

import os
import re
import subprocess
import sys

SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "groupnorm.py",
)
NUMBER = r"(\d+(?:\.\d+)?)"


def test_quick_mode_prints_both_tables():
    result = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--repeats=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout

    # One layer row per map: three medians and two ratios.
    layer_rows = re.findall(
        rf"^  (\d+x\d+x\d+) +2 f32 +{NUMBER} +{NUMBER} +{NUMBER}"
        rf" +{NUMBER} +{NUMBER} (met|NOT met)",
        output,
        flags=re.MULTILINE,
    )
    assert [row[0] for row in layer_rows] == ["56x56x256", "14x14x1024"]
    for _, gn, keras_gn, bn, to_bn, to_keras, _ in layer_rows:
        assert float(gn) > 0 and float(keras_gn) > 0 and float(bn) > 0
        assert abs(float(to_bn) - float(gn) / float(bn)) < 0.02
        assert abs(float(to_keras) - float(gn) / float(keras_gn)) < 0.02

    # One memory row per normalization: peak, built, steady, +step (MB).
    memory_rows = re.findall(
        rf"^  (gn|bn) +{NUMBER} +{NUMBER} +{NUMBER} +(-?\d+) ",
        output,
        flags=re.MULTILINE,
    )
    assert [row[0] for row in memory_rows] == ["gn", "bn"]
    for _, peak, built, steady, _ in memory_rows:
        assert float(peak) >= float(steady) > 0
        assert float(peak) >= float(built) > 100  # TensorFlow alone is more.
    assert re.search(r"GN / BN: peak \d+\.\d\dx", output)
    assert "Total time" in output
