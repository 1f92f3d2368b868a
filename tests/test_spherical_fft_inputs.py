"""Input checks, dispatch and table caches of the spherical FFT ops."""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfcv_ops
from tfcv_ops import _loader
from tfcv_ops import grids
from tfcv_ops import layout
from tfcv_ops import primitives
from tfcv_ops import tables


@pytest.mark.parametrize("b", [0, -1, 2.0, True, "4", None])
def test_bad_bandwidth_raises(b):
    with pytest.raises(ValueError, match="`b` must be a positive integer"):
        tfcv_ops.so3_grid(b)


def test_bandwidth_above_maximum_names_the_reason():
    with pytest.raises(ValueError, match="at most 64.*358 MB.*b <= 168"):
        tfcv_ops.so3_grid(65)
    with pytest.raises(ValueError, match="at most 256.*512 × 512 grid"):
        tfcv_ops.s2_grid(257)


def test_layout_indices_and_blocks():
    spectrum = tf.range(tfcv_ops.so3_spectrum_size(3))

    block = tfcv_ops.so3_degree_block(spectrum, 2)

    assert tfcv_ops.so3_spectrum_size(64) == 349504
    assert tfcv_ops.so3_index(2, -2, -2) == 10
    assert tfcv_ops.s2_index(2, 2) == 8
    np.testing.assert_array_equal(block[1], [15, 16, 17, 18, 19])
    np.testing.assert_array_equal(
        tfcv_ops.s2_degree_block(tf.range(9), 2), [4, 5, 6, 7, 8]
    )


def test_layout_errors():
    with pytest.raises(ValueError, match="`l` must be a non-negative"):
        tfcv_ops.s2_index(-1, 0)
    with pytest.raises(ValueError, match=r"`n` must be an integer with \|n\|"):
        tfcv_ops.so3_index(1, 0, 2)
    with pytest.raises(ValueError, match="must hold degree l = 3"):
        tfcv_ops.so3_degree_block(tf.zeros([35]), 3)


def test_table_errors():
    with pytest.raises(ValueError, match="`b_spec` must be at most `b_grid`"):
        tables.so3_table(4, 5)
    with pytest.raises(ValueError, match="`dtype` must be float32 or"):
        tables.s2_table(4, 4, tf.float16)
    with pytest.raises(ValueError, match="`b_grid` must be at most 256"):
        tables.s2_table(257, 8)
    with pytest.raises(ValueError, match="`b_spec` must be at most 64"):
        tables.s2_table(128, 65)
    with pytest.raises(ValueError, match="`b_grid` must be at most 64"):
        tables.so3_table(65, 8)


def test_disk_cache_writes_reuses_and_repairs(tmp_path, monkeypatch):
    monkeypatch.setenv(tables.CACHE_DIR_ENV, str(tmp_path))
    tables.clear_memory_cache()
    built = tables.so3_table(5, 4).copy()
    (path,) = tmp_path.glob("*.npz")
    calls = []
    monkeypatch.setattr(
        tables, "_build", lambda *args: calls.append(args) or built.copy()
    )

    tables.clear_memory_cache()
    reused = tables.so3_table(5, 4)
    path.write_bytes(path.read_bytes()[:100])  # truncated by a crash
    tables.clear_memory_cache()
    repaired = tables.so3_table(5, 4)
    tables.clear_memory_cache()

    np.testing.assert_array_equal(reused, built)
    np.testing.assert_array_equal(repaired, built)
    assert len(calls) == 1  # only the corrupt file was rebuilt
    assert not list(tmp_path.glob("*.tmp"))


def test_disk_cache_rejects_wrong_checksum(tmp_path):
    path = tables._cache_path(str(tmp_path), "s2", 4, 4)
    np.savez(path, table=np.ones([8, 16]), sha256=np.array("0" * 64))

    table = tables._load_or_build("s2", 4, 4, str(tmp_path))

    np.testing.assert_allclose(table, tables._build("s2", 4, 4))
    assert tables._read_verified(path, (8, 16)) is not None  # rewritten


