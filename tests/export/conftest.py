"""Shared fixtures of the export tests: tiny float Mamba2 models, real text, calibrated models."""
from __future__ import annotations

import pytest

from qm_helpers import SHAKESPEARE, tiny_mamba2


@pytest.fixture(scope="session")
def shakespeare() -> bytes:
    return SHAKESPEARE.read_bytes()


@pytest.fixture(scope="session")
def tiny_float():
    return tiny_mamba2()


@pytest.fixture(scope="session")
def tiny_calibrated(tiny_float, shakespeare):
    from qmamba.export.calibrate import calibrate

    return calibrate(tiny_float, shakespeare, num_samples=8, seq_len=128, progress=False)


@pytest.fixture(scope="session")
def trained_float():
    """The shipped trained byte-level model with 4 SSD groups (qmamba.models).

    Random weights lack the activation outliers group scales exist for, so the accuracy tests
    run on a trained model; they skip if none is shipped.
    """
    try:
        from qmamba.models import load_float

        return load_float("mamba2-tiny-g4")
    except (ImportError, ValueError) as e:
        pytest.skip(f"no shipped model: {e}")


@pytest.fixture(scope="session")
def trained_calibrated(trained_float, shakespeare):
    """(grouped 4 x 4, per-tensor) calibrations of the trained model on 8 x 256 bytes."""
    from qmamba.export.calibrate import calibrate

    kw = dict(num_samples=8, seq_len=256, progress=False)
    return (calibrate(trained_float, shakespeare, **kw),
            calibrate(trained_float, shakespeare, per_tensor=True, **kw))
