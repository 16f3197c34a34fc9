"""``qmamba build DIR -o ENGINES``: the ONNX pair of ``qmamba export`` -> TensorRT engines.

ENGINES gets prefill.engine and decode.engine (each with a ``.json`` of what it was built with and
for: TensorRT, plugin library, GPU, profile, checked when it is loaded) and qmamba_engines.json (the
model config, state layout and the bytes a decode step must read, for ``qmamba bench``).

The prefill engine's profile covers ``--batch`` and ``--seq``; the decode engine's covers ``--batch``
with one token per row. TensorRT's Python API builds when it is importable, else the C++ runner
(libqmamba_runner.so) does; ``--backend`` picks one explicitly.

The graphs TensorRT gets are the exported ones rewritten (``trt_graph``): the decode plugins' fusions
(``decode_fusion``), the prefill's gated norms and RMSNorms as QmambaGatedNorm (``prefill_fusion``) and the Q/DQ
rewrites of TensorRT's explicit quantization (``trt8_graph``).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from qmamba.export.metadata import ONNX_METADATA, read_onnx_metadata, write_engines_metadata
from qmamba.export.onnx_export import save_graph
from qmamba.output_dir import atomic_output_dir, carry_over, check_output_dir
from qmamba.tokenizer import copy_tokenizer_files
from . import trt_builder, trt_runner
from .decode_fusion import (DECODE_LINEAR_CHOICES, DECODE_MIXER_CHOICES, LINEAR_PLUGIN_MAX_BATCH,
                            decode_linear_plugin, fuse_decode_linears, fuse_decode_mixers)
from .in_proj_conv_fusion import fuse_in_proj_convs
from .in_proj_pieces import in_proj_pieces
from .last_logits import last_position_logits
from .onnx_validate import validate_onnx_model
from .prefill_fusion import OP_NAME as NORM_PLUGIN, fuse_prefill_gated_norms
from .scale_after_split import scale_after_split
from .trt8_graph import bits_as_float_outputs, explicit_zero_points, float_fake_quant, qdq_plugin_edges
from .weight_channel_scale import weight_channel_scales


def _range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (three integers), got {text!r}")
    return parts


def _level(text: str) -> int:
    if not text.isdigit() or int(text) > 5:
        raise argparse.ArgumentTypeError(f"expected an optimization level 0..5, got {text!r}")
    return int(text)


TIMING_CACHE = "timing.cache"
# TensorRT's builder optimization level. At 3 (TensorRT's default) TensorRT 8.6 times tactics for minutes
# even on the shipped 4 M-parameter models (docs/tensorrt.md, "Build time"); 0 builds their engine pair
# in under a minute.
DEFAULT_OPTIMIZATION_LEVEL = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx_dir", metavar="DIR", help="output directory of `qmamba export`")
    parser.add_argument("-o", "--out", required=True, metavar="ENGINES", help="engine directory to write")
    parser.add_argument("--batch", type=_range, default=(1, 1, 8), metavar="MIN,OPT,MAX",
                        help="batch range of both engines (default 1,1,8)")
    parser.add_argument("--seq", type=_range, default=(1, 128, 2048), metavar="MIN,OPT,MAX",
                        help="prompt length range of the prefill engine (default 1,128,2048)")
    parser.add_argument("--plugins", metavar="LIB", help="libqmamba_trt_plugins.so (default: the built one)")
    parser.add_argument("--fp16", action="store_true", help="allow fp16 kernels for the float parts (TensorRT 8)")
    parser.add_argument("--no-tactic-libraries", action="store_true",
                        help="no cuBLAS/cuBLASLt/cuDNN tactics (a TensorRT installed without those libraries)")
    parser.add_argument("--builder-optimization-level", type=_level, metavar="0..5",
                        default=DEFAULT_OPTIMIZATION_LEVEL,
                        help=f"TensorRT's builder optimization level (trtexec --builderOptimizationLevel; "
                             f"default {DEFAULT_OPTIMIZATION_LEVEL}; TensorRT's own default is 3): higher levels "
                             f"time more tactics, build for minutes and may give faster engines")
    parser.add_argument("--timing-cache", metavar="FILE",
                        help=f"tactic timings to reuse and update (trtexec --timingCacheFile; default "
                             f"ENGINES/{TIMING_CACHE}): a rebuild on the same GPU and TensorRT skips their timing")
    parser.add_argument("--no-timing-cache", action="store_true", help="build without a timing cache")
    parser.add_argument("--backend", choices=("auto", "python", "cpp"), default="auto",
                        help="TensorRT's Python API or the C++ runner (auto: Python if importable)")
    parser.add_argument("--keep-onnx", action="store_true",
                        help="keep the graphs given to TensorRT (prefill.trt.onnx, decode.trt.onnx) beside the "
                             "engines, e.g. for trtexec with TensorRT 8")
    parser.add_argument("--force", action="store_true", help="replace an existing engine directory")
    parser.add_argument("--decode-linear", choices=DECODE_LINEAR_CHOICES, default="auto",
                        help="the decode engine's W8A8 linears: qmamba's matrix-vector plugin QmambaW8A8Linear "
                             f"or TensorRT's int8 MatMul (auto: the plugin up to batch {LINEAR_PLUGIN_MAX_BATCH})")
    parser.add_argument("--prefill-logits", choices=PREFILL_LOGITS_CHOICES, default="all",
                        help="the prefill engine's logits: every position's (all, as the export) or the last "
                             "position's only (last: what generation reads; much less lm_head work and output "
                             "for a large vocabulary)")
    parser.add_argument("--decode-mixer", choices=DECODE_MIXER_CHOICES, default="plugin",
                        help="each decode mixer (in_proj's output to the gated norm) as one QmambaDecodeMixer "
                             "node, its states as int32 words (plugin), or as the exported ops (tensorrt)")
    parser.add_argument("--no-prefill-norm-plugin", action="store_true",
                        help=f"keep the prefill engine's gated norms and Hadamard rotations, and its RMSNorms, as the "
                             f"exported graph's layers instead of one {NORM_PLUGIN} node each")
    parser.add_argument("--decode-rotation-pass", action=argparse.BooleanOptionalAction, default=True,
                        help="the decode engine's gated norm and Hadamard rotation before out_proj inside "
                             "QmambaW8A8Linear (a pass of its own, QmambaGatedNorm's kernel; the default: a decode "
                             "step 1.56x faster at batch 1 than with the graph's layers, docs/tensorrt.md), or "
                             "(--no-decode-rotation-pass) as the graph's layers")
    parser.add_argument("--weight-channel-scales", action="store_true",
                        help="each W8A8 linear's output scale as its weight's per-channel DequantizeLinear scale, so "
                             "that TensorRT applies it in the GEMM instead of a pass of its own "
                             "(runtime/weight_channel_scale.py); not yet measured")
    parser.add_argument("--fuse-in-proj-split", action="store_true",
                        help="the prefill's readers of in_proj's output read it whole: each layer's conv as one "
                             "QmambaInProjConv node that quantizes x, B and C as it reads them (no scale Muls, "
                             "QuantizeLinear or Concat passes; runtime/in_proj_conv_fusion.py), and QmambaGatedNorm "
                             "its z as the first columns of each row (no copy of the z piece); not yet run on a GPU")
    parser.add_argument("--in-proj-pieces", action="store_true",
                        help="the prefill engine's in_proj as one GEMM per piece (z; x, B and C; dt), the int8 pieces "
                             "quantized in their GEMM instead of passes over its fp32 output (runtime/in_proj_pieces.py; "
                             "implies --weight-channel-scales); refused with TensorRT 8, which cannot build it; not yet run on 10+")


def _read_export(onnx_dir: Path) -> dict:
    """qmamba_onnx.json of ``onnx_dir``, with both graph files present."""
    meta = read_onnx_metadata(onnx_dir)
    for kind in ("prefill", "decode"):
        f = onnx_dir / meta["graphs"][kind]["file"]
        if not f.is_file():
            raise FileNotFoundError(f"{onnx_dir}: {f.name} is missing")
    return meta


def decode_bytes(meta: dict, onnx_path: Path) -> dict:
    """What a decode step must move: every weight once, and per batch row the states read and written."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weight_bytes = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        weight_bytes += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    state_row = 0
    for s in meta["states"]:
        for k in ("conv_state", "ssm_state"):
            n = 1
            for d in s[k]["shape"][1:]:
                n *= int(d)
            state_row += n  # int8
    return {"weight_bytes": weight_bytes, "state_bytes_per_row": state_row}


