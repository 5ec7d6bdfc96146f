#include "config/loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/fs.h"

namespace draftalign::config {
namespace {

// Where a YAML node sits: "file:line:col" (1-based), or the override it came from.
struct Place {
  std::string file;      // "" for an override
  std::string override;  // the raw "key=value" argument
  std::string at(const YAML::Node& node) const {
    if (!override.empty()) return "override '" + override + "'";
    const YAML::Mark m = node.Mark();
    if (m.is_null()) return file;
    return str_cat(file, ":", m.line + 1, ":", m.column + 1);
  }
};

[[noreturn]] void fail(const std::string& where, const std::string& key, const std::string& problem) {
  throw Error(str_cat(where, ": ", key.empty() ? "" : "key '" + key + "': ", problem));
}

std::string shown(const YAML::Node& n) {
  if (n.IsNull()) return "nothing";
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  return "a mapping";
}

// A scalar the YAML author quoted is a string, never a number or a boolean.
bool quoted(const YAML::Node& n) { return n.Tag() == "!"; }

bool parse_int(const YAML::Node& n, int64_t& out) {
  if (!n.IsScalar() || quoted(n)) return false;
  const std::string& s = n.Scalar();
  const char* b = s.data() + (s.size() > 0 && s[0] == '+' ? 1 : 0);
  auto r = std::from_chars(b, s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && b != s.data() + s.size();
}

bool parse_double(const YAML::Node& n, double& out) {
  if (!n.IsScalar() || quoted(n) || n.Scalar().empty()) return false;
  const std::string& s = n.Scalar();
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(out);
}

bool parse_bool(const YAML::Node& n, bool& out) {
  if (!n.IsScalar() || quoted(n)) return false;
  std::string s = n.Scalar();
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "true" || s == "yes" || s == "on") return out = true, true;
  if (s == "false" || s == "no" || s == "off") return out = false, true;
  return false;
}

bool parse_string(const YAML::Node& n, std::string& out) {
  if (n.IsNull()) return out.clear(), true;
  if (!n.IsScalar()) return false;
  out = n.Scalar();
  return true;
}

// The elements of a list option: a YAML sequence, a single scalar (a list of one), or nothing (empty).
std::vector<YAML::Node> elements(const YAML::Node& n, bool& ok) {
  std::vector<YAML::Node> out;
  ok = true;
  if (n.IsNull()) return out;
  if (n.IsScalar()) return {n};
  if (!n.IsSequence()) return ok = false, out;
  for (const auto& e : n) out.push_back(e);
  return out;
}

void check_bounds(const Field& f, double v, const Place& place, const YAML::Node& n) {
  if (!f.bounds.contains(v)) fail(place.at(n), f.path, str_cat("expected ", f.expected(), ", got ", shown(n)));
}

void check_choice(const Field& f, const std::string& v, const Place& place, const YAML::Node& n) {
  if (f.choices.empty() || std::find(f.choices.begin(), f.choices.end(), v) != f.choices.end()) return;
  const std::string near = closest(v, f.choices);
  fail(place.at(n), f.path,
       str_cat("expected ", f.expected(), ", got ", shown(n), near.empty() ? "" : " (did you mean '" + near + "'?)"));
}

// Converts `n` into the field's type and stores it; throws naming the place and the key on any mismatch.
void assign(const Field& f, const YAML::Node& n, const Place& place) {
  struct V {
    const Field& f;
    const YAML::Node& n;
    const Place& place;
    [[noreturn]] void bad(const YAML::Node& at) const {
      fail(place.at(at), f.path, str_cat("expected ", f.expected(), ", got ", shown(at)));
    }
    void operator()(int64_t* v) const {
      int64_t x;
      if (!parse_int(n, x)) bad(n);
      check_bounds(f, static_cast<double>(x), place, n);
      *v = x;
    }
    void operator()(double* v) const {
      double x;
      if (!parse_double(n, x)) bad(n);
      check_bounds(f, x, place, n);
      *v = x;
    }
    void operator()(bool* v) const {
      if (!parse_bool(n, *v)) bad(n);
    }
    void operator()(std::string* v) const {
      std::string x;
      if (!parse_string(n, x)) bad(n);
      check_choice(f, x, place, n);
      *v = x;
    }
    void operator()(std::vector<int64_t>* v) const {
      bool ok;
      std::vector<int64_t> out;
      for (const auto& e : elements(n, ok)) {
        int64_t x;
        if (!parse_int(e, x)) bad(e);
        check_bounds(f, static_cast<double>(x), place, e);
        out.push_back(x);
      }
      if (!ok) bad(n);
      *v = out;
    }
    void operator()(std::vector<double>* v) const {
      bool ok;
      std::vector<double> out;
      for (const auto& e : elements(n, ok)) {
        double x;
        if (!parse_double(e, x)) bad(e);
        check_bounds(f, x, place, e);
        out.push_back(x);
      }
      if (!ok) bad(n);
      *v = out;
    }
    void operator()(std::vector<std::string>* v) const {
      bool ok;
      std::vector<std::string> out;
      for (const auto& e : elements(n, ok)) {
        std::string x;
        if (!e.IsScalar()) bad(e);
        parse_string(e, x);
        check_choice(f, x, place, e);
        out.push_back(x);
      }
      if (!ok) bad(n);
      *v = out;
    }
    void operator()(const EnumRef& e) const {
      std::string x;
      if (!parse_string(n, x)) bad(n);
      check_choice(f, x, place, n);
      e.set(static_cast<int>(std::find(e.names.begin(), e.names.end(), x) - e.names.begin()));
    }
    // One of the words, or any other non-empty text as the path (the last value).
    void operator()(const WordOrPathRef& w) const {
      std::string x;
      if (!parse_string(n, x) || x.empty()) bad(n);
      const auto word = std::find(f.choices.begin(), f.choices.end(), x);
      w.choice.set(static_cast<int>(word - f.choices.begin()));
      *w.path = word == f.choices.end() ? x : "";
    }
  };
  std::visit(V{f, n, place}, f.target);
}

[[noreturn]] void unknown_key(const Schema& schema, const std::string& section, const std::string& key,
                              const std::string& where) {
  const auto keys = schema.children(section);
  const std::string near = closest(key, keys);
  const std::string path = section.empty() ? key : section + "." + key;
  throw Error(str_cat(where, ": unknown key '", path, "'", near.empty() ? "" : " (did you mean '" + near + "'?)",
                      "; ", section.empty() ? "top-level sections" : "keys of '" + section + "'", " are: ",
                      join(keys)));
}

// Walks one YAML mapping against the schema, recursing into sections.
void apply_map(const Schema& schema, const YAML::Node& map, const std::string& section, const Place& place,
               std::map<std::string, std::string>& origin) {
  if (map.IsNull()) return;  // an empty section or file: everything keeps its default
  if (!map.IsMap())
    fail(place.at(map), section, str_cat("expected a mapping of ", section.empty() ? "sections" : "keys", ", got ",
                                         shown(map)));
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) fail(place.at(kv.first), section, "keys must be plain names");
    const std::string key = kv.first.Scalar();
    const std::string path = section.empty() ? key : section + "." + key;
    if (!seen.insert(key).second) fail(place.at(kv.first), path, "appears twice in the same mapping");
    if (const Field* f = schema.find(path)) {
      assign(*f, kv.second, place);
      origin[path] = place.at(kv.first);
    } else if (schema.is_section(path)) {
      apply_map(schema, kv.second, path, place, origin);
    } else {
      unknown_key(schema, section, key, place.at(kv.first));
    }
  }
}

