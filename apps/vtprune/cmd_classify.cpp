// `vtprune classify --model DIR --images DIR_OR_FILES... [--synsets FILE] [--threads N]`: ImageNet
// classification with a timm ViT/DeiT (the unpruned reference point of the encoder).
//
// Output, one tab-separated line per image: file, top-1 class index, top-5 indices (comma-separated), and
// with --synsets the top-1 synset id and name. When the file names start with synset ids (ImageNet
// convention, "n01440764_tench.JPEG"), a top-1 / top-5 accuracy summary goes to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "commands.h"
#include "vtprune/vision.h"

namespace vtprune::cli {
namespace {

struct ClassifyArgs {
  std::string model;
  std::vector<std::string> images;
  std::string synsets;
  int threads = 0;
  int top = 5;
  std::string device = "cpu";
};

bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

std::vector<std::filesystem::path> collect_images(const std::vector<std::string>& args) {
  std::vector<std::filesystem::path> files;
  for (const auto& a : args) {
    const std::filesystem::path p(a);
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> in_dir;
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file() && is_image_file(e.path())) in_dir.push_back(e.path());
      }
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (std::filesystem::exists(p)) {
      files.push_back(p);
    } else {
      throw Error("classify: " + a + " does not exist");
    }
  }
  if (files.empty()) throw Error("classify: no images found");
  return files;
}

// synset_words.txt: line i = "<synset id> <name>" of class i.
std::vector<std::pair<std::string, std::string>> read_synsets(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("classify: cannot open synsets file " + path);
  std::vector<std::pair<std::string, std::string>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto space = line.find(' ');
    out.emplace_back(line.substr(0, space), space == std::string::npos ? "" : line.substr(space + 1));
  }
  return out;
}

int run_classify(const ClassifyArgs& args) {
  const int threads = args.threads > 0 ? args.threads : std::max(1u, std::thread::hardware_concurrency());
  auto model = vision::VisionModel::from_safetensors_timm(args.model, {.device = args.device});
  if (model.num_classes() == 0) throw Error("classify: model " + args.model + " has no classifier head");
  const auto synsets = args.synsets.empty() ? std::vector<std::pair<std::string, std::string>>{} : read_synsets(args.synsets);
  if (!synsets.empty() && static_cast<int>(synsets.size()) != model.num_classes()) {
    throw Error("classify: " + args.synsets + " has " + std::to_string(synsets.size()) + " lines but the model has " +
                std::to_string(model.num_classes()) + " classes");
  }
  const auto files = collect_images(args.images);
  int labelled = 0, correct1 = 0, correct5 = 0;
  double encode_ms = 0.0, total_ms = 0.0;
  vision::EncodeOptions options;
  options.threads = threads;
  options.logits = true;
  for (const auto& file : files) {
    const auto start = std::chrono::steady_clock::now();
    const auto image = vision::preprocess(vision::load_image(file), model.preprocess_recipe());
    const auto result = model.encode(image, Needs{}, options);
    total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    encode_ms += result.encode_ms;
    const auto top = vision::top_k_classes(result.logits, args.top);
    std::string line = file.filename().string() + "\t" + std::to_string(top.at(0)) + "\t";
    for (size_t i = 0; i < top.size(); ++i) line += (i ? "," : "") + std::to_string(top[i]);
    if (!synsets.empty()) {
      const auto& [id, name] = synsets[top[0]];
      line += "\t" + id + "\t" + name;
      // The label is the synset id the file name starts with, when it names a known class.
      const std::string stem = file.filename().string();
      const auto label = std::find_if(synsets.begin(), synsets.end(), [&](const auto& s) {
        return stem.size() > s.first.size() && stem.compare(0, s.first.size(), s.first) == 0 && stem[s.first.size()] == '_';
      });
      if (label != synsets.end()) {
        const int cls = static_cast<int>(label - synsets.begin());
        ++labelled;
        correct1 += top[0] == cls;
        correct5 += std::find(top.begin(), top.end(), cls) != top.end();
      }
    }
    std::printf("%s\n", line.c_str());
  }
  const double n = static_cast<double>(files.size());
  std::fflush(stdout);  // keep the per-image lines before the summary on a shared terminal
  std::fprintf(stderr, "classified %zu images with %d threads: encode %.1f ms/image, total %.1f ms/image\n", files.size(),
               threads, encode_ms / n, total_ms / n);
  if (labelled > 0) {
    std::fprintf(stderr, "top-1 %d/%d (%.1f%%), top-%d %d/%d (%.1f%%)\n", correct1, labelled, 100.0 * correct1 / labelled,
                 args.top, correct5, labelled, 100.0 * correct5 / labelled);
  }
  return 0;
}

}  // namespace

void add_classify(CLI::App& app, Action& action) {
  auto args = std::make_shared<ClassifyArgs>();
  CLI::App* cmd = app.add_subcommand("classify", "Classify images with a timm ViT/DeiT (safetensors)");
  cmd->add_option("--model", args->model, "folder with model.safetensors (+ config.json), or the file")->required();
  cmd->add_option("--images", args->images, "image files or folders of images")->required();
  cmd->add_option("--synsets", args->synsets, "synset_words.txt: line i = '<synset id> <name>' of class i");
  cmd->add_option("--threads,-t", args->threads, "CPU threads (default: all cores)");
  cmd->add_option("--top", args->top, "how many classes to list")->check(CLI::Range(1, 1000));
  cmd->add_option("--device", args->device, "where the ViT runs: cpu, gpu (the first GPU device) or a name from `vtprune devices`")
      ->capture_default_str();
  cmd->callback([args, &action] { action = [args] { return run_classify(*args); }; });
}

}  // namespace vtprune::cli
