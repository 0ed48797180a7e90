"""Shared pytest setup: every test starts from the same seeds."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import longread  # noqa: F401  (first: keeps kernels/ from shadowing Hugging Face's kernels package)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
