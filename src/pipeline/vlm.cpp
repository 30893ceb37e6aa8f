#include "vtprune/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

#include "vtprune/devices.h"
#include "vtprune/embedding_cache.h"
#include "vtprune/gguf_file.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/text.h"

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

namespace {

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

// The family of the vision file, and which encoder serves it.
struct VisionChoice {
  const family::Family* family = nullptr;
  family::Encoder encoder = family::Encoder::Own;
};

VisionChoice choose_vision(const VlmParams& p) {
  if (p.mmproj_path.empty() == p.vision_tower_path.empty()) {
    throw Error("give exactly one vision model: an mmproj GGUF or a Hugging Face CLIP vision tower");
  }
  VisionChoice c;
  if (!p.vision_tower_path.empty()) {  // a Hugging Face CLIP tower: LLaVA-1.5, vtprune's graph
    c.family = &family::by_name("llava-1.5");
  } else {
    c.family = &family::detect(io::GgufFile(p.mmproj_path, "mmproj"));
  }
  c.encoder = p.encoder == "auto" ? c.family->encoder : family::parse_encoder(p.encoder);
  if (c.encoder == family::Encoder::Own && c.family->encoder != family::Encoder::Own) {
    throw InputError("vtprune's own graph serves LLaVA-1.5 and LLaVA-NeXT files only; " + c.family->name + " runs through libmtmd");
  }
  if (p.anyres_layout != "spatial" && p.anyres_layout != "spatial_unpad" && p.anyres_layout != "mtmd") {
    throw InputError("unknown AnyRes layout '" + p.anyres_layout + "' (spatial | spatial_unpad | mtmd)");
  }
  if (c.encoder == family::Encoder::Mtmd && !c.family->check_file) {
    throw InputError(c.family->name + " files run on vtprune's own graph (llama.cpp's LLaVA graph puts CLS last and "
                     "runs one layer short, #25814 / #25817); --mtmd-compat reproduces llama.cpp's graph bit for bit");
  }
  if (p.mmproj.mtmd_compat && c.encoder != family::Encoder::Own) {
    throw InputError("--mtmd-compat applies to vtprune's own LLaVA-1.5 graph only");
  }
  return c;
}

// The device of vtprune's own graphs (the LLaVA ViT, the projector, CLIP's text tower): --mmproj-offload's, as
// for libmtmd's encoder.
std::string own_graph_device(const VlmParams& p) { return p.vision_gpu ? "gpu" : "cpu"; }

vision::VisionModel load_own_vision(const VlmParams& p) {
  // The RPC servers join ggml's devices before the device is chosen (the LLM's session would register them
  // later): in a build without a GPU, "gpu" is then the first of them, as for libmtmd's encoder.
  if (!p.rpc_servers.empty()) add_rpc_servers(p.rpc_servers);
  if (!p.mmproj_path.empty()) {
    vision::MmprojOptions options = p.mmproj;
    options.device = own_graph_device(p);
    return vision::VisionModel::from_mmproj(p.mmproj_path, options);
  }
  vision::VisionModel tower =
      vision::VisionModel::from_safetensors_clip(p.vision_tower_path, {.device = own_graph_device(p), .projector = p.projector_path});
  if (tower.projector_dim() == 0) {
    throw Error(p.vision_tower_path + ": no LLaVA projector found; pass its safetensors file as the projector");
  }
  return tower;
}

// llama.cpp's -fa value as llama_flash_attn_type (-1 auto, 0 off, 1 on).
int flash_attn_type(const std::string& value) {
  if (value == "auto") return -1;
  if (value == "off") return 0;
  if (value == "on") return 1;
  throw InputError("--flash-attn '" + value + "': expected on, off or auto");
}

llm::SessionParams session_params(const VlmParams& p) {
  return llm::SessionParams{.n_ctx = p.n_ctx, .threads = p.threads, .verbose = p.verbose, .n_gpu_layers = p.n_gpu_layers,
                           .rpc_servers = p.rpc_servers, .flash_attn = flash_attn_type(p.flash_attn)};
}

// The user-facing image marker of a question, in llama.cpp's form for mtmd_tokenize: <image> becomes
// mtmd's media marker; without markers, one per image goes first, as llama-mtmd-cli does.
std::string with_media_markers(std::string question, size_t n_images) {
  const std::string marker = vision::MtmdEncoder::marker();
  size_t markers = 0;
  for (size_t at = question.find(llm::kImageMarker); at != std::string::npos;
       at = question.find(llm::kImageMarker, at + marker.size())) {
    question.replace(at, llm::kImageMarker.size(), marker);
    ++markers;
  }
  if (markers == 0) {
    for (size_t i = 0; i < n_images; ++i) question = marker + question;
  }
  return question;
}

}  // namespace

// CLIP's text tower (CDPruner relevance=clip), shared by the pipelines of one server: its ggml forward is not
// reentrant, so calls are serialised (a question's text_embeds cost a few ms; each image's image_embeds less).
struct SharedClipText {
  text::ClipTextModel model;
  std::mutex mutex;
};

