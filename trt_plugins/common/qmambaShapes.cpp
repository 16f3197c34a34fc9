#include "qmambaShapes.h"

namespace qmamba
{

char const* dtypeName(DType t)
{
    switch (t)
    {
    case DType::kInt8: return "int8";
    case DType::kInt32: return "int32";
    case DType::kFloat: return "float32";
    case DType::kHalf: return "float16";
    }
    return "?";
}

std::string shapeString(Shape const& s)
{
    std::string out = "[";
    for (int32_t i = 0; i < s.nbDims; ++i)
    {
        out += (i ? ", " : "") + (s.d[i] < 0 ? std::string("?") : std::to_string(s.d[i]));
    }
    return out + "]";
}

void checkShape(char const* op, char const* tensor, Shape const& got, std::vector<int64_t> const& want)
{
    bool ok = got.nbDims == static_cast<int32_t>(want.size());
    for (int32_t i = 0; ok && i < got.nbDims; ++i)
    {
        ok = want[i] < 0 || got.d[i] < 0 || got.d[i] == want[i];
    }
    if (!ok)
    {
        Shape w{};
        w.nbDims = static_cast<int32_t>(want.size());
        for (int32_t i = 0; i < w.nbDims && i < kMAX_RANK; ++i)
        {
            w.d[i] = want[i];
        }
        throw PluginError(std::string(op) + ": input " + tensor + " must have shape " + shapeString(w) + ", got "
            + shapeString(got));
    }
}

} // namespace qmamba
