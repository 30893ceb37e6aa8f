#include "imagenet_eval.h"
#include "vtprune/family.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "eval_charts.h"
#include "eval_common.h"
#include "vtprune/vision.h"

namespace vtprune::eval {
namespace {

namespace fs = std::filesystem;

constexpr int kHipruneObjectLayerLlava = 8; // HIPRUNE_OBJECT_LAYER = 9 (1-based) -> attentions[8]
constexpr int kTopK = 5;

const char* kColumns = "file\tmethod\tbudget\ttop1\ttop5\ttokens_kept\tkl_to_unpruned\tunpruned_top1\tlabel";

// One (method, budget) cell of the benchmark.
struct Job {
  std::string method;
  std::string budget_label;  // "all" for none, else the budget as given
  std::unique_ptr<Reducer> reducer;
  Budget budget;
  int budget_extra = 0;
};

// One line of per_image.tsv.
struct Record {
  int top1 = -1;
  std::vector<int> top5;
  int64_t tokens_kept = 0;
  double kl = 0;
  int unpruned_top1 = -1;
  int label = -1;
};

std::string record_key(const std::string& file, const std::string& method, const std::string& budget) {
  return file + '\t' + method + '\t' + budget;
}

std::vector<std::string> read_synset_ids(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("--synsets " + path.string() + ": cannot open");
  std::vector<std::string> ids;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    ids.push_back(line.substr(0, line.find(' ')));
  }
  return ids;
}

std::string join_ints(const std::vector<int>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out;
}

int parse_int(const std::string& text, const std::string& where) {
  try {
    size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw Error(where + ": '" + text + "' is not an integer");
  }
}

Record parse_record(const std::vector<std::string>& f, const std::string& where) {
  Record r;
  r.top1 = parse_int(f[3], where + " field top1");
  for (const auto& item : split_list(f[4])) r.top5.push_back(parse_int(item, where + " field top5"));
  r.tokens_kept = parse_int(f[5], where + " field tokens_kept");
  try {
    r.kl = std::stod(f[6]);
  } catch (const std::exception&) {
    throw Error(where + " field kl_to_unpruned: '" + f[6] + "' is not a number");
  }
  r.unpruned_top1 = parse_int(f[7], where + " field unpruned_top1");
  r.label = parse_int(f[8], where + " field label");
  return r;
}

// The rows a reduction hands the classifier's tail: every output row except a CLS row (VisionZip outputs
// the CLS hidden state as a token; the tail's first row is that same CLS).
std::vector<float> patch_rows(const Reduction& r, int64_t& rows) {
  std::vector<float> out;
  rows = 0;
  const int64_t n = r.rows();
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<size_t>(i) < r.roles.size() && r.roles[static_cast<size_t>(i)] == TokenRole::Cls) continue;
    const auto begin = r.tokens.begin() + static_cast<std::ptrdiff_t>(i * r.dim);
    out.insert(out.end(), begin, begin + static_cast<std::ptrdiff_t>(r.dim));
    ++rows;
  }
  return out;
}

