#include "vtprune/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>

namespace vtprune::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int resolve_threads(int threads) {
  return threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

std::vector<int64_t> split_budget(int64_t total, const std::vector<int64_t>& would_keep) {
  const auto n = static_cast<int64_t>(would_keep.size());
  if (n == 0) return {};
  const int64_t sum = std::accumulate(would_keep.begin(), would_keep.end(), int64_t{0});
  if (total < n) {
    throw Error("total budget " + std::to_string(total) + " is smaller than the number of images (" +
                std::to_string(n) + "): every image needs at least one token");
  }
  if (total >= sum) return would_keep;  // everything fits
  // largest remainder: floor shares first, then one more token to the largest fractional parts
  std::vector<int64_t> share(static_cast<size_t>(n));
  std::vector<std::pair<double, int64_t>> remainders;
  int64_t given = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double exact = static_cast<double>(total) * static_cast<double>(would_keep[static_cast<size_t>(i)]) /
                         static_cast<double>(sum);
    share[static_cast<size_t>(i)] = std::clamp<int64_t>(static_cast<int64_t>(exact), 1, would_keep[static_cast<size_t>(i)]);
    given += share[static_cast<size_t>(i)];
    remainders.emplace_back(exact - std::floor(exact), i);
  }
  std::stable_sort(remainders.begin(), remainders.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  // hand out what is left (or take back what the minimum of 1 over-gave), respecting the caps
  for (size_t pass = 0; given != total && pass < 2 * remainders.size() + 2; ++pass) {
    for (const auto& [frac, i] : remainders) {
      if (given == total) break;
      auto& s = share[static_cast<size_t>(i)];
      if (given < total && s < would_keep[static_cast<size_t>(i)]) {
        ++s, ++given;
      } else if (given > total && s > 1) {
        --s, --given;
      }
    }
  }
  return share;
}

vision::VisionModel load_vision(const VlmParams& p) {
  if (p.mmproj_path.empty() == p.vision_tower_path.empty()) {
    throw Error("give exactly one vision model: an mmproj GGUF or a Hugging Face CLIP vision tower");
  }
  if (!p.mmproj_path.empty()) return vision::VisionModel::from_mmproj(p.mmproj_path, p.mmproj);
  vision::VisionModel tower = vision::VisionModel::from_safetensors_clip(p.vision_tower_path, {.projector = p.projector_path});
  if (tower.projector_dim() == 0) {
    throw Error(p.vision_tower_path + ": no LLaVA projector found; pass its safetensors file as the projector");
  }
  return tower;
}

// Runs a step whose failures can only come from what the request asked for (method, options, budget,
// <image> markers): any Error it raises is reported as the caller's (InputError), so that a server can
// tell a bad request from a failure of the models.
template <typename Step>
auto as_request_step(Step&& step) -> decltype(step()) {
  try {
    return step();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw InputError(e.what());
  }
}

struct Vlm::Impl {
  VlmParams params;
  vision::VisionModel vision;
  llm::Session session;
  int threads;

  Impl(const VlmParams& p, vision::VisionModel v, llm::Session s)
      : params(p), vision(std::move(v)), session(std::move(s)), threads(resolve_threads(p.threads)) {}

