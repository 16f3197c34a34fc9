"""The qmamba CUDA kernels timed against their bandwidth bound and their fp16 peers.

Bandwidth: bytes that must move / time, as a share of the device's measured device-to-device copy
bandwidth; beside it the same work done by the fp16 peers (mamba_ssm's Triton kernels,
causal_conv1d) and in plain PyTorch fp16.

    python benchmarks/bench_kernels.py [--quick] [--decode-only] [--only conv|ssd] [--no-peers] [--json out.json]
        [--previous OLD/libqmamba_kernels.so]   # and an earlier build's times at the same shapes, previous / now

Timing (the same for qmamba, the peers and PyTorch): each measured call is captured (several
times, on rotating input sets so that together they exceed the L2 cache) in a CUDA graph; the
graph is replayed and timed with CUDA events; the median over replays, divided by the calls in the
graph, is reported. Bytes that must move: benchmarks/kernel_bytes.py. Each row prints the qmamba
kernel's time and fraction of its bound, the peer's time and fraction of its own bound (its fp16
bytes), and the ratio peer / qmamba (> 1: qmamba is faster). The peers need the ``mamba_ssm``
package (its Triton kernels; the CUDA extensions are not needed, see kernel_peers.py).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "trt_plugins"))
import kernel_cases as kc  # noqa: E402
import kernel_bytes  # noqa: E402  (this folder is on sys.path when the script runs)
import kernel_peers  # noqa: E402

from qmamba.export import kernels  # noqa: E402
from qmamba.export.layer_sizes import LayerShape  # noqa: E402
# The bound's bandwidth is `qmamba bench`'s: a plain 1 GiB cudaMemcpy (a copy captured in a CUDA graph ran
# about a third slower on the H200 and would flatter every fraction of the bound).
from qmamba.runtime.bench import copy_bandwidth  # noqa: E402

L2_ROTATE_BYTES = 256 << 20  # input sets rotated per graph: together well past the 50 MB L2


def time_graph(calls, reps: int = 20) -> float:
    """Median ms per call of `calls` (a list of no-argument launches), replayed from a graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for c in calls[:2]:
            c()  # warm-up: module load, allocator
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    del graph
    return statistics.median(times)


def n_sets(bytes_per_set: int) -> int:
    return max(1, min(32, math.ceil(L2_ROTATE_BYTES / max(bytes_per_set, 1))))


def _lib():
    return kernels.load_library()


def _stream():
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


# ----------------------------------------------------------------------------- QuantConv1dSiLU
def _conv_call(t, a, bt: int, L: int, xbc, state, decode: bool):
    """(params, tensors, the outputs to keep) of a conv launch on prepared tensors: outputs x, B, C allocated, the
    state out in place for decode (``state``), else allocated."""
    s = LayerShape(ngroups=a["ngroups"], nheads=a["nheads"], headdim=a["headdim"], d_state=a["d_state"],
                   d_conv=t["weight"].shape[1])
    x = torch.empty(bt, L, s.d_ssm, dtype=torch.int8, device="cuda")
    B = torch.empty(bt, L, s.ngroups * s.d_state, dtype=torch.int8, device="cuda")
    C = torch.empty_like(B)
    st_out = state if decode else torch.empty(bt, s.d_conv - 1, s.conv_dim, dtype=torch.int8, device="cuda")
    params = kernels.ConvParams(**{k: float(a[k]) for k in (
        "x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale", "C_scale", "wC_scale",
        "bC_scale")}, ngroups=s.ngroups, nheads=s.nheads, headdim=s.headdim, d_state=s.d_state, d_conv=s.d_conv,
        n_head_groups=t["x_out_scales"].shape[1], n_dim_groups=t["x_out_scales"].shape[2])
    tens = kernels.ConvTensors(*[_ptr(v) for v in (
        xbc, t["weight"], t["bias"], t["x_out_scales"], t["B_out_scales"], t["C_out_scales"],
        t["x_head_group_range"], t["x_dim_group_range"], state, x, B, C, st_out)])
    return params, tens, (x, B, C, st_out)


