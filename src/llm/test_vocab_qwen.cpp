// Qwen2's GPT-2 byte-level BPE vocabulary for the random Qwen2.5-VL-shaped test LLM: byte tokens, merges
// learnt on a small English word list, Qwen2.5-VL's special tokens at their real offsets.
#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "test_vocab.h"
#include "vtprune/reduce.h"  // vtprune::Error

namespace vtprune::llm::detail {

namespace {

// Words of Qwen's chat prompts (template roles, default system prompt, typical questions) on top of kTestWords.
constexpr std::array kQwenChatWords = {
    "system", "user", "You", "It", "In", "There", "This", "Picture", "Video", "Answer", "Please", "please",
    "briefly", "scene", "object", "objects", "shape", "sky", "ground", "disc", "square", "stripe", "text",
};

// Qwen2.5-VL's added tokens, ids special_base + 0 .. + 21, and whether the converter marks them CONTROL.
struct SpecialToken {
  const char* text;
  bool control;
};
constexpr std::array<SpecialToken, 22> kQwenSpecialTokens = {{
    {"<|endoftext|>", true},      {"<|im_start|>", true},    {"<|im_end|>", true},      {"<|object_ref_start|>", true},
    {"<|object_ref_end|>", true}, {"<|box_start|>", true},   {"<|box_end|>", true},     {"<|quad_start|>", true},
    {"<|quad_end|>", true},       {"<|vision_start|>", true}, {"<|vision_end|>", true}, {"<|vision_pad|>", true},
    {"<|image_pad|>", true},      {"<|video_pad|>", true},   {"<tool_call>", false},    {"</tool_call>", false},
    {"<|fim_prefix|>", true},     {"<|fim_middle|>", true},  {"<|fim_suffix|>", true},  {"<|fim_pad|>", true},
    {"<|repo_name|>", true},      {"<|file_sep|>", true},
}};
// Ids from <|endoftext|> to the end of the real vocabulary (151936 - 151643).
constexpr int kSpecialsFromEnd = 293;

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others for U+0100 + n in byte
// order. `order` lists the bytes in vocabulary id order (the printable ones first).
struct ByteLevel {
  std::array<std::string, 256> symbol;
  std::array<int, 256> order{};
};

ByteLevel byte_level() {
  ByteLevel b;
  std::vector<int> bytes;
  for (int c = '!'; c <= '~'; ++c) bytes.push_back(c);
  for (int c = 0xA1; c <= 0xAC; ++c) bytes.push_back(c);
  for (int c = 0xAE; c <= 0xFF; ++c) bytes.push_back(c);
  std::vector<uint32_t> points(bytes.begin(), bytes.end());
  uint32_t extra = 0;
  for (int c = 0; c < 256; ++c) {
    if (std::find(bytes.begin(), bytes.end(), c) == bytes.end()) {
      bytes.push_back(c);
      points.push_back(256 + extra++);
    }
  }
  for (size_t i = 0; i < 256; ++i) {
    b.symbol[bytes[i]] = utf8(points[i]);
    b.order[i] = bytes[i];
  }
  return b;
}

// Byte-pair training: repeatedly merge the most frequent adjacent pair (ties: the smallest pair, so the
// result is deterministic) until every word is one symbol. Applying the merges by rank, as llama.cpp's BPE
// tokenizer does, then turns each training word into one token.
std::vector<std::pair<std::string, std::string>> learn_merges(std::vector<std::vector<std::string>> words) {
  std::vector<std::pair<std::string, std::string>> merges;
  for (;;) {
    std::map<std::pair<std::string, std::string>, int> counts;
    for (const auto& w : words) {
      for (size_t i = 0; i + 1 < w.size(); ++i) ++counts[{w[i], w[i + 1]}];
    }
    if (counts.empty()) break;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    const auto [left, right] = best->first;
    merges.emplace_back(left, right);
    for (auto& w : words) {
      std::vector<std::string> merged;
      merged.reserve(w.size());
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == left && w[i + 1] == right) {
          merged.push_back(left + right);
          ++i;
        } else {
          merged.push_back(w[i]);
        }
      }
      w = std::move(merged);
    }
  }
  return merges;
}

}  // namespace

BpeVocabulary qwen_bpe_vocabulary(int n_vocab) {
  const ByteLevel bytes = byte_level();
  BpeVocabulary v;
  v.special_base = n_vocab - kSpecialsFromEnd;
  std::set<std::string> seen;
  auto add = [&](const std::string& text, int32_t type) {
    if (!seen.insert(text).second) return;
    v.tokens.push_back(text);
    v.types.push_back(type);
  };
  for (int i = 0; i < 256; ++i) add(bytes.symbol[bytes.order[i]], kTokenNormal);

  // Training words: each once as it starts a text ("What") and once after a space ("ĠWhat"), as Qwen2's
  // pre-tokenizer cuts them.
  std::vector<std::vector<std::string>> words;
  std::set<std::string> distinct;
  auto add_word = [&](const std::string& word) {
    if (!distinct.insert(word).second) return;
    for (const std::string& form : {word, std::string(" ") + word}) {
      std::vector<std::string> symbols;
      for (unsigned char c : form) symbols.push_back(bytes.symbol[c]);
      words.push_back(std::move(symbols));
    }
  };
  for (const char* w : kTestWords) add_word(w);
  for (const char* w : kQwenChatWords) add_word(w);
  for (const auto& [left, right] : learn_merges(std::move(words))) {
    v.merges.push_back(left + " " + right);
    add(left + right, kTokenNormal);
  }

  if (v.special_base < static_cast<int32_t>(v.tokens.size())) {
    throw Error("the Qwen test vocabulary needs " + std::to_string(v.tokens.size() + kSpecialsFromEnd) +
                " tokens (" + std::to_string(v.tokens.size()) + " byte and merge tokens + " +
                std::to_string(kSpecialsFromEnd) + " special and padding ids) but the shape has n_vocab " +
                std::to_string(n_vocab));
  }
  // Ids the tokenizer does not use are written as the converter writes them: "[PAD<id>]", UNUSED.
  auto pad_to = [&](int32_t end) {
    for (auto id = static_cast<int32_t>(v.tokens.size()); id < end; ++id) add("[PAD" + std::to_string(id) + "]", kTokenUnused);
  };
  pad_to(v.special_base);
  for (const SpecialToken& s : kQwenSpecialTokens) add(s.text, s.control ? kTokenControl : kTokenUserDefined);
  pad_to(n_vocab);
  return v;
}

}  // namespace vtprune::llm::detail