std::shared_ptr<SharedClipText> load_clip_text(const VlmParams& p) {
  if (p.clip_text_path.empty()) return nullptr;
  auto clip = std::make_shared<SharedClipText>(text::ClipTextModel::load(p.clip_text_path, own_graph_device(p)));
  if (!clip->model.has_tokenizer() || !clip->model.has_image_projection()) {
    throw InputError("--clip-text " + p.clip_text_path + ": CDPruner's relevance needs CLIP's tokenizer (vocab.json + merges.txt)" +
                     " and its image side (vision_model.post_layernorm + visual_projection); this checkpoint lacks " +
                     (clip->model.has_tokenizer() ? "the image side" : "the tokenizer files"));
  }
  return clip;
}

struct Vlm::Impl {
  VlmParams params;
  VisionChoice choice;
  std::optional<vision::VisionModel> own;       // LLaVA-1.5: vtprune's graph
  llm::Session session;
  std::unique_ptr<vision::MtmdEncoder> mtmd;    // every other family: libmtmd (needs the loaded LLM)
  std::shared_ptr<SharedClipText> clip_text;    // --clip-text, when given
  int threads;

  Impl(const VlmParams& p, VisionChoice c, std::optional<vision::VisionModel> v, llm::Session s, std::shared_ptr<SharedClipText> clip)
      : params(p), choice(c), own(std::move(v)), session(std::move(s)), clip_text(std::move(clip)), threads(resolve_threads(p.threads)) {
    if (choice.encoder == family::Encoder::Mtmd) make_mtmd();
  }

  explicit Impl(const VlmParams& p)
      : params(p),
        choice(choose_vision(p)),
        own(choice.encoder == family::Encoder::Own ? std::optional<vision::VisionModel>(load_own_vision(p)) : std::nullopt),
        session(p.llm_path, session_params(p)),
        clip_text(load_clip_text(p)),
        threads(resolve_threads(p.threads)) {
    if (own && own->projector_dim() != session.n_embd_inp()) {
      throw Error("the projector in " + (p.mmproj_path.empty() ? p.vision_tower_path : p.mmproj_path) + " outputs " + std::to_string(own->projector_dim()) +
                  "-wide embeddings but " + p.llm_path + " expects " + std::to_string(session.n_embd_inp()) +
                  ": the two files do not belong together");
    }
    if (own && choice.family->tiling == family::Tiling::AnyRes && p.anyres_layout == "spatial_unpad" &&
        static_cast<int>(own->image_newline().size()) != own->projector_dim()) {
      throw InputError("--anyres-layout spatial_unpad needs the mmproj's v.image_newline (LLaVA-NeXT's row separator); " +
                       p.mmproj_path + " has none");
    }
    if (choice.encoder == family::Encoder::Mtmd) make_mtmd();
  }

  void make_mtmd() {
    mtmd = std::make_unique<vision::MtmdEncoder>(
        params.mmproj_path, *choice.family, session.llama_model_handle(),
        vision::MtmdOptions{.threads = threads, .use_gpu = params.vision_gpu, .image_min_tokens = params.image_min_tokens,
                            .image_max_tokens = params.image_max_tokens, .verbose = params.verbose,
                            .flash_attn = flash_attn_type(params.flash_attn)});
    if (mtmd->projector_dim() != session.n_embd_inp()) {
      throw Error("the projector in " + params.mmproj_path + " outputs " + std::to_string(mtmd->projector_dim()) +
                  "-wide embeddings but " + params.llm_path + " expects " + std::to_string(session.n_embd_inp()) +
                  ": the two files do not belong together");
    }
  }

  EncoderInfo encoder_info() const { return own ? own->info() : mtmd->info(); }

  // relevance=clip compares CLIP's text_embeds of the question with visual_projection(post_layernorm(the patch
  // features LLaVA projects)): it needs the text tower and a vision tower whose features are CLIP's.
  void check_clip_relevance(const std::string& method) const {
    if (!clip_text) {
      throw InputError(method + " with relevance=clip (its official form) needs CLIP's text tower: give --clip-text DIR (a Hugging Face " +
                       "CLIP folder with model.safetensors, vocab.json and merges.txt, e.g. openai/clip-vit-large-patch14-336), " +
                       "or choose --opt relevance=llm (the LLM's own token embeddings) or relevance=none");
    }
    if (!own) {
      throw InputError(method + " with relevance=clip needs the CLIP patch features before the projector; libmtmd (" + choice.family->name +
                       ") hands back only the projected tokens: use --opt relevance=llm");
    }
    if (own->dim() != clip_text->model.vision_width()) {
      throw InputError(method + " with relevance=clip: the vision tower's features are " + std::to_string(own->dim()) +
                       " wide but the CLIP checkpoint in " + params.clip_text_path + " projects " +
                       std::to_string(clip_text->model.vision_width()) + "-wide ones: the two do not belong together");
    }
  }
};

