// ggml's compute devices as vtprune uses them: which exist in this build and process, and the rule that turns a
// user's device choice into one of them. Shared by vtprune's own graphs (src/vision) and the LLM (src/llm).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

struct ggml_backend_device;

namespace vtprune {

struct DeviceInfo {
  std::string name;         // ggml's device name: "CPU", "Vulkan0", "CUDA0", "RPC0", ...
  std::string description;  // e.g. "llvmpipe (LLVM 15.0.6, 256 bits)", an RPC server's host:port
  std::string type;         // "cpu", "gpu", "igpu" or "accel"
  size_t memory_total = 0, memory_free = 0;  // bytes, as the backend reports them
};

// Makes ggml's backends available, once per process. A static build registers them at start-up (nothing to
// do); a build with GGML_BACKEND_DL loads its backend modules (libggml-*.so beside the executable, or in
// GGML_BACKEND_PATH's folder) the way llama.cpp's tools do (ggml_backend_load_all).
void load_ggml_backends();

// Registers ggml RPC servers ("host:port") as devices, as llama.cpp's --rpc does: libllama then puts offloaded
// layers (n_gpu_layers) on them, and "gpu" (resolve_device) picks the first when the build has no GPU. ggml's
// device registry is process-wide, so each endpoint is registered once per process. Throws InputError when this
// build has no RPC backend, an endpoint is malformed or nothing listens there (ggml's client would abort).
void add_rpc_servers(const std::vector<std::string>& endpoints);

// Every device ggml knows now (RPC servers appear once registered), in ggml's order.
std::vector<DeviceInfo> list_devices();

// The device a choice names:
//   "cpu"   the CPU;
//   "gpu"   the accelerator libmtmd picks for --mmproj-offload: the first GPU device, else the first integrated
//           GPU, else the CPU (a CPU-only build runs there, as libmtmd does);
//   other   a device by ggml's name ("Vulkan0", "CUDA0", "RPC0"; case-insensitive). Unknown names throw
//           InputError listing the devices there are.
ggml_backend_device* resolve_device(const std::string& choice);
// ggml's name of that device ("CPU", "Vulkan0", ...).
std::string resolved_device_name(const std::string& choice);

}  // namespace vtprune
