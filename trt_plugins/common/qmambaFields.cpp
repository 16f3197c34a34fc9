#include "qmambaFields.h"

#include "qmambaErrors.h"

#include <cmath>
#include <cstring>
#include <string>

namespace qmamba
{
namespace
{

char const* kindName(FieldKind k)
{
    return k == FieldKind::kFloat ? "float" : "int";
}

// The one value of a field, as a double, or a PluginError naming what is wrong with it.
double scalarValue(char const* op, FieldSpec const& spec, RawField const& f)
{
    std::string const where = std::string("field ") + spec.name;
    require(f.data != nullptr, op, where + " has no data");
    require(f.length == 1, op, where + " must hold exactly one value, got " + std::to_string(f.length));
    double v = 0.0;
    bool integral = false;
    switch (f.type)
    {
    case RawType::kFloat32: v = *static_cast<float const*>(f.data); break;
    case RawType::kFloat64: v = *static_cast<double const*>(f.data); break;
    case RawType::kInt32: v = *static_cast<int32_t const*>(f.data); integral = true; break;
    case RawType::kInt64: v = static_cast<double>(*static_cast<int64_t const*>(f.data)); integral = true; break;
    case RawType::kOther: require(false, op, where + " has an unsupported type (want " + kindName(spec.kind) + ")");
    }
    if (spec.kind == FieldKind::kInt)
    {
        require(integral, op, where + " must be an int, got a float");
        require(v >= INT32_MIN && v <= INT32_MAX, op, where + " does not fit int32");
    }
    else
    {
        // An int attribute where a float is expected is a malformed model: the exporter writes floats.
        require(!integral, op, where + " must be a float, got an int");
        require(!std::isnan(v), op, where + " is NaN");
    }
    return v;
}

} // namespace

FieldValues parseFields(char const* op, FieldSpec const* specs, size_t nbSpecs, std::vector<RawField> const& fields,
    std::vector<std::string> const& ignored)
{
    FieldValues values(nbSpecs, 0.0);
    std::vector<bool> seen(nbSpecs, false);
    for (RawField const& f : fields)
    {
        bool skip = false;
        for (auto const& name : ignored)
        {
            skip = skip || f.name == name;
        }
        if (skip)
        {
            continue;
        }
        size_t const i = fieldIndex(op, specs, nbSpecs, f.name.c_str());
        require(!seen[i], op, "field " + f.name + " is given twice");
        values[i] = scalarValue(op, specs[i], f);
        seen[i] = true;
    }
    for (size_t i = 0; i < nbSpecs; ++i)
    {
        if (!seen[i])
        {
            require(!specs[i].required, op, std::string("required field ") + specs[i].name + " is missing");
            values[i] = specs[i].defaultValue;
        }
    }
    return values;
}

size_t fieldIndex(char const* op, FieldSpec const* specs, size_t nbSpecs, char const* name)
{
    for (size_t i = 0; i < nbSpecs; ++i)
    {
        if (std::strcmp(specs[i].name, name) == 0)
        {
            return i;
        }
    }
    throw PluginError(std::string(op) + ": unknown field " + name);
}

} // namespace qmamba
