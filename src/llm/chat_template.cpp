// LLaVA-1.5's conversation format, byte-exact to conv_vicuna_v1 / conv_llava_v1 (sep " ", sep2 "</s>",
// mm_use_im_start_end = False). llama.cpp's built-in "vicuna" template differs ("\n\n" after the system
// prompt, "\n" before ASSISTANT), so the string is built here.
#include <string>
#include <utility>

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

}  // namespace vtprune::llm
