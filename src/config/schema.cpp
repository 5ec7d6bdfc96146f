#include "config/schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/error.h"

namespace draftalign::config {
namespace {

// Shortest text that reads back as the same double: "0.001", "1e-05", "100000".
std::string shortest(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// A float option's value: keep it recognisable as a float in YAML ("1.0", not "1").
std::string number_text(double v) {
  std::string s = shortest(v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// A YAML double-quoted scalar (JSON escaping is valid YAML).
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

template <class T, class F>
std::string list_text(const std::vector<T>& v, F&& one) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + one(v[i]);
  return out + "]";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

bool Bounds::contains(double v) const {
  if (std::isnan(v)) return false;
  const bool lo_ok = lo_open ? v > lo : v >= lo;
  const bool hi_ok = hi_open ? v < hi : v <= hi;
  return lo_ok && hi_ok;
}

bool Bounds::unbounded() const { return std::isinf(lo) && std::isinf(hi); }

std::string Bounds::describe() const {
  const bool inf_hi = std::isinf(hi);
  return str_cat(lo_open || std::isinf(lo) ? "(" : "[", shortest(lo), ", ", shortest(hi),
                 hi_open || inf_hi ? ")" : "]");
}

std::string Field::expected() const {
  const std::string range = bounds.unbounded() ? "" : " in " + bounds.describe();
  const std::string among = choices.empty() ? "" : "one of: " + join(choices);
  struct V {
    const std::string& range;
    const std::string& among;
    std::string operator()(int64_t*) const { return "an integer" + range; }
    std::string operator()(double*) const { return "a number" + range; }
    std::string operator()(bool*) const { return "true or false"; }
    std::string operator()(std::string*) const { return among.empty() ? "a string" : among; }
    std::string operator()(std::vector<int64_t>*) const { return "a list of integers" + range; }
    std::string operator()(std::vector<double>*) const { return "a list of numbers" + range; }
    std::string operator()(std::vector<std::string>*) const {
      return among.empty() ? "a list of strings" : "a list, each " + among;
    }
    std::string operator()(const EnumRef&) const { return among; }
    std::string operator()(const WordOrPathRef& w) const {
      return among + ", or a path (" + w.choice.names.back() + ")";
    }
  };
  return std::visit(V{range, among}, target);
}

std::string Field::value_text() const {
  struct V {
    std::string operator()(int64_t* v) const { return std::to_string(*v); }
    std::string operator()(double* v) const { return number_text(*v); }
    std::string operator()(bool* v) const { return *v ? "true" : "false"; }
    std::string operator()(std::string* v) const { return quoted(*v); }
    std::string operator()(std::vector<int64_t>* v) const {
      return list_text(*v, [](int64_t x) { return std::to_string(x); });
    }
    std::string operator()(std::vector<double>* v) const { return list_text(*v, number_text); }
    std::string operator()(std::vector<std::string>* v) const { return list_text(*v, quoted); }
    std::string operator()(const EnumRef& e) const { return quoted(e.names.at(static_cast<size_t>(e.get()))); }
    std::string operator()(const WordOrPathRef& w) const { return w.is_path() ? quoted(*w.path) : (*this)(w.choice); }
  };
  return std::visit(V{}, target);
}

int index_of_name(std::string_view name, const std::vector<std::string>& names, std::string_view what) {
  const auto it = std::find(names.begin(), names.end(), name);
  DA_CHECK(it != names.end(), what, ": expected one of: ", join(names), ", got '", name, "'");
  return static_cast<int>(it - names.begin());
}

Field& Schema::add_field(std::string_view key, std::string_view help, Target t) {
  std::string path;
  for (const auto& p : prefix_) path += p + ".";
  path += key;
  fields_.push_back(Field{path, std::string(help), t, {}, {}});
  return fields_.back();
}

Field& Schema::add(std::string_view key, int64_t& v, std::string_view help, Bounds b) {
  Field& f = add_field(key, help, &v);
  f.bounds = b;
  return f;
}
Field& Schema::add(std::string_view key, double& v, std::string_view help, Bounds b) {
  Field& f = add_field(key, help, &v);
  f.bounds = b;
  return f;
}
Field& Schema::add(std::string_view key, bool& v, std::string_view help) { return add_field(key, help, &v); }
Field& Schema::add(std::string_view key, std::string& v, std::string_view help) { return add_field(key, help, &v); }
Field& Schema::add(std::string_view key, std::vector<int64_t>& v, std::string_view help, Bounds b) {
  Field& f = add_field(key, help, &v);
  f.bounds = b;
  return f;
}
Field& Schema::add(std::string_view key, std::vector<double>& v, std::string_view help, Bounds b) {
  Field& f = add_field(key, help, &v);
  f.bounds = b;
  return f;
}
Field& Schema::add(std::string_view key, std::vector<std::string>& v, std::string_view help) {
  return add_field(key, help, &v);
}
Field& Schema::add_choice(std::string_view key, std::string& v, std::string_view help,
                          std::vector<std::string> choices) {
  Field& f = add_field(key, help, &v);
  f.choices = std::move(choices);
  return f;
}
Field& Schema::add_choice(std::string_view key, std::vector<std::string>& v, std::string_view help,
                          std::vector<std::string> choices) {
  Field& f = add_field(key, help, &v);
  f.choices = std::move(choices);
  return f;
}

void Schema::push(std::string_view key, std::string_view help) {
  prefix_.emplace_back(key);
  std::string path;
  for (size_t i = 0; i < prefix_.size(); ++i) path += (i ? "." : "") + prefix_[i];
  sections_.push_back(Section{path, std::string(help)});
}

void Schema::pop() { prefix_.pop_back(); }

const Field* Schema::find(std::string_view path) const {
  for (const auto& f : fields_)
    if (f.path == path) return &f;
  return nullptr;
}

bool Schema::is_section(std::string_view path) const {
  return std::any_of(sections_.begin(), sections_.end(), [&](const Section& s) { return s.path == path; });
}

std::vector<std::string> Schema::children(std::string_view section) const {
  const std::string prefix = section.empty() ? "" : std::string(section) + ".";
  std::vector<std::string> out;
  auto consider = [&](const std::string& path) {
    if (path.compare(0, prefix.size(), prefix) != 0) return;
    const std::string rest = path.substr(prefix.size());
    if (rest.empty() || rest.find('.') != std::string::npos) return;
    if (std::find(out.begin(), out.end(), rest) == out.end()) out.push_back(rest);
  };
  for (const auto& s : sections_) consider(s.path);
  for (const auto& f : fields_) consider(f.path);
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

}  // namespace draftalign::config
