"""The Snakemake workflow: a first run makes every study's outputs and the index; editing a threshold in a copy of
rules.yaml reruns only the rules and report jobs (and the index); adding a study runs only that study; an identical
copy of the configuration reruns nothing; a deleted output (a label map too) reruns its job and what follows; a changed model bundle
reruns segmentation and what follows; each stage's log holds its messages; the workflow config is validated."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import DEFAULT_CONFIG_DIR
from pipeline.workflow.snakemake import run_workflow, snakemake_command
from tests.report.study_fixture import small_study

STAGE_OUTPUTS = {"ingest": "series.json", "segment": "segment.json", "measure": "summary.json",
                 "rules": "findings.json", "report": "report.html"}


def _mtimes(out: Path, study: str) -> dict[str, int]:
    return {stage: (out / study / f).stat().st_mtime_ns for stage, f in STAGE_OUTPUTS.items()}


def _jobs_in_last_log(out: Path) -> list[str]:
    log = sorted((out / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    return [r for r in re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M) if r != "all"]


def test_command_defaults_to_one_core_unless_given():
    assert "--cores" in snakemake_command(Path("r"), Path("o"))
    cmd = snakemake_command(Path("r"), Path("o"), ["--profile", "p"])
    assert cmd.count("--cores") == 0


def test_threshold_edit_reruns_only_rules_and_report(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    monkeypatch.setenv("LEGMRI_CONFIG_DIR", str(cfg))
    root, out = tmp_path / "studies", tmp_path / "out"
    small_study(root / "knee_a", 1)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert (out / "index.html").exists() and (out / "knee_a" / "report.html").exists()
    assert (out / "logs" / "knee_a" / "segment.log").exists()
    before = _mtimes(out, "knee_a")

    rules_yaml = cfg / "rules.yaml"
    text = rules_yaml.read_text()
    edited = re.sub(r"(min_score:\s*)([0-9.]+)", lambda m: f"{m.group(1)}{float(m.group(2)) + 0.5}", text, count=1)
    assert edited != text, "rules.yaml has no min_score threshold to edit"
    rules_yaml.write_text(edited)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert sorted(_jobs_in_last_log(out)) == ["cohort", "report", "rules"]
    after = _mtimes(out, "knee_a")
    for stage in ("ingest", "segment", "measure"):
        assert after[stage] == before[stage], stage
    for stage in ("rules", "report"):
        assert after[stage] > before[stage], stage

    # a new study runs alone (plus the index); the first study's outputs are untouched
    small_study(root / "knee_b", 2)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert sorted(_jobs_in_last_log(out)) == ["cohort", "ingest", "measure", "report", "rules", "segment"]
    assert _mtimes(out, "knee_a") == after
    assert 'href="./knee_b/report.html"' in (out / "index.html").read_text()


def test_cli_passes_arguments_after_double_dash_to_snakemake(tmp_path: Path):
    from pipeline.cli import main

    root, out = tmp_path / "studies", tmp_path / "out"
    small_study(root / "knee_a", 1)
    assert main(["workflow", str(root), "--out", str(out), "--", "--cores", "1", "--dry-run"]) == 0
    assert not (out / "knee_a" / "series.json").exists()  # a dry run plans the jobs and runs none


def _planned(root: Path, out: Path, env: dict[str, str]) -> list[str]:
    """The jobs a dry run of the workflow would run (rule names, sorted; 'all' left out)."""
    res = subprocess.run(snakemake_command(root, out, ["--cores", "2", "--dry-run"]), env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return []
    table = text.split("Job stats:")[1].split("total")[0]
    return sorted(r for r, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)
                  for _ in range(int(n)) if r != "all")


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One executed workflow over one small study, with its own copy of the configuration whose calf bundle is a
    copy of the shipped one (so that the tests may change them)."""
    from pipeline.segment.paths import resolve

    base = tmp_path_factory.mktemp("wf")
    cfg, bundle = base / "configs", base / "calf_bundle"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    default = yaml.safe_load((cfg / "default.yaml").read_text())
    shutil.copytree(resolve(default["segment"]["calf_bundle"]), bundle)
    text = (cfg / "default.yaml").read_text()
    (cfg / "default.yaml").write_text(text.replace(f"calf_bundle: {default['segment']['calf_bundle']}",
                                                   f"calf_bundle: {bundle}", 1))
    assert yaml.safe_load((cfg / "default.yaml").read_text())["segment"]["calf_bundle"] == str(bundle)
    env = {**os.environ, "LEGMRI_CONFIG_DIR": str(cfg)}
    root, out = base / "studies", base / "out"
    small_study(root / "knee_a", 1)
    out.mkdir()
    assert subprocess.run(snakemake_command(root, out, ["--cores", "2"]), env=env).returncode == 0
    return {"root": root, "out": out, "cfg": cfg, "bundle": bundle, "env": env}


