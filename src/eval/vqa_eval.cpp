#include "vqa_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "eval_common.h"
#include "vtprune/pipeline.h"

namespace vtprune::eval {
namespace {

using json = nlohmann::ordered_json;  // records keep id, method, budget first

struct Job {
  std::string method, budget_label;
  std::vector<std::string> options;
  Budget budget;
};

struct Answer {
  double score = 0;
  int64_t tokens_kept = 0;
  double ttft_ms = 0;
};

std::string answer_key(const std::string& id, const std::string& method, const std::string& budget) {
  return id + '\t' + method + '\t' + budget;
}

std::string json_text(const json& value, const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number()) return value.dump();  // VQA answers like 2 written as numbers
  throw Error(where + " must be a string");
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open image");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_results_csv(const std::filesystem::path& path, const std::vector<VqaRow>& rows) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp.string() + ": cannot write");
    out << "method,budget,n_items,accuracy,retention,mean_tokens_kept,mean_ttft_ms,accuracy_yesno,accuracy_choice,"
           "accuracy_open\n";
    for (const auto& r : rows) {
      out << csv_field(r.method) << ',' << csv_field(r.budget) << ',' << r.n_items << ',' << format_number(r.accuracy, 4)
          << ',' << format_number(r.retention, 4) << ',' << format_number(r.mean_tokens_kept, 2) << ','
          << format_number(r.mean_ttft_ms, 1) << ',' << format_number(r.accuracy_yesno, 4) << ','
          << format_number(r.accuracy_choice, 4) << ',' << format_number(r.accuracy_open, 4) << '\n';
    }
    if (!out) throw Error(tmp.string() + ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

std::string absolute_text(const std::filesystem::path& p) { return std::filesystem::absolute(p).lexically_normal().string(); }

}  // namespace

std::string build_vqa_prompt(const VqaItem& item) {
  switch (item.type) {
    case AnswerType::Choice: {
      std::string prompt = item.question;
      for (size_t i = 0; i < item.choices.size(); ++i) prompt += "\n" + choice_letter(i) + ". " + item.choices[i];
      return prompt + "\nAnswer with the option's letter from the given choices directly.";
    }
    case AnswerType::YesNo:
    case AnswerType::Open: return item.question + "\nAnswer the question using a single word or phrase.";
  }
  return item.question;
}

std::vector<VqaItem> load_vqa_items(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw Error("--data " + file.string() + ": cannot open");
  const std::filesystem::path base = file.parent_path();
  std::vector<VqaItem> items;
  std::set<std::string> ids;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[line.find_first_not_of(" \t")] == '#') continue;
    const std::string where = file.string() + ":" + std::to_string(number);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw Error(where + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error(where + ": expected a JSON object");
    const auto field = [&](const char* name) -> const json& {
      if (!j.contains(name)) throw Error(where + ": missing field \"" + name + "\"");
      return j.at(name);
    };
    VqaItem item;
    item.id = json_text(field("id"), where + ": field \"id\"");
    if (!ids.insert(item.id).second) throw Error(where + ": id \"" + item.id + "\" appears twice");
    item.image = base / json_text(field("image"), where + ": field \"image\"");
    if (!std::filesystem::is_regular_file(item.image)) throw Error(where + ": field \"image\": " + item.image.string() + " not found");
    try {
      item.type = parse_answer_type(json_text(field("type"), where + ": field \"type\""));
    } catch (const Error& e) {
      throw Error(where + ": field \"type\": " + e.what());
    }
    const json& answers = field("answers");
    if (!answers.is_array() || answers.empty()) throw Error(where + ": field \"answers\" must be a non-empty array");
    for (const auto& a : answers) item.answers.push_back(json_text(a, where + ": field \"answers\" entries"));
    if (j.contains("choices")) {
      if (!j.at("choices").is_array()) throw Error(where + ": field \"choices\" must be an array");
      for (const auto& c : j.at("choices")) item.choices.push_back(json_text(c, where + ": field \"choices\" entries"));
      if (item.choices.size() > 26) throw Error(where + ": field \"choices\" has more than 26 options");
    }
    if (item.type == AnswerType::YesNo && !reference_yes_no(item.answers[0])) {
      throw Error(where + ": field \"answers\": a yesno item needs \"yes\" or \"no\", got \"" + item.answers[0] + "\"");
    }
    if (item.type == AnswerType::Choice && !reference_choice(item.answers[0], item.choices)) {
      throw Error(where + ": field \"answers\": \"" + item.answers[0] + "\" is neither an option letter nor one of the choices");
    }
    if (j.contains("prompt")) {
      item.prompt = json_text(j.at("prompt"), where + ": field \"prompt\"");
      if (j.contains("question")) item.question = json_text(j.at("question"), where + ": field \"question\"");
    } else {
      item.question = json_text(field("question"), where + ": field \"question\"");
      item.prompt = build_vqa_prompt(item);
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) throw Error("--data " + file.string() + ": no items");
  return items;
}

std::vector<VqaRow> run_vqa_eval(const VqaConfig& config) {
  std::vector<VqaItem> items = load_vqa_items(config.data);
  if (config.limit > 0 && static_cast<size_t>(config.limit) < items.size()) items.resize(static_cast<size_t>(config.limit));

  // none first: the reference every retention is measured against.
  std::vector<std::string> methods{"none"};
  for (const auto& m : config.methods) {
    if (std::find(methods.begin(), methods.end(), m) == methods.end()) methods.push_back(m);
  }
  const auto user_options = parse_method_options(config.options);
  for (const auto& [method, opts] : user_options) {
    if (std::find(methods.begin(), methods.end(), method) == methods.end()) {
      throw Error("eval vqa: --opt names " + method + ", which is not in --methods");
    }
  }

  pipeline::VlmParams params;
  params.llm_path = config.llm.string();
  params.mmproj_path = config.mmproj.string();
  params.clip_text_path = config.clip_text.string();
  params.n_gpu_layers = config.n_gpu_layers;
  params.vision_gpu = config.vision_gpu;
  params.rpc_servers = config.rpc_servers;
  params.threads = config.threads;
  params.n_ctx = config.n_ctx;
  pipeline::Vlm vlm(params);
  const EncoderInfo info = vlm.encoder_info();

  std::vector<Job> jobs;
  for (const auto& method : methods) {
    const auto user = user_options.find(method);
    const std::vector<std::string> options = user == user_options.end() ? std::vector<std::string>{} : user->second;
    // Bad options or layers fail now, not on the first item.
    const Needs needs = make_reducer(method, vlm.method_options(method, options))->needs(info);
    for (const auto& tap : needs.taps) {
      if (vlm.encoder() == family::Encoder::Own && tap.layer >= vlm.vision_model().stored_layers()) {
        throw Error("eval vqa: " + method + " reads layer " + std::to_string(tap.layer) + ", which is not stored in " +
                    config.mmproj.string() + " (" + std::to_string(vlm.vision_model().stored_layers()) +
                    " blocks: llama.cpp's LLaVA conversion drops the last one); choose a stored layer, e.g. --opt " + method +
                    ":layer=-2");
      }
    }
    if (method == "none") {
      jobs.push_back({method, "all", options, Budget::all()});
      continue;
    }
    if (config.budgets.empty()) throw Error("eval vqa: --budgets is empty");
    for (const auto& b : config.budgets) {
      const Budget budget = Budget::parse(b);
      if (budget.kind != Budget::Kind::All) budget.resolve(info.grid.size());
      jobs.push_back({method, b, options, budget});
    }
  }

  // answers.jsonl: a settings record, then one record per (item, method, budget).
  json settings = {{"vtprune_eval_vqa",
                    {{"data", absolute_text(config.data)},
                     {"model", absolute_text(config.llm)},
                     {"mmproj", absolute_text(config.mmproj)},
                     {"n_predict", config.n_predict},
                     {"options", config.options}}}};
  AppendLog log(config.out / "answers.jsonl", {settings.dump()});
  std::map<std::string, Answer> done;
  const auto& lines = log.existing_lines();
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = log.path().string() + ":" + std::to_string(i + 1);
    json j;
    try {
      j = json::parse(lines[i]);
    } catch (const json::parse_error& e) {
      throw Error(where + ": not valid JSON (" + e.what() + ")");
    }
    if (i == 0) {
      if (j != settings) {
        throw Error(log.path().string() + " was written by a run with other settings (" + lines[0] + " vs " + settings.dump() +
                    "): use another --out or delete the file");
      }
      continue;
    }
    try {
      done[answer_key(j.at("id").get<std::string>(), j.at("method").get<std::string>(), j.at("budget").get<std::string>())] =
          Answer{j.at("score").get<double>(), j.at("tokens_kept").get<int64_t>(), j.at("ttft_ms").get<double>()};
    } catch (const json::exception& e) {
      throw Error(where + ": malformed record (" + e.what() + ")");
    }
  }
  if (log.was_truncated()) std::fprintf(stderr, "%s: dropped a partly written last line (redone)\n", log.path().string().c_str());

