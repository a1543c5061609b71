"""Contrast-randomised training of the spine bundle (the SynthSeg idea; Billot et al., Med Image Anal
2023;86:102789). Tissue maps come from the lumbar phantom's anatomy (:meth:`pipeline.synth.lumbar.SpineAnatomy.classify_tissue`);
every random-contrast sample gets random intensities per tissue (the dural sac's CSF its own tissue, bright or dark;
the cauda equina roots inside the sac a tissue of the sac class), partial volume, resolution, bias, noise and
artefacts (:mod:`pipeline.segment.synthseg`), and fields of view cut at any height: without the sacrum, or with the
spine running on to the top edge as in a thoraco-lumbar study. Each training batch mixes these samples with patches
of the fixed-T2 phantom series (``legmri train spine``'s data and augmentation, the dural sac oversampled on sagittal
slices), so that the precision on the phantoms is kept while the network stops depending on one contrast.

Two steps, each reproducible from seeds: ``bank`` renders the tissue maps of N random phantoms (sagittal slices at
random positions across the canal and foramina, and axial slices perpendicular to the spine), ``train`` fine-tunes a
member of the shipped bundle on them.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import atomic_path

#: Anatomy seeds of the bank are drawn as ``default_rng([seed, BANK_STREAM])``, never equal to a phantom of
#: :func:`pipeline.synth.lumbar.random_lumbar` (``[seed, 2]``) drawn for training or evaluation.
BANK_STREAM = 7102
#: In-plane spacing of the bank (mm): a whole divisor of the network's 0.75 mm grid.
BANK_SPACING_MM = 0.375
SAGITTAL_SIZE_MM = 255.0
AXIAL_SIZE_MM = 180.0


def class_lut() -> np.ndarray:
    """Network class id of every spine output label id (``registry("spine").class_map`` as a lookup table)."""
    from pipeline.core.labels import registry

    reg = registry("spine")
    lut = np.zeros(max(lab.id for lab in reg.labels) + 1, np.uint8)
    for lab in reg.labels:
        lut[lab.id] = reg.class_id(lab.structure)
    return lut


def plane_points(origin: np.ndarray, rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int],
                 spacing_mm: float) -> np.ndarray:
    """World points (H, W, 3) of a plane grid centred on ``origin``: p_ij = o + (i - (H-1)/2) d r + (j - (W-1)/2) d c
    for unit row and column directions r, c and spacing d."""
    i = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing_mm
    j = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing_mm
    return origin + i[:, None, None] * rows + j[None, :, None] * columns


def tissue_plane(spine: Any, origin: np.ndarray, rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int],
                 spacing_mm: float, thickness_mm: float, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes and tissue ids (3, H, W) of a slice: three sub-slices at -t/3, 0, +t/3 along the slice normal
    (r x c) for a slice thickness t (all three the centre plane when t is 0)."""
    normal = np.cross(rows, columns)
    pts = plane_points(origin, rows, columns, shape, spacing_mm)
    offsets = (-thickness_mm / 3, 0.0, thickness_mm / 3) if thickness_mm > 0 else (0.0,)
    classes, tissue = [], []
    for off in offsets:
        lab, _, tis = spine.classify_tissue(pts + off * normal)
        classes.append(lut[lab])
        tissue.append(tis)
    if len(offsets) == 1:
        classes, tissue = classes * 3, tissue * 3
    return np.stack(classes), np.stack(tissue)


def cut_field_of_view(classes: np.ndarray, tissue: np.ndarray, keep: slice) -> None:
    """Zero (air, background) every column of (3, H, W) maps outside ``keep``: a field-of-view edge, in place."""
    mask = np.ones(classes.shape[-1], bool)
    mask[keep] = False
    classes[..., mask] = 0
    tissue[..., mask] = 0