Vlm::Vlm(const VlmParams& params) : impl_(std::make_unique<Impl>(params)) {}
Vlm::Vlm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Vlm Vlm::share() const {
  const Impl& m = *impl_;
  // libmtmd contexts are not shareable: each pipeline loads its own copy of the mmproj (the LLM is shared).
  return Vlm(std::make_unique<Impl>(m.params, m.choice, m.own ? std::optional<vision::VisionModel>(m.own->share()) : std::nullopt,
                                    m.session.share(), m.clip_text));
}
Vlm::~Vlm() = default;
Vlm::Vlm(Vlm&&) noexcept = default;
Vlm& Vlm::operator=(Vlm&&) noexcept = default;

const family::Family& Vlm::family() const { return *impl_->choice.family; }
family::Encoder Vlm::encoder() const { return impl_->choice.encoder; }
EncoderInfo Vlm::encoder_info() const { return impl_->encoder_info(); }
const vision::VisionModel& Vlm::vision_model() const {
  if (!impl_->own) throw Error("the " + family().name + " vision file is served by libmtmd, not vtprune's own graph");
  return *impl_->own;
}
llm::Session& Vlm::session() { return impl_->session; }

std::vector<std::string> Vlm::method_options(const std::string& method, const std::vector<std::string>& options) const {
  return family::method_options(family(), method, options, impl_->encoder_info().num_layers);
}

namespace {

ImageReport report_of(const vision::EncoderResult& e, const Budget& budget, Reduction r) {
  ImageReport report;
  report.grid = e.info.grid;
  report.tokens_in = e.info.grid.size();
  report.tokens_kept = r.rows();
  report.budget = budget.kind == Budget::Kind::All ? 0 : budget.resolve(report.tokens_in);
  r.tokens.clear();
  r.tokens.shrink_to_fit();
  report.reduction = std::move(r);
  return report;
}

// A question without image markers, the text a prompt-conditioned method (CDPruner) reads.
std::string question_text(std::string question) {
  for (size_t at; (at = question.find(llm::kImageMarker)) != std::string::npos;) question.erase(at, llm::kImageMarker.size());
  return question;
}

int count_markers(std::string_view text) {
  int n = 0;
  for (size_t at = text.find(llm::kImageMarker); at != std::string_view::npos; at = text.find(llm::kImageMarker, at + 1)) ++n;
  return n;
}

bool all_finite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// What Reducer::reduce checks of the encoder's side before it runs a method, checked here first: a shape that does
// not match, a missing tap or a non-finite value is a fault of the encoder (an Error, a 5xx for a server), which
// reduce() could not tell from a fault of the request. Whatever reduce() refuses after this passes is about what
// the request asked for (a budget the method's options cannot meet).
void check_encoder_output(const EncoderOutput& out, const Needs& needs, const std::string& method) {
  const std::string who = "the encoder's output for " + method + ": ";
  try {
    out.validate();
  } catch (const Error& e) {
    throw Error(who + e.what());
  }
  const auto require = [&](bool wanted, std::span<const float> values, const std::string& what) {
    if (!wanted) return;
    if (values.empty()) throw Error(who + what + " missing");
    if (!all_finite(values)) throw Error(who + what + " holds NaN or infinite values (an encoder fault)");
  };
  require(needs.features, out.features.data, "patch features");
  require(needs.cls_features, out.cls_features, "CLS features");
  require(needs.projected, out.projected.data, "projected embeddings");
  require(needs.prompt_embeddings, out.prompt_embeddings.data, "prompt embeddings");
  require(needs.text_embeds, out.text_embeds.data, "CLIP text embeddings");
  require(needs.image_embeds, out.image_embeds.data, "CLIP image embeddings");
  for (const TapRequest& tap : needs.taps) {
    const LayerTap* found = out.find_tap(tap.layer);
    const std::string layer = "layer " + std::to_string(tap.layer) + " ";
    if (found == nullptr) throw Error(who + "the attention tap of " + layer + "is missing");
    require(tap.received, found->received, layer + "received attention");
    require(tap.cls_attention, found->cls_attention, layer + "CLS attention");
    require(tap.attention, found->attention, layer + "attention maps");
    require(tap.keys, found->keys.data, layer + "keys");
    require(tap.cls_query, found->cls_query, layer + "CLS query");
  }
}

// Runs the method on a checked encoder output (see check_encoder_output).
Reduction reduce_checked(const Reducer& reducer, const EncoderOutput& out, const Needs& needs, const Budget& budget) {
  check_encoder_output(out, needs, reducer.info().name);
  return as_request_step([&] { return reducer.reduce(out, budget); });
}

std::string join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : std::string(1, sep)) + p;
  return out;
}

