# Stages 5-8: aggregation, tables, figures, claims (harness/report/*.py).


localrules:
    config_snapshot,


rule config_snapshot:
    # the resolved configuration and plan, read by the report stages; rewritten only when the
    # configuration changes (params are a rerun trigger)
    output:
        "results/config.json",
    params:
        resolved=lambda wildcards: json.dumps(
            {
                "config": config,
                "seeds": SEEDS,
                "cells": [
                    {"dataset": d, "variant": v, "job": JOB_OF[(d, v)], "ms": ms,
                     "generation_ms": GEN_CELLS.get((d, v), [])}
                    for (d, v), ms in CELLS.items()
                ],
            },
            sort_keys=True,
            indent=1,
        ),
    log:
        "logs/config_snapshot.log",
    run:
        from harness.files import atomic_write_text

        atomic_write_text(output[0], f"{params.resolved}\n")


rule aggregate:
    input:
        config="results/config.json",
        runs=_cell_dirs("runs", JOBS),
        metrics=_cell_dirs("metrics", JOBS),
        generation=_cell_dirs("generation", GEN_JOBS),
        benchmarks=_upstream_benchmarks(),
    output:
        summary="results/summary.csv",
        history="results/history.csv",
        generation="results/generation.csv",
        benchmarks="results/benchmarks.csv",
    params:
        python=PYTHON,
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/report/aggregate.tsv"
    shell:
        "{params.python} -m harness aggregate --config {input.config:q} --metrics {input.metrics:q}"
        " --runs {input.runs:q} --generation {input.generation:q} --benchmarks {input.benchmarks:q}"
        " --out-summary {output.summary:q} --out-history {output.history:q}"
        " --out-generation {output.generation:q} --out-benchmarks {output.benchmarks:q} > {log} 2>&1"


rule tables:
    input:
        config="results/config.json",
        summary="results/summary.csv",
        generation="results/generation.csv",
        reference=paper_reference(),
    output:
        [
            report(
                f"results/tables/{table}.csv",
                caption=f"../report/{table}.rst",
                category="Tables",
                labels={"table": table},
            )
            for table in TABLES
        ],
        expand("results/tables/{table}.{ext}", table=TABLES, ext=("md", "tex")),
    params:
        python=PYTHON,
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
        "logs/tables.log",
    benchmark:
        "benchmarks/report/tables.tsv"
    shell:
        "{params.python} -m harness tables --config {input.config:q} --summary {input.summary:q}"
        " --generation {input.generation:q} {params.reference} --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        config="results/config.json",
        summary="results/summary.csv",
        history="results/history.csv",
        generation="results/generation.csv",
        generation_dirs=_cell_dirs("generation", GEN_JOBS),
        projection=_projection_inputs,
    output:
        [
            report(
                f"figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category="Figures",
                labels={"figure": figure},
            )
            for figure in FIGURES
        ],
        expand("figures/{figure}.pdf", figure=FIGURES),
    params:
        python=PYTHON,
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 3000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        "logs/figures.log",
    benchmark:
        "benchmarks/report/figures.tsv"
    shell:
        "export OMP_NUM_THREADS={threads}; {params.python} -m harness figures --config {input.config:q}"
        " --summary {input.summary:q} --history {input.history:q} --generation {input.generation:q}"
        " --out-dir figures > {log} 2>&1"


rule claims:
    input:
        config="results/config.json",
        summary="results/summary.csv",
        history="results/history.csv",
        generation="results/generation.csv",
    output:
        md=report("results/claims.md", caption="../report/claims.rst", category="Claims"),
        csv=report("results/claims.csv", caption="../report/claims.rst", category="Claims"),
    params:
        python=PYTHON,
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        "logs/claims.log",
    benchmark:
        "benchmarks/report/claims.tsv"
    shell:
        "{params.python} -m harness claims --config {input.config:q} --summary {input.summary:q}"
        " --history {input.history:q} --generation {input.generation:q}"
        " --out-md {output.md:q} --out-csv {output.csv:q} > {log} 2>&1"
