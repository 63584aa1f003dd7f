"""Aggregation, tables, figures and claim verdicts of the workflow."""
