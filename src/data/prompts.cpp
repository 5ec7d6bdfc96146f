#include "data/prompts.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace draftalign::data {
namespace {

using json = nlohmann::json;

std::string string_field(const json& j, const char* key, const std::string& where) {
  DA_CHECK(j[key].is_string(), where, ": \"", key, "\" must be a string");
  return j[key].get<std::string>();
}

// A message list from ShareGPT ("from"/"value") or chat ("role"/"content") entries; a prompt (`to_last_user`) ends
// with its last user turn, the answers after it dropped.
std::vector<tok::Message> messages_of(const json& list, const char* key, const std::string& where,
                                      bool to_last_user = true) {
  DA_CHECK(list.is_array() && !list.empty(), where, ": \"", key, "\" must be a non-empty list");
  std::vector<tok::Message> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    const std::string at = str_cat(where, ": ", key, "[", i, "]");
    DA_CHECK(m.is_object(), at, " must be an object");
    std::string role, content;
    if (m.contains("from")) {
      const std::string from = string_field(m, "from", at);
      if (from == "human" || from == "user") role = "user";
      else if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "bing") role = "assistant";
      else if (from == "system") role = "system";
      else throw Error(str_cat(at, ": unknown speaker \"", from, "\" (expected system, human or gpt)"));
      DA_CHECK(m.contains("value"), at, ": has \"from\" but no \"value\"");
      content = string_field(m, "value", at);
    } else {
      DA_CHECK(m.contains("role") && m.contains("content"), at, ": needs \"role\" and \"content\" (or \"from\" and "
               "\"value\")");
      role = string_field(m, "role", at);
      DA_CHECK(role == "system" || role == "user" || role == "assistant", at, ": unknown role \"", role, "\"");
      content = string_field(m, "content", at);
    }
    out.push_back({role, content});
  }
  // The target answers the last user turn: drop what follows it.
  while (to_last_user && !out.empty() && out.back().role != "user") out.pop_back();
  DA_CHECK(!out.empty(), where, ": \"", key, "\" has no user turn");
  return out;
}

json parse_json(const std::string& line, const std::string& where) {
  try {
    return json::parse(line);
  } catch (const json::exception& e) {
    throw Error(str_cat(where, ": not valid JSON (", std::string(e.what()).substr(0, 160), ")"));
  }
}

Prompt parse(const std::string& line, const std::string& where) {
  const json j = parse_json(line, where);
  DA_CHECK(j.is_object(), where, ": a prompt record must be a JSON object");
  Prompt p;
  if (j.contains("instruction")) {
    std::string text = string_field(j, "instruction", where);
    if (j.contains("input") && !j["input"].is_null()) {
      const std::string input = string_field(j, "input", where);
      if (!input.empty()) text += "\n\n" + input;
    }
    p.messages.push_back({"user", text});
  } else if (j.contains("conversations")) {
    p.messages = messages_of(j["conversations"], "conversations", where);
  } else if (j.contains("messages")) {
    p.messages = messages_of(j["messages"], "messages", where);
  } else if (j.contains("turns")) {
    const json& turns = j["turns"];
    DA_CHECK(turns.is_array() && !turns.empty() &&
                 std::all_of(turns.begin(), turns.end(), [](const json& t) { return t.is_string(); }),
             where, ": \"turns\" must be a non-empty list of strings");
    p.messages.push_back({"user", turns[0].get<std::string>()});
    for (size_t i = 1; i < turns.size(); ++i) {
      DA_CHECK(!turns[i].get<std::string>().empty(), where, ": turns[", i, "] is empty");
      p.later_turns.push_back(turns[i].get<std::string>());
    }
  } else if (j.contains("prompt")) {
    p.messages.push_back({"user", string_field(j, "prompt", where)});
  } else {
    throw Error(str_cat(where, ": no prompt (expected one of \"instruction\", \"conversations\", \"messages\", "
                               "\"turns\", \"prompt\")"));
  }
  if (j.contains("system") && p.messages.front().role != "system")
    p.messages.insert(p.messages.begin(), {"system", string_field(j, "system", where)});
  DA_CHECK(!p.messages.back().content.empty(), where, ": the prompt is empty");
  for (const char* key : {"id", "question_id"}) {
    if (!j.contains(key)) continue;
    p.id = j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
    break;
  }
  if (p.id.empty()) p.id = where;
  if (j.contains("category")) p.category = string_field(j, "category", where);
  if (j.contains("cluster")) {
    const json& c = j["cluster"];
    DA_CHECK((c.is_string() && !c.get<std::string>().empty()) || c.is_number_integer(), where,
             ": \"cluster\" must be a non-empty string or an integer");
    p.cluster = c.is_string() ? c.get<std::string>() : c.dump();
  } else {
    p.cluster = p.id;
  }
  return p;
}

}  // namespace

