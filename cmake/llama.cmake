# Locates llama.cpp (ggml + libllama) and builds it as static libraries, CPU backend.
#
# Order: -DVTPRUNE_LLAMA_DIR=<checkout>, then $ENV{VTPRUNE_LLAMA_DIR}, then deps/llama.cpp (scripts/setup.sh
# puts the pinned release there). A checkout is built with add_subdirectory (targets llama, ggml, mtmd);
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
  set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_MTMD ON CACHE BOOL "" FORCE)     # libmtmd: the upstream reference our encoder is checked against
  set(MTMD_VIDEO OFF CACHE BOOL "" FORCE)
  set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
  set(GGML_CCACHE OFF CACHE BOOL "" FORCE)
  add_subdirectory("${VTPRUNE_LLAMA_DIR}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL SYSTEM)  # SYSTEM: their headers, their warnings
  if(TARGET mtmd)
    set(VTPRUNE_HAVE_MTMD ON)
  endif()
else()
  find_package(llama CONFIG)
  if(NOT llama_FOUND)
    message(FATAL_ERROR
      "llama.cpp not found. Run scripts/setup.sh (fetches the pinned release into deps/llama.cpp), "
      "or pass -DVTPRUNE_LLAMA_DIR=<your llama.cpp checkout>, or install llama.cpp and set CMAKE_PREFIX_PATH.")
  endif()
  message(STATUS "vtprune: using installed llama.cpp (${llama_DIR}); libmtmd comparisons disabled")
endif()
