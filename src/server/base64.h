// Strict base64 (RFC 4648 standard alphabet) for data: URIs.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace vtprune::server {

// Decodes standard base64. ASCII whitespace is skipped (MIME-wrapped payloads); padding is optional but,
// when present, only at the end. Returns nullopt for any other character, misplaced padding or a length
// that cannot be base64 (one dangling character).
std::optional<std::vector<uint8_t>> decode_base64(std::string_view text);

// Bytes that `encoded_chars` base64 characters decode to at most (for limit checks before decoding).
constexpr int64_t base64_decoded_upper_bound(int64_t encoded_chars) { return (encoded_chars / 4 + 1) * 3; }

}  // namespace vtprune::server
