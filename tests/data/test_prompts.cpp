// Prompt files: every supported record shape becomes the right conversation; bad lines are errors naming file:line,
// or skipped and counted; the demo's training prompts (tools/make_prompts.py) hold no MT-bench question.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/magpie.h"
#include "data/prompts.h"
#include "test_util.h"

namespace draftalign::data {
namespace {

namespace fsys = std::filesystem;
using testing::error_of;
using testing::ScratchDir;

TEST(PromptFiles, EveryShapeBecomesAConversation) {
  ScratchDir d;
  const std::string f = (d / "p.jsonl").string();
  testing::write_text(f,
                      "{\"instruction\": \"Add.\", \"input\": \"2 and 3\"}\n"
                      "\n"
                      "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be brief.\"}, {\"from\": \"human\", "
                      "\"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": \"Hello\"}, {\"from\": \"human\", \"value\": "
                      "\"Why?\"}, {\"from\": \"gpt\", \"value\": \"Because\"}]}\n"
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}], \"id\": \"m-1\"}\n"
                      "{\"question_id\": 81, \"turns\": [\"First turn\", \"Second turn\"]}\n"
                      "{\"prompt\": \"Bare\", \"system\": \"S\"}\n");
  const PromptSet set = load_prompts({f}, false);
  ASSERT_EQ(set.prompts.size(), 5u);
  const auto& p = set.prompts;
  EXPECT_EQ(p[0].messages.size(), 1u);
  EXPECT_EQ(p[0].messages[0].content, "Add.\n\n2 and 3");
  EXPECT_EQ(p[0].id, f + ":1");
  ASSERT_EQ(p[1].messages.size(), 4u) << "cut after the last user turn";
  EXPECT_EQ(p[1].messages[0].role, "system");
  EXPECT_EQ(p[1].messages[2].role, "assistant");
  EXPECT_EQ(p[1].messages[3].content, "Why?");
  EXPECT_EQ(p[2].id, "m-1");
  EXPECT_EQ(p[3].id, "81");
  EXPECT_EQ(p[3].messages[0].content, "First turn");
  ASSERT_EQ(p[4].messages.size(), 2u);
  EXPECT_EQ(p[4].messages[0].role, "system");
  EXPECT_EQ(p[4].index, 4);
  EXPECT_EQ(load_prompts({f}, false, 2).prompts.size(), 2u);
}

TEST(PromptFiles, BadLinesAreNamedOrSkippedAndCounted) {
  ScratchDir d;
  const std::string f = (d / "p.jsonl").string();
  testing::write_text(f,
                      "{\"instruction\": \"ok\"}\n"
                      "{\"instruction\": \"broken\n"
                      "{\"text\": \"no prompt key\"}\n"
                      "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n"
                      "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\n"
                      "{\"instruction\": \"\"}\n"
                      "{\"turns\": []}\n"
                      "{\"instruction\": \"fine too\"}\n");
  std::string e = error_of([&] { load_prompts({f}, false); });
  EXPECT_HAS(e, f + ":2: not valid JSON");
  const PromptSet set = load_prompts({f}, true);
  EXPECT_EQ(set.prompts.size(), 2u);
  EXPECT_EQ(set.skipped, 6);
  EXPECT_HAS(set.first_skip_reason, f + ":2");
  // Each bad shape on its own names its line and what is wrong.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"text\": \"x\"}", "no prompt (expected one of"},
      {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role \"robot\""},
      {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}", "has no user turn"},
      {"{\"instruction\": \"\"}", "the prompt is empty"},
      {"{\"turns\": []}", "\"turns\" must be a non-empty list"},
      {"{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}", "unknown speaker \"bot\""}};
  for (const auto& [line, why] : cases) {
    testing::write_text(f, "{\"prompt\": \"a\"}\n" + line + "\n");
    e = error_of([&] { load_prompts({f}, false); });
    EXPECT_HAS(e, f + ":2");
    EXPECT_HAS(e, why);
  }
  testing::write_text(f, "\n\n");
  EXPECT_HAS(error_of([&] { load_prompts({f}, false); }), "hold no prompt");
  EXPECT_HAS(error_of([&] { load_prompts({(d / "none.jsonl").string()}, false); }), "prompt file not found");
}

