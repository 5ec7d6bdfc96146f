#include "tokenizer/chat.h"

#include "common/coprocess.h"
#include "common/error.h"
#include "common/fs.h"
#include "io/hf_config.h"
#include "tokenizer/internal.h"
#include "tokenizer/render_chat_script.h"

namespace draftalign::tok {

// The Python co-process that renders one Jinja template (tools/render_chat.py, embedded): started once, then one
// JSON line per conversation each way. Copies of a ChatTemplate share it; calls are serialised.
class JinjaRenderer {
 public:
  JinjaRenderer(std::string source, const std::string& jinja, const nlohmann::json& variables)
      : process_(std::move(source), "the chat template renderer", kRenderChatScript,
                 "set DRAFTALIGN_PYTHON to a Python with transformers, or target.chat_template to chatml or llama2") {
    process_.call(nlohmann::json{{"template", jinja}, {"variables", variables}}, "chat template: ");
  }

  std::string render(const std::vector<Message>& messages, bool add_generation_prompt) {
    nlohmann::json list = nlohmann::json::array();
    for (const Message& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
    return process_
        .call({{"messages", list}, {"add_generation_prompt", add_generation_prompt}}, "chat template: ")["text"]
        .get<std::string>();
  }

 private:
  Coprocess process_;
};

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

namespace {

// SmolLM2's template inserts '<|im_start|>system\n<default><|im_end|>\n' when messages[0] is not a system message.
std::string default_system_of(const std::string& jinja) {
  if (jinja.find("!= 'system'") == std::string::npos && jinja.find("!= \"system\"") == std::string::npos) return "";
  const std::string open = "<|im_start|>system\n";
  const size_t b = jinja.find(open);
  if (b == std::string::npos) return "";
  const size_t e = jinja.find("<|im_end|>", b + open.size());
  if (e == std::string::npos) return "";
  const std::string text = jinja.substr(b + open.size(), e - b - open.size());
  // A literal, not an expression such as ' + message['content'] + '.
  return text.find('\'') == std::string::npos && text.find("{{") == std::string::npos ? text : "";
}

}  // namespace

ChatTemplate::ChatTemplate(Format format, std::string bos_text, std::string eos_text, std::string default_system)
    : format_(format),
      bos_text_(std::move(bos_text)),
      eos_text_(std::move(eos_text)),
      default_system_(std::move(default_system)) {}

ChatTemplate ChatTemplate::from_dir(const std::filesystem::path& dir, const std::string& name) {
  const std::filesystem::path config = dir / "tokenizer_config.json", jinja_file = dir / "chat_template.jinja";
  nlohmann::json j = nlohmann::json::object();
  if (std::filesystem::exists(config)) j = io::read_json_file(config);
  // As transformers: chat_template.jinja first, then tokenizer_config.json's chat_template (a string, or a list of
  // named templates: the one named "default").
  std::string jinja, source;
  if (std::filesystem::exists(jinja_file)) {
    jinja = fs::read_file(jinja_file), source = jinja_file.string();
  } else if (j.contains("chat_template") && j["chat_template"].is_string()) {
    jinja = j["chat_template"].get<std::string>(), source = config.string();
  } else if (j.contains("chat_template") && j["chat_template"].is_array()) {
    for (const nlohmann::json& t : j["chat_template"])
      if (t.is_object() && t.contains("name") && t["name"] == "default" && t.contains("template") &&
          t["template"].is_string())
        jinja = t["template"].get<std::string>(), source = config.string();
    DA_CHECK(!jinja.empty() || name != "auto", config.string(),
             ": chat_template is a list without a template named 'default'");
  }
  if (name == "auto") {
    DA_CHECK(!jinja.empty(), dir.string(), ": no chat template in tokenizer_config.json or chat_template.jinja; set ",
             "target.chat_template to chatml or llama2");
    // transformers passes the tokenizer's named special tokens to the template.
    nlohmann::json variables = nlohmann::json::object();
    const std::filesystem::path map_file = dir / "special_tokens_map.json";
    const nlohmann::json map =
        std::filesystem::exists(map_file) ? io::read_json_file(map_file) : nlohmann::json::object();
    for (const char* key :
         {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      std::optional<std::string> text = special_token_text(j, key, config);
      if (!text && map.is_object()) text = special_token_text(map, key, map_file);
      if (text) variables[key] = *text;
    }
    ChatTemplate t(Format::kJinja, variables.value("bos_token", ""), variables.value("eos_token", ""));
    t.source_ = source;
    t.jinja_ = std::make_shared<JinjaRenderer>(source, jinja, variables);
    return t;
  }
  DA_CHECK(name == "chatml" || name == "llama2", "chat template '", name, "' is unknown (auto, chatml, llama2)");
  const Format format = name == "chatml" ? Format::kChatML : Format::kLlama2;
  const std::string bos = special_token_text(j, "bos_token", config).value_or(format == Format::kLlama2 ? "<s>" : "");
  const std::string eos =
      special_token_text(j, "eos_token", config).value_or(format == Format::kLlama2 ? "</s>" : "<|im_end|>");
  return ChatTemplate(format, bos, eos, format == Format::kChatML ? default_system_of(jinja) : "");
}

std::string ChatTemplate::render(const std::vector<Message>& messages, bool add_generation_prompt) const {
  DA_CHECK(!messages.empty(), "chat template: no messages");
  if (format_ == Format::kJinja) return jinja_->render(messages, add_generation_prompt);
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    DA_CHECK(r == "system" || r == "user" || r == "assistant", "chat template: message ", i, " has role '", r,
             "' (system, user or assistant)");
  }
  std::string out;
  if (format_ == Format::kChatML) {
    if (messages[0].role != "system" && !default_system_.empty())
      out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
    for (const Message& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  // Llama 2 Chat: the system prompt goes inside the first [INST]; turns alternate user / assistant.
  size_t first = 0;
  std::string system;
  if (messages[0].role == "system") system = messages[0].content, first = 1;
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    DA_CHECK((m.role == "user") == user_turn && m.role != "system", "chat template llama2: message ", i,
             " is '", m.role, "': conversation roles must alternate user/assistant/user/assistant/...");
    std::string content = m.content;
    if (i == first && first == 1) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    if (m.role == "user") out += bos_text_ + "[INST] " + strip(content) + " [/INST]";
    else out.append(" ").append(strip(content)).append(" ").append(eos_text_);
  }
  return out;
}

std::string ChatTemplate::user_turn_end() const {
  const std::string marker = "\x01";
  const std::string text = render({{"user", marker}}, false);
  return strip(text.substr(text.find(marker) + marker.size()));
}

std::string ChatTemplate::user_prefix(const std::string& system) const {
  // render() is the one place that knows the formats: render {system, user: a marker} and cut at the marker.
  const std::string marker = "\x01";
  std::vector<Message> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", marker});
  const std::string text = render(messages, false);
  return text.substr(0, text.find(marker));
}

}  // namespace draftalign::tok