def trt_graph(model, tensorrt_major: int, linear_plugin: bool = False, mixer_plugin: bool = False,
              notes: dict | None = None, norm_plugin: bool = False, rotation_pass: bool = False,
              channel_scales: bool = False, pieces: bool = False, in_proj_split: bool = False):
    """The exported graph as the TensorRT of that major version builds it; every rewrite is exact
    (fuse_decode_linears and fuse_prefill_gated_norms up to their order of summation, in_proj_pieces up to a
    rounding tie).
    Decode graphs: ``mixer_plugin``: fuse_decode_mixers first (what ran goes to ``notes["decode_mixers"]``);
    ``linear_plugin``: fuse_decode_linears (out_proj's Hadamard rotation into it with ``rotation_pass``; where the
    rotation went: ``notes["decode_rotation"]``). Prefill graphs:
    ``channel_scales``: weight_channel_scales (after the decode fusions, which read the linears as exported; before
    scale_after_split, which then finds no Mul to move). ``pieces``: in_proj_pieces after it (channel scales
    implied; where it went: ``notes["in_proj_pieces"]``).
    ``in_proj_split``: in_proj's Split fused into its prefill readers: fuse_in_proj_convs (in how many layers:
    ``notes["in_proj_conv"]``), after scale_after_split, so that the node takes the x, B and C pieces' Muls of
    in_proj's output scale along, and fuse_prefill_gated_norms' z from in_proj's whole rows (``z_whole_row``).
    ``norm_plugin``: fuse_prefill_gated_norms (in how many layers and RMSNorms: ``notes["prefill_gated_norm"]``),
    after scale_after_split, so that the node takes the z piece's Mul of in_proj's output scale along.
    All versions:
    scale_after_split (in_proj's output scale after its Split, so that TensorRT can fuse it into each piece's
    quantization; after the decode fusions, which read in_proj's whole output), float_fake_quant (seen wrong on
    8.6; kept for 10+, where it could not be checked), explicit_zero_points. TensorRT 8 also: qdq_plugin_edges and
    bits_as_float_outputs (its explicit-quantization rules, docs/tensorrt.md)."""
    if mixer_plugin:
        model, what = fuse_decode_mixers(model)
        if notes is not None:
            notes["decode_mixers"] = what
    if linear_plugin:
        model = fuse_decode_linears(model, notes, rotation_pass)
    if channel_scales or pieces:
        model = weight_channel_scales(model, notes)
    if pieces:
        model = in_proj_pieces(model, notes)
    model = scale_after_split(model)  # before the prefill fusions, which take the pieces' Muls of it along
    if in_proj_split:
        model = fuse_in_proj_convs(model, notes)
    if norm_plugin:
        model = fuse_prefill_gated_norms(model, notes, z_whole_row=in_proj_split)
    model = explicit_zero_points(float_fake_quant(model))
    if tensorrt_major < 10:
        model = bits_as_float_outputs(qdq_plugin_edges(model))
    return model


