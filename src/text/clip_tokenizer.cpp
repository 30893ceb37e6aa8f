// CLIP's byte-level BPE tokenizer (transformers' CLIPTokenizerFast / the original simple_tokenizer.py).
#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "unicode.h"
#include "vtprune/text.h"

namespace vtprune::text {
namespace {

constexpr std::string_view kBos = "<|startoftext|>";
constexpr std::string_view kEos = "<|endoftext|>";
constexpr size_t kMaxMerges = 49152 - 256 - 2;  // CLIP reads merges[1 : 49152 - 256 - 2 + 1]

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the others to U+0100 onwards, in byte order.
const std::array<std::string, 256>& byte_encoder() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      unicode::append_utf8(printable ? b : next++, t[b]);
    }
    return t;
  }();
  return table;
}

// Whether cps[i..] starts with `s` (ASCII).
bool starts_with(const std::vector<uint32_t>& cps, size_t i, std::string_view s) {
  if (i + s.size() > cps.size()) return false;
  for (size_t k = 0; k < s.size(); ++k) {
    if (cps[i + k] != static_cast<unsigned char>(s[k])) return false;
  }
  return true;
}

// One pre-token: a word (code points) or a special token id.
struct PreToken {
  std::vector<uint32_t> cps;
  int special = -1;  // 0 = <|startoftext|>, 1 = <|endoftext|>
};

// Normalises (white space runs -> " ", lower-case) and splits by CLIP's pre-tokenizer regex.
std::vector<PreToken> pre_tokenize(std::string_view text) {
  std::vector<uint32_t> cps;
  bool in_space = false;
  for (uint32_t cp : unicode::decode_utf8(text)) {
    if (unicode::is_whitespace(cp)) {
      if (!in_space) cps.push_back(' ');
      in_space = true;
      continue;
    }
    in_space = false;
    unicode::append_lower(cp, cps);
  }
  std::vector<PreToken> out;
  const size_t n = cps.size();
  size_t i = 0;
  auto emit = [&](size_t begin, size_t end) { out.push_back({std::vector<uint32_t>(cps.begin() + begin, cps.begin() + end)}); };
  auto other = [](uint32_t c) { return !unicode::is_whitespace(c) && !unicode::is_letter(c) && !unicode::is_number(c); };
  while (i < n) {
    const uint32_t c = cps[i];
    if (starts_with(cps, i, kBos) || starts_with(cps, i, kEos)) {  // added special tokens, split out first
      const bool bos = starts_with(cps, i, kBos);
      out.push_back({{}, bos ? 0 : 1});
      i += bos ? kBos.size() : kEos.size();
      continue;
    }
    if (c == '\'' && i + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d, tried before the classes as in the regex
      size_t len = 0;
      for (std::string_view contraction : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
        if (starts_with(cps, i, contraction)) {
          len = contraction.size();
          break;
        }
      }
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    size_t j = i + 1;
    if (unicode::is_letter(c)) {
      while (j < n && unicode::is_letter(cps[j])) ++j;
    } else if (unicode::is_number(c)) {
      // one digit per pre-token: [\p{N}]
    } else if (unicode::is_whitespace(c)) {
      i = j;  // white space is dropped
      continue;
    } else {
      // [^\s\p{L}\p{N}]+ (a special-token string inside the run still splits it: it was extracted first)
      while (j < n && other(cps[j]) && !starts_with(cps, j, kBos) && !starts_with(cps, j, kEos)) ++j;
    }
    emit(i, j);
    i = j;
  }
  return out;
}

std::string pair_key(const std::string& a, const std::string& b) { return a + " " + b; }

}  // namespace

