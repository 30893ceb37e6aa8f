// LLaVA-1.5's conversation format, byte-exact to conv_vicuna_v1 / conv_llava_v1 (sep " ", sep2 "</s>",
// mm_use_im_start_end = False). llama.cpp's built-in "vicuna" template differs ("\n\n" after the system
// prompt, "\n" before ASSISTANT), so the string is built here.
#include <chrono>
#include <ctime>
#include <span>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "jinja/caps.h"
#include "jinja/parser.h"
#include "jinja/runtime.h"
#include "json.h"  // llama.cpp's common_json, what its Jinja engine takes
#include "vtprune/llm.h"

namespace vtprune::llm {

namespace {

int count_markers(std::string_view text) {
  int count = 0;
  for (size_t at = text.find(kImageMarker); at != std::string_view::npos;
       at = text.find(kImageMarker, at + kImageMarker.size())) {
    ++count;
  }
  return count;
}

}  // namespace

std::string llava15_prompt_text(std::string_view question, int n_images) {
  if (n_images < 0) throw Error("llava15_prompt_text: n_images must be >= 0, got " + std::to_string(n_images));
  std::string message;
  const int markers = count_markers(question);
  if (markers > 0) {
    if (markers != n_images) {
      throw Error("the question has " + std::to_string(markers) + " " + std::string(kImageMarker) +
                  " markers but " + std::to_string(n_images) + " images were given");
    }
    message = question;
  } else {
    // What LLaVA's run_llava / model_worker do: DEFAULT_IMAGE_TOKEN + "\n" + question (once per image).
    for (int i = 0; i < n_images; ++i) {
      message += kImageMarker;
      message += '\n';
    }
    message += question;
  }
  // get_prompt() for SeparatorStyle.TWO: system + " " + "USER: " + msg + " " + "ASSISTANT:"
  std::string prompt(kLlava15System);
  prompt += " USER: ";
  prompt += message;
  prompt += " ASSISTANT:";
  return prompt;
}

std::vector<Chunk> llava15_prompt(std::string_view question, std::vector<Chunk> images) {
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i].kind != Chunk::Kind::embeddings) {
      throw Error("llava15_prompt: image " + std::to_string(i) + " is not an embeddings chunk");
    }
  }
  const std::string prompt = llava15_prompt_text(question, static_cast<int>(images.size()));
  // Split at each marker, as LLaVA's tokenizer_image_token does; the text pieces are tokenised separately
  // (the session adds BOS to the first only), so each later piece gets SentencePiece's dummy "▁" prefix.
  std::vector<Chunk> chunks;
  size_t begin = 0;
  size_t image = 0;
  for (size_t at = prompt.find(kImageMarker); at != std::string::npos;
       at = prompt.find(kImageMarker, begin)) {
    if (at > begin || chunks.empty()) chunks.push_back(Chunk::from_text(prompt.substr(begin, at - begin)));
    chunks.push_back(std::move(images[image++]));
    begin = at + kImageMarker.size();
  }
  if (begin < prompt.size()) chunks.push_back(Chunk::from_text(prompt.substr(begin)));
  return chunks;
}

// ---- LLaVA-1.5 conversations ---------------------------------------------------------------------------
// llava/conversation.py (haotian-liu/LLaVA), Conversation.get_prompt() for SeparatorStyle.TWO:
//     seps = [self.sep, self.sep2]
//     ret = self.system + seps[0]
//     for i, (role, message) in enumerate(messages):
//         if message: ret += role + ": " + message + seps[i % 2]
//         else:       ret += role + ":"
// with conv_llava_v1's sep " ", sep2 "</s>", roles ("USER", "ASSISTANT"), and the generation turn
// (ASSISTANT, None) appended as run_llava / cli.py do.

namespace {

constexpr std::string_view kLlavaSep2 = "</s>";

bool is_system(const ChatMessage& m) { return m.role == "system" || m.role == "developer"; }

// The system prompt and the turns, checked against what the template can express.
std::pair<std::string, std::span<const ChatMessage>> llava_turns(std::span<const ChatMessage> messages) {
  std::string system(kLlava15System);
  size_t first = 0;
  if (!messages.empty() && is_system(messages[0])) {
    system = messages[0].content;
    first = 1;
  }
  const auto where = [](size_t i) { return "messages[" + std::to_string(i) + "]"; };
  const auto refuse = [&](size_t i, const std::string& why) {
    throw MessageError(i, "role", "unsupported_conversation", where(i) + ".role: " + why);
  };
  if (first == messages.size()) {
    refuse(messages.empty() ? 0 : messages.size() - 1, "the conversation has no user message; LLaVA-1.5 answers the last user turn");
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    if (is_system(m)) {
      refuse(i, "a " + m.role + " message may only come first; LLaVA-1.5's conversation template has one system prompt, "
                "before the first turn");
    }
    if (m.role != "user" && m.role != "assistant") refuse(i, "role '" + m.role + "' has no place in LLaVA-1.5's conversation template");
    if ((m.role == "user") != user_turn) {
      refuse(i, std::string("LLaVA-1.5's conversation template alternates user and assistant turns, starting with user; this is ") +
                    (user_turn ? "an assistant message where a user turn belongs" : "a second user message in a row"));
    }
  }
  if (messages.back().role != "user") refuse(messages.size() - 1, "the conversation must end with a user message (the turn to answer)");
  return {system, messages.subspan(first)};
}

}  // namespace

std::string llava15_conversation_text(std::span<const ChatMessage> messages) {
  const auto [system, turns] = llava_turns(messages);
  std::string prompt = system;
  prompt += ' ';
  for (size_t i = 0; i < turns.size(); ++i) {
    prompt += turns[i].role == "user" ? "USER: " : "ASSISTANT: ";
    prompt += turns[i].content;
    prompt += i % 2 == 0 ? std::string_view(" ") : kLlavaSep2;
  }
  prompt += "ASSISTANT:";
  return prompt;
}

