// vtprune: training-free visual-token reduction for VLMs on ggml + libllama.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"
#include "llama.h"

int main(int argc, char** argv) {
  CLI::App app{"vtprune: fewer visual tokens, same answer (training-free token reduction on llama.cpp)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    return std::string("vtprune 0.1.0, llama.cpp ") + llama_print_system_info();
  });
  vtprune::cli::Action action;
  vtprune::cli::add_reduce(app, action);
  vtprune::cli::add_make_case(app, action);
  vtprune::cli::add_methods(app, action);
  vtprune::cli::add_families(app, action);
  vtprune::cli::add_devices(app, action);
  vtprune::cli::add_run(app, action);
  vtprune::cli::add_make_test_model(app, action);
  vtprune::cli::add_classify(app, action);
  vtprune::cli::add_serve(app, action);
  vtprune::cli::add_bench(app, action);
  vtprune::cli::add_viz(app, action);
  vtprune::cli::add_eval(app, action);
  // llama.cpp's multi-letter short flag -ngl (CLI11 takes one-letter short names only)
  std::vector<std::string> args(argv, argv + argc);
  for (auto& arg : args) {
    if (arg == "-ngl") arg = "--n-gpu-layers";
  }
  std::vector<char*> argp;
  for (auto& arg : args) argp.push_back(arg.data());
  try {
    app.parse(static_cast<int>(argp.size()), argp.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return action ? action() : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vtprune: error: %s\n", e.what());
    return 1;
  }
}
