// qmamba_trt: a small command line over the runner's C ABI, for machines without Python bindings of
// TensorRT (TensorRT 8.6 on Python 3.12, Jetson) and as the runner's smoke test.
//   qmamba_trt build MODEL.onnx OUT.engine --plugins LIB [--batch MIN,OPT,MAX] [--seq MIN,OPT,MAX] [--fp16]
//                    [--no-tactic-libraries] [--opt-level 0..5] [--timing-cache FILE]
//   qmamba_trt info OUT.engine --plugins LIB
//   qmamba_trt generate ENGINE_DIR --plugins LIB --prompt TEXT [--tokens N] [--no-graph]
//   qmamba_trt bench ENGINE_DIR --plugins LIB [--batch B] [--seq L] [--iters N] [--no-graph]
#include "qmamba_runner.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace
{

int usage()
{
    std::fprintf(stderr,
        "usage: qmamba_trt build MODEL.onnx OUT.engine --plugins LIB [--batch MIN,OPT,MAX] [--seq MIN,OPT,MAX] "
        "[--fp16] [--no-tactic-libraries] [--opt-level 0..5] [--timing-cache FILE]\n"
        "       qmamba_trt info ENGINE --plugins LIB\n"
        "       qmamba_trt generate ENGINE_DIR --plugins LIB --prompt TEXT [--tokens N] [--no-graph]\n"
        "       qmamba_trt bench ENGINE_DIR --plugins LIB [--batch B] [--seq L] [--iters N] [--no-graph]\n");
    return 2;
}

// The exit code of a failed call, as qmamba's: 2 for bad input (QMR_BAD_INPUT), 1 for a failure of the work.
int fail(char const* what, int status)
{
    std::fprintf(stderr, "qmamba_trt: %s: %s\n", what, qmr_last_error());
    return status == QMR_BAD_INPUT ? 2 : 1;
}

bool parseRange(std::string const& s, int64_t* out)
{
    return std::sscanf(s.c_str(), "%ld,%ld,%ld", reinterpret_cast<long*>(&out[0]), reinterpret_cast<long*>(&out[1]),
               reinterpret_cast<long*>(&out[2]))
        == 3;
}

int argmax(float const* v, int n)
{
    return static_cast<int>(std::max_element(v, v + n) - v);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        return usage();
    }
    std::string const cmd = argv[1];
    std::string const target = argv[2];
    std::map<std::string, std::string> opt;
    std::vector<std::string> pos;
    for (int i = 3; i < argc; ++i)
    {
        std::string a = argv[i];
        if (a == "--fp16" || a == "--no-tactic-libraries" || a == "--no-graph")
        {
            opt[a] = "1";
        }
        else if (a.rfind("--", 0) == 0 && i + 1 < argc)
        {
            opt[a] = argv[++i];
        }
        else if (a.rfind("--", 0) == 0)
        {
            std::fprintf(stderr, "qmamba_trt: option %s needs a value\n", a.c_str());
            return 2;
        }
        else
        {
            pos.push_back(a);
        }
    }
    std::string const plugins = opt.count("--plugins") ? opt["--plugins"] : "";
    bool const graph = !opt.count("--no-graph");

    if (cmd == "build")
    {
        if (pos.size() != 1)
        {
            return usage();
        }
        qmr_build_options o{};
        int64_t batch[3] = {1, 1, 8}, seq[3] = {1, 128, 2048};
        if ((opt.count("--batch") && !parseRange(opt["--batch"], batch)) || (opt.count("--seq") && !parseRange(opt["--seq"], seq)))
        {
            std::fprintf(stderr, "qmamba_trt: --batch and --seq take MIN,OPT,MAX\n");
            return 2;
        }
        o.profile = qmr_profile{batch[0], batch[1], batch[2], seq[0], seq[1], seq[2]};
        o.fp16 = opt.count("--fp16") ? 1 : 0;
        o.no_tactic_libraries = opt.count("--no-tactic-libraries") ? 1 : 0;
        if (opt.count("--opt-level"))
        {
            char* end = nullptr;
            long const level = std::strtol(opt["--opt-level"].c_str(), &end, 10);
            if (*end != '\0' || level < 0 || level > 5)
            {
                std::fprintf(stderr, "qmamba_trt: --opt-level takes 0..5, got %s\n", opt["--opt-level"].c_str());
                return 2;
            }
            o.set_optimization_level = 1;
            o.optimization_level = static_cast<int32_t>(level);
        }
        o.timing_cache = opt.count("--timing-cache") ? opt["--timing-cache"].c_str() : nullptr;
        if (int const st = qmr_build_engine(target.c_str(), plugins.c_str(), &o, pos[0].c_str()); st != QMR_OK)
        {
            return fail("build", st);
        }
        std::printf("built %s from %s\n", pos[0].c_str(), target.c_str());
        return 0;
    }
    if (cmd == "info")
    {
        qmr_engine* e = nullptr;
        if (int const st = qmr_engine_load(target.c_str(), plugins.c_str(), &e); st != QMR_OK)
        {
            return fail("load", st);
        }
        for (int i = 0; i < qmr_engine_num_io(e); ++i)
        {
            char const* name;
            int isIn, dtype, nb;
            int64_t dims[8];
            qmr_engine_io(e, i, &name, &isIn, &dtype, &nb, dims);
            std::printf("%s %s dtype=%d [", isIn ? "input " : "output", name, dtype);
            for (int k = 0; k < nb; ++k)
            {
                std::printf("%s%ld", k ? ", " : "", static_cast<long>(dims[k]));
            }
            std::printf("]\n");
        }
        qmr_engine_free(e);
        return 0;
    }
    if (cmd == "generate" || cmd == "bench")
    {
        int const batch = cmd == "bench" && opt.count("--batch") ? std::atoi(opt["--batch"].c_str()) : 1;
        qmr_session* s = nullptr;
        if (int const st = qmr_session_open(target.c_str(), plugins.c_str(), batch, &s); st != QMR_OK)
        {
            return fail("open", st);
        }
        int const vocab = qmr_session_vocab(s);
        int rc = 0;
        if (cmd == "bench")
        {
            int const seq = opt.count("--seq") ? std::atoi(opt["--seq"].c_str()) : 512;
            int const iters = opt.count("--iters") ? std::atoi(opt["--iters"].c_str()) : 20;
            double pre = 0, dec = 0;
            if (int const st = qmr_session_bench(s, batch, seq, iters, graph ? 1 : 0, &pre, &dec); st != QMR_OK)
            {
                rc = fail("bench", st);
            }
            else
            {
                std::printf("batch %d seq %d: prefill %.3f ms, decode %.4f ms/step = %.1f tokens/s (graph %s)\n", batch,
                    seq, pre, dec, batch * 1000.0 / dec, graph ? "on" : "off");
            }
        }
        else
        {
            std::string const prompt = opt.count("--prompt") ? opt["--prompt"] : "";
            int const tokens = opt.count("--tokens") ? std::atoi(opt["--tokens"].c_str()) : 32;
            if (prompt.empty())
            {
                std::fprintf(stderr, "qmamba_trt: --prompt is required\n");
                qmr_session_free(s);
                return 2;
            }
            std::vector<int64_t> ids(prompt.begin(), prompt.end());
            for (auto& v : ids)
            {
                v &= 0xff; // byte-level vocabulary
            }
            std::vector<float> logits(vocab);
            if (int const st = qmr_session_prefill(s, ids.data(), 1, static_cast<int>(ids.size()), logits.data()); st != QMR_OK)
            {
                rc = fail("prefill", st);
            }
            for (int t = 0; rc == 0 && t < tokens; ++t)
            {
                int64_t next = argmax(logits.data(), vocab);
                std::printf("%d%s", static_cast<int>(next), t + 1 < tokens ? " " : "\n");
                if (t + 1 < tokens)
                {
                    if (int const st = qmr_session_decode(s, &next, logits.data(), graph ? 1 : 0); st != QMR_OK)
                    {
                        rc = fail("decode", st);
                    }
                }
            }
        }
        qmr_session_free(s);
        return rc;
    }
    return usage();
}