def sagittal_level(spine: Any, rng: np.random.Generator, lut: np.ndarray, spacing_mm: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One sagittal slice in canonical orientation (rows anterior, columns superior) at a random x (half of them
    through the dural sac), thin or 2.5-5 mm thick, its centre at a random height; in 30 % the field of view ends
    at a random height within L1-L4 (the spine runs on to the top edge) and in 30 % above the sacrum or inside it."""
    x = rng.uniform(-6, 6) if rng.uniform() < 0.5 else rng.uniform(-35, 35)
    thick = float(rng.uniform(2.5, 5.0)) if rng.uniform() < 0.5 else 0.0
    s_mid = rng.uniform(70, spine.length - 90)
    origin = spine.point(s_mid, a=-20.0, x=x)
    n = int(round(SAGITTAL_SIZE_MM / spacing_mm))
    rows, cols = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    classes, tissue = tissue_plane(spine, origin, rows, cols, (n, n), spacing_mm, thick, lut)
    z = origin[2] + (np.arange(n) - (n - 1) / 2) * spacing_mm
    top, bottom = n, 0
    if rng.uniform() < 0.3:
        top = int(np.searchsorted(z, spine.point(rng.uniform(-10, 130))[2]))
    if rng.uniform() < 0.3:
        bottom = int(np.searchsorted(z, spine.point(rng.uniform(90, spine.length - 45))[2]))
    if top - bottom > 160:
        cut_field_of_view(classes, tissue, slice(bottom, top))
    return classes, tissue


def axial_level(spine: Any, rng: np.random.Generator, lut: np.ndarray, spacing_mm: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """One axial slice perpendicular to the spine (rows towards the right, columns anterior), at a disc (half of
    them) or a random height, thin or 2.5-5 mm thick."""
    discs = list(spine.disc_s.values())
    s = discs[int(rng.integers(len(discs)))] + rng.normal(0, 1.5) if rng.uniform() < 0.5 else rng.uniform(
        5, spine.length - 70)
    ant, _ = spine.frame(s)
    thick = float(rng.uniform(2.5, 5.0)) if rng.uniform() < 0.5 else 0.0
    n = int(round(AXIAL_SIZE_MM / spacing_mm))
    return tissue_plane(spine, spine.point(s, a=-20.0), np.array([1.0, 0.0, 0.0]), ant, (n, n), spacing_mm,
                        thick, lut)


def bank_subject(seed: int, sagittal: int = 6, axial: int = 2, spacing_mm: float = BANK_SPACING_MM
                 ) -> dict[str, np.ndarray]:
    """Tissue maps of one random lumbar phantom: ``classes`` and ``tissue`` (uint8), each (levels, 3, H, W), the
    ``sagittal`` slices first, then the ``axial`` ones (zero-padded to the sagittal size), and ``plane``
    (0 sagittal, 1 axial) per level."""
    from pipeline.synth.lumbar import LumbarSpec, SpineAnatomy

    rng = np.random.default_rng([seed, BANK_STREAM])
    spine = SpineAnatomy(LumbarSpec.random(rng))
    lut = class_lut()
    maps = [sagittal_level(spine, rng, lut, spacing_mm) for _ in range(sagittal)]
    maps += [axial_level(spine, rng, lut, spacing_mm) for _ in range(axial)]
    shape = np.max([c.shape for c, _ in maps], axis=0)
    out = {k: np.zeros((len(maps), *shape), np.uint8) for k in ("classes", "tissue")}
    for i, (c, t) in enumerate(maps):
        out["classes"][i, :, :c.shape[1], :c.shape[2]] = c
        out["tissue"][i, :, :t.shape[1], :t.shape[2]] = t
    out["plane"] = np.array([0] * sagittal + [1] * axial, np.uint8)
    out["spacing_mm"] = np.float32(spacing_mm)
    return out


def _write_subject(args: tuple[int, int, int, str]) -> str:
    seed, sagittal, axial, folder = args
    path = Path(folder) / f"subject_{seed:06d}.npz"
    if not path.exists():
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **bank_subject(seed, sagittal, axial))
    return str(path)


def build_bank(seeds: range, out: Path, sagittal: int = 6, axial: int = 2, workers: int = 2) -> list[str]:
    """Render the bank of ``seeds`` into ``out`` (one ``subject_NNNNNN.npz`` each; existing files are kept)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, sagittal, axial, str(out)) for s in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_write_subject, jobs))


