// Serialization of a plugin's state as one POD struct (the V2 plugin API), with a header that names
// the library's serialization format so that an engine built with another qmamba version is refused
// with a clear message instead of being misread.
#ifndef QMAMBA_SERIALIZE_H
#define QMAMBA_SERIALIZE_H

#include "qmambaErrors.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace qmamba
{

// Bumped whenever a plugin's serialized struct or field table changes (2: QmambaW8A8Linear's norm_group,
// 3: its rotation, 4: its rotation as the orders rotation_first and rotation_last, the last factor Sylvester,
// and QmambaGatedNorm's gate, 5: QmambaGatedNorm's z_col_scale, 6: its y_bits, 7: QmambaInProjConv and QmambaGatedNorm's z_row_width).
constexpr uint32_t kSERIAL_MAGIC = 0x514D4D42u; // "QMMB"
constexpr uint32_t kSERIAL_FORMAT = 7u;

struct SerialHeader
{
    uint32_t magic;
    uint32_t format;
    uint32_t payloadBytes;
};

template <typename Pod>
size_t serializedSize()
{
    return sizeof(SerialHeader) + sizeof(Pod);
}

template <typename Pod>
void writeSerialized(Pod const& pod, void* buffer)
{
    static_assert(std::is_trivially_copyable<Pod>::value, "serialized state must be POD");
    SerialHeader const h{kSERIAL_MAGIC, kSERIAL_FORMAT, static_cast<uint32_t>(sizeof(Pod))};
    auto* out = static_cast<char*>(buffer);
    std::memcpy(out, &h, sizeof(h));
    std::memcpy(out + sizeof(h), &pod, sizeof(Pod));
}

// Reads exactly one header and one Pod; anything else (short, long, other format) is a PluginError.
template <typename Pod>
Pod readSerialized(char const* op, void const* data, size_t length)
{
    static_assert(std::is_trivially_copyable<Pod>::value, "serialized state must be POD");
    require(data != nullptr, op, "serialized plugin data is null");
    require(length >= sizeof(SerialHeader), op,
        "serialized plugin data has " + std::to_string(length) + " bytes, fewer than its header");
    SerialHeader h{};
    std::memcpy(&h, data, sizeof(h));
    require(h.magic == kSERIAL_MAGIC, op, "serialized plugin data is not from the qmamba plugin library");
    require(h.format == kSERIAL_FORMAT && h.payloadBytes == sizeof(Pod), op,
        "engine was built with another version of the qmamba plugin library (serialization format "
            + std::to_string(h.format) + ", " + std::to_string(h.payloadBytes) + " bytes; this library reads format "
            + std::to_string(kSERIAL_FORMAT) + ", " + std::to_string(sizeof(Pod)) + " bytes): rebuild the engine");
    require(length == sizeof(SerialHeader) + sizeof(Pod), op,
        "serialized plugin data has " + std::to_string(length) + " bytes, expected "
            + std::to_string(sizeof(SerialHeader) + sizeof(Pod)) + " (reading must end at the buffer's end)");
    Pod pod{};
    std::memcpy(&pod, static_cast<char const*>(data) + sizeof(SerialHeader), sizeof(Pod));
    return pod;
}

} // namespace qmamba

#endif // QMAMBA_SERIALIZE_H
