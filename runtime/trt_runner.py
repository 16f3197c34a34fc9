"""Python face of qmamba's C++ TensorRT runner (runtime/cpp, ``libqmamba_runner.so``), through ctypes.

TensorRT's own Python bindings are optional: with TensorRT 8.6 on Python 3.12 or on
a Jetson they are often missing, while the C++ runner is always there once the package is built
against TensorRT. Device memory and streams come from cuda-python (``cuda.bindings.runtime``).

Every runner failure raises ``TrtRunnerError`` with the runner's message (which names the engine,
tensor and problem: a shape outside the profile, an engine for another GPU, a plugin library of
another version, ...); what the runner reports as bad input (``QMR_BAD_INPUT``) raises
``TrtBadInputError``, a ``TrtRunnerError`` and a ``BadInputError``: the command line's bad-input exit.
"""
from __future__ import annotations

import collections
import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmamba.errors import BadInputError

REPO = Path(__file__).resolve().parents[1]

# qmr_dtype codes of qmamba_runner.h -> numpy.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.int64, 5: np.bool_}
ENGINE_FILES = ("prefill.engine", "decode.engine")


class TrtRunnerError(RuntimeError):
    """A failure reported by the C++ runner or its libraries."""


class TrtBadInputError(TrtRunnerError, BadInputError):
    """What the runner was given and cannot take (QMR_BAD_INPUT): a shape outside the engine's profile, a batch
    above the session's, an engine for another GPU or library, an empty or truncated engine file."""


def _find_library(env: str, name: str) -> Path:
    """``$env`` if set, else the installed package's lib/ folder, else a build tree of this checkout."""
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not path.is_file():
            raise FileNotFoundError(f"{env}={path} does not exist")
        return path
    candidates = [Path(__file__).resolve().parent.parent / "lib" / name]  # installed: qmamba/lib
    candidates += [Path(p) for p in sorted(glob.glob(str(REPO / "build" / "**" / name), recursive=True))]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{name} not found: build qmamba against TensorRT (pip install . with TensorRT_ROOT set, see "
        f"docs/tensorrt.md) or set {env}")


def plugin_library() -> Path:
    """Path of libqmamba_trt_plugins.so (``$QMAMBA_TRT_PLUGINS`` or the built one)."""
    return _find_library("QMAMBA_TRT_PLUGINS", "libqmamba_trt_plugins.so")


_LIB: ctypes.CDLL | None = None


def runner_library() -> ctypes.CDLL:
    """libqmamba_runner.so with its signatures declared (loaded once, with local symbols: nothing of it
    may interpose on the libraries loaded after it; the plugin library links TensorRT itself)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    path = _find_library("QMAMBA_RUNNER_LIB", "libqmamba_runner.so")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # typically libnvinfer not on the loader's path
        raise TrtRunnerError(f"cannot load {path}: {e} (is TensorRT's lib/ on LD_LIBRARY_PATH?)") from e
    c_int, c_char_p, c_void_p, i64p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
    sigs = {
        "qmr_last_error": (c_char_p, []),
        "qmr_tensorrt_version": (c_char_p, []),
        "qmr_engine_load": (c_int, [c_char_p, c_char_p, ctypes.POINTER(c_void_p)]),
        "qmr_engine_free": (None, [c_void_p]),
        "qmr_engine_num_io": (c_int, [c_void_p]),
        "qmr_engine_io": (c_int, [c_void_p, c_int, ctypes.POINTER(c_char_p), ctypes.POINTER(c_int),
                                  ctypes.POINTER(c_int), ctypes.POINTER(c_int), i64p]),
        "qmr_engine_profile": (c_int, [c_void_p, c_char_p, i64p, i64p, i64p]),
        "qmr_engine_set_input_shape": (c_int, [c_void_p, c_char_p, c_int, i64p]),
        "qmr_engine_shape": (c_int, [c_void_p, c_char_p, ctypes.POINTER(c_int), i64p]),
        "qmr_engine_set_address": (c_int, [c_void_p, c_char_p, c_void_p]),
        "qmr_engine_enqueue": (c_int, [c_void_p, c_void_p]),
        "qmr_session_open": (c_int, [c_char_p, c_char_p, c_int, ctypes.POINTER(c_void_p)]),
        "qmr_session_free": (None, [c_void_p]),
        "qmr_session_vocab": (c_int, [c_void_p]),
        "qmr_session_prefill": (c_int, [c_void_p, i64p, c_int, c_int, ctypes.POINTER(ctypes.c_float)]),
        "qmr_session_decode": (c_int, [c_void_p, i64p, ctypes.POINTER(ctypes.c_float), c_int]),
        "qmr_session_bench": (c_int, [c_void_p, c_int, c_int, c_int, c_int, ctypes.POINTER(ctypes.c_double),
                                      ctypes.POINTER(ctypes.c_double)]),
        "qmr_session_profile": (c_int, [c_void_p, c_int, c_int, c_int, ctypes.POINTER(c_char_p)]),
        "qmr_session_read_state": (c_int, [c_void_p, c_char_p, c_void_p, ctypes.c_size_t]),
        "qmr_session_state_names": (c_char_p, [c_void_p]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _LIB = lib
    return lib


QMR_BAD_INPUT = -2  # qmamba_runner.h's qmr_status: what was given cannot be taken (QMR_FAILED = -1: the work failed)


def _check(rc: int) -> None:
    if rc != 0:
        message = runner_library().qmr_last_error().decode(errors="replace")
        raise (TrtBadInputError if rc == QMR_BAD_INPUT else TrtRunnerError)(message)


def _b(s) -> bytes:
    return str(s).encode()


@dataclass(frozen=True)
class Profile:
    """Batch and sequence ranges (min, opt, max) of an engine's optimization profile."""
    batch: tuple[int, int, int] = (1, 1, 8)
    seq: tuple[int, int, int] = (1, 128, 2048)

    def __post_init__(self):
        for name, r in (("batch", self.batch), ("seq", self.seq)):
            if len(r) != 3 or not (1 <= r[0] <= r[1] <= r[2]):
                raise ValueError(f"profile {name} must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {r}")

    def describe(self) -> str:
        b, s = self.batch, self.seq
        return f"batch {b[0]}..{b[1]}..{b[2]}, seq {s[0]}..{s[1]}..{s[2]}"


