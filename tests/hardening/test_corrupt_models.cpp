// The corrupt-model corpus: every broken mmproj GGUF, timm safetensors and LLM GGUF the tests generate
// (truncated files, wrong shapes, wrong dtypes, missing tensors, absurd metadata) must be exactly one clear
// vtprune::Error naming the file, never a crash, another exception type or a hang. Each load runs in a
// forked child with an alarm, so a crash or hang fails only its own case and says which it was.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "ggml.h"
#include "gguf.h"
#include "hardening/model_files.h"
#include "test_support.h"
#include "vtprune/llm.h"
#include "vtprune/vision.h"

namespace vtprune::hardening {
namespace {

namespace fs = std::filesystem;

// ---- isolation ------------------------------------------------------------------------------------

struct Outcome {
  enum class Kind { VtpruneError, OtherException, NoError, Crashed, Hung } kind;
  std::string message;  // the error message, or what happened
};

std::string describe(const Outcome& o) {
  switch (o.kind) {
    case Outcome::Kind::VtpruneError: return "vtprune::Error: " + o.message;
    case Outcome::Kind::OtherException: return "another exception type: " + o.message;
    case Outcome::Kind::NoError: return "no error (the corrupt file was accepted)";
    case Outcome::Kind::Crashed: return "crashed: " + o.message;
    case Outcome::Kind::Hung: return "hung (killed after the time limit)";
  }
  return "?";
}

// Runs `load` in a child process: exit 10 + message on vtprune::Error, 11 on another exception, 12 when
// nothing was thrown; SIGALRM after `seconds` marks a hang.
Outcome run_isolated(const std::function<void()>& load, unsigned seconds = 60) {
  int fds[2];
  if (pipe(fds) != 0) return {Outcome::Kind::Crashed, "pipe() failed"};
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    alarm(seconds);
    int code = 12;
    std::string message;
    try {
      load();
    } catch (const Error& e) {
      code = 10, message = e.what();
    } catch (const std::exception& e) {
      code = 11, message = e.what();
    } catch (...) {
      code = 11, message = "non-std exception";
    }
    (void)!write(fds[1], message.data(), message.size());
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  std::string message;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof buffer)) > 0) message.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) {
    if (WTERMSIG(status) == SIGALRM) return {Outcome::Kind::Hung, ""};
    return {Outcome::Kind::Crashed, std::string("signal ") + strsignal(WTERMSIG(status))};
  }
  switch (WEXITSTATUS(status)) {
    case 10: return {Outcome::Kind::VtpruneError, message};
    case 11: return {Outcome::Kind::OtherException, message};
    case 12: return {Outcome::Kind::NoError, ""};
    default: return {Outcome::Kind::Crashed, "exit code " + std::to_string(WEXITSTATUS(status))};
  }
}

// One clear error: a vtprune::Error whose message names the file (`names`: its path, or for a folder
// model the folder).
void expect_clear_error(const std::string& label, const fs::path& names, const std::function<void()>& load) {
  const Outcome o = run_isolated(load);
  ASSERT_EQ(o.kind, Outcome::Kind::VtpruneError) << label << ": " << describe(o);
  EXPECT_NE(o.message.find(names.string()), std::string::npos)
      << label << ": the error does not name " << names << ": " << o.message;
}

// ---- GGUF rewriting --------------------------------------------------------------------------------

// A change to a valid GGUF: metadata overrides, dropped keys and tensors, tensors with another shape or
// type (zero data).
struct GgufEdit {
  std::function<void(gguf_context*)> metadata;       // e.g. gguf_set_val_u32(ctx, key, value)
  std::vector<std::string> drop_tensors;
  struct Retensor {
    std::string name;
    std::vector<int64_t> ne;  // empty: keep the shape
    ggml_type type = GGML_TYPE_COUNT;  // COUNT: keep the type
  };
  std::vector<Retensor> retensor;
};

struct GgmlContextFree {
  void operator()(ggml_context* c) const { ggml_free(c); }
};
struct GgufFree {
  void operator()(gguf_context* c) const { gguf_free(c); }
};

