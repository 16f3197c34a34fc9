"""The command line's one error style: ``qmamba COMMAND: error: MESSAGE``, exit 2 for bad input,
1 for a failure of the work, 130 when interrupted, a traceback only with --debug."""
from __future__ import annotations

import errno
import sys
import types

import pytest

from qmamba import cli
from qmamba.errors import BadInputError, MissingFileError, OutputExistsError, WorkFailedError


@pytest.fixture()
def raising_command(monkeypatch):
    """Registers a command ``fail`` whose run raises the exception given to the returned setter."""
    module = types.ModuleType("qmamba_test_failing_command")
    module.add_arguments = lambda parser: parser.add_argument("--value", type=int, default=0)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fail", (module.__name__, "a command that fails"))
    monkeypatch.delenv("QMAMBA_DEBUG", raising=False)

    def set_error(error):
        def run(args):
            raise error
        module.run = run
    return set_error


@pytest.mark.parametrize("error, code", [
    (BadInputError("--value must be >= 1, got 0"), 2),
    (MissingFileError("model.safetensors does not exist"), 2),
    (OutputExistsError("out exists; pass --force"), 2),
    (ValueError("plain value error"), 2),
    (FileNotFoundError("plain missing file"), 2),
    (FileExistsError("plain existing file"), 2),
    (WorkFailedError("the build failed"), 1),
    (RuntimeError("a runtime failed"), 1),
    (OSError(errno.ENOSPC, "No space left on device"), 1),
])
def test_exit_code_and_one_line(raising_command, capsys, error, code):
    raising_command(error)
    assert cli.main(["fail"]) == code
    err = capsys.readouterr().err
    assert err == f"qmamba fail: error: {error}\n"


def test_unexpected_errors_are_named(raising_command, capsys):
    raising_command(KeyError("layers.0.weight"))
    assert cli.main(["fail"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qmamba fail: error: unexpected KeyError: 'layers.0.weight'")
    assert "--debug" in err and "Traceback" not in err


def test_interrupt_exits_130(raising_command, capsys):
    raising_command(KeyboardInterrupt())
    assert cli.main(["fail"]) == 130
    assert capsys.readouterr().err == "qmamba fail: interrupted\n"


@pytest.mark.parametrize("argv", [["--debug", "fail"], ["fail", "--debug"], ["--debug", "fail", "--debug"]])
def test_debug_prints_the_traceback(raising_command, capsys, argv):
    raising_command(BadInputError("bad"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("qmamba fail: error: bad\n")


def test_debug_from_the_environment(raising_command, capsys, monkeypatch):
    raising_command(BadInputError("bad"))
    monkeypatch.setenv("QMAMBA_DEBUG", "1")
    assert cli.main(["fail"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("QMAMBA_DEBUG", "0")
    assert cli.main(["fail"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_argument_errors_exit_2_in_the_same_style(raising_command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fail", "--value", "x"])
    assert e.value.code == 2
    assert "qmamba fail: error: argument --value: invalid int value: 'x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    assert "qmamba: error: argument COMMAND: invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_error_types_are_the_built_in_ones():
    assert issubclass(BadInputError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert issubclass(OutputExistsError, FileExistsError)
    assert issubclass(WorkFailedError, RuntimeError)
