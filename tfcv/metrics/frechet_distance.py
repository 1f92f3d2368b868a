"""Frechet distance between two sets of features (the formula behind FID).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to
a Local Nash Equilibrium" (arXiv:1706.08500), define the Frechet Inception
Distance as the Frechet (2-Wasserstein) distance between two Gaussians fitted
to the features of real and generated images:

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

with `mu` the feature means and `S` the feature covariances. This module
computes that formula for any two feature sets; `tfcv.metrics` feeds it the
penultimate features of the digit judge (`digit_classifier.py`).

Shapes: features `[N, F]` (`N` samples, at least 2; `F` features).

Deviations from the paper:
  * The paper's features are Inception-v3's 2,048 pool_3 activations; the
    features here are whatever the caller passes (our digit judge's), so the
    values are comparable between our runs, not with published FIDs.
  * When the covariances are singular (fewer samples than features, or dead
    ReLU units) the matrix square root may fail or come out complex. As the
    reference implementations do, we then add `epsilon * I` to both
    covariances and retry; tiny imaginary parts left by round-off are
    discarded. The paper does not discuss this case.
"""

import warnings

import numpy as np
import scipy.linalg

DEFAULT_EPSILON = 1e-6

# An imaginary part below this fraction of the square root's largest real
# entry is round-off and is discarded.
IMAGINARY_TOLERANCE = 1e-3


def _check_features(features, name: str) -> np.ndarray:
    """Returns `features` as a finite float64 `[N, F]` array with `N >= 2`."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array [N, F] of N feature vectors, "
            f"received shape {features.shape}; reshape it to "
            f"(num_samples, num_features)."
        )
    if features.shape[0] < 2:
        raise ValueError(
            f"`{name}` must have at least 2 rows to estimate a covariance, "
            f"received shape {features.shape}; pass more samples."
        )
    if features.shape[1] < 1:
        raise ValueError(
            f"`{name}` must have at least 1 feature column, received shape "
            f"{features.shape}."
        )
    if not np.all(np.isfinite(features)):
        raise ValueError(
            f"`{name}` must contain only finite values, received "
            f"{int(np.sum(~np.isfinite(features)))} NaN or infinite entries; "
            f"check the model that produced the features."
        )
    return features


def _is_usable_root(root: np.ndarray) -> bool:
    """True if `root` is finite with at most a round-off imaginary part."""
    if not np.all(np.isfinite(root)):
        return False
    if not np.iscomplexobj(root):
        return True
    scale = max(1.0, float(np.max(np.abs(root.real))))
    return float(np.max(np.abs(root.imag))) <= IMAGINARY_TOLERANCE * scale


def _sqrtm_silent(matrix: np.ndarray) -> np.ndarray:
    """`scipy.linalg.sqrtm` without its warning about singular matrices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def _sqrt_of_product(
    covariance_a: np.ndarray, covariance_b: np.ndarray, epsilon: float
) -> np.ndarray:
    """Real `(S_a S_b)^(1/2)`, retried with `epsilon * I` if it fails."""
    # [F, F] x [F, F] -> [F, F]
    root = _sqrtm_silent(covariance_a @ covariance_b)

    # Singular covariances: offset both diagonals, as is customary.
    if not _is_usable_root(root):
        offset = epsilon * np.eye(covariance_a.shape[0])
        # [F, F] x [F, F] -> [F, F]
        root = _sqrtm_silent((covariance_a + offset) @ (covariance_b + offset))
        if not _is_usable_root(root):
            raise ValueError(
                "The matrix square root of the covariance product is not "
                f"finite and real even with `epsilon`={epsilon!r} added to "
                "the diagonals; pass a larger `epsilon` or rescale the "
                "features."
            )
    return np.real(root)


def frechet_distance(
    features_a, features_b, epsilon: float = DEFAULT_EPSILON
) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`, computed in
    float64 with `scipy.linalg.sqrtm`. Covariances are unbiased (`N - 1`
    denominator). The result is symmetric in its arguments and close to 0
    (round-off may make it slightly negative) for identical sets.

    Args:
      features_a: array-like `[N_a, F]`, `N_a >= 2`, finite; e.g. the judge's
        features of real images.
      features_b: array-like `[N_b, F]`, `N_b >= 2`, finite; e.g. the
        judge's features of generated images.
      epsilon: float > 0, default `1e-6`; added to both covariance diagonals
        only when the square root of their product fails.

    Returns:
      The distance as a Python float (squared units of the features).

    Raises:
      ValueError: if a feature set is not 2-D, has fewer than 2 rows, no
        columns or non-finite entries; if the feature widths differ; if
        `epsilon` is not positive; or if the square root fails even with the
        `epsilon` offset.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> real = rng.normal(size=(500, 4))
      >>> fake = rng.normal(loc=1.0, size=(500, 4))
      >>> round(frechet_distance(real, fake))
      4
    """
    features_a = _check_features(features_a, "features_a")
    features_b = _check_features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            "`features_a` and `features_b` must have the same feature width "
            f"F, received shapes {features_a.shape} and "
            f"{features_b.shape}; extract both with the same model layer."
        )
    if not np.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(
            f"`epsilon` must be a finite float > 0, received {epsilon!r}; "
            f"the customary value is {DEFAULT_EPSILON}."
        )

    # Gaussian fits: means [F] and covariances [F, F].
    mean_a = np.mean(features_a, axis=0)
    mean_b = np.mean(features_b, axis=0)
    covariance_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    covariance_b = np.atleast_2d(np.cov(features_b, rowvar=False))

    # The two terms of the distance.
    mean_term = np.sum(np.square(mean_a - mean_b))
    root = _sqrt_of_product(covariance_a, covariance_b, epsilon)
    trace_term = (
        np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * np.trace(root)
    )
    return float(mean_term + trace_term)
