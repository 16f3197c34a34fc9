"""How fast can one kernel read a decode linear's weights? The ceiling under the decode bound.

The decode bound (`qmamba bench`, benchmarks/bench_decode_step.py) divides a step's bytes by the copy
bandwidth of a 1 GiB cudaMemcpy. A decode step is instead a chain of short kernels, each reading 13 to
27 MB (2.7b's out_proj and in_proj). This measures a kernel that does nothing but read such a weight
matrix (16-byte loads, eight in flight per thread, grid 1-8 blocks per SM, best taken), launched back
to back on distinct buffers so that L2 holds none of them, and prints what a layer made of two such
reads would take against that bound; then a step's reads (8 layers) as separate kernels and as one
cooperative kernel with a grid barrier between matrices, with and without prefetching the next matrix
into L2 before the barrier, or with the next matrices' weights in flight to shared memory across the
barriers; and last a persistent kernel's skeleton with no barrier, its weights streaming under the
step's dependencies (matrix after matrix) and a mixer-long pause between in_proj and out_proj. No
qmamba code runs: it is the floor any kernel of this kind stands on, and what a single persistent
decode kernel could reach.

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
# What the two bulk-copy kernels below share: shared-memory addresses, an mbarrier's wait, a bulk copy that
# completes on an mbarrier, a block's share of a matrix (16-byte aligned, as read_step_staged has always cut
# it) and the mixer phase's pause.
BULK_HELPERS = r"""
__device__ __forceinline__ unsigned smem(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void wait_parity(unsigned long long* bar, unsigned parity) {
  asm volatile("{\n.reg .pred done;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra WAIT;\n}" ::"r"(smem(bar)), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem(bar)), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(smem(dst)), "l"(src), "r"(bytes), "r"(smem(bar)) : "memory");
}
__device__ __forceinline__ void block_share(long long n, long long& lo, long long& len) {
  const long long per = ((n + gridDim.x - 1) / gridDim.x + 15) / 16 * 16;
  lo = min(n, (long long)blockIdx.x * per);
  len = min(n, lo + per) - lo;
}
__device__ __forceinline__ void pause(long long cycles) {
  const long long t = clock64();
  while (clock64() - t < cycles) {}
}
"""
# The same with the weights staged in shared memory: one thread per block keeps a ring of chunks
# in flight by bulk copies (Hopper's cp.async.bulk), running through its share of every matrix in
# order, across the barriers: the chunks of the next matrix load while the block waits at the barrier
# for the others. This is how a persistent decode kernel would stream weights (its arithmetic and the
# activations' dependencies left out).
STAGED_KERNEL = BULK_HELPERS + r"""
#include <cooperative_groups.h>
extern "C" __global__ void read_step_staged(const unsigned long long* ptrs, const long long* nbytes, int count,
                                            int depth, int chunk, long long mixer_cycles, int* out) {
  extern __shared__ __align__(128) char ring[];
  __shared__ __align__(8) unsigned long long full[32];
  __shared__ long long share_lo[64], share_len[64];  // this block's share of each matrix, 16-byte aligned
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int m = threadIdx.x; m < count; m += blockDim.x) block_share(nbytes[m], share_lo[m], share_len[m]);
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
    bulk_load(ring + slot * chunk, reinterpret_cast<const char*>(ptrs[pm]) + lo + poff, bytes, &full[slot]);
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
      wait_parity(&full[slot], (unsigned)((j / depth) & 1));
      const int n16 = (int)(min((long long)chunk, len - off) / 16);
      for (int i = threadIdx.x; i < n16; i += blockDim.x) {
        const int4 v = reinterpret_cast<const int4*>(ring + slot * chunk)[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
      }
      __syncthreads();  // the slot is read: refill it
      if (threadIdx.x == 0) produce(slot);
    }
    grid.sync();
    if (mixer_cycles && !(m & 1) && m + 1 < count) {  // a mixer phase between in_proj and out_proj
      if (threadIdx.x == 0) pause(mixer_cycles);
      grid.sync();
    }
  }
  if (acc == 0x12345678) out[0] = acc;
}
"""
# A persistent decode kernel's skeleton with no grid barrier: a producer warp keeps `depth` chunks of
# weights in flight by bulk copies, whatever matrix they belong to, and consumer warps take a chunk of
# matrix m only once all of matrix m - 1 has been consumed (a counter per matrix: the decode step's
# all-to-all dependency, here only where `deps`), then load an activation word (one dependent L2 round
# trip, as a real phase would). Chunks are this block's share of each matrix in order (`dynamic` 0, as
# read_step_staged) or handed out at run time by an atomic counter over all matrices in order (each
# block's first `depth` chunks round-robin). With `mixer_cycles`, a mixer phase sits between each in_proj
# (even m) and out_proj (odd m): every block waits for in_proj, spins that long (the mixer's chain),
# counts itself done, and out_proj's consumers wait for all blocks' count. The weights keep streaming
# under the waits: the question is how close that comes to the bound.
STREAMED_KERNEL = BULK_HELPERS + r"""
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release(unsigned* p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void consumers_sync(int n) { asm volatile("bar.sync 1, %0;" ::"r"(n) : "memory"); }

extern "C" __global__ void read_step_streamed(const unsigned long long* ptrs, const long long* nbytes,
                                             const int* first, int count, int depth, int chunk, int dynamic,
                                             int deps, long long mixer_cycles, unsigned* counters,
                                             const int* act, int* out) {
  // counters[0]: chunks handed out beyond the round-robin ones; counters[1 + m]: 16-byte words of matrix
  // m consumed; counters[1 + count + m]: blocks through the mixer phase before matrix m (odd m).
  extern __shared__ __align__(128) char ring[];
  __shared__ __align__(8) unsigned long long full[16], empty[16];
  // slot_m = count: no more chunks; slot_last: the last of this block's chunks of its matrix (static
  // shares), after which its consumed words are counted at once (run time: every chunk is counted).
  __shared__ int slot_m[16], slot_n16[16], slot_last[16];
  const int consumers = blockDim.x - 32, ct = threadIdx.x - 32;
  if (threadIdx.x == 0) {
    for (int d = 0; d < depth; ++d) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem(&full[d])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem(&empty[d])));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x < 32) {  // the producer warp: one lane issues every copy
    if (threadIdx.x != 0) return;
    const int total = first[count], static_chunks = depth * gridDim.x;
    int pending = dynamic ? static_chunks + (int)atomicAdd(&counters[0], 1u) : 0;
    int pm = 0;
    long long poff = 0;  // static: this block's place in its share of matrix pm
    for (int j = 0;; ++j) {
      const int slot = j % depth;
      int m = count;
      long long src = 0, bytes = 0;
      int last = 1;
      if (j >= depth) wait_parity(&empty[slot], ((j / depth) - 1) & 1);
      if (dynamic) {
        int c = j * gridDim.x + blockIdx.x;
        if (j >= depth) {
          c = pending;
          if (c < total) pending = static_chunks + (int)atomicAdd(&counters[0], 1u);  // ahead of its use
        }
        if (c < total) {
          m = 0;
          while (first[m + 1] <= c) ++m;
          src = (long long)(c - first[m]) * chunk;
          bytes = min((long long)chunk, nbytes[m] - src);
        }
      } else {
        for (; pm < count; ++pm, poff = 0) {
          long long lo, len;
          block_share(nbytes[pm], lo, len);
          if (poff < len) {
            m = pm;
            src = lo + poff;
            bytes = min((long long)chunk, len - poff);
            poff += bytes;
            last = poff == len;
            break;
          }
        }
      }
      slot_m[slot] = m;
      slot_n16[slot] = (int)(bytes / 16);
      slot_last[slot] = last;
      if (m == count) {
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem(&full[slot])) : "memory");
        return;
      }
      bulk_load(ring + slot * chunk, reinterpret_cast<const char*>(ptrs[m]) + src, (unsigned)bytes, &full[slot]);
    }
  }
  int acc = 0, seen = 0;  // seen: matrices whose dependencies this block has met (matrix 0 has none)
  unsigned owed = 0;      // words consumed and not yet counted (thread ct 0)
  // The mixer phases up to matrix `upto`, each once a block: wait for in_proj, the chain, count done.
  auto mixers = [&](int upto) {
    for (int p = seen + 1; p <= upto; ++p) {
      if (!(p & 1) || !mixer_cycles) continue;
      if (ct == 0) {
        while (ld_acquire(&counters[1 + p - 1]) < (unsigned)(nbytes[p - 1] / 16)) {}
        pause(mixer_cycles);
        red_release(&counters[1 + count + p], 1u);
      }
    }
  };
  for (int j = 0;; ++j) {
    const int slot = j % depth;
    wait_parity(&full[slot], (j / depth) & 1);
    const int m = slot_m[slot], n16 = slot_n16[slot], last = slot_last[slot];
    if (m == count) {
      if (deps) mixers(count - 1);
      break;
    }
    if (deps && m > seen) {
      mixers(m);
      if (ct == 0) {
        if (mixer_cycles && (m & 1)) {
          while (ld_acquire(&counters[1 + count + m]) < gridDim.x) {}
        } else {
          while (ld_acquire(&counters[1 + m - 1]) < (unsigned)(nbytes[m - 1] / 16)) {}
        }
      }
      seen = m;
      consumers_sync(consumers);
      acc ^= __ldcg(act + (ct + m * 64) % 4096);  // the phase's activation: one dependent round trip
    }
    for (int i = ct; i < n16; i += consumers) {
      const int4 v = reinterpret_cast<const int4*>(ring + slot * chunk)[i];
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    consumers_sync(consumers);  // the slot is read
    if (ct == 0) {  // refill it first: the release below waits for this thread's earlier writes
      asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem(&empty[slot])) : "memory");
      owed += n16;
      if (last) {
        red_release(&counters[1 + m], owed);
        owed = 0;
      }
    }
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


