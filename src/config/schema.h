// schema.h: the one description of every config option. Each config struct lists its fields once, in
//   template <class V> void visit(V& s) { s.add("lr", lr, "peak learning rate", Bounds::positive()); ... }
// and that list drives everything else: YAML loading with strict key/type/range checks, `a.b=value` overrides,
// `--help` (key, default, meaning), and the resolved-config dump written next to every run's outputs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace draftalign::config {

// A closed or open numeric interval; an option's value (or every element of a list option) must lie in it.
struct Bounds {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;

  static Bounds any() { return {}; }
  static Bounds at_least(double lo) { return {lo}; }
  static Bounds positive() { return {0.0, std::numeric_limits<double>::infinity(), true, false}; }
  static Bounds closed(double lo, double hi) { return {lo, hi}; }
  static Bounds open_closed(double lo, double hi) { return {lo, hi, true, false}; }
  static Bounds closed_open(double lo, double hi) { return {lo, hi, false, true}; }

  bool contains(double v) const;
  bool unbounded() const;
  std::string describe() const;  // "[0, 1]", "(0, inf)", ...
};

// A typed choice: the names of an enum's values, in the order of the values (0, 1, ...), declared once beside the
// enum with DA_ENUM_NAMES. The schema maps the YAML text to the value; code compares enum values, never strings.
template <class E>
struct EnumNames;
#define DA_ENUM_NAMES(E, ...)                                                \
  template <>                                                                \
  struct EnumNames<E> {                                                      \
    static constexpr auto names = std::to_array<const char*>({__VA_ARGS__}); \
  }

template <class E>
std::string name_of(E e) {
  return EnumNames<E>::names.at(static_cast<size_t>(e));
}

// A typed choice prints as its name (logs, error messages, fingerprints).
template <class E>
requires requires { EnumNames<E>::names; }
std::ostream& operator<<(std::ostream& os, E e) { return os << EnumNames<E>::names.at(static_cast<size_t>(e)); }

// The value named `name`; throws Error naming `what` and the accepted names when there is none.
template <class E>
E enum_from(std::string_view name, std::string_view what);

// An enum field as the schema sees it: its value as an index into the field's names.
struct EnumRef {
  std::function<int()> get;
  std::function<void(int)> set;
  std::vector<std::string> names;  // every name of the enum, by value
};

// A word of an enum or, in place of its last value, a path: train.resume is auto, none, or a checkpoint directory.
// The enum's last name says what the path is (it is not itself a word the option accepts). Code compares `choice`,
// and reads `path` only when choice is the last value.
template <class E>
struct WordOrPath {
  E choice{};
  std::string path;
};

// A WordOrPath field as the schema sees it: the choice (its last name standing for "a path"), and the path.
struct WordOrPathRef {
  EnumRef choice;
  std::string* path;
  bool is_path() const { return choice.get() + 1 == static_cast<int>(choice.names.size()); }
};

using Target = std::variant<int64_t*, double*, bool*, std::string*, std::vector<int64_t>*, std::vector<double>*,
                            std::vector<std::string>*, EnumRef, WordOrPathRef>;

// What an option is to a stage's completion fingerprint (config/fingerprint.h): whether changing it changes what the
// stage computes.
enum class Role {
  kResult,     // it does: in the fingerprint by value (the default)
  kNoEffect,   // thread counts, log and progress intervals, trackers, plotting: not in it
  kOutput,     // where the stage writes: not in it
  kInputFile,  // a file (or a list of them) the stage reads: in it by the content checksum of each
  kInputDir,   // a directory (or a list): in it by the content checksums of the files directly inside
};

struct Field {
  std::string path;  // dotted, e.g. "pretrain.train.optim.lr"
  std::string help;
  Target target;
  Bounds bounds;
  std::vector<std::string> choices;  // non-empty: a string (or each string of a list) must be one of these
  Role role = Role::kResult;

  // Tags the option, as in s.add("threads", threads, "...").as(Role::kNoEffect).
  Field& as(Role r) {
    role = r;
    return *this;
  }

