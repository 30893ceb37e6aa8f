// `vtprune eval vqa`: accuracy of a LLaVA-style GGUF pair under each reduction method and budget, on a
// JSONL file of questions, scored as the standard harnesses do (vqa_scoring.h).
//
// Input, one JSON object per line (blank lines and lines starting with '#' are skipped):
//   {"id": "q1", "image": "img/1.png", "question": "Is there a dog?", "answers": ["yes"], "type": "yesno"}
//   {"id": "q2", "image": "img/2.png", "question": "Which colour?", "choices": ["red", "blue"],
//    "answers": ["B"], "type": "choice"}
//   {"id": "q3", "image": "img/3.png", "question": "How many cats?", "answers": ["2", "two", ...], "type": "open"}
// `image` is relative to the JSONL file's folder; "prompt" (optional) replaces the prompt built from the
// question (LLaVA-1.5's evaluation suffixes: "Answer the question using a single word or phrase." for
// yesno/open, the lettered options + "Answer with the option's letter from the given choices directly."
// for choice).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "vqa_scoring.h"

namespace vtprune::eval {

struct VqaItem {
  std::string id;
  std::filesystem::path image;  // resolved against the JSONL file's folder
  std::string question;
  std::string prompt;           // what the model is asked (built or given)
  std::vector<std::string> answers;
  std::vector<std::string> choices;
  AnswerType type = AnswerType::Open;
};

// Reads and validates a JSONL file; errors name the file, the line and the field. Ids must be unique.
std::vector<VqaItem> load_vqa_items(const std::filesystem::path& file);
// LLaVA-1.5's evaluation prompt for an item without "prompt".
std::string build_vqa_prompt(const VqaItem& item);

struct VqaConfig {
  std::filesystem::path data, llm, mmproj, out;
  std::filesystem::path clip_text;   // CLIP folder for CDPruner's relevance=clip (optional)
  int n_gpu_layers = 0;                  // -ngl
  bool vision_gpu = false;               // --mmproj-offload (libmtmd families)
  std::vector<std::string> rpc_servers;  // --rpc host:port
  std::vector<std::string> methods;  // `none` is always run too: retention is measured against it
  std::vector<std::string> budgets;  // as given ("64", "25%"); `none` runs once at "all"
  std::vector<std::string> options;  // "method:key=value"
  int threads = 0;                   // 0 = all cores
  int n_predict = 16;                // answer tokens at most (greedy)
  int n_ctx = 4096;
  int limit = 0;                     // first N items (0 = all)
  bool progress = true;
};

struct VqaRow {
  std::string method, budget;
  int64_t n_items = 0;
  double accuracy = 0;
  double retention = 0;              // accuracy / accuracy of none (NaN when that is 0)
  double mean_tokens_kept = 0;
  double mean_ttft_ms = 0;
  double accuracy_yesno = 0, accuracy_choice = 0, accuracy_open = 0;  // NaN without items of the type
};

// Runs (or resumes) the evaluation: OUT/answers.jsonl (append-only; its first line holds the settings a
// resumed run must share), OUT/results.csv. Returns the rows of results.csv.
std::vector<VqaRow> run_vqa_eval(const VqaConfig& config);

}  // namespace vtprune::eval
