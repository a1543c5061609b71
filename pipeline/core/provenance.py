"""``provenance.json``: what produced a study's outputs.

Holds the legmri and key package versions, each resolved configuration with its hash (``configs``), the sha256 of each model bundle
used, the inputs (SOPInstanceUIDs of DICOM files, sha256 of NIfTI files), notes (e.g. "water/fat derived from
in-phase/opposed-phase by 2-point Dixon") and per-stage wall times. Stages update it by read-modify-write.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import platform
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.layout import StudyDir

TRACKED_PACKAGES = ("legmri", "numpy", "scipy", "pydicom", "highdicom", "nibabel", "torch", "monai",
                    "scikit-image", "google-re2", "rule-engine", "snakemake")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent), looked up once per process (every stage updates the
    provenance several times; each lookup scans the installed distributions)."""
    return dict(_package_versions(names))


@functools.lru_cache(maxsize=8)
def _package_versions(names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return tuple(out.items())


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _path(out_dir: str | Path) -> Path:
    return StudyDir(out_dir).provenance


def load_provenance(out_dir: str | Path) -> dict[str, Any]:
    p = _path(out_dir)
    if p.exists():
        return json.loads(p.read_text(encoding="utf-8"))
    return {"software": package_versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "configs": {}, "models": {}, "inputs": {}, "notes": [], "stages": {}}


def update_provenance(out_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into OUT/provenance.json: dict values are merged key by key, lists extended (deduplicated),
    scalars replaced."""
    prov = load_provenance(out_dir)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(prov.get(key), dict):
            prov[key].update(value)
        elif isinstance(value, list) and isinstance(prov.get(key), list):
            prov[key].extend(v for v in value if v not in prov[key])
        else:
            prov[key] = value
    prov["software"] = package_versions()
    prov["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(_path(out_dir), prov)
    return prov


@contextlib.contextmanager
def stage_timer(out_dir: str | Path, stage: str) -> Iterator[dict[str, Any]]:
    """Time a stage and record ``{"seconds": ..., "finished": ...}`` under ``stages.<stage>`` on success.

    The yielded dict may be filled with extra stage facts (they are stored with the timing).
    """
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    yield extra
    seconds = round(time.perf_counter() - t0, 3)
    update_provenance(out_dir, stages={stage: {"seconds": seconds,
                                               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                               **extra}})
