// `vtprune reduce`: run a method on a case directory (the golden format) — a fixed contract other tools use.
// `vtprune make-case`: write a synthetic case directory for any method.
#include <chrono>
#include <cstdio>
#include <fstream>

#include "commands.h"
#include "vtprune/case_file.h"

namespace vtprune::cli {

namespace fs = std::filesystem;

void add_reduce(CLI::App& app, Action& action) {
  struct Args {
    std::string case_dir, out_dir, method, budget;
    std::vector<std::string> options;
    bool quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("reduce", "Run a reduction method on a case directory (case.json + .f32 inputs)");
  cmd->add_option("--case", args->case_dir, "case directory (format of ../shared/golden/README.md)")->required();
  cmd->add_option("--out", args->out_dir, "output directory: result.json (+ tokens.f32)")->required();
  cmd->add_option("--method", args->method, "run this method instead of the case's (same inputs needed)");
  cmd->add_option("--budget", args->budget, "override the case's budget: a count, a ratio, N% or all");
  cmd->add_option("--opt", args->options, "method option key=value (repeatable; overrides the case's)");
  cmd->add_flag("-q,--quiet", args->quiet, "print nothing on success");
  cmd->callback([args, &action] {
    action = [args] {
      const io::Case c = io::Case::load(args->case_dir);
      const std::string method = args->method.empty() ? c.method() : args->method;
      std::vector<std::string> options = args->method.empty() ? c.options() : std::vector<std::string>{};
      // later key=value pairs override earlier ones with the same key
      for (const auto& kv : args->options) {
        const auto key = kv.substr(0, kv.find('='));
        std::erase_if(options, [&](const std::string& o) { return o.substr(0, o.find('=')) == key; });
        options.push_back(kv);
      }
      const Budget budget = args->budget.empty() ? c.budget() : Budget::parse(args->budget);
      const auto reducer = make_reducer(method, options);
      const auto t0 = std::chrono::steady_clock::now();
      const Reduction r = reducer->reduce(c.encoder_output(), budget);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

      fs::create_directories(args->out_dir);
      nlohmann::json j = io::reduction_to_json(r, *reducer, budget);
      j["reduce_ms"] = ms;
      j["case"] = args->case_dir;
      std::ofstream(fs::path(args->out_dir) / "result.json") << j.dump(1) << "\n";
      if (r.rows() > 0) io::write_f32(fs::path(args->out_dir) / "tokens.f32", r.tokens);
      if (!args->quiet) {
        std::printf("%s: kept %zu of %lld %s tokens -> %lld output rows x %lld (%.3f ms)\n", r.method.c_str(),
                    r.kept.size(), static_cast<long long>(r.source_tokens), r.sequence_indices ? "sequence" : "patch",
                    static_cast<long long>(j["rows"].get<int64_t>()), static_cast<long long>(r.dim), ms);
        std::string head;
        for (size_t i = 0; i < r.kept.size() && i < 16; ++i) head += (i ? " " : "") + std::to_string(r.kept[i]);
        std::printf("kept (output order): %s%s\n", head.c_str(), r.kept.size() > 16 ? " ..." : "");
        for (const auto& [k, v] : r.stats) {
          if (k.rfind("contextual_count_", 0) != 0) std::printf("  %s = %g\n", k.c_str(), v);
        }
        std::printf("wrote %s\n", (fs::path(args->out_dir) / "result.json").c_str());
      }
      return 0;
    };
  });
}

void add_make_case(CLI::App& app, Action& action) {
  auto spec = std::make_shared<io::SyntheticCaseSpec>();
  auto out = std::make_shared<std::string>();
  auto grid = std::make_shared<std::string>("24x24");
  auto budget = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("make-case", "Write a synthetic case directory (seeded) for a method");
  cmd->add_option("--method", spec->method, "method the case is for")->required();
  cmd->add_option("--out", *out, "case directory to write")->required();
  cmd->add_option("--grid", *grid, "patch grid HxW")->capture_default_str();
  cmd->add_option("--heads", spec->heads, "attention heads")->capture_default_str();
  cmd->add_option("--dim", spec->dim, "feature / key width")->capture_default_str();
  cmd->add_option("--seed", spec->seed, "random seed")->capture_default_str();
  cmd->add_option("--budget", *budget, "budget recorded in the case");
  cmd->add_option("--opt", spec->options, "method option key=value recorded in the case (repeatable)");
  cmd->callback([=, &action] {
    action = [=] {
      int h = 0, w = 0;
      char x = 0;
      std::istringstream is(*grid);
      if (!(is >> h >> x >> w) || x != 'x' || h <= 0 || w <= 0 || h > 1024 || w > 1024) {
        throw Error("--grid '" + *grid + "' must look like 24x24");
      }
      spec->grid = {h, w};
      if (!budget->empty()) spec->budget = Budget::parse(*budget);
      io::write_synthetic_case(*spec, *out);
      std::printf("wrote %s/case.json\n", out->c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