std::string normalise(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    const char x = std::isalnum(c) ? static_cast<char>(std::tolower(c)) : ' ';
    if (x != ' ' || (!out.empty() && out.back() != ' ')) out += x;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Weighted interleaving: every prefix holds each file's share to within one prompt; a file that runs dry leaves the
// rest to the others; weight 0 leaves a file out; the count must match.
TEST(PromptFiles, WeightsInterleaveFilesInTheirRatio) {
  ScratchDir d;
  auto file = [&](const std::string& name, int n) {
    std::string text;
    for (int i = 0; i < n; ++i) text += nlohmann::json({{"prompt", str_cat(name, i)}}).dump() + "\n";
    testing::write_text(d / (name + ".jsonl"), text);
    return (d / (name + ".jsonl")).string();
  };
  const std::string a = file("a", 40), b = file("b", 40), c = file("c", 3);
  const PromptSet mixed = load_prompts({a, b}, false, 32, {3, 1});
  ASSERT_EQ(mixed.prompts.size(), 32u);
  int64_t from_a = 0;
  for (size_t n = 0; n < mixed.prompts.size(); ++n) {
    const Prompt& p = mixed.prompts[n];
    EXPECT_EQ(p.index, static_cast<int64_t>(n));
    from_a += p.messages.back().content[0] == 'a';
    EXPECT_NEAR(static_cast<double>(from_a), 0.75 * static_cast<double>(n + 1), 1.0) << "prefix " << n + 1;
  }
  EXPECT_EQ(mixed.prompts[0].messages.back().content, "a0");
  EXPECT_EQ(mixed.prompts[3].messages.back().content, "b0") << "in file order within each file";
  // c runs dry after 3: the rest is b's.
  const PromptSet dry = load_prompts({c, b}, false, 0, {1, 1});
  ASSERT_EQ(dry.prompts.size(), 43u);
  EXPECT_EQ(dry.prompts.back().messages.back().content, "b39");
  const PromptSet only_b = load_prompts({a, b}, false, 5, {0, 1});
  for (const Prompt& p : only_b.prompts) EXPECT_EQ(p.messages.back().content[0], 'b');
  EXPECT_HAS(error_of([&] { load_prompts({a, b}, false, 0, {1}); }), "1 prompt weights for 2 prompt files");
}

// Magpie's filters: each junk reason on a sample made to have it, and none on a plain request.
TEST(Magpie, JunkReasons) {
  config::MagpieSection m;
  m.min_chars = 20, m.max_chars = 120;
  EXPECT_EQ(junk_reason("How do I plan a week of healthy dinners for a family of four?", m), "");
  EXPECT_EQ(junk_reason("Hi there.", m), "short");
  EXPECT_EQ(junk_reason(std::string(200, 'a'), m), "long");
  EXPECT_EQ(junk_reason("Tell me a joke.<|im_start|>assistant", m), "markup");
  EXPECT_EQ(junk_reason("What is 12 + 7 * (3 - 1) / 2 ?", m), "not text");
  EXPECT_EQ(junk_reason("the cat the cat the cat the cat the cat the cat the cat", m), "repetitive");
  EXPECT_EQ(normalise_text("  Hello, World!\n\tIt's  me. "), "hello world it s me");
}

// Near duplicates: the same words in another case and punctuation, one text inside the other, half the word 3-grams
// shared; unrelated requests are not.
TEST(Magpie, NearDuplicatesByContainmentAndNgramOverlap) {
  NearDuplicates held(3, 0.5);
  held.add("Write a persuasive essay about the benefits of public libraries in small towns.");
  held.add("Explain how photosynthesis works.");
  EXPECT_EQ(held.find("write a PERSUASIVE essay -- about the benefits of public libraries in small towns"), 0);
  EXPECT_EQ(held.find("Can you explain how photosynthesis works in simple terms?"), 1) << "holds the other";
  EXPECT_EQ(held.find("Write a persuasive essay about the benefits of public parks in large cities."), 0)
      << "7 of its 11 word 3-grams are the first text's";
  EXPECT_EQ(held.find("Describe the water cycle for a school project."), -1);
  EXPECT_EQ(held.find("Write a short poem about autumn leaves falling."), -1);
  EXPECT_EQ(held.size(), 2);
}

TEST(DemoPrompts, TrainingPromptsHoldNoMtBenchQuestion) {
  const fsys::path dir = fsys::path(DRAFTALIGN_SOURCE_DIR) / ".cache/prompts";
  ASSERT_TRUE(fsys::exists(dir / "train.jsonl") && fsys::exists(dir / "mt-bench.jsonl"))
      << "run `bash tools/test.sh` (tools/make_prompts.py makes " << dir << ")";
  const PromptSet train = load_prompts({(dir / "train.jsonl").string()}, false);
  const PromptSet mt = load_prompts({(dir / "mt-bench.jsonl").string()}, false);
  EXPECT_GE(train.prompts.size(), 5000u);
  EXPECT_EQ(mt.prompts.size(), 80u);
  std::set<std::string> distinct;
  for (const auto& p : train.prompts) distinct.insert(normalise(p.messages.back().content));
  EXPECT_EQ(distinct.size(), train.prompts.size()) << "training prompts are deduplicated";
  // Every MT-bench turn (both turns of each question, read from the file), against every training prompt.
  std::vector<std::string> questions;
  std::istringstream in(testing::read_text(dir / "mt-bench.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    for (const auto& t : record["turns"]) questions.push_back(normalise(t.get<std::string>()));
  }
  ASSERT_EQ(questions.size(), 160u);
  for (const std::string& t : distinct)
    for (const std::string& q : questions)
      ASSERT_TRUE(t.find(q) == std::string::npos && q.find(t) == std::string::npos)
          << "training prompt \"" << t << "\" overlaps MT-bench \"" << q << "\"";
}

}  // namespace
}  // namespace draftalign::data
