"""The runner's statuses (runtime/cpp/qmamba_runner.h) as Python errors, without TensorRT: QMR_BAD_INPUT is
bad input for the command line (exit 2), any other failure a failure of the work (exit 1); both carry the
runner's message."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from qmamba.cli import exit_code
from qmamba.runtime import trt_runner


@pytest.mark.parametrize("status, error, code", [(-2, trt_runner.TrtBadInputError, 2), (-1, trt_runner.TrtRunnerError, 1)])
def test_runner_status_maps_to_its_error_and_exit_code(monkeypatch, status, error, code):
    message = b"input input_ids shape [1, 65]: dimension 1 = 65 is outside the engine's profile [1, 64]"
    monkeypatch.setattr(trt_runner, "runner_library", lambda: SimpleNamespace(qmr_last_error=lambda: message))
    with pytest.raises(error, match=re.escape(message.decode())) as caught:
        trt_runner._check(status)
    assert type(caught.value) is error and exit_code(caught.value) == code
    trt_runner._check(0)