  explicit Impl(const VlmParams& p)
      : params(p),
        vision(load_vision(p)),
        session(p.llm_path, llm::SessionParams{.n_ctx = p.n_ctx, .threads = p.threads, .verbose = p.verbose}),
        threads(resolve_threads(p.threads)) {
    if (vision.projector_dim() != session.n_embd_inp()) {
      throw Error("the projector in " + (p.mmproj_path.empty() ? p.vision_tower_path : p.mmproj_path) + " outputs " + std::to_string(vision.projector_dim()) +
                  "-wide embeddings but " + p.llm_path + " expects " + std::to_string(session.n_embd_inp()) +
                  ": the two files do not belong together");
    }
  }
};

Vlm::Vlm(const VlmParams& params) : impl_(std::make_unique<Impl>(params)) {}
Vlm::Vlm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Vlm Vlm::share() const {
  return Vlm(std::make_unique<Impl>(impl_->params, impl_->vision.share(), impl_->session.share()));
}
Vlm::~Vlm() = default;
Vlm::Vlm(Vlm&&) noexcept = default;
Vlm& Vlm::operator=(Vlm&&) noexcept = default;

const vision::VisionModel& Vlm::vision_model() const { return impl_->vision; }
llm::Session& Vlm::session() { return impl_->session; }

Result Vlm::run(const Request& request, const llm::PieceCallback& on_piece) {
  const auto t_start = Clock::now();
  Impl& m = *impl_;
  Result result;
  Timings& t = result.timings;
  const auto reducer = as_request_step([&] { return make_reducer(request.method, request.options); });
  const Needs needs = as_request_step([&] {
    Needs wanted = reducer->needs(m.vision.info());
    m.vision.check(wanted);  // e.g. PruMerge's last layer, which an mmproj file does not store
    return wanted;
  });

  // 1. decode, preprocess and encode every image
  std::vector<vision::EncoderResult> encoded;
  for (size_t i = 0; i < request.images.size(); ++i) {
    const std::string name = i < request.image_names.size() ? request.image_names[i] : "image " + std::to_string(i + 1);
    auto t0 = Clock::now();
    const vision::RgbImage rgb = vision::decode_image(request.images[i], name, m.params.image_limits);
    t.decode_ms += ms_since(t0);
    t0 = Clock::now();
    const vision::Image input = vision::preprocess(rgb, m.vision.preprocess_recipe());
    t.preprocess_ms += ms_since(t0);
    t0 = Clock::now();
    encoded.push_back(m.vision.encode(input, needs, {.threads = m.threads}));
    t.encode_ms += ms_since(t0);
  }

  // 2. budgets: per image, or a total split in proportion to what the method would keep from each
  std::vector<Budget> budgets(encoded.size(), request.budget);
  if (request.scope == BudgetScope::Total && request.budget.kind != Budget::Kind::All && !encoded.empty()) {
    std::vector<int64_t> would_keep;
    int64_t all_patches = 0;
    for (const auto& e : encoded) all_patches += e.info.grid.size();
    for (const auto& e : encoded) {
      const BudgetUse use = reducer->info().budget_use;
      would_keep.push_back(use == BudgetUse::Cap || use == BudgetUse::Ignored
                               ? reducer->reduce(e.view(), Budget::all()).rows()
                               : e.info.grid.size());
    }
    const int64_t total = as_request_step([&] { return request.budget.resolve(all_patches); });
    const auto shares = as_request_step([&] { return split_budget(total, would_keep); });
    for (size_t i = 0; i < budgets.size(); ++i) budgets[i] = Budget::tokens(shares[i]);
  }

  // 3. reduce, then project only what is kept
  std::vector<llm::Chunk> image_chunks;
  for (size_t i = 0; i < encoded.size(); ++i) {
    auto t0 = Clock::now();
    Reduction r = as_request_step([&] { return reducer->reduce(encoded[i].view(), budgets[i]); });
    t.reduce_ms += ms_since(t0);
    t0 = Clock::now();
    std::vector<float> embeddings = m.vision.project({r.tokens, r.rows(), r.dim}, m.threads);
    t.project_ms += ms_since(t0);
    ImageReport report;
    report.tokens_in = encoded[i].info.grid.size();
    report.tokens_kept = r.rows();
    report.budget = budgets[i].kind == Budget::Kind::All ? 0 : budgets[i].resolve(report.tokens_in);
    image_chunks.push_back(llm::Chunk::from_embeddings(std::move(embeddings), r.rows()));
    r.tokens.clear();
    r.tokens.shrink_to_fit();
    report.reduction = std::move(r);
    result.tokens_in += report.tokens_in;
    result.tokens_kept += report.tokens_kept;
    result.images.push_back(std::move(report));
  }
  encoded.clear();

  // 4. the LLaVA-1.5 prompt around the image embeddings, then generation
  const std::vector<llm::Chunk> prompt =
      as_request_step([&] { return llm::llava15_prompt(request.prompt, std::move(image_chunks)); });
  const double before_llm_ms = ms_since(t_start);
  const llm::GenerationResult gen = m.session.generate(prompt, request.sampling, on_piece);
  t.prefill_ms = gen.prefill_ms;
  t.ttft_ms = before_llm_ms + gen.ttft_ms;
  t.decode_tok_s = gen.decode_tok_s;
  t.total_ms = ms_since(t_start);
  result.answer = gen.text;
  result.method = reducer->info().name;
  result.budget = request.budget.to_string() + (request.scope == BudgetScope::Total ? " total" : "");
  result.n_prompt_tokens = gen.n_prompt_tokens;
  result.n_generated = gen.n_generated;
  result.kv_bytes = gen.kv_bytes;
  result.stop = gen.stop;
  return result;
}

}  // namespace vtprune::pipeline
