// chat.h: the chat templates of the targets draftalign trains drafters for, rendered exactly as transformers'
// apply_chat_template renders their Jinja templates (tested against it), without a Jinja engine:
//   chatml  <|im_start|>role\ncontent<|im_end|>\n ... (SmolLM2, Qwen); an optional default system prompt is inserted
//           when the conversation has none (SmolLM2's template does this).
//   llama2  <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] ... (Llama 2 Chat).
// The template is named in the YAML (target.chat_template) or recognised from tokenizer_config.json /
// chat_template.jinja ("auto").
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace draftalign::tok {

// Python's str.strip() for the whitespace a chat message can hold (the Llama 2 template strips each message).
std::string strip(const std::string& s);

struct Message {
  std::string role;  // system, user, assistant
  std::string content;
};

class ChatTemplate {
 public:
  enum class Format { kChatML, kLlama2 };

  ChatTemplate(Format format, std::string bos_text, std::string eos_text, std::string default_system = {});

  // Loads the template of a HF directory: `name` is auto, chatml or llama2. auto reads the Jinja source in
  // tokenizer_config.json ("chat_template") or chat_template.jinja and recognises the format; an unknown template is
  // an Error naming the file and telling to set target.chat_template.
  static ChatTemplate from_dir(const std::filesystem::path& dir, const std::string& name = "auto");

  // The prompt text; tokenize it with Tokenizer::encode. Errors (bad roles, llama2 turns that do not alternate) name
  // the message index. add_generation_prompt opens the assistant turn (chatml; llama2 prompts already end with
  // [/INST]).
  std::string render(const std::vector<Message>& messages, bool add_generation_prompt = true) const;

  // The text that opens a user turn, as render() writes it when the conversation is {system (if any), user: ...}:
  // what comes before the user's words. An empty `system` takes the template's default (chatml), or none (llama2).
  // Magpie samples the user turn from here; it ends where user_turn_end() begins.
  std::string user_prefix(const std::string& system = {}) const;
  std::string user_turn_end() const { return format_ == Format::kChatML ? "<|im_end|>" : "[/INST]"; }

  Format format() const { return format_; }
  std::string name() const { return format_ == Format::kChatML ? "chatml" : "llama2"; }
  const std::string& default_system() const { return default_system_; }

 private:
  Format format_;
  std::string bos_text_, eos_text_, default_system_;
};

}  // namespace draftalign::tok
