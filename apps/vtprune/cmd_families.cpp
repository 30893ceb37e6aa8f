// `vtprune families`: the model families vtprune prunes and how each method runs on each (from the family table).
#include <cstdio>

#include "commands.h"
#include "vtprune/family.h"

namespace vtprune::cli {

void add_families(CLI::App& app, Action& action) {
  CLI::App* cmd = app.add_subcommand("families", "List the model families (mmproj projector types) and each method's support on them");
  cmd->callback([&action] {
    action = [] {
      std::printf("%s\n%s", family::families_markdown().c_str(), family::methods_markdown().c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
