"""The ``legmri`` command line: a thin layer over the stage functions in :mod:`pipeline.workflow`.

Exit codes: 0 ok; 2 usage; 3 bad input (the message names the file and the fix); 4 internal error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.core import interrupt
from pipeline.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LegMRIError

log = logging.getLogger("legmri")

EXAMPLES = {
    "inspect": "legmri inspect sample_data/nmh_case",
    "ingest": "legmri ingest sample_data/nmh_case --out out/nmh_case",
    "segment": "legmri segment out/nmh_case --device cpu",
    "measure": "legmri measure out/nmh_case",
    "rules": "legmri rules out/nmh_case --clinical sample_data/nmh_case/clinical.yaml",
    "report": "legmri report out/nmh_case",
    "run": "legmri run sample_data/nmh_case --out out/nmh_case",
    "batch": "legmri batch sample_data --out out -j 2",
    "synth": "legmri synth --case nmh --seed 7 --out /tmp/phantoms/nmh_7",
    "train": "legmri train calf --synthetic 64 --out weights/calf_dixon_unet",
    "ensemble": "legmri ensemble /tmp/spine_a /tmp/spine_b --out weights/spine_t2_unet --bundle-version 1.5.0",
    "evaluate": "legmri evaluate calf --seeds 100000-100019 --out eval/calf",
    "workflow": "legmri workflow sample_data --out out -- --cores 2",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the usage code 2 (its default) but prints a one-line hint as well."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for examples.\n")


def _verbosity_options() -> argparse.ArgumentParser:
    """-v / -q, accepted after any subcommand as well as before it."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                   help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    return p


def _sub(subs: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_verbosity_options()])


def build_parser() -> argparse.ArgumentParser:
    """The ``legmri`` argument parser: global options and one subparser per command (see :data:`EXAMPLES`)."""
    p = _Parser(prog="legmri", description="Leg and lumbar-spine MRI measurements and diagnostic summary.",
                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"legmri {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subs = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_stage_commands(subs)
    _add_study_commands(subs)
    _add_model_commands(subs)
    return p


def _add_stage_commands(subs: argparse._SubParsersAction) -> None:
    """The commands of one stage over one study: inspect, ingest, segment, measure, rules, report."""
    s = _sub(subs, "inspect", "List the series of a study with their role, plane, shape and spacing.")
    s.add_argument("study", type=Path, help="study folder (DICOM files, or NIfTI files with study.yaml)")
    s.add_argument("--json", action="store_true", help="one JSON list of series (for scripts) instead of the table")

    s = _sub(subs, "ingest", "Find and classify every series; write series.json and volumes/<role>.nii.gz.")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, required=True, help="output folder of this study")
    s.add_argument("--show-phi", action="store_true",
                   help="keep patient name, ID, birth date and study dates in series.json (left out by default)")

    s = _sub(subs, "segment", "Segment calf muscles (and lumbar spine) from OUT/volumes; write label maps.")
    s.add_argument("out", type=Path, help="output folder written by 'legmri ingest'")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    s.add_argument("--anchor-level", metavar="LEVEL",
                   help="name the lumbar levels from one vertebra: L1 .. L5 (the lowest vertebral body found) or "
                        "vertebra_N=L1 .. L5 (the N-th body from the bottom, as numbered on the sagittal picture); "
                        "overrides spine_anchor_level of study.yaml")

    s = _sub(subs, "measure", "Measure calf muscles and lumbar canal; write measurements and summary.json.")
    s.add_argument("out", type=Path)

    s = _sub(subs, "rules", "Apply the diagnostic rules to summary.json and clinical findings; write findings.json.")
    s.add_argument("out", type=Path)
    s.add_argument("--clinical", type=Path, help="clinical.yaml (default: the one in the study folder, if any)")
    s.add_argument("--rules", type=Path, help="rules file (default: configs/rules.yaml)")

    s = _sub(subs, "report", "Write QA overlays, report.html, DICOM SEG and SR for a study.")
    s.add_argument("out", type=Path)
    s.add_argument("--show-phi", action="store_true",
                   help="burn patient name and ID into the images (read from the source DICOM headers)")
    s.add_argument("--deidentify", action="store_true",
                   help="de-identify the DICOM SEG and SR (DICOM PS3.15 basic profile, UIDs retained)")