def _trt_onnx(onnx_path: Path, out_dir: Path, major: int, linear_plugin: bool, mixer_plugin: bool,
              notes: dict, last_logits: bool = False, norm_plugin: bool = False, rotation_pass: bool = False,
              channel_scales: bool = False, pieces: bool = False, in_proj_split: bool = False) -> Path:
    """onnx_path rewritten by trt_graph for that TensorRT (a prefill cut to its last position's logits
    first when ``last_logits``), written into out_dir."""
    import onnx

    model = onnx.load(str(onnx_path))
    if last_logits:
        model = last_position_logits(model)
    model = trt_graph(model, major, linear_plugin, mixer_plugin, notes, norm_plugin, rotation_pass, channel_scales,
                      pieces, in_proj_split)
    path = out_dir / f"{onnx_path.stem}.trt.onnx"
    # Past protobuf's 2 GiB (a 2.7b model) the weights go to a file beside the graph; ByteSize()
    # itself fails there, so the weights are counted instead.
    save_graph(model, path)
    return path


PREFILL_LOGITS_CHOICES = ("all", "last")
LARGE_LOGITS_BYTES = 2**30  # above this, build points to --prefill-logits last
NO_IMPLEMENTATION = "Could not find any implementation for node"


def no_implementation_hint(kind: str, profile: trt_runner.Profile) -> str:
    """What to change when TensorRT has no kernel for a region it fused (a ForeignNode): on TensorRT 8.6
    that has depended on the profile and the optimization level, not on the graph (docs/tensorrt.md,
    "Build time")."""
    return (f"TensorRT found no kernel for a region it fused in the {kind} graph with the profile "
            f"{profile.describe()}. TensorRT 8.6 has failed so at builder optimization level 3 with --batch 1,2,4 "
            f"--seq 1,128,512, and built the same graphs at level 0 and with the default profile (--batch 1,1,8 "
            f"--seq 1,128,2048) at level 3: try the default profile, an optimum batch of 1 or "
            f"--builder-optimization-level 0 (the default); `qmamba bisect-build` with the same options finds "
            f"the first tensor whose computation does not build.")


