# Divergence-estimator validation against closed forms, and (opt-in) loss-kernel throughput.


rule validate_estimators:
    output:
        csv=report(
            out("results/estimator_validation.csv"),
            caption="../report/estimator_validation.rst",
            category="Estimator validation",
        ),
        png=report(
            out("figures/estimator_validation.png"),
            caption="../report/estimator_validation.rst",
            category="Estimator validation",
        ),
        pdf=out("figures/estimator_validation.pdf"),
    params:
        cmd=lambda wildcards, output: batch_shell(
            [
                [
                    "validate-estimators",
                    "--out-csv",
                    output.csv,
                    "--out-fig",
                    output.png,
                ]
                + PLAN.validation_args()
            ]
        ),
    threads: rule_resource("validate_estimators", "threads", 1)
    resources:
        mem_mb=rule_resource("validate_estimators", "mem_mb", 3000),
        runtime=rule_resource("validate_estimators", "runtime", 15),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/validate_estimators.log"),
    benchmark:
        out("benchmarks/validate_estimators.tsv")
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; {params.cmd} > {log:q} 2>&1"


# Not part of `all` unless `throughput: {enabled: true}`; run it with `snakemake throughput`.
rule throughput:
    output:
        csv=report(
            out("results/throughput.csv"),
            caption="../report/throughput.rst",
            category="Throughput",
        ),
        png=report(
            out("figures/throughput.png"),
            caption="../report/throughput.rst",
            category="Throughput",
        ),
        pdf=out("figures/throughput.pdf"),
    params:
        cmd=lambda wildcards, output: batch_shell(
            [
                ["throughput", "--out", output.csv, "--fig", output.png]
                + (["--quick"] if THROUGHPUT.get("quick", True) else [])
            ]
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/throughput.log"),
    benchmark:
        out("benchmarks/throughput.tsv")
    shell:
        "{params.cmd} > {log:q} 2>&1"
