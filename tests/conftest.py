"""Shared test set-up: make the repository root and tests/ importable, pin torch's CPU threads."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(_HERE), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