def test_disk_cache_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(tables.CACHE_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    tables.clear_memory_cache()

    tables.s2_table(3, 3)

    assert not os.listdir(tmp_path)


def _complex(*shape):
    return tf.zeros(shape, tf.complex128)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: primitives.so3_contract(_complex(8, 8, 8), t, 4), "rank 4"),
        (
            lambda t: primitives.so3_contract(tf.zeros([1, 8, 8, 8]), t, 4),
            "must be complex64 or complex128",
        ),
        (
            lambda t: primitives.so3_contract(
                tf.zeros([1, 8, 8, 8], tf.complex64), t, 4
            ),
            "`table` must be a rank-2 float32",
        ),
        (
            lambda t: primitives.so3_contract(_complex(1, 8, 8, 10), t, 4),
            "equal α and γ axes",
        ),
        (
            lambda t: primitives.so3_contract(_complex(1, 8, 6, 6), t, 4),
            "grid size N must be an even int",
        ),
        (
            lambda t: primitives.so3_contract(_complex(1, 9, 8, 8), t, 4),
            r"`table` must have shape \(9, 84\)",
        ),
        (
            lambda t: primitives.so3_expand(_complex(1, 83), t, 8),
            "packed spectrum size P",
        ),
        (lambda t: primitives.so3_expand(_complex(1, 84), t, 7), "even int"),
    ],
)
def test_primitive_errors(call, message):
    table = tables.so3_table(4, 4)

    with pytest.raises(ValueError, match=message):
        call(table)


def test_mm_errors():
    with pytest.raises(ValueError, match="equal C and equal spectra"):
        tfcv_ops.so3_mm(_complex(1, 2, 10), _complex(3, 1, 10))
    with pytest.raises(ValueError, match="must both be complex64 or both"):
        tfcv_ops.s2_mm(_complex(1, 2, 4), tf.zeros([2, 1, 4], tf.complex64))
    with pytest.raises(ValueError, match="packed spectrum size b²"):
        tfcv_ops.s2_mm(_complex(1, 2, 5), _complex(2, 1, 5))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: tfcv_ops.so3_fft(np.zeros([2, 7, 7, 7])), "equal, even"),
        (lambda: tfcv_ops.so3_fft(np.zeros([8, 8, 6])), "equal, even"),
        (lambda: tfcv_ops.s2_fft(np.zeros([8])), "end in 2 equal"),
        (
            lambda: tfcv_ops.s2_fft(np.zeros([256, 256])),
            "`bandwidth_out` must be given .* bandwidth 128 .* pass "
            "`bandwidth_out` <= 64",
        ),
        (
            lambda: tfcv_ops.s2_fft(np.zeros([256, 256]), bandwidth_out=65),
            "`bandwidth_out` must be at most 64, received 65",
        ),
        (
            lambda: tfcv_ops.s2_fft(np.zeros([514, 514]), bandwidth_out=8),
            r"grid bandwidth \(side / 2\)` must be at most 256, received 257",
        ),
        (
            lambda: tfcv_ops.s2_ifft(_complex(65 * 65)),
            "spectrum bandwidth` must be at most 64",
        ),
        (
            lambda: tfcv_ops.s2_ifft(_complex(16), bandwidth_out=257),
            "`bandwidth_out` must be at most 256",
        ),
        (
            lambda: tfcv_ops.s2_rotate(np.zeros([256, 256]), 0.1, 0.2, 0.3),
            r"\(side / 2\)` must be at most 64, received 128",
        ),
        (lambda: tfcv_ops.so3_ifft(_complex(3, 83)), "packed spectrum"),
        (lambda: tfcv_ops.s2_ifft(_complex(3, 15)), "packed spectrum"),
        (
            lambda: tfcv_ops.so3_fft(np.zeros([8, 8, 8]), bandwidth_out=0),
            "`bandwidth_out` must be a positive",
        ),
        (
            lambda: tfcv_ops.s2_fft(tf.zeros([8, 8], tf.bfloat16)),
            "bfloat16: with a 10-bit",
        ),
        (lambda: tfcv_ops.s2_fft(np.zeros([8, 8], np.int32)), "int32; cast"),
    ],
)
def test_transform_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_allowed_computes_in_float32(dtype):
    grid = tf.cast(tf.random.stateless_normal([8, 8], [1, 2]), dtype)

    spectrum = tfcv_ops.s2_fft(grid, allow_low_precision=True)
    rotated = tfcv_ops.s2_rotate(grid, 0.1, 0.2, 0.3, allow_low_precision=True)

    assert spectrum.dtype == tf.complex64 and rotated.dtype == dtype
    np.testing.assert_allclose(
        spectrum, tfcv_ops.s2_fft(tf.cast(grid, tf.float32)), atol=1e-6
    )