void rewrite_gguf(const fs::path& source, const fs::path& target, const GgufEdit& edit) {
  ggml_context* data_raw = nullptr;
  gguf_init_params params{};
  params.no_alloc = false;
  params.ctx = &data_raw;
  std::unique_ptr<gguf_context, GgufFree> in(gguf_init_from_file(source.c_str(), params));
  std::unique_ptr<ggml_context, GgmlContextFree> data(data_raw);
  ASSERT_TRUE(in) << source;
  std::unique_ptr<gguf_context, GgufFree> out(gguf_init_empty());
  gguf_set_kv(out.get(), in.get());
  if (edit.metadata) edit.metadata(out.get());

  ggml_init_params scratch_params{};
  scratch_params.mem_size = size_t{64} << 20;
  std::unique_ptr<ggml_context, GgmlContextFree> scratch(ggml_init(scratch_params));
  for (int64_t i = 0; i < gguf_get_n_tensors(in.get()); ++i) {
    const std::string name = gguf_get_tensor_name(in.get(), i);
    if (std::find(edit.drop_tensors.begin(), edit.drop_tensors.end(), name) != edit.drop_tensors.end()) continue;
    const ggml_tensor* t = ggml_get_tensor(data.get(), name.c_str());
    const auto change = std::find_if(edit.retensor.begin(), edit.retensor.end(), [&](const auto& r) { return r.name == name; });
    if (change == edit.retensor.end()) {
      gguf_add_tensor(out.get(), t);
      continue;
    }
    std::vector<int64_t> ne = change->ne;
    if (ne.empty()) ne.assign(t->ne, t->ne + ggml_n_dims(t));
    const ggml_type type = change->type == GGML_TYPE_COUNT ? t->type : change->type;
    ggml_tensor* replacement = ggml_new_tensor(scratch.get(), type, static_cast<int>(ne.size()), ne.data());
    std::memset(replacement->data, 0, ggml_nbytes(replacement));
    ggml_set_name(replacement, name.c_str());
    gguf_add_tensor(out.get(), replacement);
  }
  ASSERT_TRUE(gguf_write_to_file(out.get(), target.c_str(), false)) << target;
}

std::vector<uint8_t> truncated(const std::vector<uint8_t>& bytes, size_t size) {
  return {bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(std::min(size, bytes.size()))};
}

// Byte offset just after `name` in a GGUF's tensor-info section (where n_dims, ne[], type, offset follow).
size_t after_tensor_name(const std::vector<uint8_t>& bytes, const std::string& name) {
  std::vector<uint8_t> needle(8);
  for (int i = 0; i < 8; ++i) needle[static_cast<size_t>(i)] = static_cast<uint8_t>(name.size() >> (8 * i));
  needle.insert(needle.end(), name.begin(), name.end());
  const auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  return it == bytes.end() ? 0 : static_cast<size_t>(it - bytes.begin()) + needle.size();
}

void put_u64(std::vector<uint8_t>& bytes, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

// Truncations and header-level absurdities every GGUF loader must survive.
void gguf_byte_level_cases(const fs::path& valid, const fs::path& dir, const std::string& tensor,
                           const std::function<void(const fs::path&)>& load) {
  const auto bytes = read_bytes(valid);
  int n = 0;
  const auto check = [&](const std::string& label, const std::vector<uint8_t>& corrupt) {
    const fs::path file = dir / ("corrupt-" + std::to_string(n++) + ".gguf");
    write_bytes(file, corrupt);
    expect_clear_error(label, file, [&] { load(file); });
  };
  for (size_t size : {size_t{0}, size_t{3}, size_t{4}, size_t{8}, size_t{24}, size_t{100}, size_t{1000},
                      bytes.size() / 2, bytes.size() - 100, bytes.size() - 1}) {
    check("truncated to " + std::to_string(size) + " bytes", truncated(bytes, size));
  }
  check("not a GGUF", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '\n'});
  auto patched = bytes;
  put_u64(patched, 8, uint64_t{1} << 62);  // n_tensors
  check("n_tensors = 2^62", patched);
  patched = bytes;
  put_u64(patched, 16, uint64_t{1} << 62);  // n_kv
  check("n_kv = 2^62", patched);
  const size_t at = after_tensor_name(bytes, tensor);
  ASSERT_GT(at, 0u) << tensor;
  patched = bytes;
  put_u64(patched, at + 4, uint64_t{1} << 40);  // ne[0]
  check(tensor + " ne[0] = 2^40", patched);
  patched = bytes;
  put_u64(patched, at + 4, ~uint64_t{0});  // ne[0] = -1
  check(tensor + " ne[0] = -1", patched);
  patched = bytes;
  patched[at] = 9;  // n_dims > GGML_MAX_DIMS
  check(tensor + " n_dims = 9", patched);
}