# TensorRT 8.6.0 fails an internal assertion on the prefill graph with in_proj as int8-output GEMMs
# (H100, 2.7b-shaped, 8 and 64 layers, level 0, without cuBLAS/cuDNN tactics).
IN_PROJ_PIECES_TRT8 = (
    "build: --in-proj-pieces is refused with TensorRT 8: TensorRT 8.6 stops building that prefill graph with "
    "\"[graphOptimizer.cpp::chooseHigherPrecision] Assertion dt1 == DataType::kFLOAT || dt1 == DataType::kHALF "
    "failed\"; build without --in-proj-pieces (--weight-channel-scales alone builds)")


def tensorrt_major(trt=None) -> int:
    """Major version of the TensorRT that builds: its Python package's, else the C++ runner's."""
    if trt is not None:
        return int(trt.__version__.split(".")[0])
    text = trt_runner.runner_library().qmr_tensorrt_version().decode()  # "TensorRT 8.6.0"
    return int(text.split()[-1].split(".")[0])


def build_engines(onnx_dir, out_dir, *, batch=(1, 1, 8), seq=(1, 128, 2048), plugins=None, fp16=False,
                  no_tactic_libraries=False, backend="auto", force=False, keep_onnx=False,
                  decode_linear="auto", decode_mixer="plugin", optimization_level=DEFAULT_OPTIMIZATION_LEVEL,
                  timing_cache="default", prefill_logits="all", prefill_norm_plugin=True, decode_rotation_pass=True,
                  weight_channel_scales=False, in_proj_pieces=False, fuse_in_proj_split=False,
                  progress=None) -> dict:
    """Builds ENGINES/prefill.engine and decode.engine; returns the written qmamba_engines.json.

    Everything given is checked before TensorRT is loaded or anything is written: the export's
    metadata and graphs (``validate_onnx_model``: a NaN or a zero scale is refused here rather than
    built into an engine), the profiles, the output (``atomic_output_dir``: ENGINES appears whole
    or not at all, and replaces an existing folder only with ``force``).

    ``timing_cache``: a file of tactic timings read before and written after each engine (``"default"``:
    ENGINES/timing.cache, carried over from the folder a ``force`` build replaces; None: none).
    ``optimization_level``: TensorRT's builder optimization level (None: TensorRT's own default, 3).
    ``prefill_logits``: "all" (the exported graph's [batch, seq, vocab]) or "last" (the last position's
    [batch, 1, vocab] only, what generation reads: runtime/last_logits.py).
    ``prefill_norm_plugin``: each prefill layer's gated norm and rotation, and each RMSNorm before in_proj and
    lm_head, as one QmambaGatedNorm node (runtime/prefill_fusion.py); False keeps the graph's layers.
    ``decode_rotation_pass``: out_proj's gated norm and Hadamard rotation into its QmambaW8A8Linear (a rotation pass
    of its own; the default, faster on an H100); False keeps them as the graph's layers.
    ``weight_channel_scales``: the linears' output scales into their weights' DequantizeLinear
    (runtime/weight_channel_scale.py), in both engines; where they went: ``weight_channel_scales`` of the result.
    ``in_proj_pieces``: the prefill engine's in_proj as one GEMM per piece with the int8 pieces quantized in it
    (runtime/in_proj_pieces.py; implies ``weight_channel_scales``); how many: ``in_proj_pieces`` of the result.
    Refused with TensorRT 8 (IN_PROJ_PIECES_TRT8), before anything is written.
    ``fuse_in_proj_split``: each prefill layer's xBC quantization and conv as one QmambaInProjConv node reading
    in_proj's output (runtime/in_proj_conv_fusion.py; in how many layers: ``in_proj_conv`` of the result), and
    QmambaGatedNorm's z read from in_proj's whole rows (``prefill_gated_norm`` says in how many).
    ``progress``: called with a line before and after each engine.
    """
    onnx_dir, out = Path(onnx_dir), Path(out_dir)
    meta = _read_export(onnx_dir)
    profiles = {"prefill": trt_runner.Profile(tuple(batch), tuple(seq)),
                "decode": trt_runner.Profile(tuple(batch), (1, 1, 1))}
    if prefill_logits not in PREFILL_LOGITS_CHOICES:
        raise ValueError(f"build: prefill_logits must be one of {PREFILL_LOGITS_CHOICES}, got {prefill_logits!r}")
    if decode_mixer not in DECODE_MIXER_CHOICES:
        raise ValueError(f"build: decode_mixer must be one of {DECODE_MIXER_CHOICES}, got {decode_mixer!r}")
    for kind in profiles:
        validate_onnx_model(onnx_dir / meta["graphs"][kind]["file"])
    check_output_dir(out, force=force, inputs=[onnx_dir])
    plugins = Path(plugins) if plugins else trt_runner.plugin_library()
    if not plugins.is_file():
        raise FileNotFoundError(f"plugin library {plugins} does not exist")
    trt = trt_runner.tensorrt_python() if backend in ("auto", "python") else None
    if backend == "python" and trt is None:
        raise RuntimeError("--backend python: TensorRT's Python package is not importable")
    major = tensorrt_major(trt)
    if in_proj_pieces and major < 10:
        raise ValueError(IN_PROJ_PIECES_TRT8)
    linear_plugin = decode_linear_plugin(decode_linear, batch[2])
    say = progress or (lambda line: None)
    logits_bytes = batch[2] * seq[2] * meta["config"]["vocab_size"] * 4
    if prefill_logits == "all" and logits_bytes > LARGE_LOGITS_BYTES:
        say(f"note: the prefill engine returns logits for every position: {logits_bytes / 2**30:.1f} GiB of fp32 "
            f"at batch {batch[2]} x seq {seq[2]} x vocab {meta['config']['vocab_size']}, computed and held on the "
            f"device; --prefill-logits last returns the last position's only (what generation reads)")
    notes = {"decode_mixers": "TensorRT layers (--decode-mixer tensorrt)",
             "prefill_gated_norm": "graph ops (--no-prefill-norm-plugin)"}
    build_times = {}
    with atomic_output_dir(out, force=force, inputs=[onnx_dir]) as tmp:
        if timing_cache == "default":
            carry_over(out, tmp, [TIMING_CACHE])
            cache = tmp / TIMING_CACHE
        else:
            cache = None if timing_cache is None else Path(timing_cache)
        for kind, profile in profiles.items():
            decode = kind == "decode"
            onnx_path = _trt_onnx(onnx_dir / meta["graphs"][kind]["file"], tmp, major, linear_plugin and decode,
                                  decode_mixer == "plugin" and decode, notes,
                                  last_logits=prefill_logits == "last" and not decode,
                                  norm_plugin=prefill_norm_plugin and not decode,
                                  rotation_pass=decode_rotation_pass and decode,
                                  channel_scales=weight_channel_scales or in_proj_pieces,
                                  pieces=in_proj_pieces and not decode,
                                  in_proj_split=fuse_in_proj_split and not decode)
            engine_path = tmp / f"{kind}.engine"
            say(f"building {engine_path.name} ({profile.describe()})")
            start = time.perf_counter()
            try:
                if trt is not None:
                    trt_builder.build_engine(trt, onnx_path, engine_path, profile, plugins, fp16,
                                             no_tactic_libraries, optimization_level, cache)
                else:
                    trt_runner.build_engine(onnx_path, engine_path, profile, plugins, fp16, no_tactic_libraries,
                                            optimization_level, cache)
                build_times[kind] = round(time.perf_counter() - start, 1)
                say(f"built {engine_path.name} in {build_times[kind]:.1f} s "
                    f"({engine_path.stat().st_size / 1e6:.1f} MB)")
            except RuntimeError as e:  # TrtRunnerError, and the Python API's failures
                if NO_IMPLEMENTATION not in str(e):
                    raise
                raise trt_runner.TrtRunnerError(f"{e}\n{no_implementation_hint(kind, profile)}") from e
            finally:
                if not keep_onnx:
                    for f in (onnx_path, Path(f"{onnx_path}.data")):
                        f.unlink(missing_ok=True)
        engines = {"format": "qmamba-engines", "version": 1, "config": meta["config"], "states": meta["states"],
                   "backend": "python" if trt is not None else "cpp",
                   "decode_linears": "QmambaW8A8Linear" if linear_plugin else "TensorRT int8 MatMul",
                   "decode_mixers": notes["decode_mixers"],
                   "prefill_gated_norm": notes["prefill_gated_norm"],
                   **({"decode_rotation": notes["decode_rotation"]} if "decode_rotation" in notes else {}),
                   **({"weight_channel_scales": notes["weight_channel_scales"]}
                      if "weight_channel_scales" in notes else {}),
                   **({"in_proj_pieces": notes["in_proj_pieces"]} if "in_proj_pieces" in notes else {}),
                   **({"in_proj_conv": notes["in_proj_conv"]} if "in_proj_conv" in notes else {}),
                   "prefill_logits": prefill_logits,
                   "profiles": {k: {"batch": list(p.batch), "seq": list(p.seq)} for k, p in profiles.items()},
                   "build_seconds": build_times,
                   **decode_bytes(meta, onnx_dir / meta["graphs"]["decode"]["file"])}
        if "tokenizer" in meta:
            engines["tokenizer"] = meta["tokenizer"]
        write_engines_metadata(tmp, engines)
        shutil.copyfile(onnx_dir / ONNX_METADATA, tmp / ONNX_METADATA)
        copy_tokenizer_files(onnx_dir, tmp)   # generate and eval read the engine directory alone
    return engines


