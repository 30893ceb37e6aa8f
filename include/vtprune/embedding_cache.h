// An LRU cache of encoded + reduced images, for serving: every turn of a conversation carries its images
// again, and an image already seen must not be decoded, encoded, reduced or projected again.
//
// Keys are strings the pipeline builds from the image bytes' SHA-256, the family / encoder / vision file and
// its options, the method with all its effective options, the budget this image got, and (for
// prompt-conditioned methods) the question the image was asked with: two requests share an entry exactly when
// the pipeline would compute the same rows for them. The same key identifies the rows in the KV cache
// (llm::Chunk::key), so a later turn also finds them there.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vtprune/llm.h"
#include "vtprune/pipeline.h"

namespace vtprune::pipeline {

// SHA-256 of `bytes` as 64 lowercase hex digits (FIPS 180-4; a collision would hand one client's image
// embeddings to another, so no weaker hash).
std::string digest(std::span<const uint8_t> bytes);

class EmbeddingCache {
 public:
  // What one image became: the rows the LLM receives for it and the report the pipeline returns for it.
  struct Entry {
    llm::Chunk chunk;    // embeddings (with M-RoPE grid offsets and span where the family has them)
    ImageReport report;
  };
  struct Stats {
    int64_t max_bytes = 0;
    int64_t bytes = 0;      // held now (see entry_bytes)
    int64_t entries = 0;
    int64_t hits = 0, misses = 0, insertions = 0, evictions = 0;
  };

  // `max_bytes` bounds what entries hold (entry_bytes summed); 0 stores nothing. Throws Error when negative.
  explicit EmbeddingCache(int64_t max_bytes);
  ~EmbeddingCache();
  EmbeddingCache(const EmbeddingCache&) = delete;
  EmbeddingCache& operator=(const EmbeddingCache&) = delete;

  // All members are thread-safe (one mutex; the copies happen outside it).
  // The entry for `key` (now the most recently used one), or null.
  std::shared_ptr<const Entry> find(const std::string& key);
  // Stores `entry` under `key` as the most recently used one (replacing an older one) and evicts the least
  // recently used entries until the bound holds again. An entry larger than the whole bound is not stored.
  void insert(const std::string& key, Entry entry);
  // Small numbers kept the same way (what a method keeps of an image without a budget, which a total budget
  // needs before it can split): they count against the bound like entries.
  std::optional<int64_t> find_count(const std::string& key);
  void insert_count(const std::string& key, int64_t value);

  Stats stats() const;
  // Keys from the most to the least recently used (counts included, prefixed "count:").
  std::vector<std::string> keys() const;
  // What an entry counts against the bound: its key, embedding rows, grid offsets, the report's index lists
  // and per-row data, plus a fixed overhead for the bookkeeping.
  static int64_t entry_bytes(const std::string& key, const Entry& entry);
  static constexpr int64_t kOverheadBytes = 256;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vtprune::pipeline