def _ptr(v):
    return None if v is None else v.data_ptr()


def conv_launch(t, a, decode: bool):
    """A no-argument launch of the conv kernel on prepared tensors (no checks: they ran once)."""
    bt, L, _ = t["xBC"].shape
    params, tens, keep = _conv_call(t, a, bt, L, t["xBC"], t["conv_state"], decode)
    lib = _lib()

    def launch():
        _ = keep
        if decode:
            rc = lib.qmamba_quant_conv1d_silu_decode(ctypes.byref(params), ctypes.byref(tens), bt, _stream())
        else:
            rc = lib.qmamba_quant_conv1d_silu_prefill(ctypes.byref(params), ctypes.byref(tens), bt, L, _stream())
        kernels.check_status(rc, lib)
    return launch


def conv_torch_fp16(t, a, decode: bool):
    """The same conv + SiLU in fp16 PyTorch (what an unfused fp16 model runs)."""
    x16 = t["xBC"].half()
    w16 = t["weight"].half().unsqueeze(1)  # [C, 1, K]
    b16 = t["bias"].half()
    K = w16.shape[-1]
    if decode:
        st16 = t["conv_state"].half().transpose(1, 2).contiguous()  # [bt, C, K-1]

        def step():
            win = torch.cat([st16, x16.transpose(1, 2)], dim=-1)    # [bt, C, K]
            st16.copy_(win[..., 1:])
            return F.silu((win * w16.squeeze(1)).sum(-1) + b16)
        return step
    xt = x16.transpose(1, 2).contiguous()  # channels first, as F.conv1d wants
    return lambda: F.silu(F.conv1d(xt, w16, b16, padding=K - 1, groups=w16.shape[0])[..., : xt.shape[-1]])


def in_proj_conv_launch(t, a):
    """A no-argument launch of the conv kernel with the float source (QmambaInProjConv) on prepared tensors."""
    bt, L, width = t["zxbcdt"].shape
    params, tens, keep = _conv_call(t, a, bt, L, None, None, False)
    source = kernels.ConvFloatInput(_ptr(t["zxbcdt"]), _ptr(t["col_scale"]), width, a["xbc_offset"])
    lib = _lib()

    def launch():
        _ = keep
        rc = lib.qmamba_quant_conv1d_silu_prefill_from_float(ctypes.byref(params), ctypes.byref(source),
                                                              ctypes.byref(tens), bt, L, _stream())
        kernels.check_status(rc, lib)
    return launch


# ----------------------------------------------------------------------------- QuantSSD
def ssd_launch(t, a, decode: bool, chunk_size: int = 0):
    bt, L, _ = t["x"].shape
    h, p, n, g = a["nheads"], a["headdim"], a["d_state"], a["ngroups"]
    y = torch.empty(bt, L, h * p, dtype=torch.float16, device="cuda")
    st_in = t["ssm_state"]
    st_out = st_in if decode else torch.empty(bt, h, p, n, dtype=torch.int8, device="cuda")
    params = kernels.SSDParams(dt_scale=a["dt_scale"], dt_min=a["dt_min"], dt_max=a["dt_max"],
                               ngroups=g, nheads=h, headdim=p, d_state=n,
                               n_head_groups=t["x_out_scales"].shape[1],
                               n_dim_groups=t["x_out_scales"].shape[2], out_fp16=1,
                               chunk_size=chunk_size)
    tens = kernels.SSDTensors(*[_ptr(v) for v in (
        t["x"], t["dt"], t["B"], t["C"], t["A_log"], t["D"], t["dt_bias"], t["x_out_scales"],
        t["B_out_scales"], t["C_out_scales"], t["x_head_group_range"], t["x_dim_group_range"],
        t["ssm_state_scale"], st_in if decode else None, y, st_out)])
    lib = _lib()
    ws_bytes = 0 if decode else lib.qmamba_quant_ssd_prefill_workspace(ctypes.byref(params), bt, L)
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device="cuda") if ws_bytes else None
    keep = (y, st_out, ws)

    def launch():
        _ = keep
        if decode:
            rc = lib.qmamba_quant_ssd_decode(ctypes.byref(params), ctypes.byref(tens), bt, _stream())
        else:
            rc = lib.qmamba_quant_ssd_prefill(ctypes.byref(params), ctypes.byref(tens), bt, L, _ptr(ws), ws_bytes,
                                              _stream())
        kernels.check_status(rc, lib)
    return launch


