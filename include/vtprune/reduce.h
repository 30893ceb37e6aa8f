// vtprune reduction core: training-free visual-token reduction methods as pure functions.
//
// A reducer maps what a vision encoder produced (EncoderOutput: plain, non-owning views of floats) and a
// budget to a Reduction (which source tokens are kept, in output order, and the output vectors). It never
// sees ggml, llama, files or images, so other engines can embed it.
//
// Conventions (shared by every method, see docs in README "Methods"):
//  * Sequence layout: the CLS token (if any) first, then the N = h*w patches in row-major order.
//    Patch p is sequence position p + has_cls. Every method except VisionZip reports patch indices.
//  * Layer indices are 0-based over the encoder's layers; options accept Python-style negatives
//    (-1 = last layer) or "feature" (the layer whose output is `features`).
//  * Ties in every ranking are broken by the lower index first (see stable_top_k in reduce_common.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vtprune {

// Every error the core raises: bad input, bad option, impossible budget. The message names the method,
// the tensor or option and the shapes involved.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error caused by what was asked for (an undecodable image, an unknown method or option, an impossible
// budget, a prompt that does not fit the context) rather than by the models or the machine: a server
// answers it with a 4xx, any other Error with a 5xx.
class InputError : public Error {
 public:
  using Error::Error;
};

// A non-owning row-major [rows x cols] view of floats.
struct MatrixView {
  std::span<const float> data;
  int64_t rows = 0;
  int64_t cols = 0;

  bool empty() const { return data.empty(); }
  std::span<const float> row(int64_t r) const {
    return data.subspan(static_cast<size_t>(r * cols), static_cast<size_t>(cols));
  }
};

struct Grid {
  int h = 0;
  int w = 0;
  int64_t size() const { return int64_t{h} * w; }
};

// Statistics of one encoder layer ("tap"). Each field is empty unless a method asked for it (Needs).
// T = N + has_cls keys/queries in sequence layout.
struct LayerTap {
  int layer = -1;                        // absolute 0-based layer index
  std::span<const float> received;       // [T] attention each key receives, mean over heads and all T queries
  std::span<const float> cls_attention;  // [T] the CLS query's attention row, mean over heads
  std::span<const float> attention;      // [H x T x T] post-softmax maps (only when a method needs all of it)
  MatrixView keys;                       // [T x C] raw k_proj output (bias added, no head split, unscaled)
  std::span<const float> cls_query;      // [C] raw q_proj output of the CLS token
};

// Static facts about the encoder a method plans against (before anything is computed).
struct EncoderInfo {
  Grid grid;
  bool has_cls = false;
  int heads = 0;          // attention heads per layer
  int num_layers = 0;     // depth that layer indices refer to (24 for CLIP ViT-L/14, even if fewer are run)
  int feature_layer = -1; // absolute index of the layer whose output is `features` (22 for LLaVA-1.5)
  // Queries a received-attention score averages over: the ViT's sequence length (Qwen2.5-VL: 4 patches per
  // token, so 4N). 0 = seq_len(). Methods whose official code SUMS over queries scale by it.
  int64_t queries = 0;
};

// What an encoder hands a method. All views are non-owning: the encoder keeps the buffers alive.
struct EncoderOutput {
  EncoderInfo info;
  // [N x D] patch features (pre-projector), row-major patch order. May be empty for methods that only
  // select (indices without output vectors); every method that outputs vectors needs it.
  MatrixView features;
  std::span<const float> cls_features; // [D] CLS features of the same layer (when has_cls and asked for)
  MatrixView projected;                // [N x D_llm] post-projector embeddings (DivPrune), when asked for
  std::vector<LayerTap> taps;
  // Prompt-conditioned inputs (CDPruner). Filled by the caller that knows the prompt; empty otherwise.
  MatrixView image_embeds;       // [N x C] CLIP visual_projection(post_layernorm(patch features)), patch order
                                 // (text::ClipTextModel::image_embeds of the feature-layer patches)
  MatrixView text_embeds;        // [M x C] CLIP text_embeds of the instruction, one row per 77-token segment
                                 // (text::ClipTextModel::text_embeds)
  MatrixView prompt_embeddings;  // [P x D_llm] the LLM's input embeddings (token_embd rows) of the prompt's tokens

