// `vtprune devices [--rpc host:port,...]`: the ggml devices this build can run on (llama.cpp's --list-devices),
// by the names --device / the "gpu" choice use.
#include <cstdio>

#include "commands.h"
#include "vtprune/devices.h"

namespace vtprune::cli {

void add_devices(CLI::App& app, Action& action) {
  CLI::App* cmd = app.add_subcommand("devices", "List the ggml devices this build can compute on (CPU, GPUs, RPC servers)");
  auto rpc = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--rpc", *rpc, "also register these ggml RPC servers host:port (comma-separated)")->delimiter(',');
  cmd->callback([&action, rpc] {
    action = [rpc] {
      if (!rpc->empty()) add_rpc_servers(*rpc);
      std::printf("%-24s %-6s %10s  %s\n", "name", "type", "memory MiB", "description");
      for (const DeviceInfo& d : list_devices()) {
        std::printf("%-24s %-6s %10zu  %s\n", d.name.c_str(), d.type.c_str(), d.memory_total >> 20, d.description.c_str());
      }
      std::printf("\n--mmproj-offload and --device gpu pick: %s\n", resolved_device_name("gpu").c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
