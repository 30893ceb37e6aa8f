// CLIP's byte-level BPE tokenizer on vocabularies built here exactly as CLIP's is (simple_tokenizer.py /
// CLIPTokenizer): the 256 byte characters of GPT-2's bytes_to_unicode() in its order (printable bytes '!'..'~',
// '¡'..'¬', '®'..'ÿ' first, then the other bytes as U+0100...), the same 256 with "</w>", one entry per merge,
// then <|startoftext|> and <|endoftext|>. Every expected id below is derived by hand from that construction:
//   printable ASCII byte b -> b - 33 ('!' = 0, 'a' = 64); byte 0xA1..0xAC -> b - 0xA1 + 94; 0xAE..0xFF ->
//   b - 0xAE + 106; the 68 other bytes in increasing order -> 188..255; "</w>" forms +256; merge r -> 512 + r.
// With CLIP's 48894 merges this puts <|startoftext|> at 49406 and <|endoftext|> at 49407, its published ids.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "vtprune/text.h"

namespace vtprune::text {
namespace {

namespace fs = std::filesystem;

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

// GPT-2's bytes_to_unicode() characters in vocabulary order (the test's own copy of the published table).
std::vector<std::string> byte_characters() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<std::string> chars;
  for (int b : bs) chars.push_back(utf8(static_cast<uint32_t>(b)));
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) chars.push_back(utf8(static_cast<uint32_t>(next++)));
  }
  return chars;
}

// Writes vocab.json + merges.txt built as CLIP's: bytes, bytes + "</w>", one entry per merge (the first
// `vocab_merges` of them), specials.
fs::path write_vocab(const std::vector<std::string>& merges, const std::string& tag, size_t vocab_merges = SIZE_MAX) {
  const fs::path dir = test::temp_dir(tag);
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  const auto bytes = byte_characters();
  for (const auto& c : bytes) vocab[c] = id++;
  for (const auto& c : bytes) vocab[c + "</w>"] = id++;
  std::ofstream m(dir / "merges.txt");
  m << "#version: 0.2\n";
  for (size_t i = 0; i < merges.size(); ++i) {
    m << merges[i] << "\n";
    if (i < vocab_merges) {
      std::string joined = merges[i];
      joined.erase(joined.find(' '), 1);
      vocab[joined] = id++;
    }
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  std::ofstream(dir / "vocab.json") << vocab.dump();
  return dir;
}

// Merge ranks 0..9 -> ids 512..521; <|startoftext|> = 522, <|endoftext|> = 523.
const std::vector<std::string> kMerges = {
    "h e",        // 512 he
    "l l",        // 513 ll
    "he ll",      // 514 hell
    "hell o</w>", // 515 hello</w>
    "o r",        // 516 or
    "w or",       // 517 wor
    "l d</w>",    // 518 ld</w>
    "wor ld</w>", // 519 world</w>
    "a a",        // 520 aa
    "' s</w>",    // 521 's</w>
};

class ClipTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tok_ = new ClipTokenizer(ClipTokenizer::load_dir(write_vocab(kMerges, "clip_vocab"))); }
  static void TearDownTestSuite() { delete tok_; }
  static ClipTokenizer* tok_;
};
ClipTokenizer* ClipTokenizerTest::tok_ = nullptr;

using Ids = std::vector<int32_t>;

TEST_F(ClipTokenizerTest, SpecialTokensFromTheVocabulary) {
  EXPECT_EQ(tok_->bos_id(), 522);
  EXPECT_EQ(tok_->eos_id(), 523);
  EXPECT_EQ(tok_->vocab_size(), 524u);
  EXPECT_EQ(tok_->encode(""), (Ids{522, 523}));
  EXPECT_EQ(tok_->encode(" \t\n "), (Ids{522, 523}));  // white space alone is no token
}

