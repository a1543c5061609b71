"""``legmri train``: build the training cases (phantoms or a user's MSD/nnU-Net dataset) and train a bundle."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import load_config
from pipeline.core.errors import EXIT_OK, UsageError
from pipeline.core.labels import registry
from pipeline.core.volume import Volume

log = logging.getLogger(__name__)
#: Phantom seeds used for training start here; evaluation uses seeds from EVALUATION_SEED_START upwards.
TRAINING_SEED_START = 0
EVALUATION_SEED_START = 100000


def calf_class_map(labels: Volume) -> Volume:
    """Side-agnostic class map (network classes) from a sided calf label map."""
    reg = registry("calf")
    lut = np.zeros(len(reg.labels) + 1, np.uint8)
    for lab in reg.labels:
        lut[lab.id] = reg.class_id(lab.structure)
    return labels.with_array(lut[np.asarray(labels.array, np.int64)])


def synthetic_calf_cases(seeds: range | list[int], fast: bool = False) -> Iterator[tuple[list[Volume], Volume]]:
    """(water, fat) and class map of the calf phantom of each seed (random anatomy, pathology and acquisition)."""
    from pipeline.synth.calf import CalfSpec, generate_calf

    for seed in seeds:
        spec = CalfSpec.random(np.random.default_rng([seed, 1]))
        ph = generate_calf(spec, seed=seed, fast=fast)
        yield [ph.volume("calf_water"), ph.volume("calf_fat")], calf_class_map(ph.labels)


def calf_config(out: Path, epochs: int | None, seed: int, device: str, data: dict[str, Any]):
    from pipeline.segment.train import TrainConfig

    c = load_config("default")["train"]["calf"]
    cfg = TrainConfig(name=out.name, anatomy="calf", labels=list(registry("calf").classes),
                      input_channels=["water", "fat"], slice_plane="axial",
                      target_spacing_mm=tuple(c["target_spacing_mm"]), patch=tuple(c["patch"]),
                      batch_size=c["batch_size"], max_iterations=c["max_iterations"], max_minutes=c["max_minutes"],
                      learning_rate=c["learning_rate"], validate_every=c["validate_every"], seed=seed, device=device,
                      training_data=data)
    apply_oversampling(cfg, c)
    if epochs is not None:  # an "epoch" here is one validation interval
        cfg.max_iterations = epochs * cfg.validate_every
    return cfg, int(c["synthetic_validation_cases"])


def apply_oversampling(cfg: Any, settings: dict[str, Any]) -> None:
    """Foreground oversampling from ``train.<anatomy>.oversample`` (class, plane, fraction), if configured."""
    from pipeline.segment.train import check_oversampling

    over = settings.get("oversample") or {}
    cfg.oversample_class, cfg.oversample_plane = over.get("class"), over.get("plane")
    cfg.oversample_fraction = float(over.get("fraction", 0.0))
    check_oversampling(cfg)


def progress(line: str) -> None:
    """Print a training progress line at once (also when the output is redirected to a file)."""
    print(line, flush=True)


def phantom_rendering(anatomy: str) -> tuple[str, bool]:
    """``train.<anatomy>.synthetic_rendering`` of the configuration and whether it means one sample per voxel
    (``fast``) rather than 2 x 2 x 2 (``supersampled``, with partial volume)."""
    rendering = str(load_config("default")["train"][anatomy].get("synthetic_rendering", "supersampled"))
    return rendering, rendering == "fast"


def apply_overrides(cfg: Any, overrides: dict[str, Any] | None) -> Any:
    """Command-line settings over the configured ones: ``init_from``, ``init_member``, ``learning_rate``,
    ``max_minutes``, ``version`` (None values are ignored)."""
    for key, value in (overrides or {}).items():
        if value is not None:
            if not hasattr(cfg, key):
                raise UsageError(f"unknown training setting '{key}'")
            setattr(cfg, key, value)
    return cfg


def train(anatomy: str, out: Path, data: Path | None = None, synthetic: int | None = None, epochs: int | None = None,
          seed: int = 0, device: str = "cpu", overrides: dict[str, Any] | None = None) -> int:
    """Train a bundle for ``anatomy`` into ``out`` from ``synthetic`` phantoms or the dataset at ``data``;
    ``overrides`` (see :func:`apply_overrides`) e.g. start from a shipped bundle to fine-tune on your own data."""
    from pipeline.segment.train import train_bundle

    out = Path(out)
    if anatomy == "spine":
        from pipeline.workflow.spine_stage import train as train_spine

        return train_spine(out=out, data=data, synthetic=synthetic, epochs=epochs, seed=seed, device=device,
                           overrides=overrides)
    if anatomy != "calf":
        raise UsageError(f"unknown anatomy '{anatomy}' (calf or spine).")
    if synthetic is not None:
        if synthetic < 2:
            raise UsageError("--synthetic needs at least 2 phantom studies.")
        cfg, n_val = calf_config(out, epochs, seed, device, {})
        apply_overrides(cfg, overrides)
        n_val = min(n_val, max(1, synthetic // 5))
        train_seeds = list(range(TRAINING_SEED_START, TRAINING_SEED_START + synthetic - n_val))
        val_seeds = list(range(TRAINING_SEED_START + synthetic - n_val, TRAINING_SEED_START + synthetic))
        rendering, fast = phantom_rendering("calf")
        cfg.training_data = {"source": "synthetic calf phantoms (pipeline.synth.calf, CalfSpec.random)",
                             "train_seeds": [train_seeds[0], train_seeds[-1]],
                             "validation_seeds": [val_seeds[0], val_seeds[-1]], "rendering": rendering}
        record = train_bundle(synthetic_calf_cases(train_seeds, fast), synthetic_calf_cases(val_seeds, fast), cfg,
                              out, log=progress)
    else:
        from pipeline.segment.data import read_msd_dataset

        cfg, _ = calf_config(out, epochs, seed, device, {"source": f"MSD/nnU-Net dataset {Path(data).name}"})
        apply_overrides(cfg, overrides)
        cases = read_msd_dataset(Path(data), cfg.labels, cfg.input_channels)
        n_val = max(1, len(cases) // 5)
        record = train_bundle(cases[n_val:], cases[:n_val], cfg, out, log=progress)
    print(f"wrote {out} (best validation mean Dice at iteration {record['best_iteration']})")
    return EXIT_OK
