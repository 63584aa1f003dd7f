"""Experiment harness: data, training, evaluation, divergence estimators, conflict statistics."""

__all__ = ["cli"]