TEST_F(ClipTokenizerTest, BpeMergesByRankWithEndOfWord) {
  // h e l l o</w> -> he l l o</w> -> he ll o</w> -> hell o</w> -> hello</w>
  EXPECT_EQ(tok_->encode("hello"), (Ids{522, 515, 523}));
  EXPECT_EQ(tok_->pieces("hello"), (std::vector<std::string>{"hello</w>"}));
  // w o r l d</w>: "o r" (rank 4) before "w or" (5); "l d</w>" (6) then "wor ld</w>" (7)
  EXPECT_EQ(tok_->encode("world"), (Ids{522, 519, 523}));
  // "</w>" marks the end of a word only: "hel" ends in l</w>, which "l l" does not merge
  EXPECT_EQ(tok_->pieces("hel"), (std::vector<std::string>{"he", "l</w>"}));
  EXPECT_EQ(tok_->encode("hel"), (Ids{522, 512, 75 + 256, 523}));
  // every non-overlapping occurrence of the best pair, left to right: a a a a</w> -> aa a a</w>
  EXPECT_EQ(tok_->encode("aaaa"), (Ids{522, 520, 64, 64 + 256, 523}));
  // a single character is its "</w>" form: '!' = 0 -> "!</w>" = 256; 'a</w>' = 320 as in CLIP's vocabulary
  EXPECT_EQ(tok_->encode("!"), (Ids{522, 256, 523}));
  EXPECT_EQ(tok_->encode("a"), (Ids{522, 320, 523}));
}

TEST_F(ClipTokenizerTest, LowerCasesAndCleansWhiteSpace) {
  EXPECT_EQ(tok_->encode("HeLLo"), tok_->encode("hello"));
  // runs of white space (tabs, newlines, no-break space U+00A0) separate words and disappear
  EXPECT_EQ(tok_->encode("  HELLO \t\n World!  "), (Ids{522, 515, 519, 256, 523}));
  EXPECT_EQ(tok_->encode("hello\xC2\xA0world"), (Ids{522, 515, 519, 523}));
}

TEST_F(ClipTokenizerTest, PreTokenizerRegex) {
  // 's|'t|... come first: "it's" -> it, 's ("' s</w>" merges to 521); i = 72, t</w> = 83 + 256
  EXPECT_EQ(tok_->encode("it's"), (Ids{522, 72, 83 + 256, 521, 523}));
  // an apostrophe without a contraction is punctuation: "'x" -> '</w> (6 + 256), x</w> (87 + 256)
  EXPECT_EQ(tok_->encode("'x"), (Ids{522, 6 + 256, 87 + 256, 523}));
  // [\p{N}]: one digit per word: 2</w> = 17 + 256, 0</w> = 15 + 256, 4</w> = 19 + 256
  EXPECT_EQ(tok_->encode("2024"), (Ids{522, 273, 271, 273, 275, 523}));
  // [^\s\p{L}\p{N}]+: a punctuation run is one word: "?!" -> ? (30), !</w> (256)
  EXPECT_EQ(tok_->encode("?!"), (Ids{522, 30, 256, 523}));
  // letters and digits split: "a1" -> a</w>, 1</w> (16 + 256)
  EXPECT_EQ(tok_->encode("a1"), (Ids{522, 320, 16 + 256, 523}));
}

TEST_F(ClipTokenizerTest, SpecialStringsInTheText) {
  EXPECT_EQ(tok_->encode("hello<|endoftext|>world"), (Ids{522, 515, 523, 519, 523}));
  EXPECT_EQ(tok_->encode("<|startoftext|>!"), (Ids{522, 522, 256, 523}));
}