def load_bank(folders: list[Path]) -> list[dict[str, np.ndarray]]:
    """Every subject of the bank folders, with a zero fat-fraction map (a read-only view, no memory) for the
    sampler."""
    subjects = []
    for folder in folders:
        files = sorted(Path(folder).glob("subject_*.npz"))
        if not files:
            raise FileNotFoundError(f"no subject_*.npz in {folder}; render the bank first (bank --out {folder})")
        for f in files:
            d = dict(np.load(f))
            d["ff"] = np.broadcast_to(np.uint8(0), d["tissue"].shape)
            subjects.append(d)
    return subjects


#: (tissue, leader) pairs of the spine whose means usually go together (:func:`sample_intensities`): epidural fat
#: like subcutaneous fat, posterior-element bone like vertebral marrow, soft tissue like muscle, the cauda equina
#: like the other roots.
TIED = (("epidural_fat", "subcutaneous_fat"), ("posterior", "marrow"), ("soft", "paraspinal"), ("cauda", "root"))


def sampler_for(bank: list[dict[str, np.ndarray]], patch: tuple[int, int], target_mm: float, seed: int,
                sac_fraction: float = 0.5, prior: Any = None) -> Any:
    """A :class:`~pipeline.segment.synthseg.SynthSampler` over ``bank`` with the spine's tissue roles (CSF the
    ``fluid``), no mirroring (rows run anterior on sagittal slices), ``sac_fraction`` of the items centred on a
    dural sac pixel and, by default, clutter in half of the items (the phantom's soft tissue is plain, a patient's
    abdomen and back are not)."""
    from pipeline.core.labels import registry
    from pipeline.segment.synthseg import ContrastPrior, SynthSampler
    from pipeline.synth.lumbar import TISSUE_IDS

    reg = registry("spine")
    roles = {"background": TISSUE_IDS["background"], "muscle": TISSUE_IDS["paraspinal"],
             "fat": TISSUE_IDS["subcutaneous_fat"], "cortex": TISSUE_IDS["cortex"], "marrow": TISSUE_IDS["marrow"],
             "fluid": TISSUE_IDS["csf"]}
    tied = tuple((TISSUE_IDS[a], TISSUE_IDS[b]) for a, b in TIED)
    return SynthSampler(bank, roles, [], len(reg.classes), patch, float(bank[0]["spacing_mm"]), target_mm, seed,
                        prior=prior or ContrastPrior(p_clutter=0.5), tied=tied, focus_class=reg.class_id("dural_sac"), focus_fraction=sac_fraction,
                        mirror=(False, False))


