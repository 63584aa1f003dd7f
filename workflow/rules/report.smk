# Stages 5-8: aggregation, tables, figures, claims (harness/report/*.py).


localrules:
    config_snapshot,


rule config_snapshot:
    # the resolved configuration and plan, read by the report stages
    output:
        _SNAPSHOT,
    params:
        resolved=lambda wildcards: _resolved_config(),
    log:
        out("logs/config_snapshot.log"),
    run:
        from harness.files import atomic_write_text

        atomic_write_text(output[0], params.resolved)


rule aggregate:
    input:
        config=out("results/config.json"),
        runs=_cell_dirs("runs", JOBS),
        metrics=_cell_dirs("metrics", JOBS),
        generation=_cell_dirs("generation", GEN_JOBS),
        benchmarks=_upstream_benchmarks(),
    output:
        summary=out("results/summary.csv"),
        history=out("results/history.csv"),
        generation=out("results/generation.csv"),
        benchmarks=out("results/benchmarks.csv"),
        manifest=out("results/aggregate.json"),
    params:
        python=PYTHON,
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/aggregate.log"),
    benchmark:
        out("benchmarks/report/aggregate.tsv")
    shell:
        "{params.python:q} -m harness aggregate --config {input.config:q} --metrics {input.metrics:q}"
        " --runs {input.runs:q} --generation {input.generation:q} --benchmarks {input.benchmarks:q}"
        " --out-summary {output.summary:q} --out-history {output.history:q}"
        " --out-generation {output.generation:q} --out-benchmarks {output.benchmarks:q}"
        " --out-manifest {output.manifest:q} > {log:q} 2>&1"


rule tables:
    input:
        config=out("results/config.json"),
        summary=out("results/summary.csv"),
        generation=out("results/generation.csv"),
        reference=paper_reference(),
    output:
        [
            report(
                out(f"results/tables/{table}.csv"),
                caption=f"../report/{table}.rst",
                category="Tables",
                labels={"table": table},
            )
            for table in TABLES
        ],
        expand(out("results/tables/{table}.{ext}"), table=TABLES, ext=("md", "tex")),
    params:
        python=PYTHON,
        tables_dir=lambda wildcards, output: os.path.dirname(output[0]),
        reference=lambda wildcards, input: (
            f"--reference {shlex.quote(input.reference[0])}" if input.reference else ""
        ),
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/tables.log"),
    benchmark:
        out("benchmarks/report/tables.tsv")
    shell:
        "{params.python:q} -m harness tables --config {input.config:q} --summary {input.summary:q}"
        " --generation {input.generation:q} {params.reference} --out-dir {params.tables_dir:q} > {log:q} 2>&1"


rule figures:
    input:
        config=out("results/config.json"),
        summary=out("results/summary.csv"),
        history=out("results/history.csv"),
        generation=out("results/generation.csv"),
        generation_dirs=_cell_dirs("generation", GEN_JOBS),
        projection=_projection_inputs,
    output:
        [
            report(
                out(f"figures/{figure}.png"),
                caption=f"../report/{figure}.rst",
                category="Figures",
                labels={"figure": figure},
            )
            for figure in FIGURES
        ],
        expand(out("figures/{figure}.pdf"), figure=FIGURES),
    params:
        python=PYTHON,
        figures_dir=lambda wildcards, output: os.path.dirname(output[0]),
        projection=lambda wildcards: shlex.join(_figure_runs("projection")),
        samples=lambda wildcards: shlex.join(_figure_runs("samples")),
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 3000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/figures.log"),
    benchmark:
        out("benchmarks/report/figures.tsv")
    shell:
        "export OMP_NUM_THREADS={threads}; {params.python:q} -m harness figures --config {input.config:q}"
        " --summary {input.summary:q} --history {input.history:q}"
        " --projection {params.projection} --samples {params.samples}"
        " --out-dir {params.figures_dir:q} > {log:q} 2>&1"


rule claims:
    input:
        config=out("results/config.json"),
        summary=out("results/summary.csv"),
        history=out("results/history.csv"),
        generation=out("results/generation.csv"),
        # the verdicts of each robustness perturbation (robustness.smk): swept here with
        # robustness.sweep, else read from the committed outputs (checked in PLAN.robustness_args)
        perturbed=PLAN.robustness_claims() if PLAN.robustness_sweeps() else [],
        saturation=[out("results/tuning_saturation.csv")] if PLAN.tuning_enabled else [],
        validation=[out("results/estimator_validation.csv")] if PLAN.validation.get("enabled", True) else [],
    output:
        # results/robustness.csv only when perturbations are declared
        *([out("results/robustness.csv")] if PLAN.robustness_names() else []),
        md=report(out("results/claims.md"), caption="../report/claims.rst", category="Claims"),
        csv=report(out("results/claims.csv"), caption="../report/claims.rst", category="Claims"),
    params:
        python=PYTHON,
        # a changed committed perturbation output reruns this rule (params trigger)
        fingerprint=PLAN.robustness_fingerprint(),
        saturation=lambda wildcards, input: (
            f"--saturation {shlex.quote(input.saturation[0])}" if input.saturation else ""
        ),
        validation=lambda wildcards, input: (
            f"--estimator-validation {shlex.quote(input.validation[0])}" if input.validation else ""
        ),
        perturbed=PLAN.robustness_args()
        + (
            f" --out-robustness {shlex.quote(out('results/robustness.csv'))}"
            if PLAN.robustness_names()
            else ""
        ),
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/claims.log"),
    benchmark:
        out("benchmarks/report/claims.tsv")
    shell:
        "{params.python:q} -m harness claims --config {input.config:q} --summary {input.summary:q}"
        " --history {input.history:q} --generation {input.generation:q}"
        " --out-md {output.md:q} --out-csv {output.csv:q} {params.saturation} {params.validation} {params.perturbed} > {log:q} 2>&1"
