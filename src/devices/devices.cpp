// ggml device registry access: backend loading for GGML_BACKEND_DL builds, the device list, and the choice rule.
#include "vtprune/devices.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <memory>
#include <mutex>
#include <set>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "ggml-backend.h"
#pragma GCC diagnostic pop
#include "vtprune/reduce.h"

namespace vtprune {

void load_ggml_backends() {
  static std::once_flag once;
  // A static build has registered its CPU backend before main; only a GGML_BACKEND_DL build has none yet (and
  // loading its modules twice would register every device twice).
  std::call_once(once, [] {
    if (ggml_backend_reg_by_name("CPU") == nullptr) ggml_backend_load_all();
  });
}

namespace {

const char* type_name(enum ggml_backend_dev_type type) {
  switch (type) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
    case GGML_BACKEND_DEVICE_TYPE_META: return "meta";
  }
  return "unknown";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// ggml's RPC client aborts the process when it cannot connect (ggml-rpc.cpp: "Failed to connect"), so the
// endpoint is tried first: a TCP connection with a 5 s limit.
bool rpc_endpoint_reachable(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return false;
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, &freeaddrinfo);
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    bool ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!ok && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t len = sizeof error;
      ok = poll(&p, 1, 5000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    }
    close(fd);
    if (ok) return true;
  }
  return false;
}

}  // namespace

void add_rpc_servers(const std::vector<std::string>& endpoints) {
  load_ggml_backends();
  ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
  if (rpc == nullptr) {
    throw InputError("--rpc: this build of llama.cpp has no RPC backend (VTPRUNE_RPC=0 left it out: re-run scripts/setup.sh without it, "
                     "or cmake -DGGML_RPC=ON)");
  }
  using AddServer = ggml_backend_reg_t (*)(const char*);
  const auto add_server = reinterpret_cast<AddServer>(ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server"));
  if (add_server == nullptr) throw Error("llama.cpp's RPC backend has no ggml_backend_rpc_add_server");
  static std::mutex mutex;
  static std::set<std::string> registered;  // mirrors ggml's process-wide registry
  std::lock_guard lock(mutex);
  for (const std::string& endpoint : endpoints) {
    const size_t colon = endpoint.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size() ||
        endpoint.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      throw InputError("--rpc: '" + endpoint + "' is not host:port");
    }
    if (registered.count(endpoint)) continue;
    if (!rpc_endpoint_reachable(endpoint.substr(0, colon), endpoint.substr(colon + 1))) {
      throw InputError("--rpc: cannot connect to the RPC server " + endpoint + " (is ggml-rpc-server running there?)");
    }
    ggml_backend_reg_t reg = add_server(endpoint.c_str());
    if (reg == nullptr) throw Error("--rpc: cannot add the RPC server " + endpoint);
    ggml_backend_register(reg);
    registered.insert(endpoint);
  }
}

std::vector<DeviceInfo> list_devices() {
  load_ggml_backends();
  std::vector<DeviceInfo> out;
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    DeviceInfo info{.name = ggml_backend_dev_name(dev), .description = ggml_backend_dev_description(dev),
                    .type = type_name(ggml_backend_dev_type(dev))};
    ggml_backend_dev_memory(dev, &info.memory_free, &info.memory_total);
    out.push_back(std::move(info));
  }
  return out;
}

ggml_backend_device* resolve_device(const std::string& choice) {
  load_ggml_backends();
  const std::string want = lower(choice);
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (cpu == nullptr) throw Error("ggml has no CPU device (a GGML_BACKEND_DL build without its libggml-cpu module?)");
  if (want == "cpu") return cpu;
  if (want == "gpu") {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    if (dev == nullptr) dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU);
    return dev != nullptr ? dev : cpu;
  }
  std::string names;
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    if (lower(ggml_backend_dev_name(dev)) == want) return dev;
    names += std::string(names.empty() ? "" : ", ") + ggml_backend_dev_name(dev);
  }
  throw InputError("device '" + choice + "' is not one of this build's devices (cpu, gpu, " + names + ")");
}

std::string resolved_device_name(const std::string& choice) { return ggml_backend_dev_name(resolve_device(choice)); }

}  // namespace vtprune
