"""A worked example of an objective defined outside the unialign-bench repository."""

from unialign_tfree.losses import TemperatureFreeInfoNCE

__all__ = ["TemperatureFreeInfoNCE"]