// Rough tokens per message (its text, its images' rows, a few for the role and separators), to name the message
// at which a conversation outgrows the context.
size_t overflowing_message(llm::Session& session, std::span<const llm::ChatMessage> messages,
                           const std::vector<int64_t>& image_rows, int64_t system_tokens, int64_t n_ctx) {
  int64_t used = system_tokens;
  size_t image = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    used += static_cast<int64_t>(session.tokenize(question_text(messages[i].content), false).size()) + 4;
    for (int k = count_markers(messages[i].content); k > 0 && image < image_rows.size(); --k) used += image_rows[image++];
    if (used > n_ctx) return i;
  }
  return messages.empty() ? 0 : messages.size() - 1;
}

// LLaVA-NeXT: one chunk per image from its tiles' chunks (one per unit, in unit order), in the chosen layout:
// "spatial" / "spatial_unpad" (the overview's rows, then the crops' in family::anyres_spatial_order /
// anyres_unpad_order) or "mtmd" (each crop's rows in turn, then the overview's, as libmtmd places them).
std::vector<llm::Chunk> join_anyres_tiles(std::vector<llm::Chunk> unit_rows, const std::vector<ImageReport>& reports,
                                          const std::vector<vision::AnyResTiles>& tiles, const std::string& layout,
                                          std::span<const float> newline) {
  std::vector<llm::Chunk> images;
  for (size_t first = 0; first < unit_rows.size();) {
    const size_t image = static_cast<size_t>(reports[first].image);
    const size_t n_tiles = tiles[image].tiles.size();
    if (first + n_tiles > unit_rows.size()) throw Error("AnyRes: image " + std::to_string(image + 1) + " lacks tiles");
    const int64_t width = unit_rows[first].n_rows > 0 ? static_cast<int64_t>(unit_rows[first].embeddings.size()) / unit_rows[first].n_rows : 0;
    // the crops' rows, numbered in crop order (where each one is), and the order they enter in
    std::vector<int64_t> order;
    std::vector<const float*> crop_row;
    std::vector<std::vector<int32_t>> kept;
    std::vector<int64_t> rows;
    for (size_t k = 1; k < n_tiles; ++k) {
      const Reduction& r = reports[first + k].reduction;
      std::vector<int32_t> patches;
      for (int32_t s : r.kept) patches.push_back(r.sequence_indices ? s - 1 : s);  // sequence index 0 = CLS: no patch
      kept.push_back(std::move(patches));
      const llm::Chunk& c = unit_rows[first + k];
      rows.push_back(c.n_rows);
      for (int64_t j = 0; j < c.n_rows; ++j) crop_row.push_back(c.embeddings.data() + j * width);
    }
    const auto crop_rows = static_cast<int64_t>(crop_row.size());
    const int side = reports[first].grid.w;
    if (layout == "spatial") {
      order = family::anyres_spatial_order(kept, rows, tiles[image].columns, side);
    } else if (layout == "spatial_unpad") {
      order = family::anyres_unpad_order(kept, rows, tiles[image].columns, side, tiles[image].image_width, tiles[image].image_height);
      if (static_cast<int64_t>(newline.size()) != width) {
        throw Error("AnyRes: v.image_newline has " + std::to_string(newline.size()) + " values for " + std::to_string(width) +
                    "-wide rows");
      }
    } else {
      for (int64_t j = 0; j < crop_rows; ++j) order.push_back(j);
    }
    std::vector<float> placed;  // the crops' rows in the layout's order (spatial_unpad: padding rows out, newlines in)
    placed.reserve(order.size() * static_cast<size_t>(width));
    for (int64_t j : order) {
      if (j == family::kAnyResNewline) {
        placed.insert(placed.end(), newline.begin(), newline.end());
      } else {
        placed.insert(placed.end(), crop_row[static_cast<size_t>(j)], crop_row[static_cast<size_t>(j)] + width);
      }
    }
    llm::Chunk joined = std::move(unit_rows[first]);
    std::string key = joined.key;
    // LLaVA-NeXT's code puts the overview (its base feature) first; libmtmd puts it after the crops
    joined.embeddings.insert(layout == "mtmd" ? joined.embeddings.begin() : joined.embeddings.end(), placed.begin(), placed.end());
    joined.n_rows += static_cast<int64_t>(order.size());
    for (size_t k = 1; k < n_tiles; ++k) key += "+" + unit_rows[first + k].key;
    joined.key = joined.key.empty() ? std::string() : key + "|layout=" + layout;
    images.push_back(std::move(joined));
    first += n_tiles;
  }
  return images;
}

}  // namespace

