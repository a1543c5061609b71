"""Reference conversion with dcm2niix (the PyPI package's binary), for comparing volumes and affines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def dcm2niix_binary() -> str | None:
    local = Path(sys.executable).with_name("dcm2niix")
    return str(local) if local.exists() else shutil.which("dcm2niix")


def dcm2niix_volumes(dicom_dir: Path, out_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Convert ``dicom_dir`` with dcm2niix; return (data, affine) of each 3-D output in closest-canonical order."""
    binary = dcm2niix_binary()
    assert binary, "dcm2niix is a test dependency (pip install dcm2niix)"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([binary, "-z", "n", "-b", "n", "-o", str(out_dir), "-f", "%s_%d_%z", str(dicom_dir)],
                   check=True, capture_output=True)
    vols = []
    for f in sorted(out_dir.glob("*.nii")):
        img = nib.as_closest_canonical(nib.load(f))
        data = np.asarray(img.get_fdata())
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        vols.append((data, img.affine))
    return vols


def assert_same_as_dcm2niix(ours: list[tuple[np.ndarray, np.ndarray]], ref: list[tuple[np.ndarray, np.ndarray]],
                            atol_mm: float = 1e-3) -> int:
    """Every volume of ``ours`` has a dcm2niix twin with an equal array and an affine equal within ``atol_mm``.

    Returns the number of volumes compared.
    """
    assert ours, "no volumes to compare"
    for data, affine in ours:
        twins = [(d, a) for d, a in ref if d.shape == data.shape and np.allclose(a, affine, atol=atol_mm)]
        assert twins, (f"no dcm2niix volume with shape {data.shape} and affine\n{np.round(affine, 4)}\n"
                       f"dcm2niix gave: {[(d.shape, np.round(a, 4).tolist()) for d, a in ref]}")
        np.testing.assert_allclose(data, twins[0][0], atol=1e-3)
    return len(ours)
