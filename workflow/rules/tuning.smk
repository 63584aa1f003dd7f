# Equal-budget tuning on the validation split: tune -> select_trials (checkpoint) -> final runs.
# Every variant with `tune: true` gets the same number of trials (`tuning.trials`) on each dataset,
# each trained with the final runs' budget at M = tuning.m, seed tuning.seed, split seed
# tuning.split_seed, and evaluated with `--split val` only: the test split is read once, by the
# final runs.  The trials' parameter sets are drawn in common.smk (trial_params).


rule tune:
    input:
        data=dataset_files,
    output:
        runs=directory(out("tuning/{dataset}/{variant}/runs")),
        metrics=directory(out("tuning/{dataset}/{variant}/metrics")),
    params:
        cmd=lambda wildcards: batch_shell(tune_commands(wildcards.dataset, wildcards.variant)),
    threads: rule_resource("train", "threads", 1)
    resources:
        mem_mb=rule_resource("train", "mem_mb", 3000),
        runtime=lambda wildcards, attempt: max(5, int(1.5 * TUNING.get("trials", 4) + 2)) * attempt,
        gpu=rule_resource("train", "gpu", 0),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/tune/{dataset}/{variant}.log"),
    benchmark:
        out("benchmarks/tune/{dataset}/{variant}.tsv")
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; {params.cmd} > {log:q} 2>&1"


checkpoint select_trials:
    input:
        metrics=[out(f"tuning/{d}/{v}/metrics") for (d, v) in _tuned_cells()],
    output:
        selected=out("tuning/selected.json"),
        csv=out("results/tuning.csv"),
        md=report(out("results/tables/tuning.md"), caption="../report/tuning.rst", category="Tables"),
    params:
        python=PYTHON,
        metric=TUNING.get("metric", "retrieval/R1/mean"),
        cells=[f"{d}:{v}" for (d, v) in _tuned_cells()],
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/select_trials.log"),
    benchmark:
        out("benchmarks/report/select_trials.tsv")
    shell:
        "{params.python:q} -m workflow.scripts.select_trials --metric {params.metric:q}"
        " --cells {params.cells:q} --metrics {input.metrics:q} --out-json {output.selected:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


# Saturation: best validation score so far per trial; the perturbation with twice the trials
# (robustness.perturbations) says what doubling buys (harness/report/tuning.py)
rule tuning_saturation:
    input:
        tuning=out("results/tuning.csv"),
        # swept here with robustness.sweep, else the committed outputs (checked by the plan)
        # (the nested sweep's declared output is its claims.csv; tuning.csv lies beside it)
        doubled=(
            [os.path.join(os.path.dirname(path), "claims.csv") for _, path in PLAN.doubled_tuning()]
            if PLAN.robustness_sweeps()
            else []
        ),
    output:
        csv=out("results/tuning_saturation.csv"),
        png=report(
            out("figures/tuning_saturation.png"),
            caption="../report/tuning_saturation.rst",
            category="Tuning",
        ),
        pdf=out("figures/tuning_saturation.pdf"),
    params:
        python=PYTHON,
        fingerprint=PLAN.robustness_fingerprint(),
        doubled=shlex.join(a for name, path in PLAN.doubled_tuning() for a in ("--doubled", f"{name}={path}")),
        delta=float(TUNING.get("saturation_delta", 1.0)),
    threads: 1
    resources:
        mem_mb=rule_resource("report", "mem_mb", 2000),
        runtime=rule_resource("report", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/tuning_saturation.log"),
    benchmark:
        out("benchmarks/report/tuning_saturation.tsv")
    shell:
        "{params.python:q} -m harness tuning-saturation --tuning {input.tuning:q} {params.doubled}"
        " --delta {params.delta:q} --out-csv {output.csv:q} --out-fig {output.png:q} > {log:q} 2>&1"