def test_identical_configuration_copy_reruns_nothing(done, tmp_path):
    assert _planned(done["root"], done["out"], done["env"]) == []
    copy = tmp_path / "configs"
    shutil.copytree(done["cfg"], copy)
    assert _planned(done["root"], done["out"], {**done["env"], "LEGMRI_CONFIG_DIR": str(copy)}) == []


def test_a_deleted_output_reruns_its_job_and_what_follows(done):
    for name, jobs in (("summary.json", ["cohort", "measure", "report", "rules"]),
                       ("segment.json", ["cohort", "measure", "report", "rules", "segment"])):
        path = done["out"] / "knee_a" / name
        kept = path.read_bytes()
        stat = path.stat()
        path.unlink()
        try:
            assert _planned(done["root"], done["out"], done["env"]) == jobs, name
        finally:
            path.write_bytes(kept)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _planned(done["root"], done["out"], done["env"]) == []


def test_a_deleted_label_map_reruns_the_segmentation_and_what_follows(done):
    """The knee study's segmentation wrote no map, so the record of one is added (with the record's time kept) and
    the map is absent, as after deleting it: its study is segmented again, then measured, ruled and reported."""
    import json

    record = done["out"] / "knee_a" / "segment.json"
    kept, stat = record.read_bytes(), record.stat()
    data = json.loads(kept)
    data["files"] = [*data.get("files", []), "calf/labels.nii.gz"]
    record.write_text(json.dumps(data))
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        assert _planned(done["root"], done["out"], done["env"]) == ["cohort", "measure", "report", "resegment_knee_a",
                                                                    "rules"]
    finally:
        record.write_bytes(kept)
        os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _planned(done["root"], done["out"], done["env"]) == []


def test_a_changed_model_bundle_reruns_segmentation_and_what_follows(done):
    weights = done["bundle"] / "model.safetensors"
    stat = weights.stat()
    os.utime(weights)  # now: as if retrained and copied in
    try:
        assert _planned(done["root"], done["out"], done["env"]) == ["cohort", "measure", "report", "rules", "segment"]
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_stage_logs_hold_the_stage_messages_and_benchmarks_exist(done):
    logs = done["out"] / "logs" / "knee_a"
    for stage in STAGE_OUTPUTS:
        assert (logs / f"{stage}.log").read_text().strip(), stage
        assert (logs / f"{stage}.benchmark.tsv").read_text().startswith("s\t"), stage
    assert "segmented" in (logs / "segment.log").read_text()


def test_an_invalid_workflow_option_is_refused(done, tmp_path):
    res = subprocess.run(snakemake_command(done["root"], tmp_path / "o", ["--dry-run", "--config", "device=gpu0"]),
                         env=done["env"], capture_output=True, text=True)
    assert res.returncode != 0 and "device" in res.stdout + res.stderr


def test_snakemake_report_of_the_run(done, tmp_path):
    res = subprocess.run(snakemake_command(done["root"], done["out"], ["--report", str(tmp_path / "wf.html")]),
                         env=done["env"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "wf.html").stat().st_size > 10_000