def phantom_slices(seeds: range, cache: Path | None, target_mm: float, workers: int = 2
                   ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(slices, classes, plane) of every series of the supersampled fixed-T2 phantoms of ``seeds``
    (:func:`pipeline.workflow.training.spine_phantom_cases`), on the network's grid; kept in ``cache`` if given."""
    out: list[tuple[np.ndarray, np.ndarray, str]] = []
    todo = [s for s in seeds if cache is None or not (cache / f"phantom_{s:06d}.npz").exists()]
    if todo:
        # spawned, not forked: a fork of a process whose torch thread pool is running can hang in the child
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for seed, series in zip(todo, pool.map(_phantom_series, todo, [target_mm] * len(todo))):
                if cache is not None:
                    cache.mkdir(parents=True, exist_ok=True)
                    with atomic_path(cache / f"phantom_{seed:06d}.npz") as tmp, open(tmp, "wb") as fh:
                        np.savez(fh, **{f"{k}_{i}": v for i, (img, lab, pl) in enumerate(series)
                                        for k, v in (("image", img), ("classes", lab), ("plane", np.array(pl)))})
                if cache is None:
                    out += series
    if cache is not None:
        for seed in seeds:
            d = np.load(cache / f"phantom_{seed:06d}.npz")
            n = sum(1 for k in d.files if k.startswith("image_"))
            out += [(d[f"image_{i}"], d[f"classes_{i}"], str(d[f"plane_{i}"])) for i in range(n)]
    return out


def _phantom_series(seed: int, target_mm: float) -> list[tuple[np.ndarray, np.ndarray, str]]:
    from pipeline.segment.train import prepare_slices, slice_plane_of
    from pipeline.workflow.training import spine_phantom_cases

    rule = {"method": "joint_percentile", "percentile": 99.5}
    return [(*prepare_slices(ch, lab, "acquisition", (target_mm, target_mm), rule), slice_plane_of(ch, "acquisition"))
            for ch, lab in spine_phantom_cases(seed)]


#: what the random-contrast half of the training images varies, as recorded in the bundle's metadata
AUGMENTATION = ("SynthSeg-style half of each batch: random tissue intensities (uniform or MR-like prior: fat bright "
                "or dark, CSF bright or dark, muscle intermediate, cortex dark; epidural fat, posterior elements, "
                "soft tissue and cauda equina usually tied to subcutaneous fat, marrow, muscle and roots), texture, "
                "clutter of random blobs over the background class in half of the samples, "
                "slice-thickness partial volume (sub-slices), PSF 0.6-2.6 mm, ghosting, wrap-around, FOV cuts (also "
                "whole-slice cuts at any height: no sacrum, spine to the top edge), affine (25 deg, 25 %, shear, no "
                "mirroring), elastic, bias, gamma, Gibbs, Rician noise; the other half fixed-T2 phantom patches with "
                "train.augmentation of configs/default.yaml")


def train_spine_synthseg(bank_dirs: list[Path], out: Path, *, minutes: float, max_iterations: int,
                         batch_size: int = 12, patch: tuple[int, int] = (176, 176), learning_rate: float = 5e-4,
                         seed: int = 0, threads: int = 2, init: str = "spine_t2_unet", init_member: int | None = 1,
                         version: str = "2.0.0", validate_every: int = 200, synth_share: float = 0.5,
                         sac_fraction: float = 0.5, phantom_seeds: range = range(0, 40),
                         val_seeds: range = range(136, 140), val_subjects: int = 4, cache: Path | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune one network of ``init`` on batches of which ``synth_share`` are random-contrast samples of the bank
    and the rest fixed-T2 phantom patches (``sac_fraction`` of each part centred on the dural sac, sagittal slices
    for the phantom part); the checkpoint with the best mean of the random-contrast validation Dice (the last
    ``val_subjects`` bank subjects) and the fixed-T2 phantom validation Dice (``val_seeds``) is kept."""
    import torch

    from pipeline.core.labels import registry
    from pipeline.segment.bundle import build_network, load_bundle
    from pipeline.segment.train import TrainConfig, augment_transforms

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    reg = registry("spine")
    bank = load_bank(bank_dirs)
    train_bank, val_bank = bank[:-val_subjects], bank[-val_subjects:]
    cfg = TrainConfig(name="spine_t2_unet", anatomy="spine", labels=list(reg.classes), input_channels=["t2"],
                      slice_plane="acquisition", target_spacing_mm=(0.75, 0.75), patch=patch, batch_size=batch_size,
                      max_iterations=max_iterations, max_minutes=minutes, learning_rate=learning_rate,
                      validate_every=validate_every, seed=seed, threads=threads, version=version, init_from=init,
                      init_member=init_member, oversample_class="dural_sac", oversample_plane="sagittal",
                      oversample_fraction=sac_fraction,
                      training_data={
                          "source": "contrast-randomised images (pipeline.segment.synthseg) from tissue maps of "
                                    "lumbar phantoms (pipeline.workflow.spine_synthseg bank), mixed with fixed-T2 "
                                    "lumbar phantoms (pipeline.synth.lumbar, LumbarSpec.random, supersampled)",
                          "bank": {"subjects": len(train_bank), "validation_subjects": len(val_bank),
                                   "spacing_mm": float(bank[0]["spacing_mm"])},
                          "synthetic_share_of_batch": synth_share,
                          "phantom_train_seeds": [phantom_seeds.start, phantom_seeds.stop - 1],
                          "validation": f"32 random-contrast items of the last {len(val_bank)} bank subjects (seed "
                                        f"{seed + 99}) and fixed-T2 phantoms seeds {val_seeds.start}-"
                                        f"{val_seeds.stop - 1}"})
    net = build_network({"network": cfg.network()})
    start = load_bundle(init)
    source = start.network if init_member is None else start.network.members[init_member]
    net.load_state_dict(source.state_dict(), strict=True)
    provenance = {**start.provenance(), **({"member": init_member} if init_member is not None else {})}
    t0 = time.perf_counter()
    phantoms = phantom_slices(phantom_seeds, cache, cfg.target_spacing_mm[0])
    val_phantoms = [(img, lab) for img, lab, _ in phantom_slices(val_seeds, cache, cfg.target_spacing_mm[0])]
    log(f"{len(train_bank)} bank subjects, {len(phantoms)} phantom series; data ready in "
        f"{time.perf_counter() - t0:.0f} s")
    train = [(img, lab) for img, lab, _ in phantoms]
    index = [(ci, si) for ci, (a, _) in enumerate(train) for si in range(len(a))]
    sac = cfg.labels.index("dural_sac")
    focus = [(ci, si) for ci, (_, lab, pl) in enumerate(phantoms) if pl == "sagittal" for si in range(len(lab))
             if (lab[si] == sac).any()]
    sampler = sampler_for(train_bank, patch, cfg.target_spacing_mm[0], seed, sac_fraction)
    val_sampler = sampler_for(val_bank, patch, cfg.target_spacing_mm[0], seed + 99, sac_fraction)
    val_synth = [val_sampler.batch(16) for _ in range(2)]
    augment = augment_transforms(patch, seed, cfg.augmentation)
    rng = np.random.default_rng(seed)
    n_synth = int(round(batch_size * synth_share))
    return _fit(net, cfg, provenance, out, sampler, n_synth, lambda: _phantom_batch(
        train, index, focus, sac, cfg, rng, augment, batch_size - n_synth), val_synth, val_phantoms, log)


def _phantom_batch(train: list, index: list, focus: list, sac: int, cfg: Any, rng: np.random.Generator,
                   augment: Any, n: int) -> tuple[Any, Any]:
    """``n`` augmented fixed-T2 phantom patches (:func:`pipeline.segment.train.sample_item`)."""
    import torch

    from pipeline.segment.train import sample_item

    items = [augment(sample_item(train, index, focus, sac, cfg, rng)) for _ in range(n)]
    x = torch.stack([torch.as_tensor(np.asarray(d["image"])) for d in items]).float()
    y = torch.stack([torch.as_tensor(np.asarray(d["label"])) for d in items]).round().long()
    return x, y


def _fit(net: Any, cfg: Any, provenance: dict[str, Any], out: Path, sampler: Any, n_synth: int,
         phantom_batch: Callable[[], tuple[Any, Any]], val_synth: list, val_phantoms: list,
         log: Callable[[str], None]) -> dict[str, Any]:
    """The training loop: DiceCE, AdamW, warm-up and cosine decay (:func:`pipeline.segment.train.learning_rate_at`), validation every
    ``cfg.validate_every`` iterations, the best checkpoint written at once."""
    import torch
    from monai.losses import DiceCELoss

    from pipeline.segment.train import dice_per_class, optimiser_step
    from pipeline.workflow.calf_synthseg import mean_dice

    n_classes = len(cfg.labels)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    best: dict[str, Any] = {"score": -1.0}
    history: list[dict[str, Any]] = []
    it = 0
    while it < cfg.max_iterations and time.perf_counter() - t0 < cfg.max_minutes * 60:
        xs, ys = sampler.batch(n_synth) if n_synth else (None, None)
        xp, yp = phantom_batch()
        x = xp if xs is None else torch.cat([xs, xp])
        y = yp if ys is None else torch.cat([ys, yp])
        progress = max(it / cfg.max_iterations, (time.perf_counter() - t0) / (cfg.max_minutes * 60))
        loss = optimiser_step(net, opt, loss_fn, x, y, progress, cfg.learning_rate)
        it += 1
        if it % cfg.validate_every == 0:
            synth = mean_dice(net, [(x_.numpy(), y_[:, 0].numpy()) for x_, y_ in val_synth], n_classes,
                               dice_per_class)
            phantom = mean_dice(net, val_phantoms, n_classes, dice_per_class)
            score = (synth + phantom) / 2
            history.append({"iteration": it, "loss": round(loss.item(), 4), "val_random_contrast_dice": round(synth, 4),
                            "val_phantom_dice": round(phantom, 4)})
            log(f"it {it} loss {loss.item():.3f} val Dice random-contrast {synth:.4f} fixed-T2 phantoms "
                f"{phantom:.4f} ({time.perf_counter() - t0:.0f} s)")
            if score > best["score"]:
                best = {"score": score, "state": copy.deepcopy(net.state_dict()), "iteration": it, "synth": synth,
                        "phantom": phantom}
                _save(out, cfg, best, provenance, it, t0, history)
    if "state" not in best:
        best = {"score": 0.0, "state": copy.deepcopy(net.state_dict()), "iteration": it, "synth": None,
                "phantom": None}
    return _save(out, cfg, best, provenance, it, t0, history)


def _save(out: Path, cfg: Any, best: dict[str, Any], start: Any, it: int, t0: float, history: list) -> dict[str, Any]:
    from pipeline.workflow.calf_synthseg import save_best_bundle

    return save_best_bundle(out, cfg, best, start, it, t0, history,
                            {"random_contrast": best["synth"], "fixed_t2_phantoms": best["phantom"]},
                            {"synthseg_augmentation": AUGMENTATION})


def _seed_range(text: str) -> range:
    a, _, b = text.partition("-")
    return range(int(a), int(b or a) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.workflow.spine_synthseg", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bank", help="render the tissue-map bank")
    b.add_argument("--seeds", default="0-63")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--sagittal", type=int, default=6, help="sagittal slices per phantom")
    b.add_argument("--axial", type=int, default=2, help="axial slices per phantom")
    b.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("train", help="fine-tune a spine network on random-contrast and fixed-T2 phantom samples")
    t.add_argument("--bank", type=Path, nargs="+", required=True, help="one or more bank folders")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, default=45.0)
    t.add_argument("--iterations", type=int, default=6000)
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--init", default="spine_t2_unet")
    t.add_argument("--init-member", type=int, default=None, help="network of an ensemble bundle to start from")
    t.add_argument("--version", default="2.0.0")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the batches and augmentation (a continuation stage takes a new one)")
    t.add_argument("--patch", type=int, default=176)
    t.add_argument("--validate-every", type=int, default=200)
    t.add_argument("--synth-share", type=float, default=0.5, help="share of each batch drawn from the bank")
    t.add_argument("--sac-fraction", type=float, default=0.5, help="share of items centred on the dural sac")
    t.add_argument("--phantom-seeds", default="0-39", help="fixed-T2 phantoms of the other part of each batch")
    t.add_argument("--val-seeds", default="136-139", help="fixed-T2 validation phantoms")
    t.add_argument("--cache", type=Path, default=None, help="folder keeping the prepared phantom slices")
    args = p.parse_args(argv)
    if args.cmd == "bank":
        paths = build_bank(_seed_range(args.seeds), args.out, args.sagittal, args.axial, args.workers)
        print(f"{len(paths)} subjects in {args.out}")
    else:
        train_spine_synthseg(args.bank, args.out, minutes=args.minutes, max_iterations=args.iterations,
                             batch_size=args.batch, patch=(args.patch, args.patch), learning_rate=args.lr,
                             seed=args.seed, threads=args.threads, init=args.init,
                             init_member=args.init_member, version=args.version, validate_every=args.validate_every,
                             synth_share=args.synth_share, sac_fraction=args.sac_fraction,
                             phantom_seeds=_seed_range(args.phantom_seeds), val_seeds=_seed_range(args.val_seeds),
                             cache=args.cache, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
