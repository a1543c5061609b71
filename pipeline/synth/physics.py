"""MR signal model of the phantoms: tissue proton densities and fat fractions, chemical-shift (Dixon) magnitude
images, Rician noise and a smooth receive-bias field.

Two-point Dixon: with water signal W and fat signal F in a voxel (real, non-negative), the in-phase echo measures
|W + F| and the opposed-phase echo |W - F| (Ma, J Magn Reson Imaging 2008;28:543-558). Scanners export the separated
magnitudes |W| and |F| as well. Each exported magnitude carries complex Gaussian noise, so its magnitude is Rician
(Gudbjartsson & Patz, Magn Reson Med 1995;34:910-914).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """Proton density (arbitrary units, muscle ~ 0.8) and fat fraction (0-1) of a tissue; ``t2w`` scales the
    fat-suppressed T2 (STIR) signal of its water."""

    rho: float
    ff: float
    t2w: float = 1.0


TISSUES: dict[str, Tissue] = {
    "muscle": Tissue(0.80, 0.03, 1.0),
    "subcutaneous_fat": Tissue(1.00, 0.94, 0.3),
    "skin": Tissue(0.70, 0.25, 0.8),
    "marrow": Tissue(0.95, 0.88, 0.3),
    "cortex": Tissue(0.04, 0.0, 0.2),
    "fascia": Tissue(0.35, 0.20, 0.6),
    "csf": Tissue(1.00, 0.0, 3.0),
    "nucleus": Tissue(0.90, 0.0, 2.2),
    "annulus": Tissue(0.40, 0.0, 0.5),
    "vertebral_marrow": Tissue(0.85, 0.40, 0.6),
    "ligament": Tissue(0.15, 0.0, 0.3),
    "epidural_fat": Tissue(1.00, 0.94, 0.3),
    "nerve": Tissue(0.55, 0.0, 0.8),
    "paraspinal": Tissue(0.80, 0.06, 1.0),
}


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``signal`` (real, >= 0) plus complex Gaussian noise of standard deviation ``sigma`` per channel.

    >>> r = rician(np.zeros(100000), 1.0, np.random.default_rng(0))
    >>> round(float(r.mean()), 2)  # Rayleigh mean sigma * sqrt(pi / 2) = 1.25
    1.25
    """
    re = signal + rng.normal(0.0, sigma, signal.shape)
    im = rng.normal(0.0, sigma, signal.shape)
    return np.hypot(re, im)


def bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive field exp(s * p(x)) with p a random low-order polynomial in [-1, 1]."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    field = np.zeros(shape)
    for g in grids:
        a, b = rng.uniform(-1, 1, 2)
        field += a * g + 0.5 * b * g**2
    field /= max(1e-6, np.abs(field).max())
    return np.exp(strength * field)


def dixon_magnitudes(water: np.ndarray, fat: np.ndarray, sigma: float, bias: np.ndarray,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Water, fat, in-phase and opposed-phase magnitude images (each with its own Rician noise)."""
    w, f = water * bias, fat * bias
    return {"water": rician(w, sigma, rng), "fat": rician(f, sigma, rng),
            "inphase": rician(w + f, sigma, rng), "outphase": rician(np.abs(w - f), sigma, rng)}