Result Vlm::run(const Request& request, const llm::PieceCallback& on_piece) {
  const auto t_start = Clock::now();
  Impl& m = *impl_;
  Result result;
  Timings& t = result.timings;
  const bool llava = family().prompt == family::Prompt::Llava15;
  const size_t n_images = request.images.size();

  // 1. What the request asks for, resolved before any work (every failure here is the request's): the method with
  //    the family's default options, what it needs from the encoder, the conversation's shape.
  const std::vector<std::string> options = as_request_step([&] { return method_options(request.method, request.options); });
  const auto reducer = as_request_step([&] { return make_reducer(request.method, options); });
  const Needs needs = as_request_step([&] {
    Needs wanted = reducer->needs(m.encoder_info());
    if (m.own) m.own->check(wanted);  // e.g. PruMerge's last layer, which an mmproj file does not store
    if (m.mtmd) m.mtmd->check(wanted);
    if (wanted.text_embeds || wanted.image_embeds) m.check_clip_relevance(request.method);
    return wanted;
  });
  const bool conversation = !request.messages.empty();
  const std::vector<llm::ChatMessage> messages =
      conversation ? request.messages : std::vector<llm::ChatMessage>{{"user", request.prompt}};
  // Which message each image belongs to (in marker order).
  std::vector<size_t> image_message;
  if (conversation) {
    for (size_t i = 0; i < messages.size(); ++i) {
      const int markers = count_markers(messages[i].content);
      if (markers > 0 && messages[i].role != "user") {
        throw llm::MessageError(i, "content", "invalid_image_position",
                                "messages[" + std::to_string(i) + "].content: images may only be in user messages, not in a " +
                                    messages[i].role + " message");
      }
      image_message.insert(image_message.end(), static_cast<size_t>(markers), i);
    }
    if (image_message.size() != n_images) {
      throw InputError("the conversation has " + std::to_string(image_message.size()) + " " + std::string(llm::kImageMarker) +
                       " markers but " + std::to_string(n_images) + " images were given");
    }
  } else {
    image_message.assign(n_images, 0);
  }

  // Identities of the images and of what is done to them (EmbeddingCache keys, KV prefix reuse).
  const bool keyed = request.cache != nullptr || request.reuse_prefix;
  std::vector<std::string> digests(n_images);
  if (keyed) {
    for (size_t i = 0; i < n_images; ++i) {
      digests[i] = request.image_digests.size() == n_images ? request.image_digests[i] : digest(request.images[i]);
    }
  }
  const std::string model_key = [&] {
    std::string k = family().name + "|" + std::string(family::to_string(encoder())) + "|" + m.params.mmproj_path + "|" +
                    m.params.vision_tower_path + "|" + m.params.projector_path;
    k += "|compat=" + std::to_string(m.params.mmproj.mtmd_compat) + "|f16att=" + std::to_string(m.params.mmproj.f16_attention);
    k += "|clip=" + m.params.clip_text_path;
    k += "|min=" + std::to_string(m.params.image_min_tokens) + "|max=" + std::to_string(m.params.image_max_tokens);
    k += "|fa=" + m.params.flash_attn;
    return k;
  }();
  const std::string method_key = reducer->info().name + "|" + join(reducer->options().effective(), ',');

  // Prompt-conditioned methods (CDPruner relevance=llm) read the question each image was asked with: the text of
  // its own message (the last user message's when that one has no text), through the LLM's token embeddings.
  std::vector<std::string> questions(n_images);
  std::map<std::string, std::vector<float>> question_rows;
  std::map<std::string, text::Embeddings> question_clip;  // relevance=clip: CLIP text_embeds per question
  const bool reads_question = needs.prompt_embeddings || needs.text_embeds;
  if (reads_question) {
    std::string last_user;
    for (const auto& msg : messages) {
      if (msg.role == "user") last_user = question_text(msg.content);
    }
    for (size_t i = 0; i < n_images; ++i) {
      std::string q = question_text(messages[image_message[i]].content);
      if (q.find_first_not_of(" \t\n") == std::string::npos) q = last_user;
      questions[i] = q;
      if (q.find_first_not_of(" \t\n") == std::string::npos) {
        throw InputError("method " + request.method + " reads the question, but it is empty");
      }
      if (needs.prompt_embeddings && !question_rows.count(q)) {
        const std::vector<int32_t> tokens = m.session.tokenize(q, /*add_special=*/false);
        if (tokens.empty()) throw InputError("method " + request.method + " reads the question, but it is empty");
        question_rows[q] = m.session.embed_tokens(tokens);
      }
      if (needs.text_embeds && !question_clip.count(q)) {
        const auto t0 = Clock::now();
        std::lock_guard lock(m.clip_text->mutex);
        question_clip.emplace(q, m.clip_text->model.text_embeds(q, m.threads));
        t.encode_ms += ms_since(t0);
      }
    }
  }
  // Units: what one encode produces and one reduction works on. An image, or (libmtmd families that slice an
  // image into an overview and tiles, each its own chunk: Idefics3 / SmolVLM) one tile of it.
  std::vector<size_t> unit_image;  // unit -> its image
  std::vector<int> unit_tile;      // unit -> its tile within the image
  std::vector<text::Embeddings> clip_image;  // relevance=clip: CLIP image_embeds per unit
  const auto view_of = [&](const vision::EncoderResult& e, size_t unit) {
    const size_t image = unit_image[unit];
    EncoderOutput out = e.view();
    if (needs.prompt_embeddings) {
      const std::vector<float>& rows = question_rows.at(questions[image]);
      out.prompt_embeddings = MatrixView{rows, static_cast<int64_t>(rows.size()) / m.session.n_embd_inp(), m.session.n_embd_inp()};
    }
    if (needs.text_embeds) out.text_embeds = question_clip.at(questions[image]).view();
    if (needs.image_embeds) {
      if (clip_image[unit].rows == 0) {
        const auto t0 = Clock::now();
        std::lock_guard lock(m.clip_text->mutex);
        clip_image[unit] = m.clip_text->model.image_embeds(out.features, m.threads);
        t.encode_ms += ms_since(t0);
      }
      out.image_embeds = clip_image[unit].view();
    }
    return out;
  };

  // 2. Images: decoded when something needs their pixels (libmtmd's tokenizer always does; vtprune's encoder only
  //    on a cache miss), encoded at most once.
  std::vector<std::optional<vision::RgbImage>> pixels(n_images);
  const auto decoded = [&](size_t i) -> const vision::RgbImage& {
    if (!pixels[i]) {
      const std::string name = i < request.image_names.size() ? request.image_names[i] : "image " + std::to_string(i + 1);
      const auto t0 = Clock::now();
      pixels[i] = vision::decode_image(request.images[i], name, m.params.image_limits);
      t.decode_ms += ms_since(t0);
    }
    return *pixels[i];
  };
  std::string template_text;
  std::optional<vision::MtmdPrompt> mp;
  std::vector<size_t> unit_chunk;  // libmtmd: the prompt chunk of each unit
  std::vector<int64_t> tokens_in;  // per unit
  const bool anyres = family().tiling == family::Tiling::AnyRes;
  std::vector<vision::AnyResTiles> tiles(anyres ? n_images : 0);  // LLaVA-NeXT: each image's overview + crops
  if (m.own) {
    for (size_t i = 0; i < n_images; ++i) {
      int n_tiles = 1;
      if (anyres) {
        const vision::Preprocess& recipe = m.own->preprocess_recipe();
        const vision::RgbImage& rgb = decoded(i);
        const auto t0 = Clock::now();
        tiles[i] = as_request_step([&] { return vision::anyres_tiles(rgb, recipe.anyres_pinpoints, recipe.image_size); });
        t.preprocess_ms += ms_since(t0);
        n_tiles = static_cast<int>(tiles[i].tiles.size());
      }
      for (int k = 0; k < n_tiles; ++k) {
        unit_image.push_back(i);
        unit_tile.push_back(k);
        tokens_in.push_back(m.own->info().grid.size());
      }
    }
  } else {
    // the file's chat template, then libmtmd's tokenizer (its own resize for the family)
    std::vector<vision::RgbImage> rgb;
    for (size_t i = 0; i < n_images; ++i) rgb.push_back(decoded(i));
    const auto t0 = Clock::now();
    std::vector<llm::ChatMessage> marked = messages;
    for (auto& msg : marked) {
      msg.content = conversation ? with_media_markers(msg.content, 0) : with_media_markers(msg.content, n_images);
    }
    template_text = as_request_step([&] { return llm::render_chat(m.session.chat_template(), marked); });
    mp = as_request_step([&] { return m.mtmd->tokenize(template_text, rgb); });
    t.preprocess_ms += ms_since(t0);
    for (size_t c = 0; c < mp->chunks().size(); ++c) {
      const vision::MtmdChunk& chunk = mp->chunks()[c];
      if (!chunk.image) continue;
      unit_image.push_back(static_cast<size_t>(chunk.image_index));
      unit_tile.push_back(chunk.tile);
      tokens_in.push_back(chunk.n_tokens);
      unit_chunk.push_back(c);
    }
    if (n_images > 0 && (unit_image.empty() || unit_image.back() + 1 != n_images)) {
      throw Error("libmtmd split the prompt into " + std::to_string(unit_image.size()) + " image chunks that do not cover the " +
                  std::to_string(n_images) + " images");
    }
  }
  const size_t n_units = unit_image.size();
  clip_image.resize(n_units);

  std::vector<std::optional<vision::EncoderResult>> encoded(n_units);
  const auto encode = [&](size_t i) -> const vision::EncoderResult& {
    if (encoded[i]) return *encoded[i];
    if (m.own) {
      auto t0 = Clock::now();
      const vision::Image input =
          anyres ? vision::normalize(tiles[unit_image[i]].tiles[static_cast<size_t>(unit_tile[i])], m.own->preprocess_recipe())
                 : vision::preprocess(decoded(unit_image[i]), m.own->preprocess_recipe());
      t.preprocess_ms += ms_since(t0);
      t0 = Clock::now();
      encoded[i] = m.own->encode(input, needs, {.threads = m.threads});
      t.encode_ms += ms_since(t0);
    } else {
      const auto t0 = Clock::now();
      encoded[i] = m.mtmd->encode(*mp, unit_chunk[i], needs);
      t.encode_ms += ms_since(t0);
    }
    return *encoded[i];
  };
  const auto image_key = [&](size_t u) {
    const size_t i = unit_image[u];
    std::string k = model_key + "|" + digests[i] + "|tile=" + std::to_string(unit_tile[u]) + "|" + method_key;
    if (reads_question) k += "|q=" + digest(std::span(reinterpret_cast<const uint8_t*>(questions[i].data()), questions[i].size()));
    return k;
  };

  // 3. Budgets: per image (an image of several tiles splits its budget over them in proportion to their tokens,
  //    largest remainder first: evenly for equal tiles, as HiPrune's LLaVA-NeXT code splits over crops), or a total
  //    split in proportion to what the method would keep of each unit.
  std::vector<Budget> budgets(n_units, request.budget);
  if (request.budget.kind != Budget::Kind::All) {
    if (request.scope == BudgetScope::PerImage) {
      for (size_t first = 0; first < n_units;) {
        size_t end = first;
        while (end < n_units && unit_image[end] == unit_image[first]) ++end;
        try {
          if (end - first == 1) {
            budgets[first] = Budget::tokens(request.budget.resolve(tokens_in[first]));
          } else {
            const std::vector<int64_t> tile_tokens(tokens_in.begin() + static_cast<ptrdiff_t>(first), tokens_in.begin() + static_cast<ptrdiff_t>(end));
            const int64_t image_budget = request.budget.resolve(std::accumulate(tile_tokens.begin(), tile_tokens.end(), int64_t{0}));
            const std::vector<int64_t> shares = split_budget(image_budget, tile_tokens);
            for (size_t u = first; u < end; ++u) budgets[u] = Budget::tokens(shares[u - first]);
          }
        } catch (const Error& e) {
          throw InputError(reducer->info().name + ", image " + std::to_string(unit_image[first] + 1) + ": " + e.what());
        }
        first = end;
      }
    } else if (n_units > 0) {
      const BudgetUse use = reducer->info().budget_use;
      std::vector<int64_t> would_keep;
      for (size_t i = 0; i < n_units; ++i) {
        if (use != BudgetUse::Cap && use != BudgetUse::Ignored) {
          would_keep.push_back(tokens_in[i]);
          continue;
        }
        const std::string key = image_key(i) + "|would_keep";
        std::optional<int64_t> count = request.cache ? request.cache->find_count(key) : std::nullopt;
        if (!count) {
          const auto t0 = Clock::now();
          count = reduce_checked(*reducer, view_of(encode(i), i), needs, Budget::all()).rows();
          t.reduce_ms += ms_since(t0);
          if (request.cache) request.cache->insert_count(key, *count);
        }
        would_keep.push_back(*count);
      }
      const int64_t all_tokens = std::accumulate(tokens_in.begin(), tokens_in.end(), int64_t{0});
      const int64_t total = as_request_step([&] { return request.budget.resolve(all_tokens); });
      const auto shares = as_request_step([&] { return split_budget(total, would_keep); });
      for (size_t i = 0; i < n_units; ++i) budgets[i] = Budget::tokens(shares[i]);
    }
  }

  // 4. Every unit's rows: from the cache, or encoded, reduced (on a checked encoder output) and projected.
  std::vector<llm::Chunk> image_rows;
  for (size_t i = 0; i < n_units; ++i) {
    const std::string key = keyed ? image_key(i) + "|budget=" + budgets[i].to_string() : std::string();
    if (request.cache != nullptr) {
      if (const auto hit = request.cache->find(key)) {
        image_rows.push_back(hit->chunk);
        result.images.push_back(hit->report);
        result.images.back().cached = true;
        result.images.back().image = static_cast<int>(unit_image[i]);  // the same bytes may sit elsewhere in this request
        result.images.back().tile = unit_tile[i];
        continue;
      }
    }
    const vision::EncoderResult& e = encode(i);
    auto t0 = Clock::now();
    Reduction r = reduce_checked(*reducer, view_of(e, i), needs, budgets[i]);
    t.reduce_ms += ms_since(t0);
    llm::Chunk chunk;
    if (m.own) {
      t0 = Clock::now();
      std::vector<float> embeddings = m.own->project({r.tokens, r.rows(), r.dim}, m.threads);
      t.project_ms += ms_since(t0);
      chunk = llm::Chunk::from_embeddings(std::move(embeddings), r.rows());
    } else {
      const vision::MtmdChunk& mc = mp->chunks()[unit_chunk[i]];
      if (r.kept.size() != static_cast<size_t>(r.rows())) {
        throw Error("method " + r.method + " output " + std::to_string(r.rows()) + " rows but " +
                    std::to_string(r.kept.size()) + " of them have a source token: rows without one cannot be "
                    "placed on " + family().name + "'s position grid");
      }
      if (m.mtmd->uses_mrope()) {
        std::vector<int32_t> ys, xs;
        for (int32_t k : r.kept) {
          ys.push_back(k / mc.grid_w);
          xs.push_back(k % mc.grid_w);
        }
        chunk = llm::Chunk::from_grid_embeddings(r.tokens, r.rows(), std::move(ys), std::move(xs), mc.n_pos);
      } else {
        chunk = llm::Chunk::from_embeddings(r.tokens, r.rows());
      }
      chunk.non_causal = family().bidirectional_image;
    }
    chunk.key = key;
    ImageReport report = report_of(e, budgets[i], std::move(r));
    report.image = static_cast<int>(unit_image[i]);
    report.tile = unit_tile[i];
    if (request.cache != nullptr) request.cache->insert(key, {chunk, report});
    encoded[i].reset();  // done with its features and taps
    image_rows.push_back(std::move(chunk));
    result.images.push_back(std::move(report));
  }
  for (const ImageReport& im : result.images) {
    result.tokens_in += im.tokens_in;
    result.tokens_kept += im.tokens_kept;
  }
  if (anyres) {
    image_rows = join_anyres_tiles(std::move(image_rows), result.images, tiles, m.params.anyres_layout, m.own->image_newline());
  }

  // 5. The prompt: LLaVA-1.5's conversation around the image rows, or the file template's chunks with the images
  //    placed as the family decodes them.
  std::vector<llm::Chunk> prompt;
  if (m.own) {
    if (conversation) {
      prompt = llm::llava15_conversation(messages, std::move(image_rows), m.session.eos());
    } else {
      prompt = as_request_step([&] { return llm::llava15_prompt(request.prompt, std::move(image_rows)); });
    }
  } else {
    size_t next_image = 0;
    for (const vision::MtmdChunk& chunk : mp->chunks()) {
      if (chunk.image) {
        prompt.push_back(std::move(image_rows[next_image++]));
      } else {
        prompt.push_back(llm::Chunk::from_tokens(chunk.tokens));
      }
    }
  }
  if (conversation) {
    // A conversation longer than the context: name the message where it overflows.
    int64_t rows = 0;
    for (size_t c = 0; c < prompt.size(); ++c) {
      rows += prompt[c].kind == llm::Chunk::Kind::text ? static_cast<int64_t>(m.session.tokenize(prompt[c].text, c == 0).size())
                                                       : prompt[c].n_rows;
    }
    const int64_t n_ctx = m.session.n_ctx();
    if (rows > n_ctx) {
      std::vector<int64_t> kept_rows(n_images, 0);  // per image, all its tiles
      for (const ImageReport& im : result.images) kept_rows[static_cast<size_t>(im.image)] += im.tokens_kept;
      const bool has_system = messages.front().role == "system" || messages.front().role == "developer";
      const int64_t system_tokens =
          llava && !has_system ? static_cast<int64_t>(m.session.tokenize(std::string(llm::kLlava15System), true).size()) : 0;
      const size_t at = overflowing_message(m.session, messages, kept_rows, system_tokens, n_ctx);
      throw llm::MessageError(at, "content", "context_length_exceeded",
                              "messages[" + std::to_string(at) + "].content: the conversation needs " + std::to_string(rows) +
                                  " tokens (" + std::to_string(result.tokens_kept) + " of them visual) but the context holds " +
                                  std::to_string(n_ctx) + "; it outgrows the context at this message: drop earlier turns or keep "
                                  "fewer visual tokens");
    }
  }

  // 6. Generation. LLaVA strips its answers (cli.py: outputs.strip()) before they join the conversation, so a
  //    conversation's answer starts at its first non-space character: sent back as the next turn's history, it
  //    renders (and tokenises) as LLaVA's own history would.
  const bool strip_leading = conversation && llava;
  bool started = !strip_leading;
  const auto strip = [&](std::string_view piece) {
    if (!started) {
      const size_t first = piece.find_first_not_of(" \t\n\r");
      if (first == std::string_view::npos) return std::string_view();
      started = true;
      piece.remove_prefix(first);
    }
    return piece;
  };
  llm::PieceCallback pieces;
  if (on_piece) {
    pieces = [&](std::string_view piece) {
      const std::string_view kept = strip(piece);
      if (!kept.empty()) on_piece(kept);
    };
  }
  const double before_llm_ms = ms_since(t_start);
  llm::GenerationResult gen = m.session.generate(prompt, request.sampling, pieces, request.reuse_prefix);
  t.prefill_ms = gen.prefill_ms;
  t.ttft_ms = before_llm_ms + gen.ttft_ms;
  t.decode_tok_s = gen.decode_tok_s;
  t.total_ms = ms_since(t_start);
  if (strip_leading) {
    const size_t first = gen.text.find_first_not_of(" \t\n\r");
    gen.text.erase(0, first == std::string::npos ? gen.text.size() : first);
  }
  result.answer = std::move(gen.text);
  result.method = reducer->info().name;
  result.budget = request.budget.to_string() + (request.scope == BudgetScope::Total ? " total" : "");
  result.n_prompt_tokens = gen.n_prompt_tokens;
  result.n_cached_tokens = gen.n_cached_tokens;
  result.n_generated = gen.n_generated;
  result.kv_bytes = gen.kv_bytes;
  result.stop = gen.stop;
  result.logprobs = std::move(gen.logprobs);
  return result;
}

}  // namespace vtprune::pipeline
