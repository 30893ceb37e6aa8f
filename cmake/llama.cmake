# Locates llama.cpp (ggml + libllama) and builds it as static libraries, CPU backend for VTPRUNE_CPU.
#
# Order: -DVTPRUNE_LLAMA_DIR=<checkout>, then $ENV{VTPRUNE_LLAMA_DIR}, then deps/llama.cpp (scripts/setup.sh
# puts the pinned commit there). A checkout is built with add_subdirectory (targets llama, ggml, mtmd);
# if no checkout is found, an installed llama.cpp is looked for with find_package(llama).
if(NOT VTPRUNE_LLAMA_DIR AND DEFINED ENV{VTPRUNE_LLAMA_DIR})
  set(VTPRUNE_LLAMA_DIR "$ENV{VTPRUNE_LLAMA_DIR}" CACHE PATH "" FORCE)
endif()
if(NOT VTPRUNE_LLAMA_DIR AND EXISTS "${CMAKE_SOURCE_DIR}/deps/llama.cpp/CMakeLists.txt")
  set(VTPRUNE_LLAMA_DIR "${CMAKE_SOURCE_DIR}/deps/llama.cpp" CACHE PATH "" FORCE)
endif()

set(VTPRUNE_HAVE_MTMD OFF)
if(VTPRUNE_LLAMA_DIR)
  if(NOT EXISTS "${VTPRUNE_LLAMA_DIR}/CMakeLists.txt" OR NOT EXISTS "${VTPRUNE_LLAMA_DIR}/include/llama.h")
    message(FATAL_ERROR "VTPRUNE_LLAMA_DIR=${VTPRUNE_LLAMA_DIR} is not a llama.cpp checkout (no CMakeLists.txt / include/llama.h)")
  endif()
  message(STATUS "vtprune: building llama.cpp from ${VTPRUNE_LLAMA_DIR}")
  # Static libraries by default. VTPRUNE_BACKEND_DL builds ggml, libllama and libmtmd as shared libraries with
  # every ggml backend a loadable module (GGML_BACKEND_DL), the way llama.cpp's releases and node-llama-cpp ship
  # them: a backend module of the same llama.cpp commit dropped into bin/ is loaded at start-up
  # (scripts/test-vulkan.sh runs node-llama-cpp's Vulkan module on Mesa's lavapipe that way).
  option(VTPRUNE_BACKEND_DL "ggml backends as loadable modules (shared libraries, GGML_BACKEND_DL)" OFF)
  if(VTPRUNE_BACKEND_DL)
    if(VTPRUNE_CPU STREQUAL "native")
      message(FATAL_ERROR "VTPRUNE_BACKEND_DL: ggml's CPU module cannot be built for the native CPU (GGML_NATIVE is not "
                          "compatible with GGML_BACKEND_DL); choose a CPU level, e.g. -DVTPRUNE_CPU=x86-64-v3")
    endif()
    set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
    set(GGML_BACKEND_DL ON CACHE BOOL "" FORCE)
    set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)  # modules beside the executables: ggml looks there
  else()
    set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
    set(GGML_BACKEND_DL OFF CACHE BOOL "" FORCE)
  endif()
  # common + tools: only as targets (EXCLUDE_FROM_ALL below). The tests build llama-mtmd-cli from the same
  # source as the reference vtprune's answers are compared with, and vtprune renders GGUF chat templates with
  # common's jinja engine (compiled on its own: libllama-common itself links a cpp-httplib that differs from ours).
  set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TOOLS ON CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_MTMD ON CACHE BOOL "" FORCE)     # libmtmd: the upstream reference our encoder is checked against
  set(MTMD_VIDEO OFF CACHE BOOL "" FORCE)
  set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
  set(GGML_CCACHE OFF CACHE BOOL "" FORCE)
  # ggml's CPU kernels follow VTPRUNE_CPU (CMakeLists.txt): native, or exactly one instruction-set level.
  set(_ggml_isa SSE42 AVX AVX2 FMA F16C BMI2 AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16)
  if(VTPRUNE_CPU STREQUAL "native")
    set(GGML_NATIVE ON CACHE BOOL "" FORCE)
  else()
    set(GGML_NATIVE OFF CACHE BOOL "" FORCE)
    if(VTPRUNE_CPU STREQUAL "x86-64-v3")
      set(_ggml_on SSE42 AVX AVX2 FMA F16C BMI2)
    elseif(VTPRUNE_CPU STREQUAL "x86-64-v2")
      set(_ggml_on SSE42)
    else()
      set(_ggml_on "")
    endif()
    foreach(_isa IN LISTS _ggml_isa)
      if(_isa IN_LIST _ggml_on)
        set(GGML_${_isa} ON CACHE BOOL "" FORCE)
      else()
        set(GGML_${_isa} OFF CACHE BOOL "" FORCE)
      endif()
    endforeach()
  endif()
  # Backends beyond the CPU, a set-up choice (scripts/setup.sh: VTPRUNE_GPU, VTPRUNE_RPC).
  set(VTPRUNE_GPU "none" CACHE STRING "llama.cpp GPU backend: none, cuda, vulkan or metal")
  set_property(CACHE VTPRUNE_GPU PROPERTY STRINGS none cuda vulkan metal)
  foreach(_gpu cuda vulkan metal)
    string(TOUPPER ${_gpu} _GPU)
    if(VTPRUNE_GPU STREQUAL _gpu)
      set(GGML_${_GPU} ON CACHE BOOL "" FORCE)
    elseif(NOT VTPRUNE_GPU STREQUAL "none" OR NOT DEFINED GGML_${_GPU})
      set(GGML_${_GPU} OFF CACHE BOOL "" FORCE)
    endif()
  endforeach()
  if(NOT VTPRUNE_GPU MATCHES "^(none|cuda|vulkan|metal)$")
    message(FATAL_ERROR "VTPRUNE_GPU=${VTPRUNE_GPU}: expected none, cuda, vulkan or metal")
  endif()
  option(VTPRUNE_RPC "build ggml's RPC backend (--rpc host:port) and llama.cpp's rpc-server" ON)
  set(GGML_RPC ${VTPRUNE_RPC} CACHE BOOL "" FORCE)
  add_subdirectory("${VTPRUNE_LLAMA_DIR}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL SYSTEM)  # SYSTEM: their headers, their warnings
  if(TARGET mtmd)
    set(VTPRUNE_HAVE_MTMD ON)
  endif()
  # AMX: -march=native on a Sapphire Rapids-class CPU turns on ggml's AMX buffer type, whose mul_mat segfaults
  # on small or odd matrices at this commit (llama.cpp #20824, closed stale without a fix; our tiny test models
  # crash in ggml_backend_amx_mul_mat on such a machine). Off unless asked for: AVX-512 VNNI kernels still run.
  option(VTPRUNE_GGML_AMX "keep ggml's AMX kernels in a native build (llama.cpp #20824: they can crash)" OFF)
  if(VTPRUNE_CPU STREQUAL "native" AND NOT VTPRUNE_GGML_AMX AND TARGET ggml-cpu
     AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag(-mno-amx-int8 VTPRUNE_HAS_NO_AMX_FLAG)
    if(VTPRUNE_HAS_NO_AMX_FLAG)
      target_compile_options(ggml-cpu PRIVATE -mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
    endif()
  endif()
else()
  find_package(llama CONFIG)
  if(NOT llama_FOUND)
    message(FATAL_ERROR
      "llama.cpp not found. Run scripts/setup.sh (fetches the pinned llama.cpp commit into deps/llama.cpp), "
      "or pass -DVTPRUNE_LLAMA_DIR=<your llama.cpp checkout>, or install llama.cpp and set CMAKE_PREFIX_PATH.")
  endif()
  message(STATUS "vtprune: using installed llama.cpp (${llama_DIR}); libmtmd comparisons disabled")
endif()