def run(args) -> int:
    meta = build_engines(args.onnx_dir, args.out, batch=args.batch, seq=args.seq, plugins=args.plugins,
                         fp16=args.fp16, no_tactic_libraries=args.no_tactic_libraries, backend=args.backend,
                         force=args.force, keep_onnx=args.keep_onnx, decode_linear=args.decode_linear,
                         decode_mixer=args.decode_mixer, optimization_level=args.builder_optimization_level,
                         timing_cache=None if args.no_timing_cache else args.timing_cache or "default",
                         prefill_logits=args.prefill_logits, prefill_norm_plugin=not args.no_prefill_norm_plugin,
                         decode_rotation_pass=args.decode_rotation_pass,
                         weight_channel_scales=args.weight_channel_scales, in_proj_pieces=args.in_proj_pieces,
                         fuse_in_proj_split=args.fuse_in_proj_split, progress=lambda line: print(line, flush=True))
    print(f"built with {'TensorRT Python API' if meta['backend'] == 'python' else 'the C++ runner'}; "
          f"decode reads {meta['weight_bytes'] / 1e6:.1f} MB of weights per step; its linears: {meta['decode_linears']}; "
          f"its mixers: {meta['decode_mixers']}"
          + (f"; its Hadamard rotation: {meta['decode_rotation']}" if "decode_rotation" in meta else "")
          + f"; prefill gated norm: {meta['prefill_gated_norm']}"
          + (f"; output scales: {meta['weight_channel_scales']}" if "weight_channel_scales" in meta else "")
          + (f"; prefill in_proj: {meta['in_proj_pieces']}" if "in_proj_pieces" in meta else "")
          + (f"; prefill conv: {meta['in_proj_conv']}" if "in_proj_conv" in meta else ""))
    return 0