void apply_override(const Schema& schema, const std::string& arg, std::map<std::string, std::string>& origin) {
  const Place place{"", arg};
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(str_cat("override '", arg, "': expected section.key=value"));
  const std::string path = arg.substr(0, eq);
  const Field* f = schema.find(path);
  if (f == nullptr) {
    const size_t dot = path.rfind('.');
    const std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
    if (!section.empty() && !schema.is_section(section)) unknown_key(schema, "", path, place.at(YAML::Node()));
    if (schema.is_section(path)) fail(place.at(YAML::Node()), path, "is a section; set one of its keys");
    unknown_key(schema, section, path.substr(dot + 1), place.at(YAML::Node()));
  }
  YAML::Node value;
  try {
    value = YAML::Load(arg.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(place.at(YAML::Node()), path, str_cat("value is not valid YAML (", e.msg, ")"));
  }
  assign(*f, value, place);
  origin[path] = place.at(value);
}

// The text of a string option with every `${section.key}` in it replaced by that string option's value, itself
// expanded. `chain` holds the options being expanded, the outermost first: naming one of them again is a cycle.
std::string expanded(const Schema& raw, const LoadedConfig& out, const std::string& text,
                     std::vector<std::string>& chain) {
  std::string result;
  for (size_t i = 0;;) {
    const size_t b = text.find("${", i);
    if (b == std::string::npos) return result + text.substr(i);
    const size_t e = text.find('}', b);
    if (e == std::string::npos)
      throw out.error_at(chain.front(), str_cat("'${' without its closing '}' in '", text, "'"));
    const std::string ref = text.substr(b + 2, e - b - 2);
    const Field* f = raw.find(ref);
    // A string option, or a typed choice (its name: ${distill.loss} is "tvdpp").
    auto textual = [](const Field& g) {
      return std::holds_alternative<std::string*>(g.target) || std::holds_alternative<EnumRef>(g.target);
    };
    if (f == nullptr || !textual(*f)) {
      std::vector<std::string> strings;
      for (const Field& g : raw.fields())
        if (textual(g)) strings.push_back(g.path);
      const std::string near = closest(ref, strings);
      throw out.error_at(chain.front(), str_cat("${", ref, "} names no string option",
                                                near.empty() ? "" : " (did you mean ${" + near + "}?)"));
    }
    if (std::find(chain.begin(), chain.end(), ref) != chain.end()) {
      std::string cycle;
      for (const auto& c : chain) cycle += c + " -> ";
      throw out.error_at(chain.front(), str_cat("references go round in a circle: ", cycle, ref));
    }
    if (const auto* choice = std::get_if<EnumRef>(&f->target)) {
      result += text.substr(i, b - i) + choice->names.at(static_cast<size_t>(choice->get()));
      i = e + 1;
      continue;
    }
    chain.push_back(ref);
    result += text.substr(i, b - i) + expanded(raw, out, *std::get<std::string*>(f->target), chain);
    chain.pop_back();
    i = e + 1;
  }
}

// Expands the references of every string option (and list of strings) of out.cfg, whose schema is `cfg`, reading the
// values of out.raw.
void expand_references(const Schema& cfg, LoadedConfig& out) {
  Schema raw = schema_of(out.raw);
  for (size_t k = 0; k < raw.fields().size(); ++k) {
    const Field& f = raw.fields()[k];
    std::vector<std::string> chain = {f.path};
    if (auto* v = std::get_if<std::string*>(&f.target))
      *std::get<std::string*>(cfg.fields()[k].target) = expanded(raw, out, **v, chain);
    if (auto* v = std::get_if<WordOrPathRef>(&f.target); v && v->is_path())
      *std::get<WordOrPathRef>(cfg.fields()[k].target).path = expanded(raw, out, *v->path, chain);
    if (auto* v = std::get_if<std::vector<std::string>*>(&f.target))
      for (size_t j = 0; j < (*v)->size(); ++j)
        (*std::get<std::vector<std::string>*>(cfg.fields()[k].target))[j] = expanded(raw, out, (**v)[j], chain);
  }
}

}  // namespace

