#include "base64.h"

#include <array>

namespace vtprune::server {
namespace {

constexpr int8_t kInvalid = -1;
constexpr int8_t kSkip = -2;
constexpr int8_t kPad = -3;

constexpr std::array<int8_t, 256> make_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = kInvalid;
  for (int i = 0; i < 26; ++i) {
    t[static_cast<size_t>('A' + i)] = static_cast<int8_t>(i);
    t[static_cast<size_t>('a' + i)] = static_cast<int8_t>(26 + i);
  }
  for (int i = 0; i < 10; ++i) t[static_cast<size_t>('0' + i)] = static_cast<int8_t>(52 + i);
  t[static_cast<size_t>('+')] = 62;
  t[static_cast<size_t>('/')] = 63;
  for (char c : {' ', '\t', '\r', '\n', '\f', '\v'}) t[static_cast<size_t>(c)] = kSkip;
  t[static_cast<size_t>('=')] = kPad;
  return t;
}
constexpr auto kTable = make_table();

}  // namespace

std::optional<std::vector<uint8_t>> decode_base64(std::string_view text) {
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3 + 3);
  uint32_t accumulator = 0;
  int sextets = 0;   // sextets in the accumulator (0..3)
  int padding = 0;   // '=' seen; afterwards only whitespace and '=' may follow
  for (const char c : text) {
    const int8_t v = kTable[static_cast<unsigned char>(c)];
    if (v == kSkip) continue;
    if (v == kInvalid) return std::nullopt;
    if (v == kPad) {
      ++padding;
      continue;
    }
    if (padding > 0) return std::nullopt;  // data after padding
    accumulator = (accumulator << 6) | static_cast<uint32_t>(v);
    if (++sextets == 4) {
      out.push_back(static_cast<uint8_t>(accumulator >> 16));
      out.push_back(static_cast<uint8_t>(accumulator >> 8));
      out.push_back(static_cast<uint8_t>(accumulator));
      accumulator = 0;
      sextets = 0;
    }
  }
  // A final group of 2 or 3 sextets carries 1 or 2 bytes; its padding, if any, must complete it to 4.
  if (sextets == 1) return std::nullopt;
  if (padding > 0 && (sextets == 0 || sextets + padding != 4)) return std::nullopt;
  if (sextets == 2) {  // unused low bits are ignored, as Python's decoder does
    out.push_back(static_cast<uint8_t>(accumulator >> 4));
  } else if (sextets == 3) {
    out.push_back(static_cast<uint8_t>(accumulator >> 10));
    out.push_back(static_cast<uint8_t>(accumulator >> 2));
  }
  return out;
}

}  // namespace vtprune::server
