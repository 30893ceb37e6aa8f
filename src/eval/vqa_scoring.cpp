#include "vqa_scoring.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <regex>
#include <unordered_map>

#include "eval_common.h"
#include "vtprune/reduce.h"

namespace vtprune::eval {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string strip(std::string_view text) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  size_t b = 0, e = text.size();
  while (b < e && space(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && space(static_cast<unsigned char>(text[e - 1]))) --e;
  return std::string(text.substr(b, e - b));
}

// Python's str.split(): runs of whitespace separate, no empty words.
std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) words.push_back(std::move(word)), word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
}

// vqaEval.py's contractions table (keys as they appear in the official code; the capitalised ones can
// never match after its lower-casing, exactly as there).
const std::unordered_map<std::string, std::string>& contractions() {
  static const std::unordered_map<std::string, std::string> table = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"}, {"couldnt", "couldn't"},
      {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"}, {"didnt", "didn't"}, {"doesnt", "doesn't"},
      {"dont", "don't"}, {"hadnt", "hadn't"}, {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"},
      {"havent", "haven't"}, {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"}, {"hes", "he's"},
      {"howd", "how'd"}, {"howll", "how'll"}, {"hows", "how's"}, {"Id've", "I'd've"}, {"I'dve", "I'd've"}, {"Im", "I'm"},
      {"Ive", "I've"}, {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"}, {"itll", "it'll"},
      {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"}, {"mightnt've", "mightn't've"},
      {"mightn'tve", "mightn't've"}, {"mightve", "might've"}, {"mustnt", "mustn't"}, {"mustve", "must've"},
      {"neednt", "needn't"}, {"notve", "not've"}, {"oclock", "o'clock"}, {"oughtnt", "oughtn't"},
      {"ow's'at", "'ow's'at"}, {"'ows'at", "'ow's'at"}, {"'ow'sat", "'ow's'at"}, {"shant", "shan't"},
      {"shed've", "she'd've"}, {"she'dve", "she'd've"}, {"she's", "she's"}, {"shouldve", "should've"},
      {"shouldnt", "shouldn't"}, {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"},
      {"somebody'd", "somebodyd"}, {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"},
      {"somebodyll", "somebody'll"}, {"somebodys", "somebody's"}, {"someoned", "someone'd"},
      {"someoned've", "someone'd've"}, {"someone'dve", "someone'd've"}, {"someonell", "someone'll"},
      {"someones", "someone's"}, {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
      {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"}, {"thered", "there'd"},
      {"thered've", "there'd've"}, {"there'dve", "there'd've"}, {"therere", "there're"}, {"theres", "there's"},
      {"theyd", "they'd"}, {"theyd've", "they'd've"}, {"they'dve", "they'd've"}, {"theyll", "they'll"},
      {"theyre", "they're"}, {"theyve", "they've"}, {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"},
      {"we'dve", "we'd've"}, {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"}, {"whatre", "what're"},
      {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"}, {"whered", "where'd"}, {"wheres", "where's"},
      {"whereve", "where've"}, {"whod", "who'd"}, {"whod've", "who'd've"}, {"who'dve", "who'd've"}, {"wholl", "who'll"},
      {"whos", "who's"}, {"whove", "who've"}, {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"},
      {"wont", "won't"}, {"wouldve", "would've"}, {"wouldnt", "wouldn't"}, {"wouldnt've", "wouldn't've"},
      {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"},
      {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"}, {"youd", "you'd"},
      {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"}, {"youre", "you're"}, {"youve", "you've"}};
  return table;
}

// vqaEval.py's manualMap (number words up to ten, and "none" -> "0").
const std::unordered_map<std::string, std::string>& number_words() {
  static const std::unordered_map<std::string, std::string> table = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  return table;
}

}  // namespace

AnswerType parse_answer_type(std::string_view text) {
  if (text == "yesno") return AnswerType::YesNo;
  if (text == "choice") return AnswerType::Choice;
  if (text == "open") return AnswerType::Open;
  throw Error("answer type '" + std::string(text) + "' is not one of yesno, choice, open");
}

std::string_view to_string(AnswerType type) {
  switch (type) {
    case AnswerType::YesNo: return "yesno";
    case AnswerType::Choice: return "choice";
    case AnswerType::Open: return "open";
  }
  return "open";
}

std::string pope_yes_no(std::string_view answer) {
  std::string text(answer.substr(0, answer.find('.')));  // the first sentence only
  text.erase(std::remove(text.begin(), text.end(), ','), text.end());
  // Python's text.split(' '): single spaces separate (a newline stays inside a word, as there).
  for (const auto& word : split_fields(text, ' ')) {
    if (word == "No" || word == "no" || word == "not") return "no";
  }
  return "yes";
}

std::optional<std::string> reference_yes_no(std::string_view answer) {
  std::string text = lower(strip(answer));
  while (!text.empty() && std::ispunct(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (text == "yes" || text == "no") return text;
  return std::nullopt;
}

std::string choice_letter(size_t index) { return std::string(1, static_cast<char>('A' + index)); }

std::string extract_choice(std::string_view answer, const std::vector<std::string>& choices, size_t n_letters) {
  const size_t letters = std::min<size_t>(choices.empty() ? std::max<size_t>(n_letters, 4) : choices.size(), 26);
  // can_infer_option: blank the punctuation around letters, then look for exactly one letter as a word.
  std::string blanked(answer);
  for (char& c : blanked) {
    if (std::string_view(".()[],:;!*#{}").find(c) != std::string_view::npos) c = ' ';
  }
  const auto words = split_words(blanked);
  std::vector<std::string> found;
  for (size_t i = 0; i < letters; ++i) {
    if (std::find(words.begin(), words.end(), choice_letter(i)) != words.end()) found.push_back(choice_letter(i));
  }
  if (found.size() == 1) return found[0];
  if (!found.empty()) return "";
  // can_infer_text: exactly one option text inside the answer.
  const std::string haystack = lower(answer);
  std::vector<size_t> contained;
  for (size_t i = 0; i < choices.size() && i < letters; ++i) {
    const std::string needle = lower(choices[i]);
    if (!needle.empty() && haystack.find(needle) != std::string::npos) contained.push_back(i);
  }
  return contained.size() == 1 ? choice_letter(contained[0]) : "";
}

std::optional<std::string> reference_choice(std::string_view answer, const std::vector<std::string>& choices) {
  std::string text = strip(answer);
  const std::string bare = [&] {
    std::string t = text;
    t.erase(std::remove_if(t.begin(), t.end(), [](char c) { return c == '(' || c == ')' || c == '.'; }), t.end());
    return strip(t);
  }();
  if (bare.size() == 1 && std::isalpha(static_cast<unsigned char>(bare[0]))) {
    const auto index = static_cast<size_t>(std::toupper(static_cast<unsigned char>(bare[0])) - 'A');
    if (choices.empty() || index < choices.size()) return choice_letter(index);
    return std::nullopt;
  }
  for (size_t i = 0; i < choices.size(); ++i) {
    if (lower(strip(choices[i])) == lower(text)) return choice_letter(i);
  }
  return std::nullopt;
}

std::string vqa_process_punctuation(std::string_view text) {
  static const std::array<std::string_view, 21> punct = {";", "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+",
                                                         "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"};
  static const std::regex comma_between_digits(R"((\d)(,)(\d))");
  const std::string in(text);
  const bool digit_comma = std::regex_search(in, comma_between_digits);
  std::string out = in;
  for (std::string_view p : punct) {
    // As the official code: the test looks at the ORIGINAL text, the replacement edits the running one.
    const bool spaced = in.find(std::string(p) + " ") != std::string::npos || in.find(" " + std::string(p)) != std::string::npos;
    replace_all(out, p, spaced || digit_comma ? "" : " ");
  }
  // periodStrip "(?!<=\d)(\.)(?!\d)": a period not followed by a digit goes. The official call passes
  // re.UNICODE (= 32) as re.sub's count, so at most 32 are removed.
  std::string stripped;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool before_digit = i + 1 < out.size() && std::isdigit(static_cast<unsigned char>(out[i + 1]));
    if (out[i] == '.' && !before_digit && removed < 32) {
      ++removed;
      continue;
    }
    stripped += out[i];
  }
  return stripped;
}

std::string vqa_process_digit_article(std::string_view text) {
  std::vector<std::string> words;
  for (auto word : split_words(lower(text))) {
    if (const auto it = number_words().find(word); it != number_words().end()) word = it->second;
    if (word != "a" && word != "an" && word != "the") words.push_back(std::move(word));
  }
  std::string out;
  for (auto& word : words) {
    if (const auto it = contractions().find(word); it != contractions().end()) word = it->second;
    out += (out.empty() ? "" : " ") + word;
  }
  return out;
}

std::string vqa_normalize(std::string_view text) {
  std::string t(text);
  std::replace(t.begin(), t.end(), '\n', ' ');
  std::replace(t.begin(), t.end(), '\t', ' ');
  return vqa_process_digit_article(vqa_process_punctuation(strip(t)));
}

double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string predicted = vqa_normalize(prediction);
  std::vector<bool> match;
  for (const auto& a : answers) match.push_back(vqa_normalize(a) == predicted);
  const auto matches = static_cast<double>(std::count(match.begin(), match.end(), true));
  if (answers.size() == 1) return match[0] ? 1.0 : 0.0;
  if (answers.size() != 10) return std::min(matches / 3.0, 1.0);
  // Official: for each annotator, min(1, matches among the other nine / 3); then the mean.
  double sum = 0;
  for (bool m : match) sum += std::min(1.0, (matches - (m ? 1.0 : 0.0)) / 3.0);
  return sum / 10.0;
}

double score_answer(AnswerType type, std::string_view prediction, const std::vector<std::string>& answers,
                    const std::vector<std::string>& choices) {
  if (answers.empty()) return 0.0;
  switch (type) {
    case AnswerType::YesNo: {
      const auto expected = reference_yes_no(answers[0]);
      return expected && pope_yes_no(prediction) == *expected ? 1.0 : 0.0;
    }
    case AnswerType::Choice: {
      const auto expected = reference_choice(answers[0], choices);
      size_t n_letters = 4;
      if (expected) n_letters = std::max<size_t>(n_letters, static_cast<size_t>((*expected)[0] - 'A') + 1);
      return expected && extract_choice(prediction, choices, n_letters) == *expected ? 1.0 : 0.0;
    }
    case AnswerType::Open: return vqa_accuracy(prediction, answers);
  }
  return 0.0;
}

}  // namespace vtprune::eval
