"""Reusable instruments that work on any embeddings: divergences, the modality gap, conflict statistics
and the divergence estimators' validation against closed forms."""