def _segsum(a):
    T = a.shape[-1]
    cs = torch.cumsum(a, -1)
    out = cs[..., :, None] - cs[..., None, :]
    return out.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device)), -math.inf)


def ssd_torch_fp16(t, a, decode: bool, chunk: int = 128):
    """The same scan in fp16 PyTorch: the chunked SSD (ssd_minimal's form) or one decode step."""
    bt, L, _ = t["x"].shape
    h, p, n, g = a["nheads"], a["headdim"], a["d_state"], a["ngroups"]
    x = (t["x"].half() * 0.01).view(bt, L, h, p)
    dt = F.softplus(t["dt"].float() * a["dt_scale"] + t["dt_bias"]).half()
    A = -torch.exp(t["A_log"]).half()
    B = (t["B"].half() * 0.1).view(bt, L, g, n)
    C = (t["C"].half() * 0.1).view(bt, L, g, n)
    D = t["D"].half()
    if decode:
        S = (t["ssm_state"].half() * 0.01)
        Bh = B[:, 0].repeat_interleave(h // g, dim=1)
        Ch = C[:, 0].repeat_interleave(h // g, dim=1)

        def step():
            dA = torch.exp(dt[:, 0] * A)
            S.mul_(dA[..., None, None]).add_((dt[:, 0, :, None] * x[:, 0])[..., None] * Bh[:, :, None, :])
            return (S @ Ch[..., None]).squeeze(-1) + D[:, None] * x[:, 0]
        return step
    c = L // chunk

    def scan():
        X = (x * dt[..., None]).view(bt, c, chunk, h, p)
        Ac = (A * dt).view(bt, c, chunk, h).permute(0, 3, 1, 2)            # [b, h, c, l]
        Bc = B.repeat_interleave(h // g, dim=2).view(bt, c, chunk, h, n)
        Cc = C.repeat_interleave(h // g, dim=2).view(bt, c, chunk, h, n)
        A_cum = torch.cumsum(Ac, -1)
        Lm = torch.exp(_segsum(Ac))
        y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lm, X)
        decay_states = torch.exp(A_cum[..., -1:] - A_cum)
        states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, X)
        states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
        decay_chunk = torch.exp(_segsum(F.pad(A_cum[..., -1], (1, 0))))
        new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
        y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, new_states[:, :-1], torch.exp(A_cum))
        return (y_diag + y_off).reshape(bt, L, h, p) + D[:, None] * x, new_states[:, -1]
    return scan


# ----------------------------------------------------------------------------- driver
def time_peer(name: str, calls, nbytes: int, copy_bw: float) -> dict:
    """The peer's columns of a row, timed as the qmamba kernel is; NaN (and a note) if its calls
    cannot run or be captured in a graph, so that one peer does not end the run."""
    try:
        ms = time_graph(calls)
    except (RuntimeError, AssertionError) as e:
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        ms = float("nan")
    return dict(peer=name, peer_ms=ms, peer_bytes=nbytes, peer_of_copy=nbytes / (ms * 1e-3) / copy_bw)


def bench(kind: str, s: LayerShape, bt: int, L: int, copy_bw: float, gen, baseline: bool,
          peers: kernel_peers.Peers | None = None, **kw) -> dict:
    decode = L == 1
    if kind == "in_proj_conv":  # prefill only; no peer (the fp16 conv reads no int8)
        nbytes = kernel_bytes.in_proj_conv_bytes(bt, L, s.conv_dim, s.d_conv)
        sets = [kc.in_proj_conv_case(s, bt, L, gen) for _ in range(n_sets(nbytes))]
        calls, base, peers = [in_proj_conv_launch(t, a) for t, a in sets], None, None
    elif kind == "conv":
        nbytes = kernel_bytes.quant_conv_bytes(bt, L, s.conv_dim, s.d_conv)
        sets = [kc.conv_case(s, bt, L, gen) for _ in range(n_sets(nbytes))]
        calls = [conv_launch(t, a, decode) for t, a in sets]
        base = [conv_torch_fp16(t, a, decode) for t, a in sets[:4]] if baseline else None
        if peers:
            # without causal_conv1d, Mamba2 runs PyTorch's conv1d + SiLU: the fp16 baseline
            peer_calls = [kernel_peers.conv_peer(peers, t, a, decode) or conv_torch_fp16(t, a, decode)
                          for t, a in sets]
            peer_name = "causal_conv1d" if peers.conv_fn else "torch fp16"
            peer_bytes = kernel_bytes.fp16_conv_bytes(bt, L, s.conv_dim, s.d_conv, decode)
    else:
        nbytes = kernel_bytes.quant_ssd_bytes(bt, L, s.nheads, s.headdim, s.d_state, s.ngroups, decode)
        sets = [kc.ssd_case(s, bt, L, gen, with_state=decode) for _ in range(n_sets(nbytes))]
        calls = [ssd_launch(t, a, decode, **kw) for t, a in sets]
        base = [ssd_torch_fp16(t, a, decode) for t, a in sets[:2]] if baseline else None
        if peers:
            peer_calls = [kernel_peers.ssd_peer(peers, t, a, decode) for t, a in sets]
            peer_name = "mamba_ssm"
            peer_bytes = kernel_bytes.fp16_ssd_bytes(bt, L, s.nheads, s.headdim, s.d_state, s.ngroups, decode)
    ms = time_graph(calls)
    row = dict(kernel=kind + (" decode" if decode else " prefill"), shape=s.__dict__, batch=bt, L=L,
               ms=ms, bytes=nbytes, GBps=nbytes / (ms * 1e-3) / 1e9, of_copy=nbytes / (ms * 1e-3) / copy_bw, **kw)
    if peers:
        row |= time_peer(peer_name, peer_calls, peer_bytes, copy_bw)
        del peer_calls
    if base:
        try:
            row["torch_fp16_ms"] = time_graph(base, reps=10)
        except torch.cuda.OutOfMemoryError:
            row["torch_fp16_ms"] = float("nan")
    del sets, calls, base
    torch.cuda.empty_cache()
    return row


def row_key(r: dict) -> tuple:
    """What makes a row: the same key in two runs is the same measurement."""
    return r["kernel"], r["layer"], r["batch"], r["L"], r.get("chunk_size")


def previous_command(args) -> tuple[list[str], dict]:
    """This script on the earlier library (``--previous``), qmamba's kernels only, rows into ``args.json``'s place."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--no-peers", "--no-baseline"]
    cmd += ["--quick"] * args.quick + ["--decode-only"] * args.decode_only + (["--only", args.only] if args.only else [])
    return cmd, {**os.environ, "QMAMBA_KERNELS_LIB": str(args.previous)}


def previous_times(args) -> dict:
    """row_key -> ms of the earlier library at the same shapes, timed by a process of its own (a library is
    loaded once a process), right after this one's rows."""
    cmd, env = previous_command(args)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "previous.json"
        subprocess.run([*cmd, "--json", str(out)], env=env, check=True, stdout=subprocess.DEVNULL)
        return {row_key(r): r["ms"] for r in json.loads(out.read_text())["rows"]}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one shape per kernel")
    ap.add_argument("--json", type=pathlib.Path, default=None)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--decode-only", action="store_true", help="only the decode kernels")
    ap.add_argument("--only", choices=["conv", "ssd"], default=None, help="only this op's rows")
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                    help="also time mamba_ssm's (and causal_conv1d's) fp16 kernels at the same shapes "
                         "(default: when mamba_ssm is importable)")
    ap.add_argument("--previous", type=pathlib.Path, metavar="LIB",
                    help="an earlier build's libqmamba_kernels.so: its times at the same shapes (taken right after, "
                         "in a process of its own) and previous / now beside each row")
    return ap


