"""Experiment harness: data, training, evaluation, divergence estimators, conflict statistics.

Rooms: ``harness.instruments`` (reusable on any embeddings), ``harness.experiment`` (the pipeline),
``harness.bench`` (loss-kernel throughput), ``harness.report`` (workflow-only tables, figures,
claims); ``python -m harness --help`` lists the commands.
"""

__version__ = "0.2.0"
__all__ = ["__version__"]
