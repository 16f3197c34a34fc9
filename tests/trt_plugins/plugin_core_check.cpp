// Checks of the plugin cores without TensorRT or a GPU: field parsing, value checks, shape rules and
// the V2 serialization format. Built and run by test_plugin_core.py; prints "ok <name>" per check
// and exits non-zero at the first failure, printing what differed.
#include "bitsAsFloatCore.h"
#include "decodeMixerCore.h"
#include "gatedNormCore.h"
#include "inProjConvCore.h"
#include "qmambaFields.h"
#include "qmambaSerialize.h"
#include "qmambaShapes.h"
#include "quantConv1dSiLUCore.h"
#include "quantSSDCore.h"
#include "w8a8LinearCore.h"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace qmamba;

namespace
{

void check(bool ok, char const* name, std::string const& detail = "")
{
    if (!ok)
    {
        std::printf("FAIL %s %s\n", name, detail.c_str());
        std::exit(1);
    }
    std::printf("ok %s\n", name);
}

// The core that `core`'s serialized state reads back as (writeSerialized, then readSerialized).
template <typename Core>
Core roundTrip(Core const& core)
{
    std::vector<char> buf(serializedSize<typename Core::Serial>());
    writeSerialized(core.serial(), buf.data());
    return Core(readSerialized<typename Core::Serial>(Core::kNAME, buf.data(), buf.size()));
}

// Runs f, which must throw PluginError whose message contains `want`.
void throwsWith(char const* name, std::function<void()> const& f, std::string const& want)
{
    try
    {
        f();
    }
    catch (PluginError const& e)
    {
        check(std::string(e.what()).find(want) != std::string::npos, name, std::string("message: ") + e.what());
        return;
    }
    check(false, name, "no error raised");
}

struct Fields
{
    std::vector<float> f;
    std::vector<int32_t> i;
    std::vector<RawField> raw;
    Fields()
    {
        f.reserve(32);
        i.reserve(32);
    }
    Fields& flt(char const* name, float v)
    {
        f.push_back(v);
        raw.push_back(RawField{name, RawType::kFloat32, &f.back(), 1});
        return *this;
    }
    Fields& in(char const* name, int32_t v)
    {
        i.push_back(v);
        raw.push_back(RawField{name, RawType::kInt32, &i.back(), 1});
        return *this;
    }
};

Fields ssdFields()
{
    Fields x;
    x.flt("dt_scale", 0.02f).in("ngroups", 2).in("nheads", 8).in("headdim", 32).in("d_state", 16);
    return x;
}

// QmambaDecodeMixer's required fields: g 2, h 8, p 32, n 16, K 4 (d_ssm 256, conv_dim 320, width 584).
Fields mixerFields()
{
    Fields x;
    for (char const* name : {"x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale", "C_scale", "wC_scale", "bC_scale"})
    {
        x.flt(name, 0.01f);
    }
    x.in("ngroups", 2).in("nheads", 8).in("headdim", 32).in("d_state", 16).in("d_conv", 4);
    x.flt("z_scale", 0.05f).flt("dt_scale", 0.02f);
    return x;
}

// What the last qmamba_gated_norm call was given (the recording double below).
struct GatedNormCall
{
    int calls{0};
    qmamba_gated_norm_params params{};
    qmamba_gated_norm_tensors tensors{};
    int64_t rows{0};
    int status{QMAMBA_OK};
};
GatedNormCall gatedNormCall;

Shape shape(std::vector<int64_t> d)
{
    Shape s{};
    s.nbDims = static_cast<int32_t>(d.size());
    for (size_t k = 0; k < d.size(); ++k)
    {
        s.d[k] = d[k];
    }
    return s;
}

} // namespace

// A recording double of the kernel's launcher: this program links no kernels, and what GatedNormCore's
// enqueue hands the C ABI (params, pointers, rows) is what is checked here; the kernel has tests of its own.
extern "C" int qmamba_gated_norm(const qmamba_gated_norm_params* params, const qmamba_gated_norm_tensors* t,
    int64_t rows, qmamba_stream_t /*stream*/)
{
    ++gatedNormCall.calls;
    gatedNormCall.params = *params;
    gatedNormCall.tensors = *t;
    gatedNormCall.rows = rows;
    return gatedNormCall.status;
}

// QuantConv1dSiLU's launcher with a float source, recorded the same way (what InProjConvCore's enqueue hands it).
struct InProjConvCall
{
    int calls{0};
    qmamba_conv_params params{};
    qmamba_conv_float_input source{};
    qmamba_conv_tensors tensors{};
    int64_t batch{0}, seqlen{0};
};
InProjConvCall inProjConvCall;

extern "C" int qmamba_quant_conv1d_silu_prefill_from_float(const qmamba_conv_params* params,
    const qmamba_conv_float_input* in, const qmamba_conv_tensors* t, int64_t batch, int64_t seqlen,
    qmamba_stream_t /*stream*/)
{
    ++inProjConvCall.calls;
    inProjConvCall.params = *params;
    inProjConvCall.source = *in;
    inProjConvCall.tensors = *t;
    inProjConvCall.batch = batch;
    inProjConvCall.seqlen = seqlen;
    return QMAMBA_OK;
}

// The linear's launcher, recorded the same way (what W8A8LinearCore's enqueue hands it).
struct LinearCall
{
    int calls{0};
    qmamba_linear_params params{};
    qmamba_linear_tensors tensors{};
    int64_t rows{0};
};
LinearCall linearCall;

extern "C" int qmamba_w8a8_linear(const qmamba_linear_params* params, const qmamba_linear_tensors* t, int64_t rows,
    qmamba_stream_t /*stream*/)
{
    ++linearCall.calls;
    linearCall.params = *params;
    linearCall.tensors = *t;
    linearCall.rows = rows;
    return QMAMBA_OK;
}

extern "C" const char* qmamba_last_error(void)
{
    return "qmamba_gated_norm: the double's error";
}

