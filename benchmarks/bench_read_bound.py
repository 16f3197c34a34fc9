"""How fast can one kernel read a decode linear's weights? The ceiling under the decode bound.

The decode bound (`qmamba bench`, benchmarks/bench_decode_step.py) divides a step's bytes by the copy
bandwidth of a 1 GiB cudaMemcpy. A decode step is instead a chain of short kernels, each reading 13 to
27 MB (2.7b's out_proj and in_proj). This measures a kernel that does nothing but read such a weight
matrix (16-byte loads, eight in flight per thread, grid 1-8 blocks per SM, best taken), launched back
to back on distinct buffers so that L2 holds none of them, and prints what a layer made of two such
reads would take against that bound; then a step's reads (8 layers) as separate kernels and as one
cooperative kernel with a grid barrier between matrices, with and without prefetching the next matrix
into L2 before the barrier. No qmamba code runs: it is the floor any kernel of this kind stands on, and
what a single persistent decode kernel could reach.

    python benchmarks/bench_read_bound.py [--json out.json]

Needs CuPy (on the device image; not a qmamba dependency).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics

import cupy as cp
import numpy as np

READ_KERNEL = r"""
extern "C" __global__ void read_only(const int4* __restrict__ p, long long n16, int* out) {
  int acc = 0;
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (; i + 7 * stride < n16; i += 8 * stride) {
    int4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = __ldg(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) { const int4 v = __ldg(p + i); acc ^= v.x ^ v.y ^ v.z ^ v.w; }
  if (acc == 0x12345678) out[0] = acc;  // keeps the loads
}
"""
# The same reads for a whole step in one cooperative kernel: matrix after matrix, a grid-wide barrier
# between them (what one persistent decode kernel would need between its phases); with `prefetch`, each
# thread asks L2 for its share of the next matrix once it has read its share of this one, so that memory
# keeps streaming across the barrier.
STEP_KERNEL = r"""
#include <cooperative_groups.h>
extern "C" __global__ void read_step(const unsigned long long* ptrs, const long long* n16s, int count,
                                     int prefetch, int* out) {
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  int acc = 0;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  for (int m = 0; m < count; ++m) {
    const int4* p = reinterpret_cast<const int4*>(ptrs[m]);
    const long long n16 = n16s[m];
    long long i = tid;
    for (; i + 7 * stride < n16; i += 8 * stride) {
      int4 v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = __ldg(p + i + u * stride);
#pragma unroll
      for (int u = 0; u < 8; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) { const int4 v = __ldg(p + i); acc ^= v.x ^ v.y ^ v.z ^ v.w; }
    if (prefetch && m + 1 < count) {
      const char* q = reinterpret_cast<const char*>(ptrs[m + 1]);
      for (long long off = tid * 128; off < n16s[m + 1] * 16; off += stride * 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(q + off));
      }
    }
    grid.sync();
  }
  if (acc == 0x12345678) out[0] = acc;
}
"""
# The same with the weights staged in shared memory: one thread per block keeps a ring of chunks
# in flight by bulk copies (Hopper's cp.async.bulk), running through its share of every matrix in
# order, across the barriers: the chunks of the next matrix load while the block waits at the barrier
# for the others. This is how a persistent decode kernel would stream weights (its arithmetic and the
# activations' dependencies left out).
STAGED_KERNEL = r"""
#include <cooperative_groups.h>
__device__ __forceinline__ unsigned smem(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
extern "C" __global__ void read_step_staged(const unsigned long long* ptrs, const long long* nbytes, int count,
                                            int depth, int chunk, int* out) {
  extern __shared__ __align__(128) char ring[];
  __shared__ __align__(8) unsigned long long full[32];
  __shared__ long long share_lo[64], share_len[64];  // this block's share of each matrix, 16-byte aligned
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int m = threadIdx.x; m < count; m += blockDim.x) {
    const long long n = nbytes[m], per = ((n + gridDim.x - 1) / gridDim.x + 15) / 16 * 16;
    share_lo[m] = min(n, (long long)blockIdx.x * per);
    share_len[m] = min(n, share_lo[m] + per) - share_lo[m];
  }
  __syncthreads();
  auto share = [&](int m, long long& lo, long long& len) { lo = share_lo[m]; len = share_len[m]; };
  int pm = 0;
  long long poff = 0;  // the producer's place (thread 0)
  auto produce = [&](int slot) {
    long long lo, len;
    for (; pm < count; ++pm, poff = 0) {
      share(pm, lo, len);
      if (poff < len) break;
    }
    if (pm >= count) return;
    const unsigned bytes = (unsigned)min((long long)chunk, len - poff);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem(&full[slot])), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(smem(ring + slot * chunk)), "l"(reinterpret_cast<const char*>(ptrs[pm]) + lo + poff),
                 "r"(bytes), "r"(smem(&full[slot])) : "memory");
    poff += bytes;
  };
  if (threadIdx.x == 0) {
    for (int d = 0; d < depth; ++d) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem(&full[d])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int d = 0; d < depth; ++d) produce(d);
  }
  __syncthreads();
  int acc = 0;
  long long j = 0;  // chunks consumed
  for (int m = 0; m < count; ++m) {
    long long lo, len;
    share(m, lo, len);
    for (long long off = 0; off < len; off += chunk, ++j) {
      const int slot = (int)(j % depth);
      asm volatile("{\n.reg .pred done;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                   "@!done bra WAIT;\n}" ::"r"(smem(&full[slot])), "r"((unsigned)((j / depth) & 1)) : "memory");
      const int n16 = (int)(min((long long)chunk, len - off) / 16);
      for (int i = threadIdx.x; i < n16; i += blockDim.x) {
        const int4 v = reinterpret_cast<const int4*>(ring + slot * chunk)[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
      }
      __syncthreads();  // the slot is read: refill it
      if (threadIdx.x == 0) produce(slot);
    }
    grid.sync();
  }
  if (acc == 0x12345678) out[0] = acc;
}
"""
LAYERS = 8  # as benchmarks/bench_decode_step.py
# 2.7b's decode linears: in_proj [2 * 5120 + 2 * 128 + 80, 2560] and out_proj [2560, 5120], int8.
MATRICES = {"out_proj": 2560 * 5120, "in_proj": 10576 * 2560}


def median_us(launches, reps: int = 7) -> float:
    """Median microseconds per launch of the list, launched back to back on one stream."""
    stream = cp.cuda.Stream(non_blocking=True)
    times = []
    with stream:
        for f in launches[:2]:
            f()
        for _ in range(reps):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            for f in launches:
                f()
            end.record(stream)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) * 1e3 / len(launches))
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 1 GiB device-to-device cudaMemcpy (as `qmamba bench`)."""
    a = cp.empty(1 << 30, dtype=cp.uint8)
    b = cp.empty_like(a)
    us = median_us([lambda: b.data.copy_from_device_async(a.data, a.nbytes)] * 5)
    return 2 * a.nbytes / (us * 1e-6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    read = cp.RawKernel(READ_KERNEL, "read_only", options=("--std=c++17",))
    sms = cp.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"]
    out = cp.zeros(1, dtype=cp.int32)
    bw = copy_bandwidth()
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"{name}: copy bandwidth {bw / 1e9:.0f} GB/s (1 GiB cudaMemcpy, read + write)")
    res = {"copy_bandwidth": bw, "reads": {}}
    for label, nbytes in (*MATRICES.items(), ("1 GiB", 1 << 30)):
        count = max(2, min(16, int(512e6 // nbytes)))  # distinct buffers: several times the L2
        bufs = [cp.random.randint(0, 255, nbytes, dtype=cp.uint8) for _ in range(count)]
        n16 = np.int64(nbytes // 16)
        best = min(median_us([lambda b=b, g=g: read((g * sms,), (256,), (b, n16, out)) for b in bufs])
                   for g in (1, 2, 4, 8))
        res["reads"][label] = {"bytes": nbytes, "us": best, "GBps": nbytes / (best * 1e-6) / 1e9}
        print(f"read {label} ({nbytes / 1e6:.1f} MB): {best:.2f} us = {nbytes / (best * 1e-6) / 1e9:.0f} GB/s "
              f"({nbytes / (best * 1e-6) / bw:.0%} of the copy bandwidth)")
        del bufs
    layer_us = sum(res["reads"][k]["us"] for k in MATRICES)
    bound_us = sum(MATRICES.values()) / bw * 1e6
    res["layer"] = {"reads_us": layer_us, "bound_us": bound_us}
    print(f"a layer of the two reads, one after the other: {layer_us:.1f} us against a bound of {bound_us:.1f} us "
          f"({bound_us / layer_us:.0%}), before the mixer and any arithmetic")

    # A step of LAYERS layers (in_proj, out_proj each), distinct matrices: separate kernels, then one kernel.
    mats = [cp.random.randint(0, 255, MATRICES[k], dtype=cp.uint8) for _ in range(LAYERS) for k in ("in_proj", "out_proj")]
    step_bytes = sum(m.nbytes for m in mats)
    bound_us = step_bytes / bw * 1e6
    n16s = [np.int64(m.nbytes // 16) for m in mats]
    separate = min(median_us([lambda: [read((g * sms,), (256,), (m, n, out)) for m, n in zip(mats, n16s)]])
                   for g in (1, 2, 4, 8))
    step = cp.RawKernel(STEP_KERNEL, "read_step", options=("--std=c++17",), enable_cooperative_groups=True)
    ptrs = cp.asarray([m.data.ptr for m in mats], dtype=cp.uint64)
    sizes = cp.asarray([int(n) for n in n16s], dtype=cp.int64)
    res["step"] = {"bytes": step_bytes, "bound_us": bound_us, "separate_kernels_us": separate}
    print(f"a step of {LAYERS} layers' reads ({step_bytes / 1e6:.1f} MB, bound {bound_us:.1f} us): "
          f"{2 * LAYERS} kernels {separate:.1f} us ({bound_us / separate:.0%} of the bound)")
    for prefetch in (0, 1):
        us = min(median_us([lambda g=g: step((g * sms,), (256,), (ptrs, sizes, np.int32(len(mats)), np.int32(prefetch),
                                                                   out))]) for g in (1, 2, 4))
        key = "one_kernel_prefetch_us" if prefetch else "one_kernel_us"
        res["step"][key] = us
        print(f"  one kernel, grid barrier between matrices{', next matrix prefetched to L2' if prefetch else ''}: "
              f"{us:.1f} us ({bound_us / us:.0%} of the bound)")
    staged = cp.RawKernel(STAGED_KERNEL, "read_step_staged", options=("--std=c++17", "--gpu-architecture=sm_90"),
                          enable_cooperative_groups=True)
    nbytes = cp.asarray([m.nbytes for m in mats], dtype=cp.int64)
    for depth, chunk in ((24, 8192), (6, 32768), (3, 65536)):  # 192 KB in flight per SM, in 8-64 KB copies
        staged.max_dynamic_shared_size_bytes = depth * chunk
        us = median_us([lambda: staged((sms,), (256,), (ptrs, nbytes, np.int32(len(mats)), np.int32(depth),
                                                         np.int32(chunk), out), shared_mem=depth * chunk)])
        res["step"][f"one_kernel_staged_{chunk // 1024}KB_chunks_us"] = us
        print(f"  one kernel, grid barrier between matrices, {depth * chunk // 1024} KB of weights in flight per SM "
              f"across the barriers (bulk copies of {chunk // 1024} KB to shared memory): {us:.1f} us "
              f"({bound_us / us:.0%} of the bound)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