def _add_study_commands(subs: argparse._SubParsersAction) -> None:
    """The commands over whole studies: run, batch, workflow, synth."""
    s = _sub(subs, "run", "Run all stages on one study in one process.")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--clinical", type=Path)
    s.add_argument("--device", default="cpu")
    s.add_argument("--show-phi", action="store_true")
    s.add_argument("--deidentify", action="store_true",
                   help="de-identify the DICOM SEG and SR (DICOM PS3.15 basic profile, UIDs retained)")
    s.add_argument("--anchor-level", metavar="LEVEL",
                   help="name the lumbar levels from one vertebra: L1 .. L5 (the lowest vertebral body found) or "
                        "vertebra_N=L1 .. L5 (the N-th body from the bottom, as numbered on the sagittal picture); "
                        "overrides spine_anchor_level of study.yaml")

    s = _sub(subs, "batch", "Run every study under ROOT; a failed study is reported and the others go on.")
    s.add_argument("root", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    s.add_argument("--force", action="store_true", help="rerun studies whose outputs are up to date")
    s.add_argument("--device", default="cpu")

    s = _sub(subs, "workflow", "Run the Snakemake workflow over every study under ROOT (extra args go to snakemake).")
    s.add_argument("root", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("snakemake_args", nargs="*", help="arguments passed to snakemake, after --")

    s = _sub(subs, "synth", "Write a synthetic (phantom) study with exact ground truth.")
    s.add_argument("--case", required=True,
                   choices=["nmh", "control", "myopathic", "random", "atlas", "thigh", "foot", "empty", "noise"],
                   help="atlas: the independent evaluation calf phantom (never used in training); thigh, foot, "
                        "empty, noise: inputs that are not calves, given as calf images (quality-control checks)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--format", choices=["dicom", "nifti"], default="dicom")
    s.add_argument("--vendor", choices=["siemens", "philips", "ge"], help="Dixon naming style (default: by seed)")


def _add_model_commands(subs: argparse._SubParsersAction) -> None:
    """The commands that make and check segmentation bundles: train, ensemble, evaluate."""
    s = _sub(subs, "train", "Train a segmentation bundle on phantoms or on labelled data (MSD/nnU-Net layout).")
    s.add_argument("anatomy", choices=["calf", "spine"])
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with imagesTr/, labelsTr/ and dataset.json")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N phantom studies")
    s.add_argument("--out", type=Path, required=True, help="bundle folder to write, e.g. weights/calf_dixon_unet")
    s.add_argument("--epochs", type=int, help="training epochs (default from configs/default.yaml)")
    s.add_argument("--init", metavar="BUNDLE", help="start from this bundle's weights (fine-tuning), e.g. "
                                                    "calf_dixon_unet; same labels and network required")
    s.add_argument("--init-member", type=int, metavar="K", help="with --init of an ensemble bundle: start from its "
                                                                 "K-th network (0-based)")
    s.add_argument("--learning-rate", type=float, help="peak learning rate (default from configs/default.yaml)")
    s.add_argument("--max-minutes", type=float, help="wall-time limit (default from configs/default.yaml)")
    s.add_argument("--bundle-version", default="1.0.0", help="version written into metadata.json")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")

    s = _sub(subs, "ensemble", "Join separately trained bundles of one task into one bundle that averages their "
                               "probabilities.")
    s.add_argument("members", nargs="+", metavar="BUNDLE", help="two or more single-network bundles (folders or names)")
    s.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    s.add_argument("--bundle-version", required=True, help="version written into metadata.json")
    s.add_argument("--mirror-axes", type=int, nargs="*", default=[], choices=[0, 1],
                   help="test-time mirroring of the ensemble (0 = rows, 1 = columns of a slice); default none")

    s = _sub(subs, "evaluate", "Evaluate a bundle on fresh phantoms: Dice per structure, side swaps, measures.")
    s.add_argument("anatomy", choices=["calf", "spine"])
    s.add_argument("--seeds", required=True,
                   help="seeds >= 100000 (never used in training): a range 100000-100019 or a comma list")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--generator", choices=["project", "atlas"], default="project",
                   help="phantoms of the training generator (project) or of the independent atlas generator, "
                        "never trained on (any seeds; calf and spine)")
    s.add_argument("--contrasts", help="calf input contrasts, e.g. dixon,inphase,outphase,water,anatomical")
    s.add_argument("--bundle", help="bundle name or folder (default: the configured one)")
    s.add_argument("--qc", action="store_true",
                   help="also run the segmentation QC and set its verdicts against the truth (calf: per structure; "
                        "spine: per level)")
    s.add_argument("--axial-only", action="store_true",
                   help="spine: leave out the phantoms' sagittal image and measure the discs of their axial stacks "
                        "alone (the path of a study without a sagittal T2)")


