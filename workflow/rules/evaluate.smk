# Stage 3: evaluation on the test split (retrieval, probes, gap, divergence, conflicts).


rule evaluate:
    input:
        runs=out("runs/{dataset}/{job}"),
        data=dataset_files,
    output:
        directory(out("metrics/{dataset}/{job}")),
    params:
        cmd=lambda wildcards: batch_shell(evaluate_commands(wildcards.dataset, wildcards.job)),
    threads: rule_resource("evaluate", "threads", 1)
    resources:
        mem_mb=rule_resource("evaluate", "mem_mb", 3000),
        runtime=scaled_runtime("evaluate", 0.5),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/evaluate/{dataset}/{job}.log"),
    benchmark:
        out("benchmarks/evaluate/{dataset}/{job}.tsv")
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; {params.cmd} > {log:q} 2>&1"