std::vector<Chunk> llava15_conversation(std::span<const ChatMessage> messages, std::vector<Chunk> images, int32_t eos) {
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i].kind != Chunk::Kind::embeddings) {
      throw Error("llava15_conversation: image " + std::to_string(i) + " is not an embeddings chunk");
    }
  }
  const auto [system, turns] = llava_turns(messages);
  int markers = count_markers(system);
  for (const ChatMessage& m : turns) markers += count_markers(m.content);
  if (markers != static_cast<int>(images.size())) {
    throw InputError("the conversation has " + std::to_string(markers) + " " + std::string(kImageMarker) + " markers but " +
                     std::to_string(images.size()) + " images were given");
  }
  // The text of llava15_conversation_text, cut at every marker and every "</s>" separator (only the separators
  // the template puts, never text a message contains). Text pieces are tokenised separately (BOS for the first
  // only), as LLaVA's tokenizer_image_token does at markers and its legacy SentencePiece tokenizer does after a
  // special token: each later piece gets the dummy-prefix "▁".
  std::vector<Chunk> chunks;
  std::string text;
  size_t image = 0;
  const auto flush = [&] {
    if (!text.empty() || chunks.empty()) chunks.push_back(Chunk::from_text(std::move(text)));
    text.clear();
  };
  const auto add = [&](std::string_view piece) {
    for (size_t at; (at = piece.find(kImageMarker)) != std::string_view::npos;) {
      text += piece.substr(0, at);
      flush();
      chunks.push_back(std::move(images[image++]));
      piece.remove_prefix(at + kImageMarker.size());
    }
    text += piece;
  };
  add(system);
  add(" ");
  for (size_t i = 0; i < turns.size(); ++i) {
    add(turns[i].role == "user" ? "USER: " : "ASSISTANT: ");
    add(turns[i].content);
    if (i % 2 == 0) {
      add(" ");
    } else {
      flush();
      chunks.push_back(Chunk::from_tokens({eos}));
    }
  }
  add("ASSISTANT:");
  flush();
  return chunks;
}

// ---- GGUF chat templates ------------------------------------------------------------------------------
// What llama.cpp's common_chat_templates_apply (common/chat.cpp, common_chat_templates_apply_jinja and
// common_chat_template_direct_apply_impl at commit de3ff81) does for plain messages, on the same Jinja engine.

namespace {

// ChatML, llama.cpp's fallback for a file without a template (CHATML_TEMPLATE_SRC in common/chat.cpp).
constexpr const char* kChatmlTemplate =
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\n' -}}\n"
    "{%- endif -%}";

std::string format_time(std::chrono::system_clock::time_point t, const char* format) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), format, &tm);
  return std::string(buf, n);
}

}  // namespace

std::string render_chat(const ChatTemplate& chat_template, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
  using nlohmann::json;
  const std::string& source = chat_template.source.empty() || chat_template.source == "chatml"
                                  ? std::string(kChatmlTemplate)
                                  : chat_template.source;
  try {
    jinja::lexer lexer;
    const auto lexed = lexer.tokenize(source);
    jinja::program program = jinja::parse_from_tokens(lexed);
    const jinja::caps caps = jinja::caps_get(program);

    json msgs = json::array();
    for (const ChatMessage& m : messages) {
      json content = m.content;
      // messages_inp_normalizer: a template that only iterates typed parts gets [{type: text, text}]
      if (!caps.supports_string_content && caps.supports_typed_content) {
        content = json::array({json{{"type", "text"}, {"text", m.content}}});
      }
      // workaround::map_developer_role_to_system (all templates but GPT-OSS's)
      const bool gpt_oss = source.find("<|channel|>") != std::string::npos;
      msgs.push_back(json{{"role", m.role == "developer" && !gpt_oss ? "system" : m.role}, {"content", content}});
    }
    if (!caps.supports_system_role && !msgs.empty() && msgs.front()["role"] == "system") {
      // workaround::system_message_not_supported: merged into the next message, or dropped
      if (msgs.size() > 1 && msgs[0]["content"].is_string() && msgs[1]["content"].is_string()) {
        msgs[1]["content"] = msgs[0]["content"].get<std::string>() + "\n" + msgs[1]["content"].get<std::string>();
      }
      msgs.erase(msgs.begin());
    }
    const auto now = std::chrono::system_clock::now();
    json input = {{"messages", msgs},
                  {"bos_token", chat_template.bos},
                  {"eos_token", chat_template.eos},
                  {"enable_thinking", true},
                  {"datetime", format_time(now, "%b %d %Y")},
                  {"date_string", format_time(now, "%d %b %Y")}};
    if (add_generation_prompt) input["add_generation_prompt"] = true;

    jinja::context ctx(lexed.source);
    jinja::global_from_json(ctx, common_json::parse(input.dump()), /*mark_input=*/true);
    jinja::runtime runtime(ctx);
    const jinja::value result = runtime.execute(program);
    std::string text = jinja::runtime::gather_string_parts(result)->as_string().str();
    if (chat_template.add_bos && !chat_template.bos.empty() && text.starts_with(chat_template.bos)) {
      text.erase(0, chat_template.bos.size());
    }
    if (chat_template.add_eos && !chat_template.eos.empty() && text.ends_with(chat_template.eos)) {
      text.erase(text.size() - chat_template.eos.size());
    }
    return text;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("chat template: ") + e.what());
  }
}

}  // namespace vtprune::llm
