// Small real vocabularies for the random-weight test LLMs (internal to src/llm): the English words both
// vocabularies turn into single tokens, and Qwen2's GPT-2 byte-level BPE vocabulary with its special tokens
// and Qwen2.5-VL-Instruct's chat template.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vtprune::llm::detail {

// Enough English to tokenise LLaVA's and Qwen's system prompts, typical VQA questions and TinyStories-like
// text into word pieces instead of bytes. (The SentencePiece vocabulary depends on this order.)
inline constexpr std::array kTestWords = {
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "is", "are", "was", "were", "be", "it", "this",
    "that", "there", "what", "which", "who", "how", "many", "much", "where", "why", "do", "does", "can", "you",
    "your", "i", "he", "she", "they", "we", "his", "her", "their", "with", "for", "from", "by", "as", "not", "no",
    "yes", "chat", "between", "curious", "human", "artificial", "intelligence", "assistant", "gives", "helpful",
    "detailed", "polite", "answers", "questions", "USER", "ASSISTANT", "A", "The", "What", "How", "Is", "Describe",
    "describe", "image", "picture", "photo", "color", "colour", "shown", "show", "see", "look", "left", "right",
    "top", "bottom", "people", "person", "man", "woman", "dog", "cat", "car", "table", "red", "blue", "green",
    "white", "black", "yellow", "big", "small", "one", "two", "three", "four", "Once", "upon", "time", "little",
    "girl", "boy", "named", "Lily", "Tom", "loved", "play", "outside", "park", "day", "saw", "ball", "happy",
    "said", "went", "very", "had", "like", "friend", "answer", "question", "word", "phrase", "single", "using",
};

// Token types as llama.cpp stores them (tokenizer.ggml.token_type).
inline constexpr int32_t kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4,
                         kTokenUnused = 5, kTokenByte = 6;

// Qwen2's tokenizer as llama.cpp's converter writes it (tokenizer.ggml.model "gpt2", pre "qwen2"):
//   ids 0..255      the 256 byte tokens in GPT-2's bytes_to_unicode order (id 220 "Ġ" = space, 198 "Ċ" = \n)
//   ids 256..       tokens of merges learnt on kTestWords (+ chat words), each word with and without a leading
//                   space, until every such word is one token (a few thousand merges), all NORMAL
//   ...             "[PAD<id>]" (UNUSED) up to special_base
//   special_base..  Qwen2.5-VL's 22 added tokens in their real order: <|endoftext|> <|im_start|> <|im_end|> ...
//                   <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|> <tool_call>
//                   </tool_call> <|fim_prefix|> ... <|file_sep|> (CONTROL; the two tool-call tags USER_DEFINED,
//                   as the converter marks added tokens that are not special and do not look special)
//   then            "[PAD<id>]" up to n_vocab.
// special_base = n_vocab - 293, the real file's layout (151643 of 151936); a smaller n_vocab keeps the
// specials 293 ids from its end.
struct BpeVocabulary {
  std::vector<std::string> tokens;  // byte-level text (bytes mapped as GPT-2 does), in id order
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // "left right", rank order
  int32_t special_base = 0;         // id of <|endoftext|>
};
BpeVocabulary qwen_bpe_vocabulary(int n_vocab);

// Offsets of the special tokens the GGUF metadata names, from special_base.
inline constexpr int32_t kQwenEndOfText = 0, kQwenImStart = 1, kQwenImEnd = 2;

// Qwen2.5-VL-Instruct's chat template (chat_template.json of the Qwen2.5-VL-*-Instruct repositories): a default
// system prompt when the first message is not a system message, images as
// <|vision_start|><|image_pad|><|vision_end|>.
inline constexpr std::string_view kQwen25VlChatTemplate =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] "
    "== 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + "
    "1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|>"
    "<|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// Gemma 3's chat template (chat_template of the google/gemma-3-*-it repositories): a system message becomes a
// prefix of the first user turn, roles must alternate, "assistant" is rendered as "model", images as
// <start_of_image>.
inline constexpr std::string_view kGemma3ChatTemplate =
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n";

// SmolVLM-Instruct's chat template (chat_template of HuggingFaceTB/SmolVLM-*-Instruct): typed content parts,
// "User:" / "Assistant:" turns ended by <end_of_utterance>, images as <image>.
inline constexpr std::string_view kSmolVlmChatTemplate =
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' "
    "%}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

}  // namespace vtprune::llm::detail