def main() -> int:
    args = parser().parse_args()
    if kernels.library_path() is None or not torch.cuda.is_available():
        print("needs a CUDA GPU and libqmamba_kernels", file=sys.stderr)
        return 2
    if args.previous is not None and not args.previous.is_file():
        print(f"--previous {args.previous}: no such file", file=sys.stderr)
        return 2
    peers = None
    if args.peers is not False:
        peers, why = kernel_peers.load_peers()
        if peers is None:
            print(f"mamba_ssm not importable: peers skipped ({why})", file=sys.stderr)
            if args.peers:
                return 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    copy_bw = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth {copy_bw / 1e9:.0f} GB/s (read + write)")
    layers = {k: kc.LAYERS[k] for k in ("2.7b", "8b")}
    lengths = [2048] if args.quick else [512, 2048, 8192]
    rows = []
    for kind in ("conv", "ssd") if args.only is None else (args.only,):
        for name, s in layers.items():
            for bt in (() if args.decode_only else (1, 8)):
                for L in lengths:
                    rows.append(bench(kind, s, bt, L, copy_bw, gen, not args.no_baseline, peers) | {"layer": name})
                    print(_fmt(rows[-1]), flush=True)
                    if kind == "conv" and hasattr(_lib(), "qmamba_quant_conv1d_silu_prefill_from_float"):
                        # The same conv reading in_proj's float output (QmambaInProjConv); an earlier library has none.
                        rows.append(bench("in_proj_conv", s, bt, L, copy_bw, gen, False) | {"layer": name})
                        print(_fmt(rows[-1]), flush=True)
            for bt in ((16,) if args.quick else (1, 8, 16, 64)):
                rows.append(bench(kind, s, bt, 1, copy_bw, gen, not args.no_baseline, peers) | {"layer": name})
                print(_fmt(rows[-1]), flush=True)
    # The SSD prefill's chunk length at the heaviest shape and at batch 1, where fewer chunks mean fewer blocks.
    chunk_shapes = () if args.decode_only or args.only == "conv" else (("8b", 8), ("2.7b", 1))
    for name, bt in chunk_shapes:
        for cs in (32, 64, 128, 256):
            rows.append(bench("ssd", layers[name], bt, 2048, copy_bw, gen, False, chunk_size=cs) | {"layer": name})
            print(_fmt(rows[-1]), flush=True)
    if args.previous is not None:
        before = previous_times(args)
        print(f"\nagainst {args.previous} (previous / now > 1: this build is faster)")
        for r in rows:
            r["previous_ms"] = before.get(row_key(r), float("nan"))
            print(f"{_label(r)} {r['ms'] * 1e3:9.1f} us, previous {r['previous_ms'] * 1e3:9.1f} us, "
                  f"previous/now {r['previous_ms'] / r['ms']:5.2f}x")
    if args.json:
        args.json.write_text(json.dumps(dict(copy_bw=copy_bw, rows=rows), indent=1))
    return 0


def _fmt(r: dict) -> str:
    base = r.get("torch_fp16_ms")
    extra = f"  torch fp16 {base:8.4f} ms ({base / r['ms']:5.1f}x)" if base else ""
    if "peer" in r:
        extra = (f"  | {r['peer']} {r['peer_ms'] * 1e3:9.1f} us {100 * r['peer_of_copy']:5.1f}% of copy, "
                 f"peer/qmamba {r['peer_ms'] / r['ms']:5.2f}x |" + extra)
    return f"{_label(r)} {r['ms'] * 1e3:9.1f} us {r['GBps']:7.0f} GB/s {100 * r['of_copy']:5.1f}% of copy{extra}"


def _label(r: dict) -> str:
    """A row's kernel, layer, batch, length and chunk, as every table of this script names it."""
    cs = f" chunk {r['chunk_size']}" if "chunk_size" in r else ""
    return f"{r['kernel']:<12} {r.get('layer', ''):>5} b={r['batch']:<3} L={r['L']:<5}{cs}"


if __name__ == "__main__":
    sys.exit(main())
