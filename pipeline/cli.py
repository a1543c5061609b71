"""The ``legmri`` command line: a thin layer over the stage functions in :mod:`pipeline.workflow`.

Exit codes: 0 ok; 2 usage; 3 bad input (the message names the file and the fix); 4 internal error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.core.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, LegMRIError

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


def _sub(subs: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="legmri", description="Leg and lumbar-spine MRI measurements and diagnostic summary.",
                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"legmri {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subs = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    s = _sub(subs, "inspect", "List the series of a study with their role, plane, shape and spacing.")
    s.add_argument("study", type=Path, help="study folder (DICOM files, or NIfTI files with study.yaml)")

    s = _sub(subs, "ingest", "Find and classify every series; write series.json and volumes/<role>.nii.gz.")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, required=True, help="output folder of this study")

    s = _sub(subs, "segment", "Segment calf muscles (and lumbar spine) from OUT/volumes; write label maps.")
    s.add_argument("out", type=Path, help="output folder written by 'legmri ingest'")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")

    s = _sub(subs, "measure", "Measure calf muscles and lumbar canal; write measurements and summary.json.")
    s.add_argument("out", type=Path)

    s = _sub(subs, "rules", "Apply the diagnostic rules to summary.json and clinical findings; write findings.json.")
    s.add_argument("out", type=Path)
    s.add_argument("--clinical", type=Path, help="clinical.yaml (default: the one in the study folder, if any)")
    s.add_argument("--rules", type=Path, help="rules file (default: configs/rules.yaml)")

    s = _sub(subs, "report", "Write QA overlays, report.html, DICOM SEG and SR for a study.")
    s.add_argument("out", type=Path)
    s.add_argument("--show-phi", action="store_true", help="burn patient name and ID into the images")

    s = _sub(subs, "run", "Run all stages on one study in one process.")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--clinical", type=Path)
    s.add_argument("--device", default="cpu")
    s.add_argument("--show-phi", action="store_true")

    s = _sub(subs, "batch", "Run every study under ROOT; a failed study is reported and the others go on.")
    s.add_argument("root", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    s.add_argument("--force", action="store_true", help="rerun studies whose outputs are up to date")
    s.add_argument("--device", default="cpu")

    s = _sub(subs, "synth", "Write a synthetic (phantom) study with exact ground truth.")
    s.add_argument("--case", required=True, choices=["nmh", "control", "myopathic", "random"])
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--format", choices=["dicom", "nifti"], default="dicom")
    s.add_argument("--vendor", choices=["siemens", "philips", "ge"], help="Dixon naming style (default: by seed)")

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

    s = _sub(subs, "workflow", "Run the Snakemake workflow over every study under ROOT (extra args go to snakemake).")
    s.add_argument("root", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("snakemake_args", nargs="*", help="arguments passed to snakemake, after --")
    return p


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.workflow import stages

    cmd = args.command
    if cmd == "inspect":
        return stages.inspect(args.study)
    if cmd == "ingest":
        return stages.ingest(args.study, args.out)
    if cmd == "segment":
        return stages.segment(args.out, device=args.device)
    if cmd == "measure":
        return stages.measure(args.out)
    if cmd == "rules":
        return stages.rules(args.out, clinical=args.clinical, rules_path=args.rules)
    if cmd == "report":
        return stages.report(args.out, show_phi=args.show_phi)
    if cmd == "run":
        return stages.run(args.study, args.out, clinical=args.clinical, device=args.device, show_phi=args.show_phi)
    if cmd == "batch":
        from pipeline.workflow.batch import run_batch

        return run_batch(args.root, args.out, jobs=args.jobs, force=args.force, device=args.device)
    if cmd == "synth":
        from pipeline.synth import write_case

        write_case(args.case, seed=args.seed, out=args.out, fmt=args.format, vendor=args.vendor)
        print(f"wrote {args.case} phantom (seed {args.seed}) to {args.out}")
        return EXIT_OK
    if cmd == "train":
        from pipeline.workflow.train import train

        return train(args.anatomy, out=args.out, data=args.data, synthetic=args.synthetic, epochs=args.epochs,
                     seed=args.seed, device=args.device,
                     overrides={"init_from": args.init, "init_member": args.init_member,
                                "learning_rate": args.learning_rate,
                                "max_minutes": args.max_minutes, "version": args.bundle_version})
    if cmd == "ensemble":
        from pipeline.segment.bundle import write_ensemble

        out = write_ensemble(args.members, args.out, args.bundle_version, tuple(args.mirror_axes))
        print(f"wrote the ensemble of {len(args.members)} bundles to {out}")
        return EXIT_OK
    if cmd == "evaluate":
        from pipeline.workflow.evaluate import evaluate

        return evaluate(args.anatomy, seeds=args.seeds, out=args.out, device=args.device)
    if cmd == "workflow":
        from pipeline.workflow.snake import run_workflow

        extra = [a for a in args.snakemake_args if a != "--"]
        return run_workflow(args.root, args.out, extra)
    raise AssertionError(f"unhandled command {cmd}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``legmri`` console script; returns the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv and "workflow" in argv[:argv.index("--")] else len(argv)
    args = parser.parse_args(argv[:cut])  # `legmri workflow ROOT --out OUT -- SNAKEMAKE ARGS`
    if args.command == "workflow":
        args.snakemake_args = [*args.snakemake_args, *argv[cut + 1:]]
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except LegMRIError as exc:
        print(f"legmri {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("legmri: interrupted", file=sys.stderr)
        return 130
    except Exception:  # an unexpected failure is a bug: say so, with the traceback
        traceback.print_exc()
        print(f"legmri {args.command}: internal error (a bug in legmri; please report it with the traceback above).",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