def runner_executable() -> Path:
    """qmamba_trt, the runner's command line (installed beside libqmamba_runner.so)."""
    exe = _find_library("QMAMBA_RUNNER_LIB", "libqmamba_runner.so").with_name("qmamba_trt")
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} not found (it is built and installed with libqmamba_runner.so)")
    return exe


def build_engine(onnx_path, engine_path, profile: Profile, plugins=None, fp16: bool = False,
                 no_tactic_libraries: bool = False, optimization_level: int | None = None,
                 timing_cache=None) -> Path:
    """ONNX file -> engine file (+ ``.json`` metadata) with the C++ runner.

    The build runs in a child process (``qmamba_trt build``): a crash while TensorRT builds (seen with
    TensorRT 8.6 from a Python process that had loaded the runner with global symbols) becomes an error
    here instead of ending the caller, and the parser's own libraries stay out of the caller.
    """
    import subprocess

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} does not exist")
    cmd = [str(runner_executable()), "build", str(onnx_path), str(engine_path),
           "--plugins", str(plugins or plugin_library()),
           "--batch", ",".join(map(str, profile.batch)), "--seq", ",".join(map(str, profile.seq))]
    cmd += ["--fp16"] * fp16 + ["--no-tactic-libraries"] * no_tactic_libraries
    if optimization_level is not None:
        cmd += ["--opt-level", str(optimization_level)]
    if timing_cache is not None:
        cmd += ["--timing-cache", str(timing_cache)]
    # TensorRT's log (as much as QMAMBA_TRT_LOG asks for) goes on to this process's stderr as it comes;
    # the error lines are kept for the exception.
    errors, tail = collections.deque(maxlen=20), collections.deque(maxlen=20)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as child:
        for line in child.stdout:
            tail.append(line.rstrip("\n"))
            if "error" in line.lower() or line.startswith("qmamba_trt"):
                errors.append(tail[-1])
            elif line.startswith("[TensorRT"):
                sys.stderr.write(line)
    if child.returncode != 0:
        detail = "\n".join(errors or tail) or f"exit status {child.returncode}"
        raise TrtRunnerError(f"building {engine_path} from {onnx_path} failed:\n{detail}")
    return Path(engine_path)


# ---- device memory (cuda-python) ------------------------------------------------------------------

def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as e:
            raise ImportError("cuda-python is needed for device buffers (pip install cuda-python)") from e
    return cudart