  int64_t num_patches() const { return info.grid.size(); }
  int64_t seq_len() const { return num_patches() + (info.has_cls ? 1 : 0); }
  int64_t queries() const { return info.queries > 0 ? info.queries : seq_len(); }
  const LayerTap* find_tap(int layer) const;
  // Throws Error naming `method` and the layer when the tap is missing.
  const LayerTap& tap(int layer, std::string_view method) const;
  // Checks every non-empty view against grid / has_cls / heads; throws Error naming the first mismatch.
  void validate() const;
};

// What a method asks the encoder to compute for one layer.
struct TapRequest {
  int layer = -1;
  bool received = false;
  bool cls_attention = false;
  bool attention = false;  // the full [H x T x T] maps: avoid, it is the expensive one
  bool keys = false;
  bool cls_query = false;
};

// Everything a method needs from the encoder; an encoder materialises only this.
struct Needs {
  std::vector<TapRequest> taps;  // at most one entry per layer
  bool features = false;         // the selection itself reads the patch features (not just gathers them)
  bool cls_features = false;
  bool projected = false;
  bool image_embeds = false;       // the caller fills EncoderOutput::image_embeds (CDPruner relevance=clip)
  bool text_embeds = false;        // ... text_embeds of the instruction (CDPruner relevance=clip)
  bool prompt_embeddings = false;  // ... prompt_embeddings (CDPruner relevance=llm)

  void add(const TapRequest& request);  // merges with an existing request for the same layer
  const TapRequest* find(int layer) const;
  void merge(const Needs& other);
};

// A token budget: all tokens, an absolute count, or a ratio of N.
struct Budget {
  enum class Kind { All, Count, Ratio };
  Kind kind = Kind::All;
  int64_t count = 0;
  double ratio = 1.0;

  static Budget all() { return {}; }
  static Budget tokens(int64_t n) { return {Kind::Count, n, 0.0}; }
  static Budget fraction(double r) { return {Kind::Ratio, 0, r}; }
  // "all", "64", "0.25", "25%". Throws Error on anything else.
  static Budget parse(std::string_view text);
  // Count of tokens out of n: a ratio rounds half to even (Python's round, as DivPrune's and HiPrune's Qwen
  // code do). Throws Error when the count is < 1 (a ratio that rounds to 0 included) or > n, or the ratio is
  // not in (0, 1].
  int64_t resolve(int64_t n) const;
  std::string to_string() const;
};

// How a method treats the budget.
enum class BudgetUse {
  Exact,    // outputs exactly the budget's count of tokens
  AtMost,   // outputs at most the budget (pooling to a grid)
  Cap,      // adaptive count, capped at the budget when one is given
  Ignored,  // adaptive or keep-all; the budget is ignored
};
std::string_view to_string(BudgetUse use);

// What an output row stands for (for explanation and visualisation).
enum class TokenRole : uint8_t {
  Kept,        // a plain kept token
  Anchor,      // HiPrune: object-layer anchor
  Buffer,      // HiPrune: cross neighbour of an anchor
  Register,    // HiPrune: deep-layer register
  Cls,         // VisionZip: the CLS token, output as a token
  Dominant,    // VisionZip: dominant token
  Contextual,  // VisionZip: contextual (merged) token
  Outlier,     // PruMerge: IQR outlier, merged with its neighbours
  Uniform,     // PruMerge+: uniformly sampled supplement, merged with its neighbours
  Pooled,      // pool / DFMR: average of a window
  Summary,     // PruMerge: attention-weighted sum of all pruned tokens (no single source)
};
std::string_view to_string(TokenRole role);

// The result of one method on one image.
struct Reduction {
  std::string method;
  int64_t source_tokens = 0;     // N (patches) the method chose from
  bool sequence_indices = false; // true: indices are sequence positions (0 = CLS); false: patch indices
  // Source index of every output row that stands for one source token, in output order. Rows without a
  // single source (PruMerge's summary token) come after these and have no entry. Pooled rows name the
  // first (top-left) patch of their window.
  std::vector<int32_t> kept;
  std::vector<TokenRole> roles;  // one per output row
  std::vector<float> tokens;     // [rows x dim] output vectors, pre-projector feature space
  int64_t dim = 0;
  // Per output row: the source indices merged into it (PruMerge neighbourhoods, VisionZip groups, pool
  // windows). Empty when the method only gathers.
  std::vector<std::vector<int32_t>> groups;
  // The method's own selection order when it differs from the output order (DivPrune's greedy order,
  // VisionZip's top-k order), in the same index space as `kept`.
  std::vector<int32_t> selection_order;
  // Named numbers the method chose or measured (adaptive counts, thresholds, pooling factors).
  std::map<std::string, double> stats;
  // Prompt relevance of every source patch ([source_tokens], patch order) as the method weighted it (CDPruner's
  // normalised relevance), for visualisation; empty for methods that do not read the prompt.
  std::vector<float> relevance;