TEST_F(ClipTokenizerTest, ByteLevelUnicode) {
  // "Ünï" -> "ünï" = C3 BC 6E C3 AF: Ã (0xC3 -> 127), ¼ (0xBC -> 120), n (77), Ã (127), ¯</w> (0xAF -> 107 + 256)
  EXPECT_EQ(tok_->encode("\xC3\x9Cn\xC3\x8F"), (Ids{522, 127, 120, 77, 127, 363, 523}));
  // "Ā" (U+0100) lower-cases to "ā" = C4 81: Ä (0xC4 -> 128), then byte 0x81, not printable: the 36th such byte
  // (0x00..0x20, 0x7F, 0x80, 0x81) -> 188 + 35 = 223, with </w> 479
  EXPECT_EQ(tok_->encode("\xC4\x80"), (Ids{522, 128, 479, 523}));
  // "İ" (U+0130) lower-cases to two code points, i + U+0307 (CC 87). U+0307 is a combining mark, not \p{L}, so
  // it is a word of its own: i</w> (72 + 256), then Ì (0xCC -> 136), byte 0x87 (188 + 41 = 229) + 256
  EXPECT_EQ(tok_->encode("\xC4\xB0"), (Ids{522, 328, 136, 485, 523}));
  // Greek letters are \p{L}: one word "αβ" = CE B1 CE B2
  EXPECT_EQ(tok_->pieces("\xCE\x91\xCE\x92").size(), 4u);  // Α Β lower-case to α β: 4 bytes, no merges
  // malformed UTF-8 becomes U+FFFD (EF BF BD): 3 byte characters
  EXPECT_EQ(tok_->pieces("\xFF").size(), 3u);
}

TEST(ClipTokenizer, CapsMergesAtClipsCountAndSpecialIdsMatchClip) {
  // CLIP's vocabulary size: 512 byte entries + 48894 merges + 2 specials = 49408. Merges are placeholders that
  // never fire (pieces containing digits after a byte character), and one real merge "h i</w>" sits just past
  // the cap: CLIP reads merges[1 : 48895], so it must be ignored.
  std::vector<std::string> merges;
  for (int i = 0; i < 48894; ++i) merges.push_back("\xC4\x80" + std::to_string(i) + " \xC4\x81");
  merges.push_back("h i</w>");
  const ClipTokenizer tok = ClipTokenizer::load_dir(write_vocab(merges, "clip_vocab_full", 48894));
  EXPECT_EQ(tok.bos_id(), 49406);
  EXPECT_EQ(tok.eos_id(), 49407);
  EXPECT_EQ(tok.encode("hi"), (Ids{49406, 71, 72 + 256, 49407}));  // h, i</w>: the 48895th merge is not used
  // the same merge inside the cap does fire
  const ClipTokenizer small = ClipTokenizer::load_dir(write_vocab({"h i</w>"}, "clip_vocab_hi"));
  EXPECT_EQ(small.encode("hi"), (Ids{513, 512, 514}));  // hi</w> = 512
}

TEST(ClipTokenizer, BadFilesAreNamedErrors) {
  const fs::path dir = test::temp_dir("clip_vocab_bad");
  auto expect_error = [&](const std::string& fragment) {
    try {
      ClipTokenizer::load_dir(dir);
      ADD_FAILURE() << "no error; expected " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("cannot open");
  std::ofstream(dir / "vocab.json") << "{\"a\": 0}";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n";
  expect_error("has no <|startoftext|>");
  std::ofstream(dir / "vocab.json") << "{\"<|startoftext|>\": 0, \"<|endoftext|>\": -1}";
  expect_error("is not a non-negative integer");
  std::ofstream(dir / "vocab.json") << "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1}";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nabc\n";
  expect_error("merges.txt line 2 is not \"a b\"");
}

TEST(ClipTokenizer, SegmentsOf77AsClipEncoder) {
  // clip_encoder.py: segments = (n - 1) // 77 + 1, zero-padded, attention mask 1 on real tokens
  std::vector<int32_t> ids(77, 5);
  TokenSegments s = split_segments(ids, 77);
  EXPECT_EQ(s.count, 1);
  ids.push_back(7);
  s = split_segments(ids, 77);
  ASSERT_EQ(s.count, 2);
  ASSERT_EQ(s.ids.size(), 154u);
  EXPECT_EQ(s.ids[77], 7);
  EXPECT_EQ(s.mask[77], 1);
  EXPECT_EQ(s.ids[78], 0);
  EXPECT_EQ(s.mask[78], 0);
  EXPECT_EQ(std::count(s.mask.begin(), s.mask.end(), 1), 78);
  EXPECT_THROW(split_segments({}, 77), Error);
}

}  // namespace
}  // namespace vtprune::text