def _inspect(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.inspect(a.study, as_json=a.json)


def _ingest(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.ingest(a.study, a.out, show_phi=a.show_phi)


def _segment(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.segment(a.out, device=a.device, anchor_level=a.anchor_level)


def _measure(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.measure(a.out)


def _rules(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.rules(a.out, clinical=a.clinical, rules_path=a.rules)


def _report(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.report(a.out, show_phi=a.show_phi, deidentify=a.deidentify)


def _run(a: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    return stages.run(a.study, a.out, clinical=a.clinical, device=a.device, show_phi=a.show_phi,
                      deidentify=a.deidentify, anchor_level=a.anchor_level)


def _batch(a: argparse.Namespace) -> int:
    from pipeline.workflow.batch import run_batch

    return run_batch(a.root, a.out, jobs=a.jobs, force=a.force, device=a.device)


def _synth(a: argparse.Namespace) -> int:
    if a.case == "atlas":
        from pipeline.synth.calf_atlas import write_atlas_study

        write_atlas_study(a.seed, a.out, fmt=a.format)
    elif a.case in ("thigh", "foot", "empty", "noise"):
        from pipeline.synth.not_calf import write_not_calf_study

        write_not_calf_study(a.case, a.seed, a.out, fmt=a.format)
    else:
        from pipeline.synth import write_case

        write_case(a.case, seed=a.seed, out=a.out, fmt=a.format, vendor=a.vendor)
    print(f"wrote {a.case} phantom (seed {a.seed}) to {a.out}")
    return EXIT_OK


def _train(a: argparse.Namespace) -> int:
    from pipeline.workflow.training import train

    return train(a.anatomy, out=a.out, data=a.data, synthetic=a.synthetic, epochs=a.epochs, seed=a.seed,
                 device=a.device, overrides={"init_from": a.init, "init_member": a.init_member,
                                             "learning_rate": a.learning_rate, "max_minutes": a.max_minutes,
                                             "version": a.bundle_version})


def _ensemble(a: argparse.Namespace) -> int:
    from pipeline.segment.bundle import write_ensemble

    out = write_ensemble(a.members, a.out, a.bundle_version, tuple(a.mirror_axes))
    print(f"wrote the ensemble of {len(a.members)} bundles to {out}")
    return EXIT_OK


def _evaluate(a: argparse.Namespace) -> int:
    from pipeline.workflow.evaluation import evaluate

    return evaluate(a.anatomy, seeds=a.seeds, out=a.out, device=a.device, generator=a.generator,
                    contrasts=a.contrasts, bundle=a.bundle, qc=a.qc, axial_only=a.axial_only)


def _workflow(a: argparse.Namespace) -> int:
    from pipeline.workflow.snakemake import run_workflow

    return run_workflow(a.root, a.out, [x for x in a.snakemake_args if x != "--"])


#: subcommand -> handler (each a few lines over :mod:`pipeline.workflow`); the keys are those of :data:`EXAMPLES`
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "inspect": _inspect, "ingest": _ingest, "segment": _segment, "measure": _measure, "rules": _rules,
    "report": _report, "run": _run, "batch": _batch, "synth": _synth, "train": _train, "ensemble": _ensemble,
    "evaluate": _evaluate, "workflow": _workflow,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``legmri`` console script; returns the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv and "workflow" in argv[:argv.index("--")] else len(argv)
    args = parser.parse_args(argv[:cut])  # `legmri workflow ROOT --out OUT -- SNAKEMAKE ARGS`
    if args.command == "workflow":
        args.snakemake_args = [*args.snakemake_args, *argv[cut + 1:]]
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when logging was configured before (an embedding program, tests)
    try:
        with interrupt.watching():
            code = HANDLERS[args.command](args)
            interrupt.check()  # a Ctrl-C that some library swallowed
        return code
    except LegMRIError as exc:
        print(f"legmri {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("legmri: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # an unexpected failure is a bug: say so, with the traceback
        traceback.print_exc()
        print(f"legmri {args.command}: internal error (a bug in legmri; please report it with the traceback above).",
              file=sys.stderr)
        return EXIT_INTERNAL


def console() -> None:
    """The ``legmri`` console script: the process exits with :func:`main`'s code.

    An interrupted run exits at once (``os._exit``, after flushing the log and the standard streams, every output
    already cleaned up by the stages' context managers). Otherwise CPython 3.11 was seen to kill the process with
    SIGINT on its way out when the Ctrl-C landed inside a library import (in ``exec()``/``eval()`` of scipy's
    array-API shim and of ``namedtuple``, or in compiling a module), although :func:`main` had caught it: the shell
    or the batch runner saw death by signal instead of exit code 130.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
