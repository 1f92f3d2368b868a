"""Install entry point for tfcv; also compiles the custom-op library.

`pip install --no-build-isolation -e .` (or without `-e`) installs the
packages `tfcv`, `tfcv_ops` and `export`, and compiles `tfcv_ops/cc/*.cc`
with g++ against the TensorFlow that is importable at build time into
`tfcv_ops/_tfcv_ops.so` (in the source tree for an editable install, in the
wheel otherwise). A failed compilation fails the install, unless the
environment variable `TFCV_SKIP_CUSTOM_OPS=1` is set: then no library is
built and `tfcv_ops` runs its pure-TensorFlow twins. See BUILD.md.
"""

import glob
import os
import re
import shlex
import subprocess

import setuptools
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_ENV_VAR = "TFCV_SKIP_CUSTOM_OPS"
OPS_EXTENSION = "tfcv_ops._tfcv_ops"
OPS_LIBRARY = "_tfcv_ops.so"
OPS_FILENAME = os.path.join("tfcv_ops", OPS_LIBRARY)
CXX_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-shared"]
# TensorFlow's own headers trigger these; they say nothing about our code.
CXX_QUIET_FLAGS = ["-Wno-deprecated-declarations", "-Wno-interference-size"]

INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "tensorflow-hub==0.16.1",
    "setuptools<81",  # tensorflow_hub 0.16.1 imports pkg_resources.
    "numpy",
    "absl-py",
    "scipy",
    "scikit-learn",
    "pillow",
    "tensorboard",  # tf.summary needs it; TF 2.21 no longer pulls it in.
    "trimesh",  # Spherical CNNs §5.3: meshes to spherical signals.
    "rtree",  # trimesh's ray casting needs its triangle tree.
]


def _version() -> str:
    """Reads `__version__` from tfcv/__init__.py without importing tfcv."""
    with open(os.path.join(HERE, "tfcv", "__init__.py")) as init_file:
        match = re.search(r'^__version__ = "([^"]+)"', init_file.read(), re.M)
    return match.group(1)


def _skip_custom_ops() -> bool:
    """Whether the user asked to install without the custom-op library."""
    return os.environ.get(SKIP_ENV_VAR, "").strip().lower() in (
        "1",
        "true",
        "yes",
    )


def _tensorflow_flags():
    """Returns TF's `(compile_flags, link_flags, version)` for this build."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise CompileError(
            f"tfcv: compiling the custom-op library needs TensorFlow at "
            f"build time, but `import tensorflow` failed ({error}). Install "
            f"tensorflow==2.21.* first and run `pip install "
            f"--no-build-isolation .`, or set {SKIP_ENV_VAR}=1 to install "
            f"without custom ops (tfcv_ops then uses its pure-TensorFlow "
            f"twins)."
        ) from error
    return (
        tf.sysconfig.get_compile_flags(),
        tf.sysconfig.get_link_flags(),
        tf.__version__,
    )


class BuildTfcvOps(build_ext):
    """`build_ext` that compiles the custom ops with g++ and TF's flags.

    Editable installs set `inplace`, so setuptools copies the library from
    the build directory into the source tree's `tfcv_ops/`.
    """

    def get_ext_filename(self, fullname):
        # `tf.load_op_library` needs no Python-ABI suffix: a plain name that
        # `tfcv_ops/_loader.py` can find. Called with the full dotted name
        # and with the last component alone; keep the directory part.
        filename = super().get_ext_filename(fullname)
        if fullname.split(".")[-1] == OPS_EXTENSION.split(".")[-1]:
            return os.path.join(os.path.dirname(filename), OPS_LIBRARY)
        return filename

    def build_extension(self, ext):
        if ext.name != OPS_EXTENSION:
            super().build_extension(ext)
            return
        compile_flags, link_flags, tf_version = _tensorflow_flags()
        output = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        compiler = shlex.split(os.environ.get("CXX", "g++"))
        command = [
            *compiler,
            *CXX_FLAGS,
            *CXX_QUIET_FLAGS,
            *ext.sources,
            "-o",
            output,
            *compile_flags,
            *link_flags,
        ]

        # Always recompile (about 20 s): a library left in build/ from an
        # older TensorFlow would not load against the new one.
        print(f"tfcv: building {OPS_FILENAME} for TensorFlow {tf_version}")
        print(" ".join(shlex.quote(part) for part in command))
        try:
            subprocess.run(command, check=True)
        except OSError as error:
            failure = f"could not run {compiler[0]!r}: {error}"
        except subprocess.CalledProcessError as error:
            failure = f"{compiler[0]} exited with status {error.returncode}"
        else:
            return
        raise CompileError(
            f"tfcv: compiling the custom-op library {OPS_FILENAME} failed "
            f"({failure}); see the compiler output above. Install a C++17 "
            f"compiler (g++ >= 9; set CXX to use another), or set "
            f"{SKIP_ENV_VAR}=1 to install without custom ops (tfcv_ops then "
            f"uses its pure-TensorFlow twins)."
        )


def _ext_modules():
    """The custom-op library, unless TFCV_SKIP_CUSTOM_OPS=1."""
    if _skip_custom_ops():
        print(f"tfcv: {SKIP_ENV_VAR} is set, not building custom ops")
        return []
    sources = sorted(glob.glob(os.path.join("tfcv_ops", "cc", "*.cc")))
    return [setuptools.Extension(OPS_EXTENSION, sources=sources)]


setuptools.setup(
    name="tfcv",
    version=_version(),
    description=(
        "Ten computer-vision papers as TensorFlow 2 / tf-keras layers, "
        "models, training programs and exported modules."
    ),
    packages=setuptools.find_packages(
        include=[
            "tfcv",
            "tfcv.*",
            "tfcv_ops",
            "tfcv_ops.*",
            "export",
            "export.*",
        ],
        exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"],
    ),
    ext_modules=_ext_modules(),
    cmdclass={"build_ext": BuildTfcvOps},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    # cleverhans: the reference for the attack cross-check (Elsayed et al.).
    extras_require={"test": ["pytest", "cleverhans==4.0.0"]},
    entry_points={"console_scripts": ["tfcv=tfcv.cli.main:run"]},
    zip_safe=False,
)
