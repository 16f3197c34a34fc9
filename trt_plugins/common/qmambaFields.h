// Plugin fields of qmamba's ops, independent of TensorRT: one table per op declares each field's
// name, kind, whether it is required and its default (docs/ops.md, "Attributes"), and
// parseFields() turns the raw fields TensorRT hands a creator into checked values.
#ifndef QMAMBA_FIELDS_H
#define QMAMBA_FIELDS_H

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace qmamba
{

enum class FieldKind : int32_t
{
    kFloat = 0, // one float32 (ONNX attribute type FLOAT)
    kInt = 1    // one int32 (ONNX attribute type INT)
};

// One row of an op's attribute table. The tables are parsed by tests/trt_plugins/test_plugin_fields.py
// and compared with docs/ops.md: keep each row on one line as {"name", FieldKind::kX, required, default}.
struct FieldSpec
{
    char const* name;
    FieldKind kind;
    bool required;
    double defaultValue; // ignored when required
};

constexpr double kInf = std::numeric_limits<double>::infinity();

// A field as a plugin API delivers it, with TensorRT's PluginFieldType translated by the adapter.
enum class RawType : int32_t
{
    kFloat32,
    kFloat64,
    kInt32,
    kInt64,
    kOther // any other type: always an error
};

struct RawField
{
    std::string name;
    RawType type;
    void const* data;
    int32_t length;
};

// The fields' values in table order; floats and int32s both fit a double exactly.
using FieldValues = std::vector<double>;

// Matches fields by name, checks each type and length, fills defaults, and throws PluginError naming
// the op and the field for an unknown, duplicate, missing or malformed field. Fields named in
// `ignored` (e.g. the exporter's plugin_version / plugin_namespace) are accepted and dropped.
FieldValues parseFields(char const* op, FieldSpec const* specs, size_t nbSpecs, std::vector<RawField> const& fields,
    std::vector<std::string> const& ignored = {});

// Index of a field in its table (throws if absent: a programming error caught in tests).
size_t fieldIndex(char const* op, FieldSpec const* specs, size_t nbSpecs, char const* name);

} // namespace qmamba

#endif // QMAMBA_FIELDS_H