int main()
{
    // ---- fields ------------------------------------------------------------------------------------
    auto const& S = QuantSSDCore::kFIELDS;
    size_t const N = QuantSSDCore::kNB_FIELDS;
    FieldValues v = parseFields("QuantSSD", S, N, ssdFields().raw);
    check(std::isinf(v[fieldIndex("QuantSSD", S, N, "dt_max")]) && v[fieldIndex("QuantSSD", S, N, "dt_min")] == 0.0
            && v[fieldIndex("QuantSSD", S, N, "out_dtype")] == 1 && v[fieldIndex("QuantSSD", S, N, "chunk_size")] == 128,
        "defaults");
    throwsWith("missing", [&] { parseFields("QuantSSD", S, N, Fields().in("ngroups", 1).raw); },
        "QuantSSD: required field dt_scale is missing");
    throwsWith("unknown", [&] { parseFields("QuantSSD", S, N, ssdFields().in("dstate", 3).raw); },
        "QuantSSD: unknown field dstate");
    throwsWith("duplicate", [&] { parseFields("QuantSSD", S, N, ssdFields().in("nheads", 8).raw); },
        "field nheads is given twice");
    throwsWith("int for float", [&] {
        Fields x;
        x.in("dt_scale", 1).in("ngroups", 1).in("nheads", 8).in("headdim", 32).in("d_state", 16);
        parseFields("QuantSSD", S, N, x.raw);
    }, "field dt_scale must be a float, got an int");
    throwsWith("float for int", [&] { parseFields("QuantSSD", S, N, ssdFields().flt("chunk_size", 64.f).raw); },
        "field chunk_size must be an int, got a float");
    {
        Fields x = ssdFields();
        x.raw[0].length = 2;
        throwsWith("length", [&] { parseFields("QuantSSD", S, N, x.raw); }, "must hold exactly one value, got 2");
    }
    {
        Fields x = ssdFields();
        x.raw[0].type = RawType::kOther;
        throwsWith("other type", [&] { parseFields("QuantSSD", S, N, x.raw); }, "has an unsupported type");
    }
    check(parseFields("QuantSSD", S, N, ssdFields().in("plugin_version", 1).raw, {"plugin_version"}).size() == N,
        "ignored names");

    // ---- value checks ------------------------------------------------------------------------------
    auto ssd = [&](Fields x) { return QuantSSDCore(parseFields("QuantSSD", S, N, x.raw)); };
    throwsWith("dt_scale > 0", [&] { Fields x = ssdFields(); x.f[0] = -1.f; ssd(x); }, "dt_scale must be finite and > 0");
    throwsWith("dt_scale finite", [&] { Fields x = ssdFields(); x.f[0] = NAN; ssd(x); }, "dt_scale is NaN");
    throwsWith("dt range", [&] { ssd(ssdFields().flt("dt_min", 0.5f).flt("dt_max", 0.1f)); }, "dt_max = 0.100000 must be > dt_min");
    throwsWith("divisible", [&] { Fields x = ssdFields(); x.i[1] = 7; ssd(x); }, "nheads = 7 must be divisible by ngroups = 2");
    throwsWith("out_dtype", [&] { ssd(ssdFields().in("out_dtype", 3)); }, "out_dtype must be 1 (float32) or 10 (float16), got 3");
    throwsWith("chunk_size", [&] { ssd(ssdFields().in("chunk_size", 0)); }, "chunk_size must be >= 1");
    QuantSSDCore half = ssd(ssdFields().in("out_dtype", 10));
    check(half.outputType(QuantSSDCore::kOUT_Y) == DType::kHalf && half.outputType(QuantSSDCore::kOUT_SSM_STATE_OUT) == DType::kInt8,
        "output types");

    // ---- shapes ------------------------------------------------------------------------------------
    QuantSSDCore core = ssd(ssdFields());
    // g 2, h 8, p 32, n 16, nhg 2, ndg 4: x [2, 5, 256]
    std::vector<Shape> in = {shape({2, 5, 256}), shape({2, 5, 8}), shape({2, 5, 32}), shape({2, 5, 32}), shape({8}),
        shape({8}), shape({8}), shape({2, 2, 4}), shape({2}), shape({2}), shape({2, 2}), shape({2, 2, 4}),
        shape({2, 2, 4, 16})};
    core.checkInputs(in);
    check(true, "good shapes");
    std::vector<Shape> dynamic = in;
    dynamic[0] = shape({-1, -1, 256});
    dynamic[1] = shape({-1, -1, 8});
    core.checkInputs(dynamic);
    check(true, "unknown dims pass at build time");
    auto bad = in;
    bad[1] = shape({2, 5, 7});
    throwsWith("dt shape", [&] { core.checkInputs(bad); }, "QuantSSD: input dt must have shape [2, 5, 8], got [2, 5, 7]");
    bad = in;
    bad[12] = shape({2, 2, 4, 8});
    throwsWith("state scale shape", [&] { core.checkInputs(bad); }, "input ssm_state_scale must have shape [2, 2, 4, 16]");
    bad = in;
    bad.push_back(shape({3, 8, 32, 16}));
    throwsWith("state batch", [&] { core.checkInputs(bad); }, "input ssm_state must have shape [2, 8, 32, 16], got [3, 8, 32, 16]");
    bad = in;
    bad.pop_back();
    throwsWith("input count", [&] { core.checkInputs(bad); }, "takes 13 or 14 inputs (ssm_state is optional), got 12");
    OutputRule const y = core.outputRule(QuantSSDCore::kOUT_Y);
    OutputRule const st = core.outputRule(QuantSSDCore::kOUT_SSM_STATE_OUT);
    check(y.nbDims == 3 && !y.d[0].constant && y.d[1].input == 0 && y.d[1].dim == 1 && y.d[2].constant && y.d[2].value == 256
            && st.nbDims == 4 && st.d[1].value == 8 && st.d[2].value == 32 && st.d[3].value == 16,
        "output rules");

    Fields cf;
    for (char const* name : {"x_scale", "wx_scale", "bx_scale", "B_scale", "wB_scale", "bB_scale", "C_scale", "wC_scale", "bC_scale"})
    {
        cf.flt(name, 0.01f);
    }
    cf.in("ngroups", 1).in("nheads", 4).in("headdim", 32).in("d_state", 16);
    QuantConv1dSiLUCore conv(parseFields("QuantConv1dSiLU", QuantConv1dSiLUCore::kFIELDS, QuantConv1dSiLUCore::kNB_FIELDS, cf.raw));
    OutputRule const cs = conv.outputRule(QuantConv1dSiLUCore::kOUT_CONV_STATE_OUT);
    check(cs.d[1].input == QuantConv1dSiLUCore::kIN_WEIGHT && cs.d[1].dim == 1 && cs.d[1].value == -1 && cs.d[2].value == 160,
        "conv state rule: K-1 rows of conv_dim");
    std::vector<Shape> cin = {shape({1, 3, 160}), shape({160, 5}), shape({160}), shape({1, 2, 2}), shape({1}), shape({1}),
        shape({1, 2}), shape({1, 2, 2})};
    throwsWith("d_conv", [&] { conv.checkInputs(cin); }, "d_conv (its second dimension) must be 2..4, got 5");

    // ---- V2 serialization --------------------------------------------------------------------------
    using Pod = QuantSSDCore::Serial;
    std::vector<char> buf(serializedSize<Pod>());
    writeSerialized(core.serial(), buf.data());
    QuantSSDCore back(readSerialized<Pod>("QuantSSD", buf.data(), buf.size()));
    check(back.fieldValues() == core.fieldValues(), "round trip");
    throwsWith("short", [&] { readSerialized<Pod>("QuantSSD", buf.data(), buf.size() - 1); }, "reading must end at the buffer's end");
    std::vector<char> longer = buf;
    longer.push_back(0);
    throwsWith("long", [&] { readSerialized<Pod>("QuantSSD", longer.data(), longer.size()); }, "reading must end at the buffer's end");
    std::vector<char> other = buf;
    other[4] = 9; // format
    throwsWith("format", [&] { readSerialized<Pod>("QuantSSD", other.data(), other.size()); },
        "engine was built with another version of the qmamba plugin library");
    std::vector<char> foreign = buf;
    foreign[0] = 0;
    throwsWith("magic", [&] { readSerialized<Pod>("QuantSSD", foreign.data(), foreign.size()); }, "not from the qmamba plugin library");
    throwsWith("tiny", [&] { readSerialized<Pod>("QuantSSD", buf.data(), 3); }, "fewer than its header");

    // ---- QmambaBitsAsFloat (TensorRT 8: QuantSSD's y as int32 words back to floats) -----------------
    FieldSpec const* BS = BitsAsFloatCore::kFIELDS;
    size_t const BN = BitsAsFloatCore::kNB_FIELDS;
    BitsAsFloatCore bitsF(parseFields("QmambaBitsAsFloat", BS, BN, Fields().raw));
    check(bitsF.outputType(0) == DType::kFloat && bitsF.inputType(0) == DType::kInt32, "bits: default to float32");
    OutputRule const fr = bitsF.outputRule(0);
    check(fr.nbDims == 3 && fr.d[2].input == 0 && fr.d[2].dim == 2 && fr.d[2].factor == 1, "bits: float32 shape");
    BitsAsFloatCore bitsH(parseFields("QmambaBitsAsFloat", BS, BN, Fields().in("to", 10).raw));
    check(bitsH.outputType(0) == DType::kHalf && bitsH.outputRule(0).d[2].factor == 2, "bits: float16 doubles the last dim");
    throwsWith("bits: to", [&] { BitsAsFloatCore(parseFields("QmambaBitsAsFloat", BS, BN, Fields().in("to", 3).raw)); },
        "field to must be 1 (float32) or 10 (float16), got 3");
    throwsWith("bits: rank", [&] { bitsF.checkInputs({shape({2, 8})}); }, "bits");
    check(roundTrip(bitsH).fieldValues() == bitsH.fieldValues(), "bits: round trip");

    // ---- QmambaW8A8Linear (decode graphs' linears) ------------------------------------------------------
    FieldSpec const* LS = W8A8LinearCore::kFIELDS;
    size_t const LN = W8A8LinearCore::kNB_FIELDS;
    W8A8LinearCore plain(parseFields("QmambaW8A8Linear", LS, LN, Fields().raw));
    check(plain.fieldValues() == FieldValues{0.0, static_cast<double>(1e-5f), 0.0, 0.0, 1.0, 1.0}, "linear: defaults");
    check(plain.inputType(1) == DType::kInt32 && plain.inputType(0) == DType::kFloat && plain.outputType(0) == DType::kFloat,
        "linear: types");
    OutputRule const lr = plain.outputRule(0);
    check(lr.nbDims == 3 && lr.d[2].input == 1 && lr.d[2].dim == 0 && lr.d[1].input == 0 && lr.d[1].dim == 1,
        "linear: y is [batch, seq, weight rows]");
    std::vector<Shape> const lin{shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({})};
    plain.checkInputs(lin);
    check(true, "linear: K = 10 takes 3 words per row, a 0-d input_scale");
    throwsWith("linear: words", [&] { plain.checkInputs({shape({2, 1, 12}), shape({6, 4}), shape({6}), shape({1})}); },
        "weight");
    throwsWith("linear: out_scale", [&] { plain.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({5}), shape({1})}); },
        "out_scale");
    throwsWith("linear: input_scale", [&] { plain.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({2})}); },
        "input input_scale must hold one value");
    throwsWith("linear: count", [&] { plain.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6})}); },
        "takes 4 inputs with norm = 0, residual = 0 and rotation_first = 1");
    W8A8LinearCore both(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 1).in("residual", 1).flt("eps", 1e-6f).raw));
    both.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({}), shape({10}), shape({2, 1, 6})});
    check(true, "linear: norm and residual inputs");
    throwsWith("linear: residual shape", [&] {
        both.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({}), shape({10}), shape({2, 1, 5})});
    }, "residual");
    throwsWith("linear: norm_weight shape", [&] {
        both.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({}), shape({9}), shape({2, 1, 6})});
    }, "norm_weight");
    throwsWith("linear: norm 2", [&] { W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 2).raw)); },
        "field norm must be 0 or 1, got 2");
    throwsWith("linear: eps", [&] { W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().flt("eps", -1.0f).raw)); },
        "field eps must be finite and >= 0");
    check(roundTrip(both).fieldValues() == both.fieldValues(), "linear: round trip");
    W8A8LinearCore grouped(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 1).in("norm_group", 5).raw));
    check(grouped.fieldValues()[3] == 5.0 && plain.fieldValues()[3] == 0.0, "linear: norm_group field, default 0");
    grouped.checkInputs({shape({2, 1, 10}), shape({6, 3}), shape({6}), shape({}), shape({10})});
    grouped.checkInputs({shape({-1, -1, -1}), shape({6, -1}), shape({6}), shape({1}), shape({-1})});
    check(true, "linear: norm_group 5 divides K = 10 (unknown K passes at build time)");
    throwsWith("linear: norm_group divides K", [&] {
        grouped.checkInputs({shape({2, 1, 12}), shape({6, 3}), shape({6}), shape({}), shape({12})});
    }, "field norm_group = 5 must divide K = 12 into at most 16 RMSNorm groups");
    W8A8LinearCore tiny(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 1).in("norm_group", 2).raw));
    throwsWith("linear: at most 16 groups", [&] {
        tiny.checkInputs({shape({2, 1, 34}), shape({6, 9}), shape({6}), shape({}), shape({34})});
    }, "field norm_group = 2 must divide K = 34 into at most 16 RMSNorm groups");
    W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm_group", 2).raw))
        .checkInputs({shape({2, 1, 34}), shape({6, 9}), shape({6}), shape({})});
    check(true, "linear: norm_group is not checked without the norm");
    throwsWith("linear: norm_group >= 0", [&] {
        W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm_group", -1).raw));
    }, "field norm_group must be 0 (the whole row) or >= 1, got -1");
    check(roundTrip(grouped).fieldValues() == grouped.fieldValues(), "linear: round trip keeps norm_group");
    // K 12 = 3 x 4: a dense F_0 of order 3 (an input after the residual) and the Sylvester factor of order 4 (none).
    W8A8LinearCore rotated(parseFields("QmambaW8A8Linear", LS, LN,
        Fields().in("norm", 1).in("residual", 1).in("norm_group", 12).in("rotation_first", 3).in("rotation_last", 4).raw));
    std::vector<Shape> rot{shape({3, 1, 12}), shape({5, 3}), shape({5}), shape({1}), shape({12}), shape({3, 1, 5}),
        shape({3, 3})};
    rotated.checkInputs(rot);
    check(rotated.workspaceSize(rot) == 3 * 12 * sizeof(float) && grouped.workspaceSize(rot) == 0,
        "linear: F_0 after the residual; the workspace holds the rotated rows");
    check(roundTrip(rotated).fieldValues() == rotated.fieldValues(), "linear: round trip keeps the rotation");
    W8A8LinearCore sylvesterOnly(parseFields("QmambaW8A8Linear", LS, LN,
        Fields().in("norm", 1).in("rotation_last", 16).raw));
    std::vector<Shape> const syl{shape({2, 1, 16}), shape({5, 4}), shape({5}), shape({1}), shape({16})};
    sylvesterOnly.checkInputs(syl);
    check(sylvesterOnly.workspaceSize(syl) == 2 * 16 * sizeof(float), "linear: one Sylvester factor takes no input");
    throwsWith("linear: rotation orders make K", [&] {
        std::vector<Shape> bad = rot;
        bad[0] = shape({3, 1, 24});
        bad[1] = shape({5, 6});
        bad[4] = shape({24});
        rotated.checkInputs(bad);
    }, "fields rotation_first * rotation_last = 12 must equal K = 24");
    throwsWith("linear: F_0 shape", [&] {
        std::vector<Shape> bad = rot;
        bad[6] = shape({3, 4});
        rotated.checkInputs(bad);
    }, "F_0");
    throwsWith("linear: rotation input count", [&] { rotated.checkInputs({rot.begin(), rot.end() - 1}); },
        "takes 7 inputs with norm = 1, residual = 1 and rotation_first = 3");
    throwsWith("linear: rotation_last a power of two", [&] {
        W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 1).in("rotation_last", 12).raw));
    }, "field rotation_last must be a power of two in 1..128 (1: no Sylvester factor), got 12");
    throwsWith("linear: rotation_first range", [&] {
        W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("norm", 1).in("rotation_first", 0).raw));
    }, "field rotation_first must be 1..128 (1: no dense factor), got 0");
    throwsWith("linear: rotation needs the norm", [&] {
        W8A8LinearCore(parseFields("QmambaW8A8Linear", LS, LN, Fields().in("rotation_last", 4).raw));
    }, "needs norm = 1");
    {
        std::vector<float> buf(7);
        void const* in[] = {&buf[0], &buf[1], &buf[2], &buf[3], &buf[4], &buf[5], &buf[6]};
        float y = 0.0f;
        void* out[] = {&y};
        std::vector<float> workspace(3 * 12);
        rotated.enqueue(rot, in, out, workspace.data(), workspace.size() * sizeof(float), nullptr);
        qmamba_linear_params const& lp = linearCall.params;
        qmamba_linear_tensors const& lt = linearCall.tensors;
        check(linearCall.calls == 1 && linearCall.rows == 3 && lp.in_features == 12 && lp.out_features == 5
                && lp.norm == 1 && lp.norm_group == 12 && lp.rotation_first == 3 && lp.rotation_last == 4,
            "linear: enqueue passes the rotation's orders");
        check(lt.norm_weight == &buf[4] && lt.residual == &buf[5] && lt.rotation_first == &buf[6]
                && lt.workspace == workspace.data() && lt.y == &y,
            "linear: enqueue passes norm_weight, residual, F_0 and the workspace in their places");
        sylvesterOnly.enqueue(syl, in, out, workspace.data(), workspace.size() * sizeof(float), nullptr);
        check(linearCall.calls == 2 && linearCall.tensors.rotation_first == nullptr
                && linearCall.params.rotation_first == 1 && linearCall.params.rotation_last == 16,
            "linear: no F_0 pointer without a dense factor");
        throwsWith("linear: workspace too small", [&] {
            rotated.enqueue(rot, in, out, workspace.data(), 4, nullptr);
        }, "workspace smaller than the rotated rows");
    }
    std::vector<char> linear3(serializedSize<W8A8LinearCore::Serial>());
    writeSerialized(rotated.serial(), linear3.data());
    linear3[4] = 3; // the format whose field rotation counted factors, F_1 an input
    throwsWith("linear: format 3 refused", [&] {
        readSerialized<W8A8LinearCore::Serial>("QmambaW8A8Linear", linear3.data(), linear3.size());
    }, "engine was built with another version of the qmamba plugin library (serialization format 3");

    // ---- QmambaDecodeMixer (decode graphs' mixers) ---------------------------------------------------
    FieldSpec const* MS = DecodeMixerCore::kFIELDS;
    size_t const MN = DecodeMixerCore::kNB_FIELDS;
    auto mixer = [&](Fields const& x) { return DecodeMixerCore(parseFields("QmambaDecodeMixer", MS, MN, x.raw)); };
    DecodeMixerCore mix = mixer(mixerFields());
    FieldValues const mv = mix.fieldValues();
    check(mv.size() == MN && mv[fieldIndex("QmambaDecodeMixer", MS, MN, "d_conv")] == 4
            && mv[fieldIndex("QmambaDecodeMixer", MS, MN, "z_scale")] == static_cast<double>(0.05f)
            && mv[fieldIndex("QmambaDecodeMixer", MS, MN, "dt_min")] == 0.0
            && std::isinf(mv[fieldIndex("QmambaDecodeMixer", MS, MN, "dt_max")]),
        "mixer: fields parsed, dt_min 0 and dt_max inf by default");
    for (char const* name : {"d_conv", "z_scale", "bC_scale"})
    {
        Fields x = mixerFields();
        for (size_t k = 0; k < x.raw.size(); ++k)
        {
            if (x.raw[k].name == name)
            {
                x.raw.erase(x.raw.begin() + static_cast<std::ptrdiff_t>(k));
                break;
            }
        }
        throwsWith((std::string("mixer: missing ") + name).c_str(), [&] { mixer(x); },
            std::string("QmambaDecodeMixer: required field ") + name + " is missing");
    }
    // Fields::i holds ngroups, nheads, headdim, d_state, d_conv; Fields::f the nine scales, z_scale, dt_scale.
    struct BadInt
    {
        size_t at;
        int32_t value;
        char const* want;
    };
    for (BadInt const& b : std::vector<BadInt>{
             {4, 5, "field d_conv must be 2..4, got 5"},
             {4, 1, "field d_conv must be 2..4, got 1"},
             {3, 18, "field d_state must be a multiple of 4 in 16..256 (ssm_state travels as int32 words), got 18"},
             {3, 8, "field d_state must be a multiple of 4 in 16..256"},
             {1, 7, "nheads = 7 must be divisible by ngroups = 2"},
             {0, 0, "field ngroups must be >= 1, got 0"},
         })
    {
        Fields x = mixerFields();
        x.i[b.at] = b.value;
        throwsWith((std::string("mixer: ") + b.want).c_str(), [&] { mixer(x); }, b.want);
    }
    throwsWith("mixer: conv_dim multiple of 4", [&] {
        Fields x = mixerFields();
        x.i[1] = 2; // h 2, p 5: conv_dim 10 + 64
        x.i[2] = 5;
        mixer(x);
    }, "conv_dim = nheads * headdim + 2 * ngroups * d_state = 74 must be a multiple of 4");
    struct BadFloat
    {
        size_t at;
        float value;
        char const* want;
    };
    for (BadFloat const& b : std::vector<BadFloat>{
             {4, 0.f, "field wB_scale must be finite and > 0"},
             {9, -1.f, "field z_scale must be finite and > 0"},
             {10, INFINITY, "field dt_scale must be finite and > 0"},
         })
    {
        Fields x = mixerFields();
        x.f[b.at] = b.value;
        throwsWith((std::string("mixer: ") + b.want).c_str(), [&] { mixer(x); }, b.want);
    }
    throwsWith("mixer: dt range", [&] { mixer(mixerFields().flt("dt_min", 0.5f).flt("dt_max", 0.5f)); }, "must be > dt_min");
    throwsWith("mixer: dt_min", [&] { mixer(mixerFields().flt("dt_min", -0.5f)); }, "field dt_min must be >= 0");
    std::vector<DType> const mixerInputs = {DType::kFloat, DType::kInt32, DType::kInt32, DType::kFloat, DType::kFloat,
        DType::kFloat, DType::kInt32, DType::kInt32, DType::kFloat, DType::kFloat, DType::kFloat, DType::kFloat,
        DType::kInt32, DType::kInt32};
    bool typesOk = static_cast<int32_t>(mixerInputs.size()) == DecodeMixerCore::kMAX_INPUTS;
    for (int32_t i = 0; typesOk && i < DecodeMixerCore::kMAX_INPUTS; ++i)
    {
        typesOk = mix.inputType(i) == mixerInputs[static_cast<size_t>(i)];
    }
    check(typesOk && mix.outputType(DecodeMixerCore::kOUT_GATED) == DType::kFloat
            && mix.outputType(DecodeMixerCore::kOUT_CONV_STATE_OUT) == DType::kInt32
            && mix.outputType(DecodeMixerCore::kOUT_SSM_STATE_OUT) == DType::kInt32,
        "mixer: types: no int8 tensor (TensorRT 8.6's int8 rules do not apply; V2 carries nothing as words)");
    OutputRule const gr = mix.outputRule(DecodeMixerCore::kOUT_GATED);
    OutputRule const cr = mix.outputRule(DecodeMixerCore::kOUT_CONV_STATE_OUT);
    OutputRule const sr = mix.outputRule(DecodeMixerCore::kOUT_SSM_STATE_OUT);
    check(gr.nbDims == 3 && !gr.d[0].constant && gr.d[0].input == DecodeMixerCore::kIN_ZXBCDT && gr.d[0].dim == 0
            && gr.d[1].constant && gr.d[1].value == 1 && gr.d[2].constant && gr.d[2].value == 256,
        "mixer: gated is [batch, 1, d_ssm]");
    check(cr.nbDims == 3 && !cr.d[0].constant && cr.d[0].dim == 0 && cr.d[1].value == 3 && cr.d[2].value == 80,
        "mixer: conv_state_out is [batch, K-1, conv_dim / 4]");
    check(sr.nbDims == 4 && !sr.d[0].constant && sr.d[0].dim == 0 && sr.d[1].value == 8 && sr.d[2].value == 32
            && sr.d[3].value == 4,
        "mixer: ssm_state_out is [batch, h, p, n / 4]");
    throwsWith("mixer: no output 3", [&] { mix.outputRule(3); }, "no output 3");
    // nhg 2, ndg 4; conv_weight 320 * 4 bytes = 320 words, conv_bias 80 words.
    std::vector<Shape> const min = {shape({3, 1, 584}), shape({320}), shape({80}), shape({2, 2, 4}), shape({2}),
        shape({2}), shape({2, 2}), shape({2, 2, 4}), shape({8}), shape({8}), shape({8}), shape({2, 2, 4, 16}),
        shape({3, 3, 80}), shape({3, 8, 32, 4})};
    mix.checkInputs(min);
    check(true, "mixer: good shapes");
    std::vector<Shape> mdyn = min;
    mdyn[DecodeMixerCore::kIN_ZXBCDT] = shape({-1, 1, 584});
    mdyn[DecodeMixerCore::kIN_CONV_STATE] = shape({-1, 3, 80});
    mdyn[DecodeMixerCore::kIN_SSM_STATE] = shape({-1, 8, 32, 4});
    mix.checkInputs(mdyn);
    check(true, "mixer: unknown batch passes at build time");
    struct BadShape
    {
        int32_t pos;
        Shape got;
        char const* want;
    };
    for (BadShape const& b : std::vector<BadShape>{
             {DecodeMixerCore::kIN_ZXBCDT, shape({3, 2, 584}), "input zxbcdt must have shape [?, 1, 584], got [3, 2, 584]"},
             {DecodeMixerCore::kIN_ZXBCDT, shape({3, 1, 583}), "input zxbcdt must have shape [?, 1, 584]"},
             {DecodeMixerCore::kIN_CONV_WEIGHT, shape({1280}), "input conv_weight must have shape [320], got [1280]"},
             {DecodeMixerCore::kIN_CONV_BIAS, shape({320}), "input conv_bias must have shape [80], got [320]"},
             {DecodeMixerCore::kIN_X_OUT_SCALES, shape({1, 2, 4}), "input x_out_scales must have shape [2, ?, ?]"},
             {DecodeMixerCore::kIN_C_OUT_SCALES, shape({3}), "input C_out_scales must have shape [2], got [3]"},
             {DecodeMixerCore::kIN_X_DIM_GROUP_RANGE, shape({2, 2, 3}), "input x_dim_group_range must have shape [2, 2, 4]"},
             {DecodeMixerCore::kIN_A_LOG, shape({4}), "input A_log must have shape [8], got [4]"},
             {DecodeMixerCore::kIN_D, shape({8, 1}), "input D must have shape [8], got [8, 1]"},
             {DecodeMixerCore::kIN_DT_BIAS, shape({9}), "input dt_bias must have shape [8], got [9]"},
             {DecodeMixerCore::kIN_SSM_STATE_SCALE, shape({2, 2, 4, 4}), "input ssm_state_scale must have shape [2, 2, 4, 16]"},
             {DecodeMixerCore::kIN_CONV_STATE, shape({3, 3, 320}), "input conv_state must have shape [3, 3, 80], got [3, 3, 320]"},
             {DecodeMixerCore::kIN_CONV_STATE, shape({2, 3, 80}), "input conv_state must have shape [3, 3, 80], got [2, 3, 80]"},
             {DecodeMixerCore::kIN_SSM_STATE, shape({3, 8, 32, 16}), "input ssm_state must have shape [3, 8, 32, 4], got [3, 8, 32, 16]"},
         })
    {
        std::vector<Shape> bad = min;
        bad[b.pos] = b.got;
        throwsWith((std::string("mixer: bad shape of input ") + std::to_string(b.pos)).c_str(),
            [&] { mix.checkInputs(bad); }, std::string("QmambaDecodeMixer: ") + b.want);
    }
    throwsWith("mixer: input count", [&] {
        std::vector<Shape> bad = min;
        bad.pop_back();
        mix.checkInputs(bad);
    }, "QmambaDecodeMixer: takes 14 inputs");
    // g 1, h 4, p 32, n 20, K 3: conv_dim 168, weight 504 bytes = 126 words, bias 42 words, width 300.
    Fields k3Fields = mixerFields();
    k3Fields.i[0] = 1;
    k3Fields.i[1] = 4;
    k3Fields.i[3] = 20;
    k3Fields.i[4] = 3;
    DecodeMixerCore k3 = mixer(k3Fields);
    k3.checkInputs({shape({1, 1, 300}), shape({126}), shape({42}), shape({1, 1, 1}), shape({1}), shape({1}),
        shape({1, 1}), shape({1, 1, 1}), shape({4}), shape({4}), shape({4}), shape({1, 1, 1, 20}), shape({1, 2, 42}),
        shape({1, 4, 32, 5})});
    OutputRule const k3c = k3.outputRule(DecodeMixerCore::kOUT_CONV_STATE_OUT);
    check(k3c.d[1].value == 2 && k3c.d[2].value == 42 && k3.outputRule(DecodeMixerCore::kOUT_SSM_STATE_OUT).d[3].value == 5,
        "mixer: K 3, n 20: shapes follow the fields");
    Fields withDt = mixerFields();
    withDt.flt("dt_min", 0.001f).flt("dt_max", 0.1f);
    DecodeMixerCore mixDt = mixer(withDt);
    check(roundTrip(mixDt).fieldValues() == mixDt.fieldValues(), "mixer: round trip");
    check(std::isinf(roundTrip(mix).fieldValues()[17]), "mixer: round trip keeps dt_max = inf");
    using MixPod = DecodeMixerCore::Serial;
    std::vector<char> mbuf(serializedSize<MixPod>());
    writeSerialized(mix.serial(), mbuf.data());
    throwsWith("mixer: short", [&] { readSerialized<MixPod>("QmambaDecodeMixer", mbuf.data(), mbuf.size() - 1); },
        "reading must end at the buffer's end");
    std::vector<char> format1 = mbuf;
    format1[4] = 1; // the format before QmambaW8A8Linear's norm_group (and its rotation)
    throwsWith("mixer: format 1 refused", [&] { readSerialized<MixPod>("QmambaDecodeMixer", format1.data(), format1.size()); },
        "engine was built with another version of the qmamba plugin library (serialization format 1");
    // ---- QmambaGatedNorm (prefill graphs' gated norms and rotations) -----------------------------------
    FieldSpec const* GS = GatedNormCore::kFIELDS;
    size_t const GN = GatedNormCore::kNB_FIELDS;
    auto norm = [&](Fields const& x) { return GatedNormCore(parseFields("QmambaGatedNorm", GS, GN, x.raw)); };
    // K 384 = 12 x 32 (a dense F_0 of order 12, Sylvester 32), two norm groups.
    auto rotatedFields = [] {
        Fields x;
        x.in("channels", 384).in("group_size", 192).flt("eps", 1e-6f).flt("z_scale", 0.05f);
        x.in("rotation_first", 12).in("rotation_last", 32);
        return x;
    };
    GatedNormCore rotatedNorm = norm(rotatedFields());
    check(rotatedNorm.fieldValues()
            == FieldValues{384.0, 192.0, static_cast<double>(1e-6f), static_cast<double>(0.05f), 12.0, 32.0, 1.0, 0.0, 0.0,
                0.0},
        "norm: fields parsed in the table's order");
    GatedNormCore plainNorm = norm(Fields().in("channels", 96).in("group_size", 96));
    check(plainNorm.fieldValues() == FieldValues{96.0, 96.0, static_cast<double>(1e-5f), 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0},
        "norm: eps 1e-5, z_scale 0 (z as is), no rotation, a gate, no column scale of z, y as float32, z of K "
        "columns by default");
    // Without a gate (a block's RMSNorm): y, weight and, with a dense factor, F_0; K 384 in one group.
    GatedNormCore ungatedNorm = norm(Fields().in("channels", 384).in("group_size", 384).in("rotation_first", 12)
                                         .in("rotation_last", 32).in("gate", 0));
    GatedNormCore rmsNorm = norm(Fields().in("channels", 96).in("group_size", 96).in("gate", 0));
    check(rmsNorm.fieldValues() == FieldValues{96.0, 96.0, static_cast<double>(1e-5f), 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0}
            && ungatedNorm.inputPosition(GatedNormCore::kIN_WEIGHT) == 1
            && ungatedNorm.inputPosition(GatedNormCore::kIN_ROTATION_FIRST) == 2
            && ungatedNorm.inputPosition(GatedNormCore::kIN_Z) == -1
            && ungatedNorm.inputPosition(GatedNormCore::kIN_Z_COL_SCALE) == -1
            && rotatedNorm.inputPosition(GatedNormCore::kIN_Z_COL_SCALE) == -1
            && rotatedNorm.inputPosition(GatedNormCore::kIN_WEIGHT) == 2
            && rotatedNorm.inputPosition(GatedNormCore::kIN_ROTATION_FIRST) == 3
            && plainNorm.inputPosition(GatedNormCore::kIN_ROTATION_FIRST) == -1,
        "norm: gate = 0 takes no z, z_col_scale = 0 no column scale, the inputs after them move up");
    // With in_proj's column scale of z (the unscaled z piece): y, z, z_col_scale, weight, F_0 at their constants.
    GatedNormCore scaledNorm = norm(rotatedFields().in("z_col_scale", 1));
    check(scaledNorm.fieldValues()
            == FieldValues{384.0, 192.0, static_cast<double>(1e-6f), static_cast<double>(0.05f), 12.0, 32.0, 1.0, 1.0, 0.0,
                0.0}
            && scaledNorm.inputPosition(GatedNormCore::kIN_Z_COL_SCALE) == GatedNormCore::kIN_Z_COL_SCALE
            && scaledNorm.inputPosition(GatedNormCore::kIN_WEIGHT) == GatedNormCore::kIN_WEIGHT
            && scaledNorm.inputPosition(GatedNormCore::kIN_ROTATION_FIRST) == GatedNormCore::kIN_ROTATION_FIRST,
        "norm: z_col_scale = 1 puts the scale right after z");
    throwsWith("norm: z_col_scale 0 or 1", [&] { norm(rotatedFields().in("z_col_scale", 2)); },
        "QmambaGatedNorm: field z_col_scale must be 0 (z as it comes) or 1 (the input z_col_scale scales z), got 2");
    throwsWith("norm: z_col_scale needs a gate", [&] {
        norm(Fields().in("channels", 96).in("group_size", 96).in("gate", 0).in("z_col_scale", 1));
    }, "QmambaGatedNorm: field z_col_scale = 1 needs gate = 1 (with gate = 0 there is no z to scale)");
    // z from in_proj's whole output: z [b, s, W] with W >= K, its first K columns.
    GatedNormCore wideNorm = norm(rotatedFields().in("z_col_scale", 1).in("z_row_width", 1000));
    wideNorm.checkInputs({shape({2, 5, 384}), shape({2, 5, 1000}), shape({384}), shape({384}), shape({12, 12})});
    throwsWith("norm: z_row_width sets z's width", [&] {
        wideNorm.checkInputs({shape({2, 5, 384}), shape({2, 5, 384}), shape({384}), shape({384}), shape({12, 12})});
    }, "QmambaGatedNorm: input z must have shape [2, 5, 1000], got [2, 5, 384]");
    throwsWith("norm: z_row_width below channels", [&] { norm(rotatedFields().in("z_row_width", 383)); },
        "QmambaGatedNorm: field z_row_width must be 0 (z is [batch, seq, channels]) or at least channels = 384");
    throwsWith("norm: z_row_width needs a gate", [&] {
        norm(Fields().in("channels", 96).in("group_size", 96).in("gate", 0).in("z_row_width", 200));
    }, "QmambaGatedNorm: field z_row_width needs gate = 1");
    check(roundTrip(wideNorm).fieldValues() == wideNorm.fieldValues(), "norm: round trip with z_row_width");
    throwsWith("norm: gate 0 or 1", [&] { norm(Fields().in("channels", 96).in("group_size", 96).in("gate", 2)); },
        "QmambaGatedNorm: field gate must be 0 (no z: a plain RMSNorm) or 1 (the input z gates y), got 2");
    throwsWith("norm: z_scale needs a gate", [&] { norm(rotatedFields().in("gate", 0)); },
        "QmambaGatedNorm: field z_scale = 0.050000 needs gate = 1 (with gate = 0 there is no z to quantize)");
    for (char const* missing : {"channels", "group_size"})
    {
        Fields x;
        x.in(missing == std::string("channels") ? "group_size" : "channels", 96);
        throwsWith((std::string("norm: missing ") + missing).c_str(), [&] { norm(x); },
            std::string("QmambaGatedNorm: required field ") + missing + " is missing");
    }
    // Fields::i holds channels, group_size, rotation_first, rotation_last; Fields::f eps, z_scale.
    for (BadInt const& b : std::vector<BadInt>{
             {0, 0, "field channels must be 1..65536, got 0"},
             {0, 65537 * 3, "field channels must be 1..65536, got 196611"},
             {1, 0, "field group_size = 0 must divide channels = 384 (channels per norm group)"},
             {1, 7, "field group_size = 7 must divide channels = 384"},
             {2, 0, "field rotation_first must be 1..128 (1: no dense factor), got 0"},
             {2, 129, "field rotation_first must be 1..128"},
             {3, 96, "field rotation_last must be a power of two in 1..128 (1: no Sylvester factor), got 96"},
             {3, 256, "field rotation_last must be a power of two in 1..128"},
             {3, 0, "field rotation_last must be a power of two in 1..128"},
             {3, 16, "fields rotation_first * rotation_last = 192 must equal channels = 384"},
         })
    {
        Fields x = rotatedFields();
        x.i[b.at] = b.value;
        throwsWith((std::string("norm: ") + b.want).c_str(), [&] { norm(x); },
            std::string("QmambaGatedNorm: ") + b.want);
    }
    for (BadFloat const& b : std::vector<BadFloat>{
             {0, -1.f, "field eps must be finite and >= 0"},
             {0, INFINITY, "field eps must be finite and >= 0"},
             {1, -0.05f, "field z_scale must be finite and >= 0 (0: z is not quantized)"},
             {1, INFINITY, "field z_scale must be finite and >= 0"},
             {1, NAN, "field z_scale is NaN"},
         })
    {
        Fields x = rotatedFields();
        x.f[b.at] = b.value;
        throwsWith((std::string("norm: ") + b.want).c_str(), [&] { norm(x); }, b.want);
    }
    // One factor: a Sylvester one (f0 = 1) or a dense one (f1 = 1) of the whole row.
    norm(Fields().in("channels", 128).in("group_size", 128).in("rotation_last", 128));
    norm(Fields().in("channels", 96).in("group_size", 48).in("rotation_first", 96));
    check(true, "norm: a rotation of one factor, Sylvester or dense");
    throwsWith("norm: one factor must be the whole row", [&] {
        norm(Fields().in("channels", 256).in("group_size", 256).in("rotation_last", 128));
    }, "fields rotation_first * rotation_last = 128 must equal channels = 256");
    bool normTypes = rotatedNorm.outputType(GatedNormCore::kOUT_OUT) == DType::kFloat;
    for (int32_t i = 0; i < GatedNormCore::kMAX_INPUTS; ++i)
    {
        normTypes = normTypes && rotatedNorm.inputType(i) == DType::kFloat;
    }
    check(normTypes, "norm: every tensor float32 (no int8: TensorRT 8.6's Q/DQ rules do not apply)");
    // y_bits: y as the int32 words of TensorRT 8's V2 QuantSSD output, the other tensors unchanged.
    GatedNormCore bitsNorm = norm(rotatedFields().in("y_bits", 1));
    bool bitsTypes = bitsNorm.inputType(GatedNormCore::kIN_Y) == DType::kInt32
        && bitsNorm.outputType(GatedNormCore::kOUT_OUT) == DType::kFloat;
    for (int32_t i = 1; i < GatedNormCore::kMAX_INPUTS; ++i)
    {
        bitsTypes = bitsTypes && bitsNorm.inputType(i) == DType::kFloat;
    }
    check(bitsTypes && bitsNorm.fieldValues()[8] == 1.0 && roundTrip(bitsNorm).fieldValues() == bitsNorm.fieldValues(),
        "norm: y_bits = 1 takes y as int32 words, the rest float32; it survives a round trip");
    throwsWith("norm: y_bits 0 or 1", [&] { norm(rotatedFields().in("y_bits", 2)); },
        "QmambaGatedNorm: field y_bits must be 0 (y is float32) or 1 (y is int32 words holding float32 values), got 2");
    OutputRule const nr = rotatedNorm.outputRule(GatedNormCore::kOUT_OUT);
    check(nr.nbDims == 3 && !nr.d[0].constant && nr.d[0].input == GatedNormCore::kIN_Y && nr.d[0].dim == 0
            && !nr.d[1].constant && nr.d[1].input == GatedNormCore::kIN_Y && nr.d[1].dim == 1 && nr.d[1].factor == 1
            && nr.d[2].constant && nr.d[2].value == 384,
        "norm: out is [batch, seq, channels]");
    throwsWith("norm: no output 1", [&] { rotatedNorm.outputRule(1); }, "no output 1");
    std::vector<Shape> const nin = {shape({2, 5, 384}), shape({2, 5, 384}), shape({384}), shape({12, 12})};
    rotatedNorm.checkInputs(nin);
    rotatedNorm.checkInputs({shape({-1, -1, 384}), shape({-1, -1, 384}), shape({384}), shape({12, 12})});
    plainNorm.checkInputs({shape({3, 7, 96}), shape({3, 7, 96}), shape({96})});
    check(true, "norm: good shapes, unknown batch and seq at build time, no F_0 without a dense factor");
    for (BadShape const& b : std::vector<BadShape>{
             {GatedNormCore::kIN_Y, shape({2, 5, 383}), "input y must have shape [?, ?, 384], got [2, 5, 383]"},
             {GatedNormCore::kIN_Y, shape({10, 384}), "input y must have shape [?, ?, 384], got [10, 384]"},
             {GatedNormCore::kIN_Z, shape({2, 4, 384}), "input z must have shape [2, 5, 384], got [2, 4, 384]"},
             {GatedNormCore::kIN_Z, shape({2, 5, 192}), "input z must have shape [2, 5, 384], got [2, 5, 192]"},
             {GatedNormCore::kIN_WEIGHT, shape({1, 384}), "input weight must have shape [384], got [1, 384]"},
             {GatedNormCore::kIN_ROTATION_FIRST, shape({12, 32}),
                 "input rotation_first must have shape [12, 12], got [12, 32]"},
         })
    {
        std::vector<Shape> bad = nin;
        int32_t const pos = rotatedNorm.inputPosition(b.pos); // without z_col_scale weight and F_0 one up
        bad[pos] = b.got;
        throwsWith((std::string("norm: bad shape of input ") + std::to_string(pos)).c_str(),
            [&] { rotatedNorm.checkInputs(bad); }, std::string("QmambaGatedNorm: ") + b.want);
    }
    throwsWith("norm: F_0 missing", [&] { rotatedNorm.checkInputs({nin.begin(), nin.end() - 1}); },
        "QmambaGatedNorm: takes 4 inputs with gate = 1, z_col_scale = 0 and rotation_first = 12 (y, z, weight, "
        "rotation_first), got 3");
    throwsWith("norm: F_0 without a dense factor", [&] {
        plainNorm.checkInputs({shape({3, 7, 96}), shape({3, 7, 96}), shape({96}), shape({96, 96})});
    }, "QmambaGatedNorm: takes 3 inputs with gate = 1, z_col_scale = 0 and rotation_first = 1 (y, z, weight), got 4");
    std::vector<Shape> const scaledIn = {
        shape({2, 5, 384}), shape({2, 5, 384}), shape({384}), shape({384}), shape({12, 12})};
    scaledNorm.checkInputs(scaledIn);
    check(true, "norm: with z_col_scale, good shapes of y, z, z_col_scale, weight, F_0");
    throwsWith("norm: z_col_scale missing", [&] { scaledNorm.checkInputs(nin); },
        "QmambaGatedNorm: takes 5 inputs with gate = 1, z_col_scale = 1 and rotation_first = 12 (y, z, z_col_scale, "
        "weight, rotation_first), got 4");
    throwsWith("norm: z_col_scale is [K]", [&] {
        std::vector<Shape> bad = scaledIn;
        bad[GatedNormCore::kIN_Z_COL_SCALE] = shape({2, 5, 384});
        scaledNorm.checkInputs(bad);
    }, "QmambaGatedNorm: input z_col_scale must have shape [384], got [2, 5, 384]");
    std::vector<Shape> const uin = {shape({2, 5, 384}), shape({384}), shape({12, 12})};
    ungatedNorm.checkInputs(uin);
    rmsNorm.checkInputs({shape({3, 7, 96}), shape({96})});
    check(true, "norm: without a gate, good shapes of y, weight (and F_0)");
    throwsWith("norm: a z without a gate", [&] { rmsNorm.checkInputs({shape({3, 7, 96}), shape({3, 7, 96}), shape({96})}); },
        "QmambaGatedNorm: takes 2 inputs with gate = 0, z_col_scale = 0 and rotation_first = 1 (y, weight), got 3");
    throwsWith("norm: without a gate, weight is input 1", [&] {
        ungatedNorm.checkInputs({shape({2, 5, 384}), shape({12, 12}), shape({384})});
    }, "QmambaGatedNorm: input weight must have shape [384], got [12, 12]");
    throwsWith("norm: without a gate, F_0 is input 2", [&] {
        ungatedNorm.checkInputs({shape({2, 5, 384}), shape({384}), shape({12, 32})});
    }, "QmambaGatedNorm: input rotation_first must have shape [12, 12], got [12, 32]");
    check(rotatedNorm.workspaceSize(nin) == 0, "norm: no workspace");
    check(roundTrip(rotatedNorm).fieldValues() == rotatedNorm.fieldValues()
            && roundTrip(plainNorm).fieldValues() == plainNorm.fieldValues()
            && roundTrip(ungatedNorm).fieldValues() == ungatedNorm.fieldValues()
            && roundTrip(scaledNorm).fieldValues() == scaledNorm.fieldValues(),
        "norm: round trip, the gate and z_col_scale included");
    {
        using NormPod = GatedNormCore::Serial;
        GatedNormCore::Serial broken = rotatedNorm.serial();
        broken.params.rotation_last = 48;
        std::vector<char> nbuf(serializedSize<NormPod>());
        writeSerialized(broken, nbuf.data());
        throwsWith("norm: serialized values are checked again", [&] {
            GatedNormCore(readSerialized<NormPod>("QmambaGatedNorm", nbuf.data(), nbuf.size()));
        }, "field rotation_last must be a power of two");
        // Engines of the layouts before: refused, naming both layouts.
        auto olderLayout = [&](char const* name, uint32_t format, void const* pod, size_t bytes) {
            SerialHeader const h{kSERIAL_MAGIC, format, static_cast<uint32_t>(bytes)};
            std::vector<char> buf(sizeof(h) + bytes);
            std::memcpy(buf.data(), &h, sizeof(h));
            std::memcpy(buf.data() + sizeof(h), pod, bytes);
            throwsWith(name, [&] { readSerialized<NormPod>("QmambaGatedNorm", buf.data(), buf.size()); },
                "engine was built with another version of the qmamba plugin library (serialization format "
                    + std::to_string(format) + ", " + std::to_string(bytes) + " bytes; this library reads format "
                    + std::to_string(kSERIAL_FORMAT) + ", "
                    + std::to_string(sizeof(NormPod)) + " bytes): rebuild the engine");
        };
        qmamba_gated_norm_params const three = rotatedNorm.serial().params; // format 3: the params alone
        olderLayout("norm: an engine of the layout before the gate is refused", 3u, &three, sizeof(three));
        struct Format4 // the params and the gate, no z_col_scale
        {
            qmamba_gated_norm_params params;
            int32_t gate;
        };
        Format4 const four{rotatedNorm.serial().params, 1};
        olderLayout("norm: an engine of the layout before z_col_scale is refused", 4u, &four, sizeof(four));
        struct Format5 // the params, the gate and z_col_scale, no y_bits
        {
            qmamba_gated_norm_params params;
            int32_t gate, z_col_scale;
        };
        Format5 const five{rotatedNorm.serial().params, 1, 0};
        olderLayout("norm: an engine of the layout before y_bits is refused", 5u, &five, sizeof(five));
        struct Format6 // the params before z_row_width, the gate, z_col_scale and y_bits
        {
            int32_t channels, group_size;
            float eps, z_scale;
            int32_t rotation_first, rotation_last, gate, z_col_scale, y_bits;
        };
        Format6 const six{384, 192, 1e-6f, 0.05f, 12, 32, 1, 0, 1};
        olderLayout("norm: an engine of the layout before z_row_width is refused", 6u, &six, sizeof(six));
    }
    // enqueue hands the C ABI the fields, the tensors' pointers and batch x seq rows, and its refusal through.
    std::vector<float> yBuf(1), zBuf(1), wBuf(1), fBuf(1), outBuf(1);
    void const* normInputs[] = {yBuf.data(), zBuf.data(), wBuf.data(), fBuf.data()};
    void* normOutputs[] = {outBuf.data()};
    rotatedNorm.enqueue(nin, normInputs, normOutputs, nullptr, 0, nullptr);
    qmamba_gated_norm_params const& gp = gatedNormCall.params;
    qmamba_gated_norm_tensors const& gt = gatedNormCall.tensors;
    check(gatedNormCall.calls == 1 && gatedNormCall.rows == 10 && gp.channels == 384 && gp.group_size == 192
            && gp.eps == 1e-6f && gp.z_scale == 0.05f && gp.rotation_first == 12 && gp.rotation_last == 32,
        "norm: enqueue passes the fields and batch x seq = 10 rows");
    check(gt.y == yBuf.data() && gt.z == zBuf.data() && gt.z_col_scale == nullptr && gt.weight == wBuf.data()
            && gt.rotation_first == fBuf.data() && gt.out == outBuf.data(),
        "norm: enqueue passes y, z, weight, F_0 and out in their places, no column scale");
    std::vector<Shape> const plainIn = {shape({3, 7, 96}), shape({3, 7, 96}), shape({96})};
    plainNorm.enqueue(plainIn, normInputs, normOutputs, nullptr, 0, nullptr);
    check(gatedNormCall.calls == 2 && gatedNormCall.rows == 21 && gatedNormCall.tensors.rotation_first == nullptr
            && gatedNormCall.params.rotation_first == 1 && gatedNormCall.params.rotation_last == 1,
        "norm: no F_0 pointer without a dense factor");
    throwsWith("norm: enqueue checks the shapes first", [&] {
        std::vector<Shape> bad = nin;
        bad[GatedNormCore::kIN_Z] = shape({2, 6, 384});
        rotatedNorm.enqueue(bad, normInputs, normOutputs, nullptr, 0, nullptr);
    }, "QmambaGatedNorm: input z must have shape [2, 5, 384], got [2, 6, 384]");
    check(gatedNormCall.calls == 2, "norm: shapes refused before the kernel is called");
    gatedNormCall.status = QMAMBA_ERR_BAD_SIZE;
    throwsWith("norm: a refusal of the kernel is reported", [&] {
        rotatedNorm.enqueue(nin, normInputs, normOutputs, nullptr, 0, nullptr);
    }, "QmambaGatedNorm: kernel failed: qmamba_gated_norm: the double's error");
    gatedNormCall.status = QMAMBA_OK;
    ungatedNorm.enqueue(uin, normInputs, normOutputs, nullptr, 0, nullptr);
    check(gatedNormCall.calls == 4 && gatedNormCall.rows == 10 && gatedNormCall.tensors.z == nullptr
            && gatedNormCall.tensors.y == yBuf.data() && gatedNormCall.tensors.weight == zBuf.data()
            && gatedNormCall.tensors.rotation_first == wBuf.data() && gatedNormCall.params.z_scale == 0.0f,
        "norm: without a gate, enqueue passes z = NULL and weight, F_0 from inputs 1, 2");
    rmsNorm.enqueue({shape({3, 7, 96}), shape({96})}, normInputs, normOutputs, nullptr, 0, nullptr);
    check(gatedNormCall.calls == 5 && gatedNormCall.rows == 21 && gatedNormCall.tensors.z == nullptr
            && gatedNormCall.tensors.weight == zBuf.data() && gatedNormCall.tensors.rotation_first == nullptr,
        "norm: a plain RMSNorm passes y and weight alone");
    std::vector<float> cBuf(1);
    void const* scaledInputs[] = {yBuf.data(), zBuf.data(), cBuf.data(), wBuf.data(), fBuf.data()};
    scaledNorm.enqueue(scaledIn, scaledInputs, normOutputs, nullptr, 0, nullptr);
    check(gatedNormCall.calls == 6 && gatedNormCall.rows == 10 && gt.y == yBuf.data() && gt.z == zBuf.data()
            && gt.z_col_scale == cBuf.data() && gt.weight == wBuf.data() && gt.rotation_first == fBuf.data()
            && gt.out == outBuf.data() && gatedNormCall.params.z_scale == 0.05f,
        "norm: with z_col_scale, enqueue passes it from input 2, weight and F_0 from inputs 3, 4");
    check(gatedNormCall.params.z_row_width == 0, "norm: z of K columns by default");
    wideNorm.enqueue({shape({2, 5, 384}), shape({2, 5, 1000}), shape({384}), shape({384}), shape({12, 12})},
        scaledInputs, normOutputs, nullptr, 0, nullptr);
    check(gatedNormCall.calls == 7 && gatedNormCall.rows == 10 && gatedNormCall.params.z_row_width == 1000
            && gt.z == zBuf.data(), "norm: enqueue passes z_row_width with the rows");

    // ---- QmambaInProjConv --------------------------------------------------------------------------
    {
        FieldSpec const* IS = InProjConvCore::kFIELDS;
        size_t const IN = InProjConvCore::kNB_FIELDS;
        // g 2, h 8, p 32, n 16: d_ssm 256, conv_dim 320; in_proj's row 256 (z) + 320 + 8 (dt) = 584.
        auto fields = [](int32_t offset, int32_t col) {
            Fields x = mixerFields();
            x.raw.erase(x.raw.begin() + 13, x.raw.end()); // the 13 conv fields, not d_conv and the mixer's
            x.in("xbc_offset", offset);
            if (col >= 0)
            {
                x.in("col_scale", col);
            }
            return x;
        };
        auto core = [&](Fields const& x) { return InProjConvCore(parseFields("QmambaInProjConv", IS, IN, x.raw)); };
        InProjConvCore plain = core(fields(256, -1));
        InProjConvCore scaled = core(fields(256, 1));
        check(plain.serial().col_scale == 0 && plain.serial().xbc_offset == 256, "in_proj conv: col_scale defaults to 0");
        throwsWith("in_proj conv: col_scale 2", [&] { core(fields(256, 2)); },
            "QmambaInProjConv: field col_scale must be 0 (xBC as it comes) or 1");
        throwsWith("in_proj conv: negative offset", [&] { core(fields(-1, 0)); },
            "QmambaInProjConv: field xbc_offset must be >= 0");
        throwsWith("in_proj conv: xbc_offset is required", [&] {
            Fields x = fields(256, -1);
            x.raw.pop_back();
            core(x);
        }, "QmambaInProjConv: required field xbc_offset is missing");
        std::vector<Shape> in = {shape({2, 5, 584}), shape({320, 4}), shape({320}), shape({2, 4, 4}), shape({2}),
            shape({2}), shape({2, 4}), shape({2, 4, 4})};
        plain.checkInputs(in);
        check(plain.inputType(0) == DType::kFloat && plain.inputType(1) == DType::kInt8
                && plain.inputType(2) == DType::kInt8 && plain.inputType(6) == DType::kInt32
                && plain.inputType(8) == DType::kFloat && plain.outputType(3) == DType::kInt8,
            "in_proj conv: zxbcdt float, weight and bias int8, outputs int8");
        throwsWith("in_proj conv: a narrow zxbcdt", [&] {
            std::vector<Shape> narrow = in;
            narrow[0] = shape({2, 5, 575});
            plain.checkInputs(narrow);
        }, "QmambaInProjConv: input zxbcdt: its last dimension 575 must hold xbc_offset + conv_dim = 256 + 320 columns");
        throwsWith("in_proj conv: col_scale = 1 needs its input", [&] { scaled.checkInputs(in); },
            "QmambaInProjConv: takes 9 inputs with col_scale = 1, got 8");
        std::vector<Shape> inScaled = in;
        inScaled.push_back(shape({320}));
        scaled.checkInputs(inScaled);
        throwsWith("in_proj conv: col_scale's shape", [&] {
            std::vector<Shape> bad = inScaled;
            bad[8] = shape({584});
            scaled.checkInputs(bad);
        }, "QmambaInProjConv: input col_scale must have shape [320], got [584]");
        check(roundTrip(scaled).fieldValues() == scaled.fieldValues(), "in_proj conv: round trip");
        std::vector<float> zx(1), scales(1), cs(1);
        std::vector<int8_t> w(1), b(1), ox(1), oB(1), oC(1), ost(1);
        std::vector<int32_t> ranges(1);
        void const* inputs[] = {zx.data(), w.data(), b.data(), scales.data(), scales.data(), scales.data(),
            ranges.data(), ranges.data(), cs.data()};
        void* outputs[] = {ox.data(), oB.data(), oC.data(), ost.data()};
        scaled.enqueue(inScaled, inputs, outputs, nullptr, 0, nullptr);
        InProjConvCall const& c = inProjConvCall;
        check(c.calls == 1 && c.batch == 2 && c.seqlen == 5 && c.params.d_conv == 4 && c.params.n_head_groups == 4
                && c.source.zxbcdt == zx.data() && c.source.col_scale == cs.data() && c.source.row_width == 584
                && c.source.xbc_offset == 256 && c.tensors.xBC == nullptr && c.tensors.conv_state == nullptr
                && c.tensors.weight == w.data() && c.tensors.x == ox.data() && c.tensors.conv_state_out == ost.data(),
            "in_proj conv: enqueue passes the float source, its width and offset, col_scale from input 8");
        plain.enqueue(in, inputs, outputs, nullptr, 0, nullptr);
        check(c.calls == 2 && c.source.col_scale == nullptr, "in_proj conv: without col_scale, NULL");
    }
    std::printf("all checks passed\n");
    return 0;
}