  const auto total = static_cast<int64_t>(items.size() * jobs.size());
  int64_t already = 0;
  for (const auto& item : items) {
    for (const auto& job : jobs) already += done.count(answer_key(item.id, job.method, job.budget_label)) > 0;
  }
  if (already > 0) std::fprintf(stderr, "resuming: %lld of %lld answers already done\n", static_cast<long long>(already),
                                static_cast<long long>(total));
  {
    Progress progress("eval vqa", total, already, config.progress);
    for (const auto& item : items) {
      std::vector<const Job*> pending;
      for (const auto& job : jobs) {
        if (!done.count(answer_key(item.id, job.method, job.budget_label))) pending.push_back(&job);
      }
      if (pending.empty()) continue;
      const std::vector<uint8_t> bytes = read_bytes(item.image);
      for (const Job* job : pending) {
        pipeline::Request request;
        request.images = {bytes};
        request.image_names = {item.image.string()};
        request.prompt = item.prompt;
        request.method = job->method;
        request.options = job->options;
        request.budget = job->budget;
        request.sampling = {.temperature = 0.0f, .top_p = 1.0f, .seed = 0, .max_tokens = config.n_predict};
        const pipeline::Result result = vlm.run(request);
        const Answer answer{score_answer(item.type, result.answer, item.answers, item.choices), result.tokens_kept,
                            result.timings.ttft_ms};
        const json record = {{"id", item.id},
                             {"method", job->method},
                             {"budget", job->budget_label},
                             {"type", std::string(to_string(item.type))},
                             {"answer", result.answer},
                             {"score", answer.score},
                             {"tokens_in", result.tokens_in},
                             {"tokens_kept", answer.tokens_kept},
                             {"ttft_ms", answer.ttft_ms},
                             {"encode_ms", result.timings.encode_ms},
                             {"prefill_ms", result.timings.prefill_ms}};
        // A random-weight (or truncated) answer may end inside a UTF-8 character: replace, never throw.
        log.append(record.dump(-1, ' ', false, json::error_handler_t::replace));
        done[answer_key(item.id, job->method, job->budget_label)] = answer;
        progress.advance(1, item.id + " " + job->method);
      }
    }
  }

