#include "data/magpie.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "common/error.h"

namespace draftalign::data {
namespace {

std::vector<std::string> words_of(const std::string& normalised) {
  std::vector<std::string> out;
  std::istringstream in(normalised);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace

std::string normalise_text(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) out += static_cast<char>(std::tolower(u));
    else if (!out.empty() && out.back() != ' ') out += ' ';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string junk_reason(const std::string& text, const config::MagpieSection& m) {
  const auto chars = static_cast<int64_t>(text.size());
  if (chars < m.min_chars) return "short";
  if (chars > m.max_chars) return "long";
  for (const char* mark : {"<|", "|>", "[INST]", "[/INST]", "<<SYS>>", "<s>", "</s>"})
    if (text.find(mark) != std::string::npos) return "markup";
  int64_t letters = 0, visible = 0;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isspace(u)) continue;
    ++visible;
    letters += std::isalpha(u) || u >= 0x80;  // letters of other scripts count as text
  }
  if (2 * letters < visible) return "not text";
  const std::vector<std::string> w = words_of(normalise_text(text));
  if (w.size() >= 12 && 10 * std::set<std::string>(w.begin(), w.end()).size() < 4 * w.size()) return "repetitive";
  return "";
}

std::vector<std::string> NearDuplicates::grams(const std::string& normalised) const {
  const std::vector<std::string> w = words_of(normalised);
  std::set<std::string> out;
  if (static_cast<int64_t>(w.size()) < n_) {
    out.insert(normalised);
  } else {
    for (size_t i = 0; i + n_ <= w.size(); ++i) {
      std::string g = w[i];
      for (int64_t k = 1; k < n_; ++k) g += " " + w[i + k];
      out.insert(g);
    }
  }
  return {out.begin(), out.end()};
}

int64_t NearDuplicates::find(const std::string& text) const {
  const std::string t = normalise_text(text);
  for (size_t i = 0; i < texts_.size(); ++i)
    if (texts_[i].find(t) != std::string::npos || t.find(texts_[i]) != std::string::npos) return static_cast<int64_t>(i);
  const std::vector<std::string> g = grams(t);
  std::unordered_map<int64_t, int64_t> shared;
  for (const std::string& x : g) {
    const auto it = index_.find(x);
    if (it == index_.end()) continue;
    for (int64_t id : it->second) ++shared[id];
  }
  int64_t best = -1;
  for (const auto& [id, k] : shared) {
    const double smaller = static_cast<double>(std::min<int64_t>(static_cast<int64_t>(g.size()), gram_counts_[id]));
    if (k >= max_overlap_ * smaller && (best < 0 || id < best)) best = id;
  }
  return best;
}

void NearDuplicates::add(const std::string& text) {
  const std::string t = normalise_text(text);
  const std::vector<std::string> g = grams(t);
  const auto id = static_cast<int64_t>(texts_.size());
  for (const std::string& x : g) index_[x].push_back(id);
  texts_.push_back(t);
  gram_counts_.push_back(static_cast<int64_t>(g.size()));
}

}  // namespace draftalign::data