def test_set_use_custom_op_validates_and_applies(monkeypatch):
    monkeypatch.setitem(primitives._settings, "value", None)

    primitives.set_use_custom_op(False)
    blocker = primitives.custom_op_blocker(None)

    assert blocker == "use_custom_op=False"
    with pytest.raises(ValueError, match="`use_custom_op` must be None"):
        primitives.set_use_custom_op("yes")


def test_missing_kernel_module_means_twin(monkeypatch):
    # As if tfcv_ops/spherical_kernels.py did not exist.
    monkeypatch.setitem(sys.modules, "tfcv_ops.spherical_kernels", None)
    monkeypatch.delattr(tfcv_ops, "spherical_kernels", raising=False)
    x = tf.complex(tf.random.stateless_normal([2, 8, 8], [3, 4]), 0.0)

    kernel = primitives._kernel("s2_contract")
    result = tfcv_ops.s2_fft(x)

    assert kernel is None
    with pytest.raises(ValueError, match="provides no `tfcv_s2_contract` op"):
        tfcv_ops.s2_fft(x, use_custom_op=True)
    np.testing.assert_allclose(
        result, tfcv_ops.s2_fft(x, use_custom_op=False), atol=1e-6
    )


def test_custom_op_true_inside_xla_raises():
    compiled = tf.function(
        lambda x: tfcv_ops.so3_fft(x, use_custom_op=True), jit_compile=True
    )

    with pytest.raises(ValueError, match="inside an XLA-compiled function"):
        compiled(tf.zeros([8, 8, 8]))


def test_grid_bandwidth_helpers():
    assert (
        layout.so3_bandwidth_of(84) == 4 and layout.so3_bandwidth_of(85) is None
    )
    assert (
        layout.s2_bandwidth_of(16) == 4 and layout.s2_bandwidth_of(15) is None
    )
    assert grids.check_bandwidth("b", np.int64(3)) == 3


@pytest.mark.parametrize(
    "angle", [[0.1, 0.2], "0.3", 1j], ids=["vector", "string", "complex"]
)
def test_rotation_angles_must_be_real_scalars(angle):
    x = np.zeros([8, 8])

    with pytest.raises(ValueError, match="`alpha` must be a real scalar"):
        tfcv_ops.s2_rotate(x, angle, 0.2, 0.3)


def test_library_without_an_op_means_twin_with_one_warning(monkeypatch, caplog):
    class NotOurLibrary:  # Loads, but holds none of our ops.
        pass

    monkeypatch.setitem(_loader._state, "attempted", True)
    monkeypatch.setitem(_loader._state, "library", NotOurLibrary())
    monkeypatch.setattr(_loader, "_missing_ops_warned", set())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 8))

    with caplog.at_level("WARNING"):
        first = tfcv_ops.so3_fft(x)
        second = tfcv_ops.so3_fft(x)

    np.testing.assert_allclose(
        first, tfcv_ops.so3_fft(x, use_custom_op=False), atol=1e-12
    )
    np.testing.assert_allclose(first, second, atol=0)
    assert caplog.text.count("has no op tfcv_so3_contract") == 1
    with pytest.raises(ValueError, match="cannot run"):
        tfcv_ops.so3_fft(x, use_custom_op=True)


def test_global_false_keeps_wigner_d_matrix_on_the_twin(monkeypatch):
    monkeypatch.setitem(_loader.default_use_custom_op, "value", None)
    tfcv_ops.set_use_custom_op(False)
    function = tf.function(
        lambda beta: tfcv_ops.wigner_d_matrix(3, beta)
    ).get_concrete_function(tf.TensorSpec([2], tf.float64))

    ops = {node.op for node in function.graph.as_graph_def().node}

    assert not any(op.startswith("Tfcv") for op in ops)
    with pytest.raises(ValueError, match="must be None, True or False"):
        tfcv_ops.wigner_d_matrix(3, [0.1], use_custom_op=1)
