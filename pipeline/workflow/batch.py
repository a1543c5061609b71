"""Batch runs: every study folder under ROOT through all stages, one output folder per study.

A study folder holds DICOM files (directly or below it) or a ``study.yaml``. Studies run in ``jobs`` worker
processes; each worker keeps its process-wide bundle cache (:func:`pipeline.workflow.stages.bundle_cache`), so each
model loads once per worker.
A failing study writes ``OUT/<study>/error.log`` and the others go on; the exit code is non-zero and names the
failed studies. A study whose inputs and configuration are unchanged since its last complete run is skipped unless
``force``. ``index.html`` and ``cohort.csv`` are written at the output root.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pipeline
from pipeline.core.atomic import write_text
from pipeline.core.config import config_dir, load_config
from pipeline.core.errors import EXIT_BAD_INPUT, EXIT_OK, BadInputError, LegMRIError
from pipeline.core.layout import BatchDir, StudyDir
from pipeline.core.provenance import load_provenance, update_provenance
from pipeline.io.nifti import clear_cache
from pipeline.segment.paths import configured_bundle_files
from pipeline.workflow import stages

log = logging.getLogger(__name__)
NOT_STUDIES = {"qa", "__pycache__"}


def _is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() in (".dcm", ".ima"):
        return True
    if p.suffix:
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _has_dicom(folder: Path) -> bool:
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if _is_dicom_file(Path(dirpath) / f):
                return True
    return False


def find_studies(root: Path) -> list[Path]:
    """Study folders under ``root``: ``root`` itself when it is a study, else each child folder that holds a
    ``study.yaml`` or DICOM files (folders such as ``qa/`` and files such as README.md are not studies)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError("the batch root is not a folder.", path=root, fix="give a folder of study folders.")
    if (root / "study.yaml").exists():
        return [root]
    studies = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name not in NOT_STUDIES
               and not d.name.startswith(".") and ((d / "study.yaml").exists() or _has_dicom(d))]
    if not studies and _has_dicom(root):
        return [root]
    return studies


def not_studies(root: Path, studies: list[Path]) -> list[dict[str, str]]:
    """Every entry of ``root`` that is not one of ``studies``, with why it was not run (for the batch's listing)."""
    root = Path(root)
    if studies == [root]:
        return []
    chosen = set(studies)
    out = []
    for d in sorted(root.iterdir()):
        if d in chosen:
            continue
        reason = ("hidden" if d.name.startswith(".") else "a file, not a study folder" if not d.is_dir()
                  else "a folder legmri writes (not a study)" if d.name in NOT_STUDIES
                  else "holds neither DICOM files nor a study.yaml")
        out.append({"name": d.name, "status": "not run", "error": reason})
    return out


