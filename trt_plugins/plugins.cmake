# TensorRT plugins (libqmamba_trt_plugins.so) and the C++ runner (libqmamba_runner.so, qmamba_trt).
# Included at the end of trt_plugins/CMakeLists.txt, after the kernels (target qmamba_kernels).
#
# TensorRT is found through TensorRT_ROOT (include/ and lib/) or TensorRT_INCLUDE_DIR (+ TensorRT_LIB_DIR).
# Headers without libraries (a header-only checkout) build the plugin library with TensorRT's symbols
# left to the process that loads it, and skip the runner, which must link TensorRT.
set(TensorRT_ROOT "$ENV{TensorRT_ROOT}" CACHE PATH "TensorRT install (include/, lib/)")
find_path(TensorRT_INCLUDE_DIR NvInferVersion.h HINTS "${TensorRT_ROOT}/include" "$ENV{TensorRT_INCLUDE_DIR}")
if(NOT TensorRT_INCLUDE_DIR)
  message(STATUS "qmamba: TensorRT not found (set TensorRT_ROOT or TensorRT_INCLUDE_DIR): building the CUDA kernels alone")
  return()
endif()
if(NOT TARGET qmamba_kernels)
  message(STATUS "qmamba: the kernels target qmamba_kernels is missing: not building the TensorRT plugins")
  return()
endif()

# NvInferVersion.h of 8.x defines NV_TENSORRT_MAJOR as a number, of 10+ through TRT_MAJOR_ENTERPRISE.
file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _qmamba_trt_version_h)
foreach(_part MAJOR MINOR PATCH)
  string(REGEX MATCH "#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? ([0-9]+)" _m "${_qmamba_trt_version_h}")
  set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_3}")
endforeach()
set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
if(TensorRT_VERSION_MAJOR GREATER_EQUAL 10)
  set(_qmamba_plugin_api "IPluginV3")
else()
  set(_qmamba_plugin_api "IPluginV2DynamicExt")
endif()

find_library(TensorRT_nvinfer_LIBRARY NAMES nvinfer
  HINTS "${TensorRT_LIB_DIR}" "$ENV{TensorRT_LIB_DIR}" "${TensorRT_ROOT}/lib" "${TensorRT_ROOT}/lib64" "${TensorRT_ROOT}/targets/x86_64-linux/lib")
find_package(CUDAToolkit REQUIRED)

set(_qp "${CMAKE_CURRENT_LIST_DIR}")
add_library(qmamba_trt_plugins SHARED
  ${_qp}/common/qmambaFields.cpp
  ${_qp}/common/qmambaShapes.cpp
  ${_qp}/common/qmambaTrtUtils.cpp
  ${_qp}/common/qmambaPluginLibrary.cpp
  ${_qp}/quantConv1dSiLUPlugin/quantConv1dSiLUCore.cpp
  ${_qp}/quantSSDPlugin/quantSSDCore.cpp
  ${_qp}/bitsAsFloatPlugin/bitsAsFloatCore.cpp
  ${_qp}/w8a8LinearPlugin/w8a8LinearCore.cpp
  ${_qp}/decodeMixerPlugin/decodeMixerCore.cpp
  ${_qp}/gatedNormPlugin/gatedNormCore.cpp
  ${_qp}/inProjConvPlugin/inProjConvCore.cpp)
target_compile_features(qmamba_trt_plugins PRIVATE cxx_std_17)
target_include_directories(qmamba_trt_plugins PRIVATE
  ${_qp}/common ${_qp}/include ${_qp}/quantConv1dSiLUPlugin ${_qp}/quantSSDPlugin ${_qp}/bitsAsFloatPlugin
  ${_qp}/w8a8LinearPlugin ${_qp}/decodeMixerPlugin ${_qp}/gatedNormPlugin ${_qp}/inProjConvPlugin)
target_include_directories(qmamba_trt_plugins SYSTEM PRIVATE "${TensorRT_INCLUDE_DIR}" ${CUDAToolkit_INCLUDE_DIRS})
# The version engines record and check: the package's (scikit-build-core), else "dev".
set(_qmamba_version "${SKBUILD_PROJECT_VERSION}")
if(NOT _qmamba_version)
  set(_qmamba_version "dev")
endif()
target_compile_definitions(qmamba_trt_plugins PRIVATE QMAMBA_VERSION="${_qmamba_version}")
# TensorRT's headers deprecate the V2 API in 10+ and warn inside themselves.
target_compile_options(qmamba_trt_plugins PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-deprecated-declarations>)
# $ORIGIN: libqmamba_kernels.so is installed beside the plugin library (qmamba/lib). Only the C entry
# points are visible (qmamba_export_only, top-level CMakeLists.txt).
set_target_properties(qmamba_trt_plugins PROPERTIES POSITION_INDEPENDENT_CODE ON INSTALL_RPATH "$ORIGIN"
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
qmamba_export_only(qmamba_trt_plugins "${_qp}/common/exports.map")
target_link_libraries(qmamba_trt_plugins PRIVATE qmamba_kernels)
if(TensorRT_nvinfer_LIBRARY)
  # --allow-shlib-undefined: TensorRT may name libraries (cuBLAS, cuDNN) that an install lacks and it never calls.
  target_link_libraries(qmamba_trt_plugins PRIVATE "${TensorRT_nvinfer_LIBRARY}" -Wl,--allow-shlib-undefined)
  message(STATUS "qmamba: TensorRT ${TensorRT_VERSION} (${_qmamba_plugin_api} plugins), linking ${TensorRT_nvinfer_LIBRARY}")
else()
  message(STATUS "qmamba: TensorRT ${TensorRT_VERSION} headers only (${_qmamba_plugin_api} plugins): "
                 "libqmamba_trt_plugins.so takes TensorRT's symbols from the process that loads it; no runner")
endif()
install(TARGETS qmamba_trt_plugins LIBRARY DESTINATION qmamba/lib)

if(TensorRT_nvinfer_LIBRARY)
  add_subdirectory("${PROJECT_SOURCE_DIR}/runtime/cpp" "${CMAKE_BINARY_DIR}/runtime_cpp")
endif()