def streamed_step(mats, ptrs, nbytes, bound_us: float, sms: int, cycles_per_us: float, out, res: dict,
                  reps: int = 9) -> None:
    """The step's reads through STREAMED_KERNEL: with no dependencies, with the matrices' dependencies,
    and with mixer phases of 3 and 5 us between in_proj and out_proj (the real mixer's chain takes some
    5 us a layer from in_proj's end to its own, docs/kernels.md)."""
    streamed = cp.RawKernel(STREAMED_KERNEL, "read_step_streamed", options=("--std=c++17", "--gpu-architecture=sm_90"))
    act = cp.zeros(4096, dtype=cp.int32)
    stream = cp.cuda.Stream(non_blocking=True)
    for dynamic, depth, chunk in ((0, 6, 32768), (0, 3, 65536), (0, 3, 73728), (1, 3, 65536), (1, 4, 49152)):
        chunks = [0] + list(np.cumsum([-(-m.nbytes // chunk) for m in mats]))
        first = cp.asarray(chunks, dtype=cp.int32)
        counters = cp.zeros(1 + 2 * len(mats), dtype=cp.uint32)
        streamed.max_dynamic_shared_size_bytes = depth * chunk
        for deps, mixer_us in ((0, 0), (1, 0), (1, 3), (1, 5)):
            args = (ptrs, nbytes, first, np.int32(len(mats)), np.int32(depth), np.int32(chunk), np.int32(dynamic),
                    np.int32(deps), np.int64(mixer_us * cycles_per_us), counters, act, out)
            times = []
            with stream:
                for r in range(reps + 2):
                    counters.fill(0)
                    start, end = cp.cuda.Event(), cp.cuda.Event()
                    start.record(stream)
                    streamed((sms,), (256,), args, shared_mem=depth * chunk)
                    end.record(stream)
                    end.synchronize()
                    if r >= 2:
                        times.append(cp.cuda.get_elapsed_time(start, end) * 1e3)
                    consumed = counters[1:1 + len(mats)].get().astype(np.int64) * 16
                    if not np.array_equal(consumed, nbytes.get()):
                        raise RuntimeError(f"the skeleton consumed {consumed} bytes of {nbytes.get()}")
            us = statistics.median(times)
            what = ("no dependencies" if not deps else "each matrix after the one before"
                    + (f", a {mixer_us} us mixer phase before out_proj" if mixer_us else ""))
            how = "handed out at run time" if dynamic else "each block's share"
            res[f"{'dynamic' if dynamic else 'shares'}_{chunk // 1024}KB_deps{deps}_mixer{mixer_us}us"] = us
            print(f"  one kernel, no barrier, chunks {how}, {depth * chunk // 1024} KB in flight per SM in "
                  f"{chunk // 1024} KB copies, {what}: {us:.1f} us ({bound_us / us:.0%} of the bound)")


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
    cycles_per_us = cp.cuda.runtime.getDeviceProperties(0)["clockRate"] / 1e3  # nominal SM clock
    # 192 KB in flight per SM, in 8-64 KB copies; with 32 KB, also a 5 us mixer phase (see STREAMED_KERNEL)
    for depth, chunk, mixer_us in ((24, 8192, 0), (6, 32768, 0), (3, 65536, 0), (6, 32768, 5)):
        staged.max_dynamic_shared_size_bytes = depth * chunk
        us = median_us([lambda: staged((sms,), (256,), (ptrs, nbytes, np.int32(len(mats)), np.int32(depth),
                                                         np.int32(chunk), np.int64(mixer_us * cycles_per_us), out),
                                       shared_mem=depth * chunk)])
        res["step"][f"one_kernel_staged_{chunk // 1024}KB_chunks_mixer{mixer_us}us_us"] = us
        print(f"  one kernel, grid barrier between matrices, {depth * chunk // 1024} KB of weights in flight per SM "
              f"across the barriers (bulk copies of {chunk // 1024} KB to shared memory)"
              f"{f', a {mixer_us} us mixer phase and barrier before out_proj' if mixer_us else ''}: {us:.1f} us "
              f"({bound_us / us:.0%} of the bound)")
    streamed_step(mats, ptrs, nbytes, bound_us, sms, cycles_per_us, out, res["step"])
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