  std::vector<VqaRow> rows;
  for (const auto& job : jobs) {
    VqaRow row{job.method, job.budget_label};
    double score = 0, tokens = 0, ttft = 0;
    std::map<AnswerType, std::pair<double, int64_t>> by_type;
    for (const auto& item : items) {
      const auto it = done.find(answer_key(item.id, job.method, job.budget_label));
      if (it == done.end()) continue;
      ++row.n_items;
      score += it->second.score;
      tokens += static_cast<double>(it->second.tokens_kept);
      ttft += it->second.ttft_ms;
      auto& [type_score, type_count] = by_type[item.type];
      type_score += it->second.score;
      ++type_count;
    }
    const auto n = static_cast<double>(std::max<int64_t>(row.n_items, 1));
    row.accuracy = row.n_items ? score / n : NAN;
    row.mean_tokens_kept = tokens / n;
    row.mean_ttft_ms = ttft / n;
    const auto type_accuracy = [&](AnswerType t) {
      const auto it = by_type.find(t);
      return it == by_type.end() ? NAN : it->second.first / static_cast<double>(it->second.second);
    };
    row.accuracy_yesno = type_accuracy(AnswerType::YesNo);
    row.accuracy_choice = type_accuracy(AnswerType::Choice);
    row.accuracy_open = type_accuracy(AnswerType::Open);
    rows.push_back(std::move(row));
  }
  const double reference = rows.empty() ? NAN : rows.front().accuracy;  // none comes first
  for (auto& r : rows) r.retention = reference > 0 ? r.accuracy / reference : NAN;
  write_results_csv(config.out / "results.csv", rows);
  return rows;
}

}  // namespace vtprune::eval
