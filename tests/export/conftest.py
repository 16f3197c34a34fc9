"""Shared fixtures of the export tests: tiny float Mamba2 models, real text, calibrated models."""
from __future__ import annotations

import pytest

from qm_helpers import SHAKESPEARE, tiny_mamba2

@pytest.fixture(scope="session")
def shakespeare() -> bytes:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} not found")
    return SHAKESPEARE.read_bytes()


@pytest.fixture(scope="session")
def tiny_float():
    return tiny_mamba2()


@pytest.fixture(scope="session")
def tiny_calibrated(tiny_float, shakespeare):
    from qmamba.export.calibrate import calibrate

    return calibrate(tiny_float, shakespeare, num_samples=8, seq_len=128, progress=False)


@pytest.fixture(scope="session")
def real_float():
    """The shipped trained byte-level model when qmamba.models has it, else the tiny random one.

    Random weights lack the activation outliers of trained ones, so the accuracy tests mean most
    with the trained model; they still check the same properties on the random one.
    """
    try:
        from qmamba.models import load_float

        return load_float("mamba2-tiny-g1")
    except (ImportError, FileNotFoundError, ValueError, KeyError):
        return tiny_mamba2()