// ---- mmproj GGUF ------------------------------------------------------------------------------------

vision::MmprojShape tiny_mmproj() {
  vision::MmprojShape s;
  s.n_layer = 2, s.n_embd = 8, s.n_ff = 16, s.n_head = 2, s.image_size = 28, s.patch_size = 14, s.proj_out = 8;
  return s;
}

void load_mmproj(const fs::path& file) { vision::VisionModel::from_mmproj(file); }

TEST(CorruptMmproj, ValidFileLoads) {
  const auto dir = test::temp_dir("mmproj");
  vision::write_test_mmproj(dir / "valid.gguf", tiny_mmproj(), 1, vision::WeightType::F16);
  EXPECT_NO_THROW(load_mmproj(dir / "valid.gguf"));
}

TEST(CorruptMmproj, TruncatedAndHeaderLevel) {
  const auto dir = test::temp_dir("mmproj");
  vision::write_test_mmproj(dir / "valid.gguf", tiny_mmproj(), 1, vision::WeightType::F16);
  gguf_byte_level_cases(dir / "valid.gguf", dir, "v.blk.0.attn_q.weight", load_mmproj);
}

TEST(CorruptMmproj, MissingTensorsWrongShapesWrongTypes) {
  const auto dir = test::temp_dir("mmproj");
  const fs::path valid = dir / "valid.gguf";
  vision::write_test_mmproj(valid, tiny_mmproj(), 1, vision::WeightType::F16);
  const int64_t D = 8, T = 5, F = 16;
  const std::vector<std::pair<std::string, GgufEdit>> cases = {
      {"missing v.blk.1.attn_k.weight", {{}, {"v.blk.1.attn_k.weight"}, {}}},
      {"missing v.position_embd.weight", {{}, {"v.position_embd.weight"}, {}}},
      {"missing mm.2.bias", {{}, {"mm.2.bias"}, {}}},
      {"missing mm.0.weight", {{}, {"mm.0.weight"}, {}}},
      {"q weight [D, D+1]", {{}, {}, {{"v.blk.0.attn_q.weight", {D, D + 1}}}}},
      {"position embedding [D, T-1]", {{}, {}, {{"v.position_embd.weight", {D, T - 1}}}}},
      {"fc weight [D, F, 2]", {{}, {}, {{"v.blk.1.ffn_down.weight", {D, F, 2}}}}},
      {"mm.0 [D+1, hidden]", {{}, {}, {{"mm.0.weight", {D + 1, 8}}}}},
      {"mm.2 [hidden+1, out]", {{}, {}, {{"mm.2.weight", {9, 8}}}}},
      {"ln1 as I32", {{}, {}, {{"v.blk.0.ln1.weight", {}, GGML_TYPE_I32}}}},
      {"q weight as I32", {{}, {}, {{"v.blk.0.attn_q.weight", {}, GGML_TYPE_I32}}}},
      {"class embedding as Q8_0", {{}, {}, {{"v.class_embd", {32}, GGML_TYPE_Q8_0}}}},
      {"patch embedding as Q8_0", {{}, {}, {{"v.patch_embd.weight", {14, 14, 3, D}, GGML_TYPE_Q4_0}}}},
  };
  int n = 0;
  for (const auto& [label, edit] : cases) {
    const fs::path file = dir / ("edit-" + std::to_string(n++) + ".gguf");
    rewrite_gguf(valid, file, edit);
    expect_clear_error(label, file, [&] { load_mmproj(file); });
  }
}

