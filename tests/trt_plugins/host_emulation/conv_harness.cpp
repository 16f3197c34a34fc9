// QuantConv1dSiLU's launcher and kernel (a patched copy, see test_conv_host_emulation.py), run on the
// CPU one thread after another, against a plain reference of docs/ops.md: outputs bit for bit.
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <vector>
#include <random>
#include <string>
#include "qmamba_kernels.h"
#include "convMath.cuh"

Dim3 blockIdx, threadIdx, blockDim, gridDim;
int g_fake_sm_count = 132, g_fake_blocks_per_sm = 6;
long long g_steps = 0, g_slow_steps = 0, g_exact_calls = 0;
static int g_err_mode = 0;  // 0: errors at their bounds (random sign), 1: none

static uint32_t hash32(uint32_t x) { x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16; return x; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ftz(float f) { return std::fabs(f) < 1.17549435e-38f ? std::copysign(0.0f, f) : f; }
// A relative error in [-bound, bound] ulp (2^-23), chosen by the input's bits: often at the bound.
static double rel_err(float x, double bound_ulp, uint32_t salt) {
  if (g_err_mode == 1) return 0.0;
  uint32_t h = hash32(f_bits(x) ^ salt);
  double u = (h % 3 == 0) ? 1.0 : (h % 3 == 1 ? -1.0 : ((h >> 8) / 16777216.0) * 2 - 1);
  return u * bound_ulp * std::ldexp(1.0, -23);
}
float emu_ex2(float x) {
  x = ftz(x);
  if (std::isnan(x)) return x;
  double r = std::exp2(double(x));
  // CUDA documents 2 + 1.173 |a| ulp for __expf(a) = ex2(a * log2 e); the product's rounding gives
  // up to 0.5 |a| ulp of that, the rest is modelled here: 2 + 0.673 |a| ulp, |a| = |x| ln 2.
  r *= 1.0 + rel_err(x, 2.0 + 0.673 * std::fabs(double(x)) * 0.6931471805599453, 0x1234567u);
  return ftz(float(r));
}
float emu_rcp(float x) {
  x = ftz(x);
  if (x == 0.0f) return std::copysign(INFINITY, x);
  double r = 1.0 / double(x);
  r *= 1.0 + rel_err(x, 1.0, 0x89abcdefu);
  return ftz(float(r));
}
float emu_expf(float x) {
  double r = std::exp(double(x));
  r *= 1.0 + rel_err(x, 1.5, 0x5555aaaau);  // rounding to float adds up to 0.5 ulp: <= 2 ulp in all
  return float(r);
}

// ---- the reference (docs/ops.md, Computation) ----
static int8_t q_exact(float v, float s) {
  const float sig = 1.0f / (1.0f + emu_expf(-v));
  const float p = v * sig;
  const float quot = p / s;
  float r = std::nearbyint(quot);
  if (std::isnan(r)) r = 0;
  r = r < -128 ? -128 : (r > 127 ? 127 : r);
  return int8_t(r);
}
static int group_of(const int32_t* ends, int count, int v) {
  int k = 0; for (int e = 0; e < count; ++e) k += ends[e] <= v; return k < count ? k : count - 1;
}

struct Shape { int ngroups, nheads, headdim, d_state, K; };
struct Case {
  Shape s; int batch, L; bool with_state;
  std::vector<int8_t> xBC, weight, bias, state;
  std::vector<float> xs, Bs, Cs; std::vector<int32_t> hr, dr; int nhg, ndg;
  qmamba_conv_params p;
};
static std::mt19937_64 rng(12345);
static int8_t r8(double std) { std::normal_distribution<double> n(0, std); double v = std::round(n(rng)); return int8_t(std::max(-128.0, std::min(127.0, v))); }
static std::vector<int> uneven_ends(int total, int parts) {
  parts = std::min(parts, total);
  std::vector<int> cuts; for (int i = 1; i < total; ++i) cuts.push_back(i);
  std::shuffle(cuts.begin(), cuts.end(), rng); cuts.resize(parts - 1); std::sort(cuts.begin(), cuts.end()); cuts.push_back(total); return cuts;
}
static Case make_case(Shape s, int batch, int L, bool with_state, double scale_mult = 1.0) {
  Case c; c.s = s; c.batch = batch; c.L = L; c.with_state = with_state;
  const int d_ssm = s.nheads * s.headdim, gn = s.ngroups * s.d_state, conv_dim = d_ssm + 2 * gn, hpg = s.nheads / s.ngroups;
  c.nhg = std::min(4, hpg); c.ndg = std::min(4, s.headdim);
  for (int64_t i = 0; i < int64_t(batch) * L * conv_dim; ++i) c.xBC.push_back(r8(40));
  for (int i = 0; i < conv_dim * s.K; ++i) c.weight.push_back(r8(40));
  for (int i = 0; i < conv_dim; ++i) c.bias.push_back(r8(50));
  if (with_state) for (int i = 0; i < batch * (s.K - 1) * conv_dim; ++i) c.state.push_back(r8(40));
  std::uniform_real_distribution<double> U(0, 1);
  for (int g = 0; g < s.ngroups; ++g) {
    for (int e : uneven_ends(hpg, c.nhg)) c.hr.push_back(e);
    for (int h = 0; h < c.nhg; ++h) for (int e : uneven_ends(s.headdim, c.ndg)) c.dr.push_back(e);
    for (int h = 0; h < c.nhg * c.ndg; ++h) c.xs.push_back(float(scale_mult * std::exp(std::log(0.0029) + (std::log(0.0816) - std::log(0.0029)) * U(rng))));
    c.Bs.push_back(float(scale_mult * 0.1137 * (0.5 + U(rng)))); c.Cs.push_back(float(scale_mult * 0.2671 * (0.5 + U(rng))));
  }
  c.p = qmamba_conv_params{0.1656f, 0.0022f, 0.004f, 0.12f, 0.008f, 0.003f, 0.15f, 0.008f, 0.003f,
                           s.ngroups, s.nheads, s.headdim, s.d_state, s.K, c.nhg, c.ndg};
  return c;
}
// Reference outputs: x | B | C per (b, t) row and the new state.
static void reference(const Case& c, std::vector<int8_t>& x, std::vector<int8_t>& B, std::vector<int8_t>& C, std::vector<int8_t>& st) {
  const Shape& s = c.s; const int K = s.K;
  const int d_ssm = s.nheads * s.headdim, gn = s.ngroups * s.d_state, conv_dim = d_ssm + 2 * gn, hpg = s.nheads / s.ngroups;
  x.assign(size_t(c.batch) * c.L * d_ssm, 0); B.assign(size_t(c.batch) * c.L * gn, 0); C = B;
  st.assign(size_t(c.batch) * (K - 1) * conv_dim, 0);
  const float accs[3] = {c.p.x_scale * c.p.wx_scale, c.p.B_scale * c.p.wB_scale, c.p.C_scale * c.p.wC_scale};
  const float bss[3] = {c.p.bx_scale, c.p.bB_scale, c.p.bC_scale};
  for (int b = 0; b < c.batch; ++b) {
    auto u = [&](int row, int ch) -> int {  // u = concat(state, xBC)
      if (row >= K - 1) return c.xBC[(size_t(b) * c.L + row - (K - 1)) * conv_dim + ch];
      return c.with_state ? c.state[(size_t(b) * (K - 1) + row) * conv_dim + ch] : 0;
    };
    for (int ch = 0; ch < conv_dim; ++ch) {
      const int seg = ch < d_ssm ? 0 : (ch < d_ssm + gn ? 1 : 2);
      float so;
      if (seg == 0) {
        int hd = ch / s.headdim, dim = ch % s.headdim, sg = hd / hpg;
        int hg = group_of(&c.hr[sg * c.nhg], c.nhg, hd % hpg);
        int dg = group_of(&c.dr[(sg * c.nhg + hg) * c.ndg], c.ndg, dim);
        so = c.xs[(sg * c.nhg + hg) * c.ndg + dg];
      } else so = (seg == 1 ? c.Bs : c.Cs)[(ch - d_ssm - (seg == 2 ? gn : 0)) / s.d_state];
      const float bt = float(c.bias[ch]) * bss[seg];
      for (int t = 0; t < c.L; ++t) {
        int acc = 0; for (int j = 0; j < K; ++j) acc += int(c.weight[ch * K + j]) * u(t + j, ch);
        const float v = float(acc) * accs[seg] + bt;
        const int8_t q = q_exact(v, so);
        if (seg == 0) x[(size_t(b) * c.L + t) * d_ssm + ch] = q;
        else (seg == 1 ? B : C)[(size_t(b) * c.L + t) * gn + ch - d_ssm - (seg == 2 ? gn : 0)] = q;
      }
      for (int j = 0; j < K - 1; ++j) st[(size_t(b) * (K - 1) + j) * conv_dim + ch] = int8_t(u(c.L + j, ch));
    }
  }
}
// Runs the launcher on copies at byte offset `off` (0: aligned; 1: forces the bytewise path).
static int run(const Case& c, bool decode, int off, std::vector<int8_t>& x, std::vector<int8_t>& B, std::vector<int8_t>& C,
               std::vector<int8_t>& st, bool in_place = false) {
  const Shape& s = c.s; const int K = s.K;
  const int d_ssm = s.nheads * s.headdim, gn = s.ngroups * s.d_state, conv_dim = d_ssm + 2 * gn;
  auto buf = [&](const std::vector<int8_t>& v, std::vector<int8_t>& store) { store.assign(v.size() + 64, 0); std::memcpy(store.data() + 16 + off, v.data(), v.size()); return store.data() + 16 + off; };
  std::vector<int8_t> bx, bw, bb, bs, ox, oB, oC, ost;
  const int8_t* pxBC = buf(c.xBC, bx); const int8_t* pw = buf(c.weight, bw); const int8_t* pb = buf(c.bias, bb);
  std::vector<int8_t> poisonx(size_t(c.batch) * c.L * d_ssm, int8_t(0x5a)), poisonbc(size_t(c.batch) * c.L * gn, int8_t(0x5a));
  std::vector<int8_t> poisonst(size_t(c.batch) * (K - 1) * conv_dim, int8_t(0x5a));
  int8_t* px = buf(poisonx, ox); int8_t* pB = buf(poisonbc, oB); int8_t* pC = buf(poisonbc, oC);
  const int8_t* pst = c.with_state ? buf(c.state, bs) : nullptr;
  int8_t* pso = in_place ? const_cast<int8_t*>(pst) : buf(poisonst, ost);
  qmamba_conv_tensors t{pxBC, pw, pb, c.xs.data(), c.Bs.data(), c.Cs.data(), c.hr.data(), c.dr.data(), pst, px, pB, pC, pso};
  int rc = decode ? qmamba_quant_conv1d_silu_decode(&c.p, &t, c.batch, nullptr)
                  : qmamba_quant_conv1d_silu_prefill(&c.p, &t, c.batch, c.L, nullptr);
  if (rc != 0) { printf("launcher error %d: %s\n", rc, qmamba_last_error()); return rc; }
  x.assign(px, px + poisonx.size()); B.assign(pB, pB + poisonbc.size()); C.assign(pC, pC + poisonbc.size());
  st.assign(pso, pso + poisonst.size());
  return 0;
}
// The float source of qmamba_quant_conv1d_silu_prefill_from_float for a case: rows of `width` floats (z, then
// xBC at column `offset`, then dt), xBC's columns times col_scale (when given) quantizing with the segment's input
// scale to spread int8 values, a few of them saturating and some exactly at a rounding tie; c.xBC becomes
// the contract's Q of them (the reference's input).
struct FloatSource { std::vector<float> rows, col; int64_t width, offset; bool with_col; };
static int8_t q_div(float v, float s) {
  float r = std::nearbyint(v / s);  // the IEEE quotient, rounded half to even
  if (std::isnan(r)) r = 0;
  return int8_t(r < -128 ? -128 : (r > 127 ? 127 : r));
}
static FloatSource float_source(Case& c, int64_t offset, int64_t tail, bool with_col) {
  const Shape& s = c.s;
  const int d_ssm = s.nheads * s.headdim, gn = s.ngroups * s.d_state, conv_dim = d_ssm + 2 * gn;
  FloatSource f; f.offset = offset; f.width = offset + conv_dim + tail; f.with_col = with_col;
  std::uniform_real_distribution<double> U(0, 1);
  std::normal_distribution<double> N(0, 60);
  for (int ch = 0; ch < conv_dim; ++ch) f.col.push_back(with_col ? float(std::exp(std::log(1e-4) + 4 * U(rng))) : 1.0f);
  const float s_in[3] = {c.p.x_scale, c.p.B_scale, c.p.C_scale};
  f.rows.assign(size_t(c.batch) * c.L * f.width, 0.0f);
  for (int64_t r = 0; r < int64_t(c.batch) * c.L; ++r) {
    for (int64_t k = 0; k < f.width; ++k) f.rows[r * f.width + k] = float(N(rng));  // z and dt: anything
    for (int ch = 0; ch < conv_dim; ++ch) {
      const int seg = ch < d_ssm ? 0 : (ch < d_ssm + gn ? 1 : 2);
      const double u = U(rng);
      // Mostly spread values; one in 16 a tie k + 1/2 of the quotient (exact where the products allow).
      const float q = u < 1.0 / 16 ? float(std::floor(N(rng)) + 0.5) : float(N(rng));
      f.rows[r * f.width + offset + ch] = float(double(q) * s_in[seg] / f.col[ch]);
      c.xBC[r * conv_dim + ch] = q_div(f.rows[r * f.width + offset + ch] * f.col[ch], s_in[seg]);
    }
  }
  return f;
}
// Runs the float launcher on a copy of the rows at float offset `foff` (0: 16-byte aligned; 1: not, the
// one-channel path), outputs as run() gives them.
static int run_float(const Case& c, const FloatSource& f, int foff, std::vector<int8_t>& x, std::vector<int8_t>& B,
                     std::vector<int8_t>& C, std::vector<int8_t>& st) {
  const Shape& s = c.s; const int K = s.K;
  const int d_ssm = s.nheads * s.headdim, gn = s.ngroups * s.d_state, conv_dim = d_ssm + 2 * gn;
  std::vector<float> rows(f.rows.size() + 8, NAN);
  float* pr = rows.data() + 4 + foff;  // vector storage is 16-byte aligned
  std::memcpy(pr, f.rows.data(), f.rows.size() * sizeof(float));
  x.assign(size_t(c.batch) * c.L * d_ssm, int8_t(0x5a)); B.assign(size_t(c.batch) * c.L * gn, int8_t(0x5a)); C = B;
  st.assign(size_t(c.batch) * (K - 1) * conv_dim, int8_t(0x5a));
  const int8_t* pst = c.with_state ? c.state.data() : nullptr;
  qmamba_conv_tensors t{nullptr, c.weight.data(), c.bias.data(), c.xs.data(), c.Bs.data(), c.Cs.data(), c.hr.data(),
                        c.dr.data(), pst, x.data(), B.data(), C.data(), st.data()};
  qmamba_conv_float_input in{pr, f.with_col ? f.col.data() : nullptr, f.width, f.offset};
  int rc = qmamba_quant_conv1d_silu_prefill_from_float(&c.p, &in, &t, c.batch, c.L, nullptr);
  if (rc != 0) printf("launcher error %d: %s\n", rc, qmamba_last_error());
  return rc;
}
static int failures = 0;
static void expect_equal(const std::vector<int8_t>& a, const std::vector<int8_t>& b, const std::string& what) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i) if (a[i] != b[i]) { if (!bad) first = i; ++bad; }
  if (bad || a.size() != b.size()) { ++failures; printf("FAIL %s: %zu of %zu differ (first at %zu: %d vs %d)\n", what.c_str(), bad, a.size(), first, a[first], b[first]); }
}
int main() {
  struct Named { const char* name; Shape s; int batch, L; };
  const Named cases[] = {
    {"130m", {1, 24, 64, 128, 4}, 2, 300}, {"2.7b-short", {1, 80, 64, 128, 4}, 1, 96}, {"8b", {8, 128, 64, 128, 4}, 2, 57},
    {"L1-batch64", {1, 24, 64, 128, 4}, 64, 1}, {"K2", {2, 8, 64, 64, 2}, 3, 100}, {"K3-headdim32", {4, 16, 32, 16, 3}, 2, 129},
    {"headdim128-n256", {1, 8, 128, 256, 4}, 2, 77}, {"n40", {2, 6, 32, 40, 3}, 2, 33}, {"L2-shorter-than-state", {1, 8, 64, 64, 4}, 4, 2},
    {"n20-bytewise", {1, 4, 32, 20, 4}, 3, 19}, {"K2-L1", {2, 8, 64, 64, 2}, 5, 1},
  };
  const int sms[] = {132, 3, 1};
  for (g_err_mode = 0; g_err_mode < 2; ++g_err_mode)
  for (const Named& nc : cases) for (int with_state = 0; with_state < 2; ++with_state) for (int sm : sms) for (int off = 0; off < 2; ++off) {
    g_fake_sm_count = sm;
    Case c = make_case(nc.s, nc.batch, nc.L, with_state);
    std::vector<int8_t> rx, rB, rC, rst, x, B, C, st;
    reference(c, rx, rB, rC, rst);
    if (run(c, false, off, x, B, C, st)) { ++failures; continue; }
    std::string tag = std::string(nc.name) + (with_state ? " state" : " nostate") + " sm" + std::to_string(sm) + " off" + std::to_string(off) + " err" + std::to_string(g_err_mode);
    expect_equal(x, rx, tag + " x"); expect_equal(B, rB, tag + " B"); expect_equal(C, rC, tag + " C"); expect_equal(st, rst, tag + " state_out");
    if (nc.L == 1) {  // decode, in place when there is a state
      if (run(c, true, off, x, B, C, st, with_state)) { ++failures; continue; }
      expect_equal(x, rx, tag + " decode x"); expect_equal(B, rB, tag + " decode B"); expect_equal(C, rC, tag + " decode C");
      expect_equal(st, rst, tag + " decode state_out");
    }
  }
  // The float source: in_proj-like rows (xBC after a z piece, dt after it), with and without column scales,
  // aligned (8 channels a thread) and not (one), input scales under the normal floats (Q divides).
  {
    struct FloatNamed { const char* name; Shape s; int batch, L; };
    const FloatNamed fcases[] = {
      {"130m", {1, 24, 64, 128, 4}, 2, 300}, {"8b", {8, 128, 64, 128, 4}, 2, 57}, {"K3-headdim32", {4, 16, 32, 16, 3}, 2, 129},
      {"n20-bytewise", {1, 4, 32, 20, 4}, 3, 19}, {"L2-shorter-than-state", {1, 8, 64, 64, 4}, 4, 2},
    };
    g_err_mode = 0;
    for (const FloatNamed& nc : fcases) for (int with_col = 0; with_col < 2; ++with_col) for (int foff = 0; foff < 2; ++foff)
    for (int with_state = 0; with_state < 2; ++with_state) for (int tiny = 0; tiny < 2; ++tiny) {
      if (tiny && (with_state || foff)) continue;
      g_fake_sm_count = foff ? 3 : 132;
      Case c = make_case(nc.s, nc.batch, nc.L, with_state);
      if (tiny) { c.p.B_scale = 1e-40f; c.p.wB_scale = 1e30f; }  // 1 / B_scale is inf
      const int d_ssm = nc.s.nheads * nc.s.headdim;
      FloatSource f = float_source(c, d_ssm, nc.s.nheads, with_col);
      std::vector<int8_t> rx, rB, rC, rst, x, B, C, st;
      reference(c, rx, rB, rC, rst);
      std::string tag = std::string("float ") + nc.name + (with_col ? " col" : " nocol") + " foff" + std::to_string(foff) +
                        (with_state ? " state" : " nostate") + (tiny ? " tiny-B-scale" : "");
      if (run_float(c, f, foff, x, B, C, st)) { ++failures; continue; }
      expect_equal(x, rx, tag + " x"); expect_equal(B, rB, tag + " B"); expect_equal(C, rC, tag + " C");
      expect_equal(st, rst, tag + " state_out");
    }
  }
  // Scales far from calibrated ones: tiny output scales (every estimate rejected), huge ones, a
  // product s_in * s_w that overflows, subnormal output scales.
  {
    const double mults[] = {0.3, 0.1, 1e-7, 1e-30, 1e-38, 1e3, 1e30};
    for (g_err_mode = 0; g_err_mode < 2; ++g_err_mode) for (double m : mults) for (int off = 0; off < 2; ++off) {
      g_fake_sm_count = 7;
      Case c = make_case({2, 8, 64, 64, 4}, 2, 23, true, m);
      std::vector<int8_t> rx, rB, rC, rst, x, B, C, st;
      reference(c, rx, rB, rC, rst);
      if (run(c, false, off, x, B, C, st)) { ++failures; continue; }
      std::string tag = "scale x" + std::to_string(m) + " off" + std::to_string(off);
      expect_equal(x, rx, tag + " x"); expect_equal(B, rB, tag + " B"); expect_equal(C, rC, tag + " C");
    }
    for (int big = 0; big < 3; ++big) {
      Case c = make_case({2, 8, 64, 64, 4}, 2, 23, true);
      if (big == 0) { c.p.x_scale = 1e20f; c.p.wx_scale = 1e20f; }       // acc_scale = inf
      if (big == 1) { c.p.bx_scale = 3e38f; }                              // bias term up to inf
      if (big == 2) { c.p.x_scale = 1e-30f; c.p.wx_scale = 1e-30f; c.p.bx_scale = 1e-40f; }  // acc_scale 0
      std::vector<int8_t> rx, rB, rC, rst, x, B, C, st;
      reference(c, rx, rB, rC, rst);
      if (run(c, false, 0, x, B, C, st)) { ++failures; continue; }
      std::string tag = "attrs " + std::to_string(big);
      expect_equal(x, rx, tag + " x"); expect_equal(B, rB, tag + " B"); expect_equal(C, rC, tag + " C");
    }
  }
  // silu_quantize and the estimate against the exact sequence on inputs near rounding ties: v solved
  // (in double) so that silu(v)/s = k + 1/2 + d for small d, then rounded to float.
  {
    std::uniform_real_distribution<double> U(0, 1);
    long long n = 0, bad = 0, est_used = 0;
    for (g_err_mode = 0; g_err_mode < 2; ++g_err_mode)
    for (int it = 0; it < 400000; ++it) {
      const float sc = float(std::exp(std::log(1e-3) + (std::log(1.0) - std::log(1e-3)) * U(rng)));
      const int k = int(U(rng) * 300) - 150;
      const double target = k + 0.5 + (U(rng) - 0.5) * std::ldexp(1.0, -int(U(rng) * 24));
      // silu(v) = target * sc: Newton from a start on the right branch (negative targets: two roots).
      double want = target * sc, v = want > 0 ? want + 1 : (U(rng) < 0.5 ? -0.5 : -3.0);
      if (want < -0.2784) continue;
      for (int j = 0; j < 60; ++j) { double sg = 1 / (1 + std::exp(-v)); double f = v * sg - want; double df = sg * (1 + v * (1 - sg)); if (std::fabs(df) < 1e-12) break; v -= f / df; }
      const float vf = float(v);
      const int8_t want_q = q_exact(vf, sc);
      ++n;
      if (qmamba::silu_quantize(vf, sc) != want_q) ++bad;
      uint32_t bits;
      const float thr = qmamba::silu_tie_threshold(sc);
      if (!qmamba::silu_quantize_estimate<true>(vf, sc, thr, &bits)) { ++est_used; if (int8_t(bits & 0xff) != want_q) ++bad; }
      if (sc >= qmamba::kNoLowSaturationScale && !qmamba::silu_quantize_estimate<false>(vf, sc, thr, &bits)) { if (int8_t(bits & 0xff) != want_q) ++bad; }
    }
    printf("near-tie inputs: %lld, estimate accepted on %lld, %lld wrong\n", n, est_used, bad);
    if (bad) ++failures;
  }
  // Rates on the 8b shape with calibrated-like scales.
  g_err_mode = 0; g_fake_sm_count = 132;
  g_steps = g_slow_steps = g_exact_calls = 0;
  { Case c = make_case({8, 128, 64, 128, 4}, 1, 64, true); std::vector<int8_t> x, B, C, st; run(c, false, 0, x, B, C, st); }
  printf("8b rates: %lld steps of 8 channels, %lld (%.3f%%) took the slow path, %lld exact calls (%.2e per element)\n",
         g_steps, g_slow_steps, 100.0 * g_slow_steps / g_steps, g_exact_calls, double(g_exact_calls) / (8.0 * g_steps));
  printf("%s: %d failures\n", failures ? "FAILED" : "passed", failures);
  return failures != 0;
}