  std::string expected() const;      // "an integer in [1, inf)", "one of: tvdpp, fkl", ...
  std::string value_text() const;    // the current value as YAML flow text
};

struct Section {
  std::string path;
  std::string help;
};

class Schema {
 public:
  Field& add(std::string_view key, int64_t& v, std::string_view help, Bounds b = {});
  Field& add(std::string_view key, double& v, std::string_view help, Bounds b = {});
  Field& add(std::string_view key, bool& v, std::string_view help);
  Field& add(std::string_view key, std::string& v, std::string_view help);
  Field& add(std::string_view key, std::vector<int64_t>& v, std::string_view help, Bounds b = {});
  Field& add(std::string_view key, std::vector<double>& v, std::string_view help, Bounds b = {});
  Field& add(std::string_view key, std::vector<std::string>& v, std::string_view help);
  // A string, or list of strings, restricted to `choices`.
  Field& add_choice(std::string_view key, std::string& v, std::string_view help, std::vector<std::string> choices);
  Field& add_choice(std::string_view key, std::vector<std::string>& v, std::string_view help,
                    std::vector<std::string> choices);
  // An enum, stored as its value; its text is one of its names (or of `allowed`, a subset, when given).
  template <class E>
  requires std::is_enum_v<E>
  Field& add(std::string_view key, E& v, std::string_view help, std::vector<std::string> allowed = {}) {
    std::vector<std::string> names(EnumNames<E>::names.begin(), EnumNames<E>::names.end());
    Field& f =
        add_field(key, help, EnumRef{[&v] { return static_cast<int>(v); }, [&v](int i) { v = static_cast<E>(i); }, names});
    f.choices = allowed.empty() ? names : std::move(allowed);
    return f;
  }

  // A word of E (every name but the last, which are the field's choices) or a path.
  template <class E>
  requires std::is_enum_v<E>
  Field& add(std::string_view key, WordOrPath<E>& v, std::string_view help) {
    std::vector<std::string> names(EnumNames<E>::names.begin(), EnumNames<E>::names.end());
    EnumRef choice{[&v] { return static_cast<int>(v.choice); }, [&v](int i) { v.choice = static_cast<E>(i); }, names};
    Field& f = add_field(key, help, WordOrPathRef{std::move(choice), &v.path});
    f.choices.assign(names.begin(), names.end() - 1);
    return f;
  }

  template <class S>
  void section(std::string_view key, S& s, std::string_view help) {
    push(key, help);
    s.visit(*this);
    pop();
  }

  const std::vector<Field>& fields() const { return fields_; }
  const std::vector<Section>& sections() const { return sections_; }
  const Field* find(std::string_view path) const;
  bool is_section(std::string_view path) const;
  // The keys directly inside `section` ("" = top level), for error messages.
  std::vector<std::string> children(std::string_view section) const;

 private:
  void push(std::string_view key, std::string_view help);
  void pop();
  Field& add_field(std::string_view key, std::string_view help, Target t);

  std::vector<std::string> prefix_;
  std::vector<Field> fields_;
  std::vector<Section> sections_;
};

// Builds the schema of a config object; the fields point into `cfg`.
template <class C>
Schema schema_of(C& cfg) {
  Schema s;
  cfg.visit(s);
  return s;
}

// "a, b, c".
std::string join(const std::vector<std::string>& items);

// The index of `name` in `names`; throws Error ("<what>: expected one of: ..., got '<name>'") when absent.
int index_of_name(std::string_view name, const std::vector<std::string>& names, std::string_view what);

template <class E>
E enum_from(std::string_view name, std::string_view what) {
  const std::vector<std::string> names(EnumNames<E>::names.begin(), EnumNames<E>::names.end());
  return static_cast<E>(index_of_name(name, names, what));
}

// The closest candidate to `word` by edit distance, or "" when none is close (for "did you mean ...?").
std::string closest(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace draftalign::config
