"""Where model bundles live, read without loading any network library (the Snakemake workflow and the batch
fingerprint need the files of the configured bundles, not the networks)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.config import PROJECT_ROOT, load_config
from pipeline.core.errors import BundleError

WEIGHTS_DIR = PROJECT_ROOT / "weights"
#: the keys of ``segment`` in configs/default.yaml that name a bundle
BUNDLE_KEYS = ("calf_bundle", "calf_single_contrast_bundle", "calf_computed_water_fat_bundle", "spine_bundle",
               "spine_level_bundle")


def resolve(name_or_path: str | Path) -> Path:
    """The folder of a bundle given by path, or by name under ``weights/``."""
    p = Path(name_or_path)
    if p.exists():
        return p
    q = WEIGHTS_DIR / str(name_or_path)
    if q.exists():
        return q
    raise BundleError(f"no model bundle '{name_or_path}'.", path=p,
                      fix=f"use a folder under {WEIGHTS_DIR.name}/ or train one with 'legmri train'.")


def bundle_files(name_or_path: str | Path) -> list[Path]:
    """The files that make a bundle what it is: ``metadata.json`` and the weights file it names."""
    folder = resolve(name_or_path)
    meta = folder / "metadata.json"
    if not meta.exists():
        raise BundleError("the bundle folder has no metadata.json.", path=folder,
                          fix="give the folder of a bundle written by 'legmri train' or 'legmri ensemble'.")
    weights = json.loads(meta.read_text(encoding="utf-8")).get("weights", {}).get("file", "model.safetensors")
    return [meta, folder / weights]


def configured_bundle_files(keys: tuple[str, ...] = BUNDLE_KEYS) -> list[Path]:
    """The files of every bundle the active configuration names under ``segment`` (``keys``), each once."""
    segment = load_config("default").get("segment") or {}
    files: list[Path] = []
    for key in keys:
        if segment.get(key):
            files += [f for f in bundle_files(segment[key]) if f not in files]
    return files
