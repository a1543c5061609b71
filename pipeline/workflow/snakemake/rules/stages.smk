# One rule per stage of one study; outputs follow the study output contract (DESIGN.md). Each calls the legmri CLI.

rule ingest:
    input:
        study_files,
        roles=str(CONFIGS / "series_roles.yaml"),
    output:
        str(STUDY.series_json),
    params:
        study=study_dir,
        out=lambda wc: str(BATCH.study(wc.study).root),
    log:
        str(BATCH.logs / "{study}" / "ingest.log"),
    shell:
        "{LEGMRI} ingest {params.study:q} --out {params.out:q} > {log:q} 2>&1"


rule segment:
    input:
        str(STUDY.series_json),
        labels=str(CONFIGS / "labels.yaml"),
    output:
        touch(str(STUDY.stage_marker("segment"))),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        device=DEVICE,
    resources:
        # On a SLURM cluster (profiles/slurm) this rule asks for one GPU; locally it is a plain resource.
        gpu=1 if DEVICE.startswith("cuda") else 0,
        mem_mb=8000,
    log:
        str(BATCH.logs / "{study}" / "segment.log"),
    shell:
        "{LEGMRI} segment {params.out:q} --device {params.device} > {log:q} 2>&1"


rule measure:
    input:
        str(STUDY.stage_marker("segment")),
        default=str(CONFIGS / "default.yaml"),
    output:
        str(STUDY.summary),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
    log:
        str(BATCH.logs / "{study}" / "measure.log"),
    shell:
        "{LEGMRI} measure {params.out:q} > {log:q} 2>&1"


rule rules:
    input:
        summary=str(STUDY.summary),
        rules=str(CONFIGS / "rules.yaml"),
        innervation=str(CONFIGS / "innervation.yaml"),
        clinical=clinical,
    output:
        str(STUDY.findings),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        clinical=lambda wc, input: "--clinical " + shlex.quote(input.clinical[0]) if input.clinical else "",
    log:
        str(BATCH.logs / "{study}" / "rules.log"),
    shell:
        "{LEGMRI} rules {params.out:q} --rules {input.rules:q} {params.clinical} > {log:q} 2>&1"


rule report:
    input:
        str(STUDY.findings),
        cfg=str(CONFIGS / "report.yaml"),
    output:
        str(STUDY.report_html),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
    log:
        str(BATCH.logs / "{study}" / "report.log"),
    shell:
        "{LEGMRI} report {params.out:q} > {log:q} 2>&1"