def _cuda(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TrtRunnerError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


class DeviceBuffer:
    """cudaMalloc'ed bytes, freed with the object."""

    def __init__(self, nbytes: int):
        self.cudart = _cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(_cuda(self.cudart.cudaMalloc(self.nbytes)))

    def upload(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if arr.nbytes > self.nbytes:
            raise ValueError(f"{arr.nbytes} bytes do not fit a buffer of {self.nbytes}")
        _cuda(self.cudart.cudaMemcpy(self.ptr, arr.ctypes.data, arr.nbytes,
                                     self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def download(self, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        _cuda(self.cudart.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes,
                                     self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return out

    def __del__(self):
        if getattr(self, "ptr", 0):
            self.cudart.cudaFree(self.ptr)
            self.ptr = 0


@dataclass(frozen=True)
class TensorMeta:
    name: str
    is_input: bool
    dtype: type
    shape: tuple[int, ...]  # -1 for dynamic axes


def cast_input(t: TensorMeta, arr, where) -> np.ndarray:
    """``arr`` as the engine's input type. Integer inputs are cast when every value fits (TensorRT 8
    imports an ONNX int64 input, such as token ids, as int32); anything else must match."""
    arr = np.asarray(arr)
    if arr.dtype == t.dtype:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.issubdtype(t.dtype, np.integer):
        info = np.iinfo(t.dtype)
        if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
            return arr.astype(t.dtype)
        raise ValueError(f"{where}: input {t.name} has values outside {np.dtype(t.dtype).name}")
    raise ValueError(f"{where}: input {t.name} must be {np.dtype(t.dtype).name}, got {arr.dtype}")


class TrtEngine:
    """One engine with named tensors: ``infer({name: array}) -> {name: array}`` (host numpy in/out)."""

    def __init__(self, engine_path, plugins=None):
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {self.path} does not exist (build it with `qmamba build`)")
        self._lib = runner_library()
        handle = ctypes.c_void_p()
        _check(self._lib.qmr_engine_load(_b(self.path), _b(plugins or plugin_library()), ctypes.byref(handle)))
        self._h = handle
        self.tensors = [self._meta(i) for i in range(self._lib.qmr_engine_num_io(self._h))]
        self._buffers: dict[str, DeviceBuffer] = {}
        self._shape_set: dict[str, list[int]] = {}

    def _meta(self, i: int) -> TensorMeta:
        name, is_in, dt, nb = ctypes.c_char_p(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        dims = (ctypes.c_int64 * 8)()
        _check(self._lib.qmr_engine_io(self._h, i, ctypes.byref(name), ctypes.byref(is_in), ctypes.byref(dt),
                                       ctypes.byref(nb), dims))
        if dt.value not in DTYPES:
            raise TrtRunnerError(f"{self.path}: tensor {name.value.decode()} has an unsupported type")
        return TensorMeta(name.value.decode(), bool(is_in.value), DTYPES[dt.value], tuple(dims[:nb.value]))

    @property
    def inputs(self) -> list[TensorMeta]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list[TensorMeta]:
        return [t for t in self.tensors if not t.is_input]

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = ((ctypes.c_int64 * 8)() for _ in range(3))
        _check(self._lib.qmr_engine_profile(self._h, _b(name), lo, opt, hi))
        n = len(next(t for t in self.tensors if t.name == name).shape)
        return tuple(lo[:n]), tuple(opt[:n]), tuple(hi[:n])

    def _shape(self, name: str) -> tuple[int, ...]:
        nb, dims = ctypes.c_int(), (ctypes.c_int64 * 8)()
        _check(self._lib.qmr_engine_shape(self._h, _b(name), ctypes.byref(nb), dims))
        shape = tuple(dims[:max(nb.value, 0)])
        if nb.value < 0 or any(d < 0 for d in shape):
            # TensorRT could not infer it: the input shapes disagree (a state of another batch).
            given = {t.name: self._shape_set.get(t.name) for t in self.inputs}
            raise BadInputError(f"{self.path}: the input shapes do not fit together (output {name} cannot be "
                                f"inferred): {given}; states must have the batch of the tokens")
        return shape

    def _buffer(self, name: str, nbytes: int) -> DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = self._buffers[name] = DeviceBuffer(nbytes)
        return buf

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [t.name for t in self.inputs if t.name not in feed]
        unknown = sorted(set(feed) - {t.name for t in self.inputs})
        if missing or unknown:
            raise ValueError(f"{self.path}: missing inputs {missing}, unknown inputs {unknown}")
        for t in self.inputs:
            arr = np.ascontiguousarray(cast_input(t, feed[t.name], self.path))
            dims = (ctypes.c_int64 * 8)(*arr.shape)
            _check(self._lib.qmr_engine_set_input_shape(self._h, _b(t.name), arr.ndim, dims))
            self._shape_set[t.name] = list(arr.shape)
            buf = self._buffer(t.name, arr.nbytes)
            buf.upload(arr)
            _check(self._lib.qmr_engine_set_address(self._h, _b(t.name), buf.ptr))
        shapes = {}
        for t in self.outputs:
            shapes[t.name] = self._shape(t.name)
            nbytes = int(np.prod(shapes[t.name], dtype=np.int64)) * np.dtype(t.dtype).itemsize
            _check(self._lib.qmr_engine_set_address(self._h, _b(t.name), self._buffer(t.name, nbytes).ptr))
        _check(self._lib.qmr_engine_enqueue(self._h, None))  # the legacy default stream: cudaMemcpy syncs with it
        return {t.name: self._buffers[t.name].download(shapes[t.name], t.dtype) for t in self.outputs}

    def __del__(self):
        if getattr(self, "_h", None):
            self._lib.qmr_engine_free(self._h)
            self._h = None


class TrtSession:
    """prefill.engine + decode.engine of one directory: states stay on the device between calls."""

    def __init__(self, engine_dir, plugins=None, max_batch: int = 1):
        engine_dir = Path(engine_dir)
        for f in ENGINE_FILES:
            if not (engine_dir / f).is_file():
                raise FileNotFoundError(f"{engine_dir / f} does not exist (build the engines with `qmamba build`)")
        self._lib = runner_library()
        handle = ctypes.c_void_p()
        _check(self._lib.qmr_session_open(_b(engine_dir), _b(plugins or plugin_library()), int(max_batch),
                                          ctypes.byref(handle)))
        self._h = handle
        self.vocab = self._lib.qmr_session_vocab(self._h)
        self.batch = 0

    @property
    def state_names(self) -> list[str]:
        return [s for s in self._lib.qmr_session_state_names(self._h).decode().split("\n") if s]

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        """ids int [batch, seq] -> last position's logits float32 [batch, vocab]."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"prefill ids must be [batch, seq], got shape {ids.shape}")
        out = np.empty((ids.shape[0], self.vocab), dtype=np.float32)
        _check(self._lib.qmr_session_prefill(self._h, ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                                             ids.shape[0], ids.shape[1],
                                             out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
        self.batch = ids.shape[0]
        return out

    def decode(self, ids: np.ndarray, use_graph: bool = True) -> np.ndarray:
        """ids int [batch] (one token per row) -> logits float32 [batch, vocab]."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if ids.shape[0] != self.batch:
            raise ValueError(f"decode takes one token per row of the prefill batch ({self.batch}), got {ids.shape[0]}")
        out = np.empty((self.batch, self.vocab), dtype=np.float32)
        _check(self._lib.qmr_session_decode(self._h, ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                                            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), int(use_graph)))
        return out

    def read_state(self, name: str, shape, dtype=np.int8) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        _check(self._lib.qmr_session_read_state(self._h, _b(name), out.ctypes.data, out.nbytes))
        return out

    def bench(self, batch: int, seqlen: int, iters: int = 20, use_graph: bool = True) -> tuple[float, float]:
        """(prefill ms, decode ms per step), measured on the device."""
        pre, dec = ctypes.c_double(), ctypes.c_double()
        _check(self._lib.qmr_session_bench(self._h, batch, seqlen, iters, int(use_graph), ctypes.byref(pre),
                                           ctypes.byref(dec)))
        self.batch = batch
        return pre.value, dec.value

    def profile(self, batch: int, seqlen: int, iters: int = 10) -> str:
        """TensorRT's per-layer times (mean ms, slowest first) of a prefill and of a decode step."""
        report = ctypes.c_char_p()
        _check(self._lib.qmr_session_profile(self._h, batch, seqlen, iters, ctypes.byref(report)))
        self.batch = batch
        return report.value.decode()

    def __del__(self):
        if getattr(self, "_h", None):
            self._lib.qmr_session_free(self._h)
            self._h = None


def tensorrt_python():
    """TensorRT's Python module if importable (``tensorrt``), else None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt
