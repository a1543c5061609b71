"""Contrast-randomised training of the calf bundle (the SynthSeg idea; Billot et al., Med Image Anal
2023;86:102789): the network never sees one fixed contrast. Label maps come from the calf phantom's anatomy
(:func:`pipeline.synth.calf.tissue_slice`); every training sample gets random intensities per tissue, partial volume,
resolution, bias, noise and artefacts (:mod:`pipeline.segment.synthseg`), so the bundle segments Dixon, in/opposed
phase and single anatomical contrasts (T1w, T2w, PDw, STIR, gradient echo) alike.

Two steps, each reproducible from seeds: ``bank`` renders the tissue maps of N random subjects at a few levels each
(kept on disk), ``train`` fits the network on random-contrast images drawn from the bank.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import atomic_path

#: Seeds of the anatomy bank's subjects are drawn as ``default_rng([seed, BANK_STREAM])`` so that they never equal
#: a phantom of :meth:`CalfSpec.random` drawn for evaluation.
BANK_STREAM = 7101
#: In-plane grid of the bundle (mm): the network's input slices and the items of the training samplers.
TARGET_SPACING_MM = 1.25


def bank_subject(seed: int, levels: int, spacing_mm: float, shape_variety: float = 0.0,
                 posterior_tibia: float = 0.0) -> dict[str, np.ndarray]:
    """Tissue maps of one random subject at ``levels`` random levels along the tibia (knee to ankle): arrays
    ``classes``, ``tissue`` (uint8) and ``ff`` (uint8, fat fraction x 250), each (levels, 3, X, Y) with three
    sub-slices across a random slice thickness (all equal for thin slices). ``shape_variety`` is the largest
    :attr:`~pipeline.synth.calf.CalfSpec.shape_variety` drawn (0: the bank of calf_unet 0.1-0.3),
    ``posterior_tibia`` the largest share of :data:`~pipeline.synth.calf.POSTERIOR_TIBIA_SHIFT` (0: none)."""
    from pipeline.synth.calf import random_anatomy_spec, tissue_slice

    rng = np.random.default_rng([seed, BANK_STREAM])
    spec = random_anatomy_spec(rng, shape_variety, posterior_tibia)
    ts = np.sort(rng.uniform(0.0, 0.97, levels))
    maps = []
    for t in ts:
        thick = float(rng.uniform(2.0, 9.0)) if rng.uniform() < 0.5 else 0.0
        subs = tissue_slice(spec, seed, float(t), spacing_mm, vessels=rng.uniform() < 0.8, thickness_mm=thick)
        subs = subs if len(subs) == 3 else subs * 3
        maps.append(subs)
    shape = np.max([s.classes.shape for sub in maps for s in sub], axis=0)
    out = {k: np.zeros((levels, 3, *shape), np.uint8) for k in ("classes", "tissue", "ff")}
    for i, sub in enumerate(maps):
        for j, s in enumerate(sub):
            w, h = s.classes.shape
            out["classes"][i, j, :w, :h] = s.classes
            out["tissue"][i, j, :w, :h] = s.tissue
            out["ff"][i, j, :w, :h] = np.round(np.clip(s.ff, 0, 1) * 250).astype(np.uint8)
    out["t"] = ts.astype(np.float32)
    out["spacing_mm"] = np.float32(spacing_mm)
    return out


def _write_subject(args: tuple[int, int, float, str, float, float]) -> str:
    seed, levels, spacing, folder, shape_variety, posterior_tibia = args
    path = Path(folder) / f"subject_{seed:06d}.npz"
    if not path.exists():
        write_subject(path, bank_subject(seed, levels, spacing, shape_variety, posterior_tibia))
    return str(path)


def build_bank(seeds: range, out: Path, levels: int = 3, spacing_mm: float = 0.625, workers: int = 2,
               shape_variety: float = 0.0, posterior_tibia: float = 0.0) -> list[str]:
    """Render the bank of ``seeds`` into ``out`` (one ``subject_NNNNNN.npz`` each; existing files are kept)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, levels, spacing_mm, str(out), shape_variety, posterior_tibia) for s in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_write_subject, jobs))


def load_bank_groups(folders: Path | list[Path]) -> list[list[dict[str, np.ndarray]]]:
    """The subjects of each of one or more bank folders (sorted by name within each), one list per folder."""
    groups = []
    for folder in [folders] if isinstance(folders, (str, Path)) else folders:
        files = sorted(Path(folder).glob("subject_*.npz"))
        if not files:
            raise FileNotFoundError(f"no subject_*.npz in {folder}; render the bank first (bank --out {folder})")
        groups.append([dict(np.load(f)) for f in files])
    return groups


def load_bank(folders: Path | list[Path]) -> list[dict[str, np.ndarray]]:
    """Every subject of one or more bank folders (sorted by name within each)."""
    return [s for group in load_bank_groups(folders) for s in group]


def subject_weights(group_sizes: list[int], shares: list[float]) -> np.ndarray:
    """Drawing probability of every subject of banks of ``group_sizes`` subjects (in :func:`load_bank` order)
    such that bank k is drawn with probability ``shares[k]`` (normalised to sum 1), uniformly within it.

    >>> subject_weights([3, 1], [0.75, 0.25]).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> subject_weights([2, 1], [1, 1]).tolist()
    [0.25, 0.25, 0.5]
    """
    if len(shares) != len(group_sizes):
        raise ValueError(f"{len(shares)} bank shares for {len(group_sizes)} banks")
    if any(s < 0 for s in shares) or not sum(shares) > 0 or min(group_sizes) < 1:
        raise ValueError("bank shares must be non-negative, not all zero, and every bank non-empty")
    total = float(sum(shares))
    return np.concatenate([np.full(n, s / total / n) for n, s in zip(group_sizes, shares)])


def write_subject(path: Path, subject: dict[str, np.ndarray]) -> Path:
    """Write one bank subject atomically (``subject_*.npz``, compressed), replacing an existing file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **subject)
    return path


def sampler_for(bank: list[dict[str, np.ndarray]], patch: tuple[int, int], target_mm: float, seed: int | list[int],
                prior: Any = None, weights: np.ndarray | None = None,
                real: list[tuple[np.ndarray, np.ndarray]] | None = None, real_share: float = 0.0):
    """A :class:`~pipeline.segment.synthseg.SynthSampler` over ``bank`` with the calf's tissue roles (and the
    :class:`~pipeline.segment.synthseg.ContrastPrior` ``prior``, default the module's), drawing the subjects with
    probabilities ``weights`` (:func:`subject_weights`; default uniform) and a share ``real_share`` of the items
    from the real annotated slices ``real``."""
    from pipeline.core.labels import registry
    from pipeline.segment.synthseg import SynthSampler
    from pipeline.synth.calf import MUSCLES, TISSUE_IDS

    reg = registry("calf")
    roles = {"background": TISSUE_IDS["background"], "muscle": TISSUE_IDS["muscle"],
             "fat": TISSUE_IDS["subcutaneous_fat"], "cortex": TISSUE_IDS["cortex"], "marrow": TISSUE_IDS["marrow"],
             "skin": TISSUE_IDS["skin"], "septa": TISSUE_IDS["fascia"]}
    return SynthSampler(bank, roles, [reg.class_id(m) for m in MUSCLES], len(reg.classes), patch,
                        float(bank[0]["spacing_mm"]), target_mm, seed, prior=prior, weights=weights, real=real,
                        real_share=real_share)


def _seeded_sampler(bank: list[dict[str, np.ndarray]], patch: tuple[int, int], target_mm: float, prior: Any,
                    weights: np.ndarray | None, real: list[tuple[np.ndarray, np.ndarray]] | None, real_share: float,
                    seed: list[int]) -> Any:
    """:func:`sampler_for` with the seed last (a worker's sampler, :class:`~pipeline.segment.synthseg.SynthStream`)."""
    return sampler_for(bank, patch, target_mm, seed, prior, weights, real, real_share)


def batch_source(bank: list[dict[str, np.ndarray]], patch: tuple[int, int], target_mm: float, seed: int,
                 batch_size: int, workers: int, prior: Any = None, weights: np.ndarray | None = None,
                 real: list[tuple[np.ndarray, np.ndarray]] | None = None, real_share: float = 0.0,
                 pin_memory: bool = False) -> Callable[[], tuple[Any, Any]]:
    """A function that returns the next training batch (images, classes). ``workers`` 0 draws every batch in this
    process from one sampler seeded ``seed`` (the stream of every calf_unet up to 0.5.0); ``workers`` > 0 draws them
    in that many processes (:class:`~pipeline.segment.synthseg.SynthStream`; worker w seeded ``[seed, w + 1]``), so
    that an accelerator is not left waiting for the CPU."""
    if workers <= 0:
        sampler = sampler_for(bank, patch, target_mm, seed, prior, weights, real, real_share)
        return lambda: sampler.batch(batch_size)
    from functools import partial

    from torch.utils.data import DataLoader

    from pipeline.segment.synthseg import SynthStream

    stream = SynthStream(partial(_seeded_sampler, bank, patch, target_mm, prior, weights, real, real_share),
                         batch_size, seed)
    batches = iter(DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4,
                              persistent_workers=True, pin_memory=pin_memory, multiprocessing_context="fork"))
    return lambda: next(batches)


def dixon_validation(seeds: range, target_mm: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validation slices from the project's Dixon phantoms (fast rendering), one contrast each in turn: in-phase,
    opposed-phase, water; the network input is that one image."""
    from pipeline.core.labels import registry
    from pipeline.segment.train import prepare_slices
    from pipeline.synth.calf import CalfSpec, generate_calf

    reg = registry("calf")
    out = []
    for k, seed in enumerate(seeds):
        ph = generate_calf(CalfSpec.random(np.random.default_rng(seed)), seed=seed, fast=True)
        role = ("calf_inphase", "calf_outphase", "calf_water")[k % 3]
        out.append(prepare_slices([ph.volume(role)], reg.class_map(ph.labels), "axial", (target_mm, target_mm),
                                  {"method": "joint_percentile", "percentile": 99.5}))
    return out


def single_channel_start(bundle: str) -> dict[str, Any]:
    """The weights of a (Dixon, two-input) calf bundle for a one-input network: the first layer's kernels summed
    over the input channels (water + fat = the in-phase image), every other tensor as it is."""
    from pipeline.segment.bundle import load_bundle

    start = load_bundle(bundle)
    state = {k: v.clone() for k, v in start.network.state_dict().items()}
    for k, v in state.items():
        if v.ndim == 4 and v.shape[1] == len(start.metadata["input_channels"]) and k.startswith("model.0."):
            state[k] = v.sum(dim=1, keepdim=True)
    return {"state": state, "provenance": start.provenance()}


def train_synthseg(bank_dir: Path, out: Path, *, minutes: float, max_iterations: int, batch_size: int = 12,
                   patch: tuple[int, int] = (192, 192), learning_rate: float = 1e-3, seed: int = 0, threads: int = 2,
                   init: str | None = "calf_dixon_unet", version: str = "2.0.0", validate_every: int = 100,
                   val_seeds: range = range(900, 903), log: Callable[[str], None] = print,
                   prior: Any = None, bank_shares: list[float] | None = None,
                   real: list[tuple[np.ndarray, np.ndarray]] | None = None, real_share: float = 0.0,
                   real_validation: list[tuple[np.ndarray, np.ndarray]] | None = None, device: str = "cpu",
                   workers: int = 0, mirror_axes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Train the one-input calf bundle on random-contrast samples of the bank (one or more folders, each drawn
    with probability ``bank_shares[k]`` when given, else every subject equally often); the checkpoint with the
    best mean Dice over random-contrast validation items (drawn like the training items) and Dixon phantoms (each
    contrast alone) is kept. ``real`` (annotated real slices with their own signal,
    :func:`pipeline.workflow.calf_reference.reference_images`) gives a share ``real_share`` of the training items
    and joins the checkpoint score as a third term (how well the network fits them); ``real_validation`` (other
    annotated slices, e.g. the other leg) is only logged, never used to choose the checkpoint. ``device`` runs the
    network there (``cuda`` on a GPU), ``workers`` > 0 draws the batches in that many processes
    (:func:`batch_source`). ``mirror_axes`` is the bundle's test-time mirroring (``metadata.json`` ``inference``):
    rows (0, left-right) by default, the one mirror the training items are drawn with (:func:`random_geometry`)."""
    import torch
    from monai.losses import DiceCELoss

    from pipeline.core.labels import registry
    from pipeline.segment.bundle import build_network
    from pipeline.segment.train import TrainConfig, dice_per_class, optimiser_step

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    reg = registry("calf")
    groups = load_bank_groups(bank_dir)
    bank = [subj for group in groups for subj in group]
    weights = subject_weights([len(g) for g in groups], bank_shares) if bank_shares is not None else None
    bank_record: dict[str, Any] = {"subjects": len(bank), "levels_per_subject": int(bank[0]["t"].size),
                                   "spacing_mm": float(bank[0]["spacing_mm"])}
    n_reference = sum("slice_index" in subj for subj in bank)
    if n_reference:  # subjects of pipeline.workflow.calf_reference (annotated real slices)
        bank_record["reference_subjects"] = n_reference
    if real:
        bank_record |= {"real_slices": len(real), "real_share": real_share}
    if bank_shares is not None:
        bank_record |= {"folder_subjects": [len(g) for g in groups],
                        "folder_shares": [round(float(x) / sum(bank_shares), 4) for x in bank_shares]}
    cfg = TrainConfig(name=Path(out).name, anatomy="calf", labels=list(reg.classes), input_channels=["image"],
                      patch=patch, batch_size=batch_size, max_iterations=max_iterations, max_minutes=minutes,
                      learning_rate=learning_rate, validate_every=validate_every, seed=seed, threads=threads,
                      version=version, init_from=init, device=device, target_spacing_mm=(TARGET_SPACING_MM, TARGET_SPACING_MM),
                      mirror_axes=tuple(mirror_axes),
                      training_data={"source": "contrast-randomised images (pipeline.segment.synthseg) drawn from "
                                               "tissue maps of calf phantoms (pipeline.synth.calf.tissue_slice, "
                                               "random_anatomy_spec)",
                                     "bank": bank_record, "sampler_workers": workers,
                                     "validation": f"32 random-contrast items (seed {seed + 99}) and Dixon phantoms "
                                                   f"seeds {val_seeds.start}-{val_seeds.stop - 1} (IP, OP, water)"})
    net = build_network({"network": cfg.network()})
    start = None
    if init:
        s = single_channel_start(init)
        net.load_state_dict(s["state"], strict=True)
        start = s["provenance"]
    dev = torch.device(device)
    net = net.to(dev)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    next_batch = batch_source(bank, patch, cfg.target_spacing_mm[0], seed, batch_size, workers, prior, weights, real,
                              real_share, pin_memory=dev.type == "cuda")
    val_sampler = sampler_for(bank, patch, cfg.target_spacing_mm[0], seed + 99, prior, weights)
    val_items = [val_sampler.batch(16) for _ in range(2)]
    val_dixon = dixon_validation(val_seeds, cfg.target_spacing_mm[0])
    n_classes = len(cfg.labels)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    t0 = time.perf_counter()
    best: dict[str, Any] = {"score": -1.0}
    history = []
    it = 0
    while it < max_iterations and time.perf_counter() - t0 < minutes * 60:
        x, y = next_batch()
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        progress = max(it / max_iterations, (time.perf_counter() - t0) / (minutes * 60))
        loss = optimiser_step(net, opt, loss_fn, x, y, progress, learning_rate)
        it += 1
        if it % validate_every == 0:
            synth = mean_dice(net, [(x_.numpy(), y_[:, 0].numpy()) for x_, y_ in val_items], n_classes,
                               dice_per_class)
            dixon = mean_dice(net, val_dixon, n_classes, dice_per_class)
            terms = [synth, dixon]
            entry = {"iteration": it, "loss": round(loss.item(), 4), "val_random_contrast_dice": round(synth, 4),
                     "val_dixon_phantom_dice": round(dixon, 4)}
            if real:
                terms.append(mean_dice(net, _cases(real), n_classes, dice_per_class))
                entry["real_training_slices_dice"] = round(terms[-1], 4)
            if real_validation:
                entry["real_held_out_slices_dice"] = round(mean_dice(net, _cases(real_validation), n_classes,
                                                                     dice_per_class), 4)
            score = float(np.mean(terms))
            history.append(entry)
            log(f"it {it} loss {loss.item():.3f} val Dice " + ", ".join(f"{k[4:] if k.startswith('val_') else k} {v}"
                                                                      for k, v in entry.items() if k.endswith("dice"))
                + f" ({time.perf_counter() - t0:.0f} s)")
            if score > best["score"]:
                best = {"score": score, "state": copy.deepcopy(net.state_dict()), "iteration": it,
                        "synth": synth, "dixon": dixon}
                _save(out, cfg, best, start, it, t0, history)
    if "state" not in best:
        best = {"score": 0.0, "state": copy.deepcopy(net.state_dict()), "iteration": it, "synth": None, "dixon": None}
    return _save(out, cfg, best, start, it, t0, history)


#: what the training images vary, as recorded in the bundle's metadata
AUGMENTATION = ("SynthSeg-style: random tissue intensities (uniform or MR-like prior; skin and muscle above a signal "
                "floor; intermuscular septa with the fat's signal in 60 % of samples, dark in 15 %), muscle/fat "
                "mixing by voxel FF, texture, slice-thickness partial volume, PSF 0.6-2.6 mm, ghosting, wrap-around, "
                "FOV cuts, affine (25 deg, 25 %, shear, left-right mirroring only), elastic, bias, gamma, Gibbs, "
                "Rician noise")


def _save(out: Path, cfg: Any, best: dict[str, Any], start: Any, it: int, t0: float, history: list) -> dict[str, Any]:
    return save_best_bundle(out, cfg, best, start, it, t0, history,
                            {"random_contrast": best["synth"], "dixon_phantoms": best["dixon"]},
                            {"augmentation": AUGMENTATION})


def save_best_bundle(out: Path, cfg: Any, best: dict[str, Any], start: Any, it: int, t0: float, history: list,
                     validation: dict[str, float | None], extra: dict[str, Any]) -> dict[str, Any]:
    """Write the best state of a run (``best["state"]``, its ``iteration``) as a bundle in ``out`` with its training
    record: the start, iterations, minutes since ``t0``, the validation history, the best checkpoint's
    ``validation`` Dice and ``extra`` fields; returns the record."""
    from pipeline.segment.train import write_bundle

    record = {"initialised_from": start, "iterations": it, "best_iteration": best["iteration"],
              "train_minutes": round((time.perf_counter() - t0) / 60, 1), "device": cfg.device,
              "threads": cfg.threads,
              "history": history, "validation_mean_dice": validation, **extra}
    write_bundle(Path(out), cfg, {k: v.detach().cpu().contiguous() for k, v in best["state"].items()}, record)
    return record


def _cases(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W), classes (H, W)) pairs as :func:`mean_dice` cases of one slice each."""
    return [(img[None, None].astype(np.float32), lab[None]) for img, lab in pairs]


def mean_dice(net: Any, cases: list[tuple[np.ndarray, np.ndarray]], n_classes: int, dice_fn: Any) -> float:
    """Mean foreground Dice of ``net`` over (images (S, C, H, W), classes (S, H, W)) cases, slices padded to 16."""
    import torch
    import torch.nn.functional as F

    net.eval()
    device = next(net.parameters()).device
    preds, truths = [], []
    with torch.inference_mode():
        for img, lab in cases:
            for s in range(0, len(img), 16):
                x = torch.from_numpy(np.ascontiguousarray(img[s:s + 16])).to(device)
                h, w = x.shape[-2:]
                x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16))
                preds.append(net(x)[..., :h, :w].argmax(1).cpu().numpy().ravel())
                truths.append(np.asarray(lab[s:s + 16]).ravel())
    net.train()
    d = [v for v in dice_fn(np.concatenate(preds), np.concatenate(truths), n_classes)[1:] if v is not None]
    return float(np.mean(d)) if d else 0.0


def _seed_range(text: str) -> range:
    a, _, b = text.partition("-")
    return range(int(a), int(b or a) + 1)


def _prior(fatty_septa: float | None, dark_septa: float | None, border_shift: float | None = None,
           border_shift_mm: list[float] | None = None) -> Any:
    """The contrast prior with the septa shares and the border shifts given on the command line (the module's
    defaults otherwise)."""
    from dataclasses import replace

    from pipeline.segment.synthseg import ContrastPrior

    prior = ContrastPrior()
    if fatty_septa is not None:
        prior = replace(prior, p_fatty_septa=fatty_septa)
    if dark_septa is not None:
        prior = replace(prior, p_dark_septa=dark_septa)
    if border_shift is not None:
        prior = replace(prior, p_border_shift=border_shift)
    if border_shift_mm is not None:
        prior = replace(prior, border_shift_mm=(float(border_shift_mm[0]), float(border_shift_mm[1])))
    return prior


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.workflow.calf_synthseg", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bank", help="render the anatomy bank")
    b.add_argument("--seeds", default="0-239")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--levels", type=int, default=3)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--shape-variety", type=float, default=0.0,
                   help="largest extra variety of muscle sizes and levels (CalfSpec.shape_variety; 0: none)")
    b.add_argument("--posterior-tibia", type=float, default=0.0,
                   help="largest share of the shift that puts the tibia at the medial fascia and the flexor "
                        "digitorum longus behind it (pipeline.synth.calf.POSTERIOR_TIBIA_SHIFT; 0: the template)")
    t = sub.add_parser("train", help="train the one-input calf bundle on random-contrast samples of the bank")
    t.add_argument("--bank", type=Path, nargs="+", required=True, help="one or more bank folders")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, default=60.0)
    t.add_argument("--iterations", type=int, default=3000)
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--init", default="calf_dixon_unet")
    t.add_argument("--version", default="2.0.0")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--device", default="cpu", help="where the network runs: cpu, or cuda on a GPU")
    t.add_argument("--workers", type=int, default=0,
                   help="processes that draw the training batches (0: this one, the stream of calf_unet <= 0.5.0)")
    t.add_argument("--mirror-axes", type=int, nargs="*", default=[0], choices=[0, 1],
                   help="test-time mirroring written into the bundle (0: left-right, the training's only mirror; "
                        "none: --mirror-axes with no value, as calf_unet <= 0.6.0)")
    t.add_argument("--patch", type=int, default=192)
    t.add_argument("--validate-every", type=int, default=100)
    t.add_argument("--fatty-septa", type=float, default=None,
                   help="share of samples whose septa take the fat's signal (default: ContrastPrior's)")
    t.add_argument("--dark-septa", type=float, default=None, help="share of samples with dark septa")
    t.add_argument("--border-shift", type=float, default=None,
                   help="share of samples in which borders between neighbouring muscles move, septa along "
                        "(synthseg.shift_borders; default: none)")
    t.add_argument("--border-shift-mm", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="range of the border shifts (mm; default: ContrastPrior's 1-8)")
    t.add_argument("--bank-shares", type=float, nargs="+", default=None,
                   help="probability of drawing from each --bank folder (one per folder; default: every subject "
                        "equally often)")
    t.add_argument("--reference-labels", type=Path, default=None,
                   help="a reference annotation of real calf slices (pipeline.workflow.calf_reference) whose images "
                        "join the training with their own signal")
    t.add_argument("--reference-images", type=Path, nargs="+", default=[],
                   help="the images on the annotation's grid, each used alone (e.g. every echo)")
    t.add_argument("--reference-sides", nargs="+", choices=["left", "right"], default=["left", "right"],
                   help="the annotated legs to train on")
    t.add_argument("--reference-share", type=float, default=0.15, help="share of the training items from them")
    t.add_argument("--reference-validation-sides", nargs="*", choices=["left", "right"], default=[],
                   help="annotated legs held out: their Dice is logged, never used to choose the checkpoint")
    r = sub.add_parser("reference-bank", help="bank subjects from a reference annotation of a real calf MRI "
                                              "(pipeline.workflow.calf_reference)")
    r.add_argument("--labels", type=Path, required=True, help="the annotation (side-less calf class ids)")
    r.add_argument("--images", type=Path, nargs="+", required=True,
                   help="the in-phase image, then optionally the opposed-phase one (on the annotation's grid)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--sides", nargs="+", choices=["left", "right"], default=["left", "right"],
                   help="the legs to take (patient's side)")
    r.add_argument("--spacing", type=float, default=0.625, help="the bank's grid spacing (mm)")
    args = p.parse_args(argv)
    if args.cmd == "bank":
        paths = build_bank(_seed_range(args.seeds), args.out, args.levels, workers=args.workers,
                           shape_variety=args.shape_variety, posterior_tibia=args.posterior_tibia)
        print(f"{len(paths)} subjects in {args.out}")
    elif args.cmd == "reference-bank":
        from pipeline.workflow.calf_reference import reference_bank_subjects

        subjects = reference_bank_subjects(args.labels, args.images, args.spacing, tuple(args.sides))
        if not subjects:
            raise SystemExit(f"no annotated slice on side(s) {args.sides} in {args.labels}")
        for subj in subjects:
            write_subject(args.out / f"subject_ref_{subj['side']}_{int(subj['slice_index']):03d}.npz", subj)
        print(f"{len(subjects)} subjects in {args.out}")
    else:
        if args.bank_shares is not None and len(args.bank_shares) != len(args.bank):
            p.error(f"--bank-shares needs one share per --bank folder ({len(args.bank)})")
        real, held_out = None, None
        if args.reference_labels is not None:
            from pipeline.workflow.calf_reference import reference_images

            real = reference_images(args.reference_labels, args.reference_images, TARGET_SPACING_MM,
                                    tuple(args.reference_sides))
            if args.reference_validation_sides:
                held_out = reference_images(args.reference_labels, args.reference_images, TARGET_SPACING_MM,
                                            tuple(args.reference_validation_sides))
        train_synthseg(args.bank, args.out, minutes=args.minutes, max_iterations=args.iterations,
                       batch_size=args.batch, patch=(args.patch, args.patch), learning_rate=args.lr, init=args.init or None, version=args.version,
                       threads=args.threads, validate_every=args.validate_every,
                       log=lambda m: print(m, flush=True), prior=_prior(args.fatty_septa, args.dark_septa, args.border_shift,
                                                                   args.border_shift_mm),
                       bank_shares=args.bank_shares, real=real, real_share=args.reference_share,
                       real_validation=held_out, device=args.device, workers=args.workers,
                       mirror_axes=tuple(args.mirror_axes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
