// Answer scoring as the standard VLM evaluation harnesses do it, so `vtprune eval vqa` numbers mean what
// the papers' numbers mean:
//   * yes/no (POPE, LLaVA's eval_pope.py): keep the first sentence, drop commas, split on spaces; any word
//     "No" / "no" / "not" makes it "no", anything else is "yes".
//   * multiple choice (MMBench / ScienceQA as VLMEvalKit's can_infer): the one option letter that stands
//     as a word once .()[],:;!*#{} are blanked ("(B)", "B.", "The answer is B"), else the one choice
//     text contained in the answer (case-insensitive); anything ambiguous scores 0.
//   * open answers (VQAv2's official vqaEval.py): processPunctuation + processDigitArticle on prediction
//     and references (punctuation, articles, number words -> digits, contractions), exact match; with
//     the 10 annotator answers of VQAv2/TextVQA/VizWiz the official accuracy, the mean over the 10
//     leave-one-out subsets of min(#matches / 3, 1); with another number of answers min(#matches / 3, 1),
//     so a single reference answer is a plain exact match.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vtprune::eval {

enum class AnswerType { YesNo, Choice, Open };
// "yesno" | "choice" | "open"; throws Error otherwise.
AnswerType parse_answer_type(std::string_view text);
std::string_view to_string(AnswerType type);

// POPE's rule: "yes" or "no" (never anything else).
std::string pope_yes_no(std::string_view answer);
// A reference yes/no answer ("Yes", "no.", " YES ") -> "yes" / "no"; nullopt for anything else.
std::optional<std::string> reference_yes_no(std::string_view answer);

// "A", "B", ... for choice i.
std::string choice_letter(size_t index);
// The option letter a free-form answer names, or "" when none can be inferred (VLMEvalKit can_infer).
// `choices` are the option texts (A = choices[0]); without them the letters A..max(D, n_letters) count.
std::string extract_choice(std::string_view answer, const std::vector<std::string>& choices, size_t n_letters = 4);
// A reference choice answer ("B", "(b)", "B.", or the option's text) -> its letter; nullopt if it is none.
std::optional<std::string> reference_choice(std::string_view answer, const std::vector<std::string>& choices);

// vqaEval.py's processPunctuation / processDigitArticle, and both after newline/tab -> space and strip.
std::string vqa_process_punctuation(std::string_view text);
std::string vqa_process_digit_article(std::string_view text);
std::string vqa_normalize(std::string_view text);
// VQA accuracy of `prediction` against the reference answers (see the header comment); 0 without answers.
double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& answers);

// Score in [0, 1] of one prediction for an item of `type`.
double score_answer(AnswerType type, std::string_view prediction, const std::vector<std::string>& answers,
                    const std::vector<std::string>& choices);

}  // namespace vtprune::eval
