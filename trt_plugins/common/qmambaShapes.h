// Types and shape rules the op cores describe themselves with, free of TensorRT types: the V2 and
// V3 adapters translate them into DimsExprs, DataType and PluginTensorDesc checks.
#ifndef QMAMBA_SHAPES_H
#define QMAMBA_SHAPES_H

#include "qmambaErrors.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qmamba
{

enum class DType : int32_t
{
    kInt8,
    kInt32,
    kFloat,
    kHalf
};

char const* dtypeName(DType t);

constexpr int32_t kMAX_RANK = 8;

// A tensor's dims; -1 is a dimension not known yet (at build time).
struct Shape
{
    int32_t nbDims{0};
    int64_t d[kMAX_RANK]{};
};

// One output dimension: a constant, or an input's dimension times a factor plus an offset.
struct DimRule
{
    bool constant;
    int64_t value;   // the constant, or the offset added to the input's dimension
    int32_t input;   // input position (when !constant)
    int32_t dim;     // dimension of that input
    int64_t factor;  // the input's dimension is multiplied by it (when !constant)
};

struct OutputRule
{
    int32_t nbDims;
    DimRule d[4];
};

inline DimRule constDim(int64_t v)
{
    return DimRule{true, v, 0, 0, 1};
}

inline DimRule inputDim(int32_t input, int32_t dim, int64_t offset = 0, int64_t factor = 1)
{
    return DimRule{false, offset, input, dim, factor};
}

// Checks one input's rank and its known dimensions against `want` (-1 in `want` = any size).
// The message names the op, the tensor and both shapes.
void checkShape(char const* op, char const* tensor, Shape const& got, std::vector<int64_t> const& want);

std::string shapeString(Shape const& s);

} // namespace qmamba

#endif // QMAMBA_SHAPES_H
