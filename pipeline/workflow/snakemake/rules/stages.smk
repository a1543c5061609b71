# One rule per stage of one study; outputs follow the study output contract (DESIGN.md). Each calls the legmri CLI
# with -v, so that its log holds the stage's messages; benchmark files hold each job's time and memory.

rule ingest:
    input:
        study_files,
    output:
        str(STUDY.series_json),
    params:
        study=study_dir,
        out=lambda wc: str(BATCH.study(wc.study).root),
        configs=configs_of("ingest"),
        version=VERSION,
    log:
        str(BATCH.logs / "{study}" / "ingest.log"),
    benchmark:
        str(BATCH.logs / "{study}" / "ingest.benchmark.tsv")
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{LEGMRI} -v ingest {params.study:q} --out {params.out:q} > {log:q} 2>&1"


rule segment:
    input:
        str(STUDY.series_json),
        bundles=BUNDLES,
    output:
        str(STUDY.segment_record),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        device=DEVICE,
        configs=configs_of("segment"),
        version=VERSION,
    log:
        str(BATCH.logs / "{study}" / "segment.log"),
    benchmark:
        str(BATCH.logs / "{study}" / "segment.benchmark.tsv")
    threads: THREADS
    resources:
        # one GPU per job with device=cuda (the SLURM executor asks for it; locally it limits concurrent jobs)
        gpu=1 if DEVICE.startswith("cuda") else 0,
        mem_mb=8000,
    shell:
        "LEGMRI_THREADS={threads} {LEGMRI} -v segment {params.out:q} --device {params.device} > {log:q} 2>&1"


for _study, _missing in STALE.items():

    rule:
        name:
            rule_name(_study)
        input:
            str(BATCH.study(_study).series_json),
            bundles=BUNDLES,
        output:
            _missing,
        params:
            out=str(BATCH.study(_study).root),
            device=DEVICE,
            configs=configs_of("segment"),
            version=VERSION,
        log:
            str(BATCH.logs / _study / "resegment.log"),
        threads: THREADS
        resources:
            gpu=1 if DEVICE.startswith("cuda") else 0,
            mem_mb=8000,
        shell:
            "LEGMRI_THREADS={threads} {LEGMRI} -v segment {params.out:q} --device {params.device} > {log:q} 2>&1"


rule measure:
    input:
        str(STUDY.segment_record),
        maps=lambda wc: LISTED.get(wc.study, []),
    output:
        str(STUDY.summary),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        configs=configs_of("measure"),
        version=VERSION,
    log:
        str(BATCH.logs / "{study}" / "measure.log"),
    benchmark:
        str(BATCH.logs / "{study}" / "measure.benchmark.tsv")
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{LEGMRI} -v measure {params.out:q} > {log:q} 2>&1"


rule rules:
    input:
        summary=str(STUDY.summary),
        clinical=clinical,
    output:
        str(STUDY.findings),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        clinical=lambda wc, input: "--clinical " + shlex.quote(input.clinical[0]) if input.clinical else "",
        configs=configs_of("rules"),
        version=VERSION,
    log:
        str(BATCH.logs / "{study}" / "rules.log"),
    benchmark:
        str(BATCH.logs / "{study}" / "rules.benchmark.tsv")
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "{LEGMRI} -v rules {params.out:q} {params.clinical} > {log:q} 2>&1"


rule report:
    input:
        str(STUDY.findings),
    output:
        str(STUDY.report_html),
    params:
        out=lambda wc: str(BATCH.study(wc.study).root),
        configs=configs_of("report"),
        version=VERSION,
    log:
        str(BATCH.logs / "{study}" / "report.log"),
    benchmark:
        str(BATCH.logs / "{study}" / "report.benchmark.tsv")
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{LEGMRI} -v report {params.out:q} > {log:q} 2>&1"