std::vector<tok::Message> parse_conversation(const std::string& line, const std::string& where) {
  const json j = parse_json(line, where);
  DA_CHECK(j.is_object(), where, ": not a JSON object");
  std::vector<tok::Message> m;
  if (j.contains("messages"))
    m = messages_of(j["messages"], "messages", where, false);
  else if (j.contains("conversations"))
    m = messages_of(j["conversations"], "conversations", where, false);
  else
    throw Error(str_cat(where, ": no conversation (expected \"messages\" or \"conversations\")"));
  if (j.contains("system") && m.front().role != "system")
    m.insert(m.begin(), {"system", string_field(j, "system", where)});
  bool answered = false;
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i].role != "assistant") continue;
    DA_CHECK(i > 0 && m[i - 1].role == "user", where, ": message ", i, " is an assistant turn that does not follow a user turn");
    DA_CHECK(!m[i].content.empty(), where, ": message ", i, " is an empty assistant turn");
    answered = true;
  }
  DA_CHECK(answered, where, ": no assistant turn (nothing to learn from)");
  return m;
}

PromptSet load_prompts(const std::vector<std::string>& files, bool skip_bad, int64_t max_prompts,
                       const std::vector<double>& weights) {
  if (!weights.empty()) {
    DA_CHECK(weights.size() == files.size(), weights.size(), " prompt weights for ", files.size(), " prompt files");
    std::vector<PromptSet> each;
    PromptSet set;
    for (size_t i = 0; i < files.size(); ++i) {
      DA_CHECK(weights[i] >= 0 && std::isfinite(weights[i]), "prompt weight ", weights[i], " of ", files[i],
               ": must be finite and >= 0");
      each.push_back(load_prompts({files[i]}, skip_bad));
      set.skipped += each.back().skipped;
      if (set.first_skip_reason.empty()) set.first_skip_reason = each.back().first_skip_reason;
    }
    std::vector<size_t> taken(files.size(), 0);
    while (max_prompts <= 0 || static_cast<int64_t>(set.prompts.size()) < max_prompts) {
      size_t best = files.size();
      for (size_t i = 0; i < files.size(); ++i) {
        if (weights[i] <= 0 || taken[i] >= each[i].prompts.size()) continue;
        if (best == files.size() || (taken[i] + 1) / weights[i] < (taken[best] + 1) / weights[best]) best = i;
      }
      if (best == files.size()) break;
      Prompt p = each[best].prompts[taken[best]++];
      p.index = static_cast<int64_t>(set.prompts.size());
      set.prompts.push_back(std::move(p));
    }
    DA_CHECK(!set.prompts.empty(), "the prompt files with a weight above 0 hold no prompt");
    return set;
  }
  PromptSet set;
  DA_CHECK(!files.empty(), "no prompt files given");
  for (const std::string& file : files) {
    DA_CHECK(std::filesystem::is_regular_file(file), file, ": prompt file not found");
    std::ifstream in(file, std::ios::binary);
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = str_cat(file, ":", line_no);
      try {
        Prompt p = parse(line, where);
        p.index = static_cast<int64_t>(set.prompts.size());
        set.prompts.push_back(std::move(p));
      } catch (const Error& e) {
        if (!skip_bad) throw;
        if (set.skipped++ == 0) set.first_skip_reason = e.what();
      }
      if (max_prompts > 0 && static_cast<int64_t>(set.prompts.size()) >= max_prompts) return set;
    }
  }
  DA_CHECK(!set.prompts.empty(), "the prompt files (", files.front(), files.size() > 1 ? ", ..." : "",
           ") hold no prompt", set.skipped ? str_cat(" (", set.skipped, " bad lines skipped; the first: ",
                                                     set.first_skip_reason, ")") : std::string());
  return set;
}

}  // namespace draftalign::data