void write_results_csv(const std::filesystem::path& path, const std::vector<ImagenetRow>& rows) {
  // Written to a temporary file and renamed, so a reader never sees half a table.
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp.string() + ": cannot write");
    out << "method,budget,n_images,top1,top5,agreement_with_unpruned,mean_kl_to_unpruned,mean_tokens_kept\n";
    for (const auto& r : rows) {
      out << csv_field(r.method) << ',' << csv_field(r.budget) << ',' << r.n_images << ',' << format_number(r.top1, 4) << ','
          << format_number(r.top5, 4) << ',' << format_number(r.agreement, 4) << ',' << format_number(r.mean_kl, 5) << ','
          << format_number(r.mean_tokens_kept, 2) << '\n';
    }
    if (!out) throw Error(tmp.string() + ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

ClassifierPlan classifier_plan(std::string_view method, int prune_after, int depth) {
  const int feature = prune_after - 1;  // the block whose output is reduced
  ClassifierPlan plan;
  if (method == "hiprune") {
    // HiPrune's LLaVA-1.5 object layer scaled to this depth with the family table's one rule
    const int object = std::min(family::scale_layer(kHipruneObjectLayerLlava, depth, family::by_name("llava-1.5").reference_depth), feature);
    plan.options = {"object_layer=" + std::to_string(object), "deep_layer=" + std::to_string(feature)};
  } else if (method == "fastervlm") {
    plan.options = {"layer=" + std::to_string(feature)};
  } else if (method == "visionzip") {
    plan.options = {"layer=" + std::to_string(feature)};
    plan.budget_extra = 1;
  } else if (method == "prumerge" || method == "prumerge_plus") {
    plan.options = {"layer=" + std::to_string(prune_after)};
  } else if (method == "divprune") {
    plan.options = {"space=features"};
  }
  return plan;
}

double kl_divergence_from_logits(const std::vector<float>& reference, const std::vector<float>& other) {
  if (reference.size() != other.size() || reference.empty()) {
    throw Error("kl_divergence: logit vectors of sizes " + std::to_string(reference.size()) + " and " +
                std::to_string(other.size()));
  }
  const auto log_sum_exp = [](const std::vector<float>& v) {
    const double m = *std::max_element(v.begin(), v.end());
    double s = 0;
    for (float x : v) s += std::exp(static_cast<double>(x) - m);
    return m + std::log(s);
  };
  const double lp = log_sum_exp(reference), lq = log_sum_exp(other);
  double kl = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double log_p = reference[i] - lp, log_q = other[i] - lq;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 for identical inputs
}

int label_from_file_name(const std::string& file_name, const std::vector<std::string>& synset_ids) {
  const size_t underscore = file_name.find('_');
  if (underscore == std::string::npos) return -1;
  const auto it = std::find(synset_ids.begin(), synset_ids.end(), file_name.substr(0, underscore));
  return it == synset_ids.end() ? -1 : static_cast<int>(it - synset_ids.begin());
}

std::vector<ImagenetRow> run_imagenet_eval(const ImagenetConfig& config) {
  if (config.methods.empty()) throw Error("eval imagenet: --methods is empty");
  if (config.threads < 1) throw Error("eval imagenet: --threads must be >= 1");
  auto model = vision::VisionModel::from_safetensors_timm(config.model, {.device = config.device});
  if (model.num_classes() == 0) throw Error("eval imagenet: model " + config.model.string() + " has no classifier head");
  const int depth = model.stored_layers(), split = config.prune_after;
  if (split < 1 || split >= depth) {
    throw Error("eval imagenet: --prune-after " + std::to_string(split) + " must be in 1.." + std::to_string(depth - 1) +
                " (blocks before pruning; at least one block must run after it)");
  }
  const std::vector<std::string> synset_ids = read_synset_ids(config.synsets);
  if (static_cast<int>(synset_ids.size()) != model.num_classes()) {
    throw Error("eval imagenet: " + config.synsets.string() + " has " + std::to_string(synset_ids.size()) +
                " classes but the model has " + std::to_string(model.num_classes()));
  }
  std::vector<std::filesystem::path> files = list_images(config.images);
  if (config.limit > 0 && static_cast<size_t>(config.limit) < files.size()) files.resize(static_cast<size_t>(config.limit));

  // The encoder is blocks [0, E): its features are block E-1's output.
  EncoderInfo info = model.info();
  info.feature_layer = split - 1;
  const int64_t n_patches = info.grid.size();
  const auto user_options = parse_method_options(config.options);
  for (const auto& [method, opts] : user_options) {
    if (std::find(config.methods.begin(), config.methods.end(), method) == config.methods.end()) {
      throw Error("eval imagenet: --opt names " + method + ", which is not in --methods");
    }
  }

  std::vector<Job> jobs;
  Needs needs;
  std::set<std::string> seen;
  for (const auto& method : config.methods) {
    if (!seen.insert(method).second) throw Error("eval imagenet: method " + method + " is listed twice");
    const ClassifierPlan plan = classifier_plan(method, split, depth);
    const auto user = user_options.find(method);
    const auto options = merge_options(plan.options, user == user_options.end() ? std::vector<std::string>{} : user->second);
    auto make_job = [&](const std::string& label, Budget budget) {
      Job job{method, label, make_reducer(method, options), budget, plan.budget_extra};
      needs.merge(job.reducer->needs(info));
      jobs.push_back(std::move(job));
    };
    if (method == "none") {
      make_job("all", Budget::all());
      continue;
    }
    if (config.budgets.empty()) throw Error("eval imagenet: --budgets is empty");
    for (const auto& b : config.budgets) {
      const Budget budget = Budget::parse(b);
      if (budget.kind != Budget::Kind::All) budget.resolve(n_patches);  // rejects 0, > N, bad ratios up front
      make_job(b, budget);
    }
  }
  needs.cls_features = true;

  // per_image.tsv: a settings line (a resumed run must use the same split, model and options), the
  // columns, then one line per (image, method, budget).
  std::string model_text = fs::absolute(config.model).lexically_normal().string();
  if (model_text.size() > 1 && model_text.back() == '/') model_text.pop_back();  // "dir/" and "dir" are one model
  std::string settings = "# vtprune eval imagenet model=" + model_text +
                         " depth=" + std::to_string(depth) + " prune_after=" + std::to_string(split) + " options=";
  for (size_t i = 0; i < config.options.size(); ++i) settings += (i ? ";" : "") + config.options[i];
  AppendLog log(config.out / "per_image.tsv", {settings, kColumns});
  const auto& lines = log.existing_lines();
  if (lines.size() < 2 || lines[0] != settings || lines[1] != kColumns) {
    throw Error(log.path().string() + " was written by a run with other settings (first line '" +
                (lines.empty() ? std::string() : lines[0]) + "', this run: '" + settings +
                "'): use another --out or delete the file");
  }
  std::map<std::string, Record> done;
  for (size_t i = 2; i < lines.size(); ++i) {
    const std::string where = log.path().string() + ":" + std::to_string(i + 1);
    const auto fields = split_fields(lines[i], '\t');
    if (fields.size() != 9) throw Error(where + ": expected 9 tab-separated fields, found " + std::to_string(fields.size()));
    done[record_key(fields[0], fields[1], fields[2])] = parse_record(fields, where);
  }
  if (log.was_truncated()) std::fprintf(stderr, "%s: dropped a partly written last line (redone)\n", log.path().string().c_str());

  int64_t already = 0;
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    already += std::all_of(jobs.begin(), jobs.end(), [&](const Job& j) { return done.count(record_key(name, j.method, j.budget_label)) > 0; });
  }
  if (already > 0) std::fprintf(stderr, "resuming: %lld of %zu images already done\n", static_cast<long long>(already), files.size());

  const auto start = std::chrono::steady_clock::now();
  double encode_ms = 0, tail_ms = 0;
  int64_t encoded_images = 0;
  {
    Progress progress("eval imagenet", static_cast<int64_t>(files.size()), already, config.progress);
    for (const auto& file : files) {
      const std::string name = file.filename().string();
      std::vector<const Job*> pending;
      for (const auto& j : jobs) {
        if (!done.count(record_key(name, j.method, j.budget_label))) pending.push_back(&j);
      }
      if (pending.empty()) continue;
      const int label = label_from_file_name(name, synset_ids);
      const vision::Image image = vision::preprocess(vision::load_image(file), model.preprocess_recipe());
      // The unpruned reference: the very call `vtprune classify` makes.
      const vision::EncoderResult reference = model.encode(image, Needs{}, {.threads = config.threads, .logits = true});
      const int reference_top1 = vision::top_k_classes(reference.logits, 1).at(0);
      encode_ms += reference.encode_ms;
      ++encoded_images;
      const bool need_split = std::any_of(pending.begin(), pending.end(), [](const Job* j) { return j->method != "none"; });
      vision::EncoderResult partial;
      if (need_split) {
        partial = model.encode(image, needs, {.threads = config.threads, .logits = false, .stop_after_layer = split - 1});
        encode_ms += partial.encode_ms;
      }
      const EncoderOutput view = partial.view();
      for (const Job* job : pending) {
        std::vector<float> logits;
        int64_t kept = n_patches;
        if (job->method == "none") {
          logits = reference.logits;
        } else {
          Budget budget = job->budget;
          if (budget.kind != Budget::Kind::All && job->budget_extra > 0) {
            budget = Budget::tokens(std::min(budget.resolve(n_patches) + job->budget_extra, view.seq_len()));
          }
          const Reduction reduction = job->reducer->reduce(view, budget);
          const std::vector<float> rows = patch_rows(reduction, kept);
          const auto t0 = std::chrono::steady_clock::now();
          logits = model.classify_tokens(partial.cls_features, MatrixView{rows, kept, reduction.dim}, split, config.threads);
          tail_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
        Record r;
        r.top5 = vision::top_k_classes(logits, kTopK);
        r.top1 = r.top5.at(0);
        r.tokens_kept = kept;
        r.kl = job->method == "none" ? 0.0 : kl_divergence_from_logits(reference.logits, logits);
        r.unpruned_top1 = reference_top1;
        r.label = label;
        char kl_text[32];
        std::snprintf(kl_text, sizeof kl_text, "%.9g", r.kl);
        log.append(name + '\t' + job->method + '\t' + job->budget_label + '\t' + std::to_string(r.top1) + '\t' +
                   join_ints(r.top5) + '\t' + std::to_string(r.tokens_kept) + '\t' + kl_text + '\t' +
                   std::to_string(r.unpruned_top1) + '\t' + std::to_string(r.label));
        done[record_key(name, job->method, job->budget_label)] = std::move(r);
      }
      progress.advance(1, name);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (encoded_images > 0) {
    std::fprintf(stderr, "evaluated %lld images in %.1f s (%.0f ms/image: encode %.0f ms, %zu tails %.0f ms), %d thread(s)\n",
                 static_cast<long long>(encoded_images), seconds, 1000.0 * seconds / static_cast<double>(encoded_images),
                 encode_ms / static_cast<double>(encoded_images), jobs.size(), tail_ms / static_cast<double>(encoded_images),
                 config.threads);
  }

  // Aggregate over this run's image list (the log may hold more from an earlier, larger run).
  std::vector<ImagenetRow> rows;
  for (const auto& job : jobs) {
    ImagenetRow row{job.method, job.budget_label};
    double kl = 0, tokens = 0;
    int64_t top1 = 0, top5 = 0, agree = 0;
    for (const auto& file : files) {
      const auto it = done.find(record_key(file.filename().string(), job.method, job.budget_label));
      if (it == done.end()) continue;
      const Record& r = it->second;
      ++row.n_images;
      kl += r.kl;
      tokens += static_cast<double>(r.tokens_kept);
      agree += r.top1 == r.unpruned_top1;
      if (r.label >= 0) {
        ++row.n_labelled;
        top1 += r.top1 == r.label;
        top5 += std::find(r.top5.begin(), r.top5.end(), r.label) != r.top5.end();
      }
    }
    const auto n = static_cast<double>(std::max<int64_t>(row.n_images, 1));
    const auto nl = static_cast<double>(std::max<int64_t>(row.n_labelled, 1));
    row.top1 = row.n_labelled ? static_cast<double>(top1) / nl : NAN;
    row.top5 = row.n_labelled ? static_cast<double>(top5) / nl : NAN;
    row.agreement = static_cast<double>(agree) / n;
    row.mean_kl = kl / n;
    row.mean_tokens_kept = tokens / n;
    rows.push_back(std::move(row));
  }
  write_results_csv(config.out / "results.csv", rows);
  // The chart last: the numbers are safe on disk whatever happens while drawing.
  if (config.chart) {
    // "deit-tiny" for .../deit-tiny, .../deit-tiny/ and .../deit-tiny/model.safetensors alike.
    fs::path named = config.model.lexically_normal();
    if (named.filename().empty()) named = named.parent_path();
    if (fs::is_regular_file(named)) named = named.parent_path();
    write_accuracy_chart(config.out / "accuracy.png", rows, named.filename().string(), files.size(), split, depth, n_patches);
  }
  return rows;
}

}  // namespace vtprune::eval
