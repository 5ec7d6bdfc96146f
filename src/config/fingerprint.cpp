#include "config/fingerprint.h"

#include <algorithm>
#include <filesystem>
#include <variant>

#include "common/checksum.h"
#include "common/error.h"

namespace draftalign::config {

namespace stdfs = std::filesystem;

namespace {

bool under(const std::string& path, const std::string& section) {
  return path.size() > section.size() && path.compare(0, section.size(), section) == 0 && path[section.size()] == '.';
}

// The paths a file or directory option names: its string, or each string of its list.
std::vector<std::string> paths_of(const Field& f) {
  if (const auto* one = std::get_if<std::string*>(&f.target)) return {**one};
  if (const auto* many = std::get_if<std::vector<std::string>*>(&f.target)) return **many;
  throw Error(str_cat("fingerprint: ", f.path, " is tagged as a file but holds no path"));
}

std::string file_stamp(const stdfs::path& file) {
  std::error_code ec;
  if (!stdfs::is_regular_file(file, ec)) return "missing";
  return file_checksum_hex(file);
}

std::string dir_stamp(const stdfs::path& dir) {
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return stdfs::is_regular_file(dir, ec) ? "file:" + file_stamp(dir) : "missing";
  std::vector<std::string> names;
  for (const auto& e : stdfs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string s = "{";
  for (const auto& n : names) s += n + "=" + file_stamp(dir / n) + ";";
  return s + "}";
}

}  // namespace

std::string fingerprint_text(const Config& cfg, const std::vector<std::string>& sections) {
  Config copy = cfg;  // the schema points into the object it describes
  const Schema schema = schema_of(copy);
  std::string text;
  for (const Field& f : schema.fields()) {
    if (std::none_of(sections.begin(), sections.end(), [&](const std::string& s) { return under(f.path, s); }))
      continue;
    switch (f.role) {
      case Role::kNoEffect:
      case Role::kOutput:
        continue;
      case Role::kResult:
        text += f.path + "=" + f.value_text() + "\n";
        break;
      case Role::kInputFile:
      case Role::kInputDir: {
        text += f.path + "=[";
        for (const auto& p : paths_of(f))
          text += (p.empty() ? std::string("none") : f.role == Role::kInputFile ? file_stamp(p) : dir_stamp(p)) + ",";
        text += "]\n";
        break;
      }
    }
  }
  return text;
}

std::string stage_fingerprint(const Config& cfg, const std::string& stage, const std::vector<std::string>& sections,
                              const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string text = "stage=" + stage + "\n" + fingerprint_text(cfg, sections);
  for (const auto& [k, v] : extra) text += k + "=" + v + "\n";
  return checksum_hex(text);
}

}  // namespace draftalign::config
