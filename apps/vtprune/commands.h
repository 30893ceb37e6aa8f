// The CLI's subcommands. Each lives in its own cmd_<name>.cpp and registers itself on the app; a command
// returns the process exit code. Errors are thrown (vtprune::Error or std::exception) and main() turns
// them into one line on stderr and exit code 1.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace vtprune::pipeline {
struct VlmParams;
}

namespace vtprune::cli {

using Action = std::function<int()>;

// Each add_* creates its subcommand on `app` and stores what to run into `action` when it is chosen.
void add_reduce(CLI::App& app, Action& action);
void add_make_case(CLI::App& app, Action& action);
void add_methods(CLI::App& app, Action& action);
void add_families(CLI::App& app, Action& action);
void add_devices(CLI::App& app, Action& action);
void add_run(CLI::App& app, Action& action);
void add_make_test_model(CLI::App& app, Action& action);
void add_classify(CLI::App& app, Action& action);
void add_serve(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_viz(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);

// The flags every command that loads a VLM pair takes alike (run, serve, bench, eval vqa): which encoder serves
// the mmproj (--encoder), GPU offload (-ngl, --mmproj-offload) and libmtmd's image token limits.
void add_device_options(CLI::App& cmd, pipeline::VlmParams& vlm);

// An image file's bytes for the pipeline (an Error naming the file when it cannot be read or is over max_bytes).
std::vector<uint8_t> read_image_file(const std::string& path, int64_t max_bytes);

}  // namespace vtprune::cli
