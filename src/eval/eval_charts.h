// Charts of the eval harnesses (vtprune::draw), kept apart from the measuring code.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "imagenet_eval.h"

namespace vtprune::eval {

// accuracy.png: top-1 (%) against mean tokens kept, one line per method (budgets as points), the unpruned
// model as a single labelled point.
void write_accuracy_chart(const std::filesystem::path& path, const std::vector<ImagenetRow>& rows,
                          const std::string& model_name, size_t n_images, int prune_after, int depth, int64_t n_patches);

}  // namespace vtprune::eval