def input_fingerprint(study: Path) -> str:
    """sha256 over the relative path, size and mtime of every file of the study, the configuration files, the
    bundles' metadata and the legmri version (so an edited threshold, a retrained model or an upgrade reruns the
    study); recorded under ``batch`` in provenance.json."""
    h = hashlib.sha256(f"legmri {pipeline.__version__}\n".encode())
    for p in sorted(Path(study).rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(study)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for p in sorted(config_dir().glob("*.yaml")):
        h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
    for path in configured_bundle_files():  # metadata.json carries the sha256 its weights are checked against
        if path.name == "metadata.json":
            h.update(path.read_bytes())
    return h.hexdigest()


def is_up_to_date(study: Path, out: Path) -> bool:
    """True when ``out`` holds a complete run (report.html) made from the same inputs and configuration."""
    folder = StudyDir(out)
    if not folder.provenance.exists() or not folder.report_html.exists():
        return False
    try:
        recorded = load_provenance(out).get("batch", {})
    except ValueError:
        return False
    return recorded.get("fingerprint") == input_fingerprint(study) and recorded.get("status") == "ok"


def _init_worker(level: int) -> None:
    """A batch worker process: its log level, one OpenMP thread, the bundle cache, and no second process for the
    DICOM exports (the workers already use the cores)."""
    from pipeline.workflow.report import allow_export_process

    logging.basicConfig(level=level)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    allow_export_process(False)
    stages.bundle_cache()


def run_one(study: str, out: str, device: str) -> dict[str, Any]:
    """Run all stages of one study; never raises: returns {"name", "status", "error"}."""
    study_p, out_p = Path(study), Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    StudyDir(out_p).error_log.unlink(missing_ok=True)
    fingerprint = input_fingerprint(study_p)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            stages.run(study_p, out_p, device=device, models=stages.bundle_cache())
    except Exception as exc:  # a failed study is reported, the batch goes on
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kind = "bad input" if isinstance(exc, LegMRIError) else "internal error"
        write_text(StudyDir(out_p).error_log, f"{study_p}: {kind}: {exc}\n\n{traceback.format_exc()}")
        update_provenance(out_p, batch={"fingerprint": fingerprint, "status": "failed", "error": msg})
        return {"name": out_p.name, "status": "failed", "error": f"{kind}: {msg}"}
    finally:
        clear_cache()  # a worker keeps no volume of a finished study in memory
    update_provenance(out_p, batch={"fingerprint": fingerprint, "status": "ok"})
    return {"name": out_p.name, "status": "ok"}


def _progress(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]legmri batch"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.description}"), transient=False, disable=not sys.stderr.isatty())


def run_batch(root: Path, out: Path, jobs: int = 1, force: bool = False, device: str = "cpu") -> int:
    """Run every study under ``root`` into ``out/<study name>``; returns 0, or 3 when any study failed."""
    from pipeline.report.html import write_cohort

    root, out = Path(root), Path(out)
    studies = find_studies(root)
    if not studies:
        raise BadInputError("no study folder (DICOM files or study.yaml) found.", path=root,
                            fix="point 'legmri batch' at a folder whose sub-folders are studies.")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for s in studies:
        o = out / s.name
        if not force and is_up_to_date(s, o):
            results[s.name] = {"name": s.name, "status": "up to date"}
        else:
            todo.append((s, o))
    with _progress(len(studies)) as bar:
        task = bar.add_task("", total=len(studies), completed=len(studies) - len(todo))
        if jobs <= 1 or len(todo) <= 1:
            for s, o in todo:
                bar.update(task, description=s.name)
                results[s.name] = run_one(str(s), str(o), device)
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                     initargs=(logging.getLogger().level,)) as pool:
                futures = {pool.submit(run_one, str(s), str(o), device): s for s, o in todo}
                for fut in as_completed(futures):
                    s = futures[fut]
                    try:
                        results[s.name] = fut.result()
                    except Exception as exc:  # the worker process itself died
                        write_text(BatchDir(out).study(s.name).error_log, f"{s}: worker failed: {exc}\n")
                        results[s.name] = {"name": s.name, "status": "failed", "error": f"worker failed: {exc}"}
                    bar.update(task, description=s.name)
                    bar.advance(task)
    ordered = [results[s.name] for s in studies]
    passed_over = [r for r in not_studies(root, studies) if (root / r["name"]).resolve() != out.resolve()]
    index = write_cohort(out, [*ordered, *passed_over], load_config("report"))
    failed = [r for r in ordered if r["status"] == "failed"]
    done = sum(r["status"] == "ok" for r in ordered)
    skipped = sum(r["status"] == "up to date" for r in ordered)
    print(f"legmri batch: {done} run, {skipped} up to date, {len(failed)} failed, {len(passed_over)} not studies "
          f"-> {index}")
    for r in passed_over:
        print(f"  not run: {r['name']}: {r['error']}")
    if failed:
        for r in failed:
            print(f"  FAILED {r['name']}: {r['error']} (see {BatchDir(out).study(r['name']).error_log})",
                  file=sys.stderr)
        print(f"legmri batch: failed studies: {', '.join(r['name'] for r in failed)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
