// `vtprune methods [NAME]`: list the methods, or describe one with its options.
#include <cstdio>

#include "commands.h"
#include "vtprune/reduce.h"

namespace vtprune::cli {

void add_methods(CLI::App& app, Action& action) {
  auto name = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("methods", "List the reduction methods, or describe one and its options");
  cmd->add_option("name", *name, "method to describe");
  cmd->callback([name, &action] {
    action = [name] {
      if (!name->empty()) {
        std::printf("%s", describe(method_info(*name)).c_str());
        return 0;
      }
      for (const auto& m : methods()) {
        std::printf("%-14s %-8s %s\n", m.name.c_str(), std::string(to_string(m.budget_use)).c_str(), m.keeps.c_str());
      }
      return 0;
    };
  });
}

}  // namespace vtprune::cli