TEST(CorruptMmproj, AbsurdMetadata) {
  const auto dir = test::temp_dir("mmproj");
  const fs::path valid = dir / "valid.gguf";
  vision::write_test_mmproj(valid, tiny_mmproj(), 1, vision::WeightType::F16);
  using Setter = std::function<void(gguf_context*)>;
  const auto u32 = [](const char* key, uint32_t v) -> Setter { return [=](gguf_context* g) { gguf_set_val_u32(g, key, v); }; };
  const std::vector<std::pair<std::string, Setter>> cases = {
      {"block_count 1e9", u32("clip.vision.block_count", 1'000'000'000)},
      {"block_count 2^31 + 5", u32("clip.vision.block_count", 0x80000005u)},
      {"block_count 0", u32("clip.vision.block_count", 0)},
      {"block_count 3 (one more than stored)", u32("clip.vision.block_count", 3)},
      {"image_size 2^32 - 28", u32("clip.vision.image_size", 0xFFFFFFE4u)},
      {"image_size 0", u32("clip.vision.image_size", 0)},
      {"image_size 2^30", u32("clip.vision.image_size", 14u << 26)},
      {"patch_size 0", u32("clip.vision.patch_size", 0)},
      {"patch_size 2^31 + 14", u32("clip.vision.patch_size", 0x8000000Eu)},
      {"embedding_length 0", u32("clip.vision.embedding_length", 0)},
      {"embedding_length 2^32 - 8", u32("clip.vision.embedding_length", 0xFFFFFFF8u)},
      {"embedding_length 2^30", u32("clip.vision.embedding_length", 1u << 30)},
      {"head_count 0", u32("clip.vision.attention.head_count", 0)},
      {"head_count 3", u32("clip.vision.attention.head_count", 3)},
      {"feed_forward_length 0", u32("clip.vision.feed_forward_length", 0)},
      {"feed_forward_length 2^31", u32("clip.vision.feed_forward_length", 0x80000000u)},
      {"epsilon as a string", [](gguf_context* g) { gguf_set_val_str(g, "clip.vision.attention.layer_norm_epsilon", "1e-5"); }},
      {"epsilon NaN", [](gguf_context* g) { gguf_set_val_f32(g, "clip.vision.attention.layer_norm_epsilon", std::nanf("")); }},
      {"image_mean of 2", [](gguf_context* g) {
         const float m[2] = {0.5f, 0.5f};
         gguf_set_arr_data(g, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, m, 2);
       }},
      {"image_std zero", [](gguf_context* g) {
         const float s[3] = {0.0f, 0.2f, 0.2f};
         gguf_set_arr_data(g, "clip.vision.image_std", GGUF_TYPE_FLOAT32, s, 3);
       }},
      {"architecture llama", [](gguf_context* g) { gguf_set_val_str(g, "general.architecture", "llama"); }},
      {"projector ldp", [](gguf_context* g) { gguf_set_val_str(g, "clip.projector_type", "ldp"); }},
      {"block_count as a string", [](gguf_context* g) { gguf_set_val_str(g, "clip.vision.block_count", "2"); }},
      {"no image_size", [](gguf_context* g) { gguf_remove_key(g, "clip.vision.image_size"); }},
      {"no vision encoder", [](gguf_context* g) { gguf_set_val_bool(g, "clip.has_vision_encoder", false); }},
  };
  int n = 0;
  for (const auto& [label, setter] : cases) {
    const fs::path file = dir / ("meta-" + std::to_string(n++) + ".gguf");
    rewrite_gguf(valid, file, GgufEdit{setter, {}, {}});
    expect_clear_error(label, file, [&] { load_mmproj(file); });
  }
}

// ---- timm safetensors --------------------------------------------------------------------------------

void load_timm(const fs::path& dir) { vision::VisionModel::from_safetensors_timm(dir); }

// A folder with config.json (2 heads) and model.safetensors written from `entries` (or `header`).
fs::path timm_dir(const std::string& tag, const std::vector<SafetensorsEntry>& entries, const std::string& header = "") {
  const fs::path dir = test::temp_dir(tag);
  write_timm_config(dir, 2);
  write_safetensors(dir / "model.safetensors", entries, header);
  return dir;
}

TEST(CorruptTimm, ValidFileLoads) {
  const fs::path dir = timm_dir("timm", tiny_timm_entries());
  EXPECT_NO_THROW(load_timm(dir));
  auto model = vision::VisionModel::from_safetensors_timm(dir);
  EXPECT_EQ(model.info().grid.w, 2);
  EXPECT_EQ(model.stored_layers(), 2);
}

TEST(CorruptTimm, Truncated) {
  const fs::path dir = timm_dir("timm", tiny_timm_entries());
  const auto bytes = read_bytes(dir / "model.safetensors");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[static_cast<size_t>(i)];
  for (size_t size : {size_t{0}, size_t{4}, size_t{8}, size_t{8 + header_len / 2}, size_t{8 + header_len},
                      size_t{8 + header_len + 10}, bytes.size() / 2, bytes.size() - 1}) {
    write_bytes(dir / "model.safetensors", truncated(bytes, size));
    expect_clear_error("truncated to " + std::to_string(size), dir / "model.safetensors", [&] { load_timm(dir); });
  }
}

TEST(CorruptTimm, BrokenHeaders) {
  const auto entries = tiny_timm_entries();
  const std::string good = safetensors_header(entries);
  const auto replace = [&](const std::string& from, const std::string& to) {
    std::string h = good;
    const auto at = h.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? h : h.replace(at, from.size(), to);
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not JSON", "{\"pos_embed\": "},
      {"an array", "[1, 2, 3]"},
      {"entry lacks data_offsets", R"({"pos_embed": {"dtype": "F32", "shape": [1, 5, 8]}})"},
      {"entry is a string", R"({"pos_embed": "F32"})"},
      {"shape holds a string", replace("\"shape\":[1,5,8]", "\"shape\":[1,\"5\",8]")},
      {"negative dimension", replace("\"shape\":[1,5,8]", "\"shape\":[1,-5,8]")},
      {"dimensions overflow", replace("\"shape\":[1,5,8]", "\"shape\":[1099511627776,1099511627776,8]")},
      {"offsets reversed", replace("\"data_offsets\":[0,", "\"data_offsets\":[999999,")},
      {"offsets past the data", replace("\"data_offsets\":[0,", "\"data_offsets\":[1000000000000,")},
      {"three offsets", replace("\"data_offsets\":[0,", "\"data_offsets\":[0,0,")},
      {"offsets as floats", replace("\"data_offsets\":[0,", "\"data_offsets\":[2e88,")},
      {"shape as floats", replace("\"shape\":[1,5,8]", "\"shape\":[1,5.5,8]")},
      {"dtype I64", replace("\"dtype\":\"F32\"", "\"dtype\":\"I64\"")},
      {"dtype F64", replace("\"dtype\":\"F32\"", "\"dtype\":\"F64\"")},
      {"dtype a number", replace("\"dtype\":\"F32\"", "\"dtype\":7")},
  };
  for (const auto& [label, header] : cases) {
    const fs::path dir = timm_dir("timm-header", entries, header);
    expect_clear_error(label, dir / "model.safetensors", [&] { load_timm(dir); });
  }
  // A header length that claims more than the file holds, and one of 2^64 - 1.
  for (uint64_t claimed : {uint64_t{1} << 40, ~uint64_t{0}, uint64_t{0}}) {
    const fs::path dir = timm_dir("timm-len", entries);
    auto bytes = read_bytes(dir / "model.safetensors");
    put_u64(bytes, 0, claimed);
    write_bytes(dir / "model.safetensors", bytes);
    expect_clear_error("header length " + std::to_string(claimed), dir / "model.safetensors", [&] { load_timm(dir); });
  }
}

TEST(CorruptTimm, MissingTensorsWrongShapesWrongTypes) {
  const auto base = tiny_timm_entries();
  const int64_t D = 8;
  const auto without = [&](const std::string& name) {
    auto e = base;
    e.erase(std::remove_if(e.begin(), e.end(), [&](const auto& x) { return x.name == name; }), e.end());
    return e;
  };
  // Another shape with data to match (so only the shape is wrong).
  const auto reshaped = [&](const std::string& name, std::vector<int64_t> shape, std::string dtype = "F32") {
    auto e = base;
    for (auto& x : e) {
      if (x.name != name) continue;
      int64_t count = 1;
      for (int64_t d : shape) count *= d;
      const size_t elem = dtype == "F16" || dtype == "BF16" ? 2 : dtype == "F64" || dtype == "I64" ? 8 : 4;
      x.shape = shape;
      x.dtype = dtype;
      x.bytes.assign(static_cast<size_t>(count) * elem, 0);
    }
    return e;
  };
  const std::vector<std::pair<std::string, std::vector<SafetensorsEntry>>> cases = {
      {"missing patch_embed.proj.weight", without("patch_embed.proj.weight")},
      {"missing pos_embed", without("pos_embed")},
      {"missing blocks.1.attn.proj.bias", without("blocks.1.attn.proj.bias")},
      {"missing norm.weight", without("norm.weight")},
      {"missing head.bias (head.weight present)", without("head.bias")},
      {"missing blocks.0.mlp.fc1.weight", without("blocks.0.mlp.fc1.weight")},
      {"qkv [3D, D+1]", reshaped("blocks.0.attn.qkv.weight", {3 * D, D + 1})},
      {"pos_embed with 6 positions", reshaped("pos_embed", {1, 6, D})},
      {"pos_embed [5, D]", reshaped("pos_embed", {5, D})},
      {"patch kernel 4x5", reshaped("patch_embed.proj.weight", {D, 3, 4, 5})},
      {"patch kernel of 0 pixels", reshaped("patch_embed.proj.weight", {D, 3, 0, 0})},
      {"width 0", reshaped("patch_embed.proj.weight", {0, 3, 4, 4})},
      {"fc1 [F, D+1]", reshaped("blocks.0.mlp.fc1.weight", {16, D + 1})},
      {"fc1 of width 0", reshaped("blocks.0.mlp.fc1.weight", {0, D})},
      {"head [C, D, 1]", reshaped("head.weight", {3, D, 1})},
      {"norm1 as I32", reshaped("blocks.0.norm1.weight", {D}, "I32")},
      {"qkv as F64", reshaped("blocks.1.attn.qkv.weight", {3 * D, D}, "F64")},
      {"cls as I64", reshaped("cls_token", {1, 1, D}, "I64")},
  };
  for (const auto& [label, entries] : cases) {
    const fs::path dir = timm_dir("timm-tensors", entries);
    expect_clear_error(label, dir / "model.safetensors", [&] { load_timm(dir); });
  }
}

TEST(CorruptTimm, AbsurdConfig) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0 heads", R"({"model_args": {"num_heads": 0}})"},
      {"3 heads for width 8", R"({"model_args": {"num_heads": 3}})"},
      {"-2 heads", R"({"model_args": {"num_heads": -2}})"},
      {"heads as a string", R"({"model_args": {"num_heads": "2"}})"},
      {"crop_pct 0", R"({"model_args": {"num_heads": 2}, "pretrained_cfg": {"crop_pct": 0}})"},
      {"crop_pct 1e-300", R"({"model_args": {"num_heads": 2}, "pretrained_cfg": {"crop_pct": 1e-300}})"},
      {"bilinear", R"({"model_args": {"num_heads": 2}, "pretrained_cfg": {"interpolation": "bilinear"}})"},
      {"mean of 2", R"({"model_args": {"num_heads": 2}, "pretrained_cfg": {"mean": [0.5, 0.5]}})"},
      {"std of zeros", R"({"model_args": {"num_heads": 2}, "pretrained_cfg": {"std": [0, 0, 0]}})"},
      {"not JSON", R"({"model_args": )"},
  };
  for (const auto& [label, config] : cases) {
    const fs::path dir = test::temp_dir("timm-config");
    write_safetensors(dir / "model.safetensors", tiny_timm_entries());
    std::ofstream(dir / "config.json") << config;
    expect_clear_error(label, dir, [&] { load_timm(dir); });
  }
}