ClipTokenizer ClipTokenizer::load(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt) {
  ClipTokenizer t;
  t.source_ = vocab_json.parent_path().string();
  std::ifstream vin(vocab_json);
  if (!vin) throw Error("CLIP tokenizer: cannot open " + vocab_json.string());
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vin);
  } catch (const std::exception& e) {
    throw Error("CLIP tokenizer: " + vocab_json.string() + " is not valid JSON (" + e.what() + ")");
  }
  if (!vocab.is_object() || vocab.empty()) throw Error("CLIP tokenizer: " + vocab_json.string() + " is not a {piece: id} object");
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      throw Error("CLIP tokenizer: " + vocab_json.string() + ": id of '" + piece + "' is not a non-negative integer");
    }
    t.vocab_.emplace(piece, static_cast<int32_t>(id.get<int64_t>()));
  }
  for (std::string_view special : {kBos, kEos}) {
    if (!t.vocab_.count(std::string(special))) {
      throw Error("CLIP tokenizer: " + vocab_json.string() + " has no " + std::string(special) + " (not a CLIP vocabulary?)");
    }
  }
  t.bos_ = t.vocab_.at(std::string(kBos));
  t.eos_ = t.vocab_.at(std::string(kEos));

  std::ifstream min(merges_txt);
  if (!min) throw Error("CLIP tokenizer: cannot open " + merges_txt.string());
  std::string line;
  size_t line_no = 0;
  while (std::getline(min, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    if (t.ranks_.size() >= kMaxMerges) break;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() || line.find(' ', space + 1) != std::string::npos) {
      throw Error("CLIP tokenizer: " + merges_txt.string() + " line " + std::to_string(line_no) + " is not \"a b\"");
    }
    t.ranks_.emplace(line, static_cast<int32_t>(t.ranks_.size()));  // the first occurrence keeps its rank
  }
  return t;
}

ClipTokenizer ClipTokenizer::load_dir(const std::filesystem::path& dir) {
  return load(dir / "vocab.json", dir / "merges.txt");
}

// BPE on one byte-encoded word: characters, "</w>" on the last, then merge the lowest-ranked adjacent pair
// (every non-overlapping occurrence, left to right) until no ranked pair is left.
std::vector<std::string> ClipTokenizer::bpe(const std::string& word) const {
  std::vector<std::string> sym;
  for (size_t i = 0; i < word.size();) {  // one symbol per UTF-8 character
    const auto lead = static_cast<unsigned char>(word[i]);
    const size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    sym.push_back(word.substr(i, len));
    i += len;
  }
  if (sym.empty()) return sym;
  sym.back() += "</w>";
  while (sym.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = ranks_.find(pair_key(sym[i], sym[i + 1]));
      if (it != ranks_.end() && it->second < best) best = it->second, at = i;
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    const std::string first = sym[at], second = sym[at + 1];
    std::vector<std::string> merged;
    merged.reserve(sym.size());
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == first && sym[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(sym[i]);
        ++i;
      }
    }
    sym = std::move(merged);
  }
  return sym;
}

std::vector<std::string> ClipTokenizer::pieces(std::string_view text) const {
  const auto& enc = byte_encoder();
  std::vector<std::string> out;
  for (const PreToken& pt : pre_tokenize(text)) {
    if (pt.special >= 0) {
      out.emplace_back(pt.special == 0 ? kBos : kEos);
      continue;
    }
    std::string utf8, word;
    for (uint32_t cp : pt.cps) unicode::append_utf8(cp, utf8);
    for (unsigned char b : utf8) word += enc[b];
    for (auto& p : bpe(word)) out.push_back(std::move(p));
  }
  return out;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids{bos_};
  for (const std::string& p : pieces(text)) {
    const auto it = vocab_.find(p);
    ids.push_back(it == vocab_.end() ? eos_ : it->second);  // CLIP's unk token is <|endoftext|>
  }
  ids.push_back(eos_);
  return ids;
}

TokenSegments split_segments(std::span<const int32_t> ids, int64_t length) {
  if (length < 1) throw Error("CLIP text: segment length " + std::to_string(length) + " must be >= 1");
  if (ids.empty()) throw Error("CLIP text: no tokens to encode");
  TokenSegments s;
  s.length = length;
  s.count = (static_cast<int64_t>(ids.size()) - 1) / length + 1;
  s.ids.assign(static_cast<size_t>(s.count * length), 0);
  s.mask.assign(static_cast<size_t>(s.count * length), 0);
  std::copy(ids.begin(), ids.end(), s.ids.begin());
  std::fill_n(s.mask.begin(), ids.size(), uint8_t{1});
  return s;
}

}  // namespace vtprune::text
