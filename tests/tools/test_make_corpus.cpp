// The demo corpus builder (tools/make_corpus.py): the same packages and options give the same file byte for byte, a
// source keeps to its weighted budget, the HTML and roff sources come out as markdown without their markup, and a
// bad --weights is one clear error. Reads the Debian packages tools/setup.sh installs.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace draftalign {
namespace {

using nlohmann::json;
using testing::run_command;
using testing::ScratchDir;

std::string make_corpus(const std::filesystem::path& out, const std::string& args) {
  return str_cat(DRAFTALIGN_TEST_PYTHON, " ", DRAFTALIGN_SOURCE_DIR, "/tools/make_corpus.py --out ", out.string(), " ",
                 args);
}

TEST(DemoCorpus, DeterministicWeightedAndMarkdown) {
  ScratchDir d;
  const std::string args = "--weights debian-reference=1,man-pages=3,fortunes=0 --total-mb 1.6";
  auto r = run_command(make_corpus(d / "a.jsonl", args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(make_corpus(d / "b.jsonl", args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string a = testing::read_text(d / "a.jsonl");
  EXPECT_TRUE(a == testing::read_text(d / "b.jsonl")) << "two runs, two corpora";
  r = run_command(make_corpus(d / "a.jsonl", args));
  EXPECT_HAS(r.output, "up to date");

  std::map<std::string, int64_t> chars, docs;
  std::istringstream in(a);
  bool man_heading = false, code_fence = false;
  int64_t man_code_lines = 0;  // man-page code blocks whose first two lines stay two lines (no-fill text is not re-flowed)
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    const std::string text = j["text"], source = j["source"];
    chars[source] += static_cast<int64_t>(text.size()), ++docs[source];
    // man(7) is the page that documents the markup: it writes `\-` literally (as `\e\-`, the escaped backslash).
    const bool documents_roff = text.rfind("# man(7)\n", 0) == 0;
    for (const char* markup : {"\\fB", "\\fI", "\\-", "<p>", "<div", "</a>"})
      EXPECT_TRUE(text.find(markup) == std::string::npos || (documents_roff && markup[1] == '-'))
          << source << " keeps the markup " << markup;
    if (source == "man-pages") {
      man_heading = man_heading || text.find("\n## Name\n") != std::string::npos;
      for (size_t at = text.find("\n```\n"); at != std::string::npos; at = text.find("\n```\n", at + 1)) {
        const size_t first = at + 5, second = text.find('\n', first) + 1;
        if (second == 0 || second >= text.size()) break;
        man_code_lines += text[first] != '\n' && text[first] != '`' && text[second] != '\n' && text[second] != '`' &&
                          text[second] != '#';
      }
    }
    code_fence = code_fence || text.find("\n```\n") != std::string::npos;
  }
  EXPECT_EQ(docs.size(), 2u) << "fortunes has weight 0";
  // Budgets: 0.4M characters for the Debian Reference (it has about 0.6M: every 2nd section) and 1.2M for man-pages.
  EXPECT_GT(chars["debian-reference"], 200000);
  EXPECT_LT(chars["debian-reference"], 600000);
  EXPECT_GT(chars["man-pages"], 600000);
  EXPECT_LT(chars["man-pages"], 1800000);
  EXPECT_TRUE(man_heading) << "man pages as markdown sections";
  EXPECT_TRUE(code_fence) << "code blocks fenced";
  EXPECT_GT(man_code_lines, 20) << "man-page code blocks re-flowed into one line";

  r = run_command(make_corpus(d / "c.jsonl", "--weights klingon=1"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "unknown source 'klingon'");
  r = run_command(make_corpus(d / "c.jsonl", "--weights man-pages=-1"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "a weight is a number >= 0");
  EXPECT_FALSE(std::filesystem::exists(d / "c.jsonl"));
}

}  // namespace
}  // namespace draftalign