// ---- LLM GGUF (libllama through llm::Session) --------------------------------------------------------

void load_llm(const fs::path& file) {
  llm::SessionParams params;
  params.n_ctx = 256;
  params.n_batch = 64;
  params.threads = 1;
  llm::Session session(file.string(), params);
}

fs::path tiny_llm(const fs::path& dir) {
  const fs::path file = dir / "llm.gguf";
  llm::write_test_llm(file.string(), llm::test_llm_shape("tiny"), 1, llm::WeightType::f16);
  return file;
}

TEST(CorruptLlm, ValidFileLoads) {
  const auto dir = test::temp_dir("llm");
  EXPECT_NO_THROW(load_llm(tiny_llm(dir)));
}

TEST(CorruptLlm, TruncatedAndHeaderLevel) {
  const auto dir = test::temp_dir("llm");
  gguf_byte_level_cases(tiny_llm(dir), dir, "blk.0.attn_q.weight", load_llm);
}

TEST(CorruptLlm, MissingTensorsWrongShapesWrongTypesAbsurdMetadata) {
  const auto dir = test::temp_dir("llm");
  const fs::path valid = tiny_llm(dir);
  const auto u32 = [](const char* key, uint32_t v) { return [=](gguf_context* g) { gguf_set_val_u32(g, key, v); }; };
  const std::vector<std::pair<std::string, GgufEdit>> cases = {
      {"missing blk.1.attn_k.weight", {{}, {"blk.1.attn_k.weight"}, {}}},
      {"missing token_embd.weight", {{}, {"token_embd.weight"}, {}}},
      {"missing output_norm.weight", {{}, {"output_norm.weight"}, {}}},
      {"attn_q [64, 65]", {{}, {}, {{"blk.0.attn_q.weight", {64, 65}}}}},
      {"token_embd [64, 1000]", {{}, {}, {{"token_embd.weight", {64, 1000}}}}},
      {"block_count 3", {u32("llama.block_count", 3), {}, {}}},
      {"embedding_length 0", {u32("llama.embedding_length", 0), {}, {}}},
      {"embedding_length 2^31", {u32("llama.embedding_length", 0x80000000u), {}, {}}},
      {"head_count 0", {u32("llama.attention.head_count", 0), {}, {}}},
      {"head_count 3", {u32("llama.attention.head_count", 3), {}, {}}},
      {"head_count_kv 3", {u32("llama.attention.head_count_kv", 3), {}, {}}},
      {"feed_forward_length 1e9", {u32("llama.feed_forward_length", 1'000'000'000), {}, {}}},
      {"architecture unknown", {[](gguf_context* g) { gguf_set_val_str(g, "general.architecture", "nonesuch"); }, {}, {}}},
      {"no architecture", {[](gguf_context* g) { gguf_remove_key(g, "general.architecture"); }, {}, {}}},
      {"vocabulary removed", {[](gguf_context* g) { gguf_remove_key(g, "tokenizer.ggml.tokens"); }, {}, {}}},
  };
  int n = 0;
  for (const auto& [label, edit] : cases) {
    const fs::path file = dir / ("llm-edit-" + std::to_string(n++) + ".gguf");
    rewrite_gguf(valid, file, edit);
    expect_clear_error(label, file, [&] { load_llm(file); });
  }
}

// libllama itself aborts (GGML_ASSERT(n_layer_all > 0 && n_layer_all <= LLAMA_MAX_LAYERS) in
// llama-model.cpp) on a block count of 0 or above 512, and accepts integer weight types (the first decode
// would abort): llm::Session checks these in the GGUF header before handing the file to libllama.
TEST(CorruptLlm, BlockCountsAndIntegerWeightsAreCheckedBeforeLibllama) {
  const auto dir = test::temp_dir("llm");
  const fs::path valid = tiny_llm(dir);
  const auto u32 = [](const char* key, uint32_t v) { return [=](gguf_context* g) { gguf_set_val_u32(g, key, v); }; };
  const std::vector<std::pair<std::string, GgufEdit>> cases = {
      {"block_count 1e9", {u32("llama.block_count", 1'000'000'000), {}, {}}},
      {"block_count 0", {u32("llama.block_count", 0), {}, {}}},
      {"ffn_up as I32", {{}, {}, {{"blk.0.ffn_up.weight", {}, GGML_TYPE_I32}}}},
  };
  int n = 0;
  for (const auto& [label, edit] : cases) {
    const fs::path file = dir / ("llm-abort-" + std::to_string(n++) + ".gguf");
    rewrite_gguf(valid, file, edit);
    expect_clear_error(label, file, [&] { load_llm(file); });
  }
}

}  // namespace
}  // namespace vtprune::hardening