  int64_t rows() const { return dim > 0 ? static_cast<int64_t>(tokens.size()) / dim : 0; }
};

enum class OptionType { Integer, Number, Boolean, Choice, Layer, NumberList };

struct OptionSpec {
  std::string name;
  OptionType type = OptionType::Integer;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;  // Choice only
  double min = -1e300;               // Integer / Number / NumberList bounds (inclusive)
  double max = 1e300;
};

// Typed option values of one method, parsed from "key=value" strings and validated against its specs.
class Options {
 public:
  Options() = default;
  // Throws Error for an unknown key, a repeated key, a malformed pair or a value of the wrong type/range.
  static Options parse(std::string_view method, const std::vector<OptionSpec>& specs,
                       const std::vector<std::string>& key_values);

  int64_t integer(std::string_view name) const;
  double number(std::string_view name) const;
  bool boolean(std::string_view name) const;
  const std::string& choice(std::string_view name) const;
  std::vector<double> numbers(std::string_view name) const;
  // "feature" or an integer (negative counts from the end); resolved against an encoder.
  int layer(std::string_view name, const EncoderInfo& info) const;
  const std::string& text(std::string_view name) const;
  // Every option with its effective value, in spec order ("key=value").
  std::vector<std::string> effective() const;

 private:
  std::string method_;
  std::vector<std::pair<OptionSpec, std::string>> values_;
  const std::string& raw(std::string_view name) const;
};

// One registered method: its documentation and its options.
struct MethodInfo {
  std::string name;
  std::string paper;        // paper (and venue)
  std::string keeps;        // what it keeps, one line
  std::string provenance;   // official code and commit, or "reconstruction"
  BudgetUse budget_use = BudgetUse::Exact;
  std::vector<OptionSpec> options;
};

class Reducer {
 public:
  explicit Reducer(Options options) : options_(std::move(options)) {}
  virtual ~Reducer() = default;
  virtual const MethodInfo& info() const = 0;
  const Options& options() const { return options_; }
  // What this method needs from an encoder with the given shape; throws Error if it cannot run on it
  // (e.g. a layer it needs does not exist, or it needs a CLS token the encoder lacks).
  virtual Needs needs(const EncoderInfo& encoder) const = 0;
  // Validates `input` against needs(), resolves the budget and runs the method.
  Reduction reduce(const EncoderOutput& input, const Budget& budget) const;

 protected:
  // `budget` is already resolved to a count in [1, N] (N when the budget is All).
  virtual Reduction run(const EncoderOutput& input, int64_t budget, bool budget_given) const = 0;

 private:
  Options options_;
};

// The registry: every method vtprune implements, in a fixed order.
const std::vector<MethodInfo>& methods();
const MethodInfo& method_info(std::string_view name);  // throws Error listing known names
// Creates a reducer; options are "key=value" strings. Throws Error for unknown names or bad options.
std::unique_ptr<Reducer> make_reducer(std::string_view name, const std::vector<std::string>& options = {});
// Human-readable description of a method and its options (for --help and the README).
std::string describe(const MethodInfo& method);

// Method options on the command line: one syntax for every command. run / serve / reduce take `key=value` for
// their one method; where several methods are chosen, a method's options follow its name after colons:
//   a method spec    "name[:key=value[:key=value...]]"  (--methods of bench: "prumerge:layer=-2")
//   a routed option  "name:key=value"                   (--opt of eval and viz: applies to that method only)
struct MethodSpec {
  std::string name;
  std::vector<std::string> options;  // "key=value"
};
// Throws Error for an unknown method or an option without '='.
MethodSpec parse_method_spec(std::string_view spec);
// "name:key=value" -> {name, {"key=value"}}; std::nullopt for a bare "key=value". Throws Error for an unknown
// method, or for anything else (e.g. the older "name.key=value").
std::optional<MethodSpec> parse_routed_option(std::string_view option);

}  // namespace vtprune
