# Reproducibility sweep: does UniAlign beat InfoNCE as the number of modalities M grows?
#
#   snakemake --cores all                              # default sweep (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml   # larger sweep (overlay on the default)
#   snakemake --cores 2 --configfile config/tiny.yaml      # seconds (tests)
#   snakemake --report report.html                     # every table and figure, with captions
#   snakemake --profile profiles/slurm                 # on a SLURM cluster
#
# config/config.yaml is always loaded first; --configfile files are overlays merged on top of it
# (nested mappings merge key by key, lists and scalars replace). The merged config is validated
# against workflow/schemas/config.schema.yaml (closed objects: a misspelt key fails at once).
# The rules live in workflow/rules/*.smk, one file per stage; the plan (which runs each job
# holds) is computed in workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/robustness.smk"


rule all:
    default_target: True
    input:
        final_targets(),
