// chat.h: the chat templates of the targets draftalign trains drafters for, rendered exactly as transformers'
// apply_chat_template renders them (tested against it):
//   jinja   the template the target ships (tokenizer_config.json "chat_template" or chat_template.jinja), rendered by
//           transformers' own renderer (render_jinja_template, jinja2) in a Python co-process started once per
//           template: the same code apply_chat_template runs, so any template renders as it does (Llama 3.1, Qwen2.5,
//           Qwen3, Mistral, SmolLM2, Llama 2 are tested). The Python is DRAFTALIGN_PYTHON (default: the project's
//           .venv, which the build needs anyway for LibTorch).
//   chatml  <|im_start|>role\ncontent<|im_end|>\n ... built in, for a target that ships no template; an optional
//           default system prompt is inserted when the conversation has none.
//   llama2  <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] ... built in (Llama 2 Chat).
// target.chat_template in the YAML chooses: auto (the shipped template, else an error), chatml or llama2.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace draftalign::tok {

// Python's str.strip() for the whitespace a chat message can hold (the Llama 2 template strips each message).
std::string strip(const std::string& s);

struct Message {
  std::string role;  // system, user, assistant
  std::string content;
};

class JinjaRenderer;

class ChatTemplate {
 public:
  enum class Format { kChatML, kLlama2, kJinja };

  ChatTemplate(Format format, std::string bos_text, std::string eos_text, std::string default_system = {});

  // Loads the template of a HF directory: `name` is auto, chatml or llama2. auto renders the Jinja source in
  // tokenizer_config.json ("chat_template"; a list of named templates: the one named "default") or
  // chat_template.jinja; a directory without one is an Error telling to set target.chat_template. A template that
  // does not compile is an Error naming the file, the line and the construct.
  static ChatTemplate from_dir(const std::filesystem::path& dir, const std::string& name = "auto");

  // The prompt text; tokenize it with Tokenizer::encode. Errors (bad roles, turns that do not alternate, anything the
  // template raises) name the template and the reason. add_generation_prompt opens the assistant turn.
  std::string render(const std::vector<Message>& messages, bool add_generation_prompt = true) const;

  // The text that opens a user turn, as render() writes it when the conversation is {system (if any), user: ...}:
  // what comes before the user's words. An empty `system` takes the template's default (chatml), or none (llama2).
  // Magpie samples the user turn from here; it ends where user_turn_end() begins.
  std::string user_prefix(const std::string& system = {}) const;
  // What closes a user turn ("<|im_end|>", "<|eot_id|>", "[/INST]"): render's text after the user's words in a
  // conversation of one user message, without surrounding whitespace.
  std::string user_turn_end() const;

  Format format() const { return format_; }
  std::string name() const {
    return format_ == Format::kChatML ? "chatml" : format_ == Format::kLlama2 ? "llama2" : "jinja";
  }
  const std::string& default_system() const { return default_system_; }  // chatml only
  const std::string& source() const { return source_; }                  // the file the Jinja template came from

 private:
  Format format_;
  std::string bos_text_, eos_text_, default_system_, source_;
  std::shared_ptr<JinjaRenderer> jinja_;  // kJinja: the co-process, shared by copies
};

}  // namespace draftalign::tok