std::string LoadedConfig::where(const std::string& key) const {
  auto it = origin.find(key);
  if (it != origin.end()) return it->second;
  return source.empty() ? "default" : source + ": default";
}

Error LoadedConfig::error_at(const std::string& key, const std::string& problem) const {
  return Error(str_cat(where(key), ": key '", key, "': ", problem));
}

LoadedConfig load_config(const std::string& file, const std::vector<std::string>& overrides) {
  LoadedConfig out;
  out.source = file;
  Schema schema = schema_of(out.cfg);
  if (!file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec))
      throw Error(str_cat(file, ": config file not found", std::filesystem::exists(file, ec) ? " (not a file)" : ""));
    YAML::Node root;
    try {
      root = YAML::Load(fs::read_file(file));
    } catch (const YAML::ParserException& e) {
      throw Error(str_cat(file, ":", e.mark.line + 1, ":", e.mark.column + 1, ": YAML syntax error: ", e.msg));
    }
    apply_map(schema, root, "", Place{file, ""}, out.origin);
  }
  for (const auto& o : overrides) apply_override(schema, o, out.origin);
  out.raw = out.cfg;
  expand_references(schema, out);
  for (const auto& p : out.cfg.cross_checks()) throw out.error_at(p.key, p.message);
  return out;
}

std::string to_yaml(Config& cfg, const std::string& header_comment) {
  Schema schema = schema_of(cfg);
  std::string out;
  if (!header_comment.empty()) out += "# " + header_comment + "\n";
  std::vector<std::string> open;  // the section path components printed so far
  for (const Field& f : schema.fields()) {
    std::vector<std::string> parts;
    for (size_t b = 0, e; (e = f.path.find('.', b)) != std::string::npos; b = e + 1)
      parts.push_back(f.path.substr(b, e - b));
    size_t common = 0;
    while (common < open.size() && common < parts.size() && open[common] == parts[common]) ++common;
    open.resize(common);
    for (size_t d = common; d < parts.size(); ++d) {
      std::string path;
      for (size_t i = 0; i <= d; ++i) path += (i ? "." : "") + parts[i];
      const auto& secs = schema.sections();
      auto s = std::find_if(secs.begin(), secs.end(), [&](const Section& x) { return x.path == path; });
      if (d == 0) out += "\n";
      out += std::string(2 * d, ' ') + parts[d] + ":" + (s != secs.end() ? "  # " + s->help : "") + "\n";
      open.push_back(parts[d]);
    }
    const std::string key = f.path.substr(f.path.rfind('.') + 1);
    out += std::string(2 * parts.size(), ' ') + key + ": " + f.value_text() + "  # " + f.help + "\n";
  }
  return out;
}

std::string options_help(Config& cfg, const std::vector<std::string>& sections) {
  Schema schema = schema_of(cfg);
  std::string out;
  for (const auto& sec : sections) {
    for (const Section& s : schema.sections())
      if (s.path == sec) out += str_cat("\n", s.path, ": ", s.help, "\n");
    for (const Field& f : schema.fields()) {
      if (f.path.compare(0, sec.size() + 1, sec + ".") != 0) continue;
      out += str_cat("  ", f.path, " = ", f.value_text(), "\n      ", f.help, " (", f.expected(), ")\n");
    }
  }
  return out;
}

}  // namespace draftalign::config
