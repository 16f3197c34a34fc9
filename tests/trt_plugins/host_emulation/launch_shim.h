// Host stand-in for launch.cuh: programmatic dependent launch does nothing on the CPU.
#pragma once
namespace qmamba {
constexpr bool kPdlDevice = false;
inline void pdl_wait() {}
inline void pdl_launch_dependents() {}
}  // namespace qmamba
