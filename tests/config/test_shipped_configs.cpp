// Every YAML in configs/ loads through the real loader, starts with the command that runs it, and demo.yaml spells
// out the embedded defaults (the README main command runs it; `draftalign pipeline` with no file is the same), but for
// the one option its 2-core budget sets, named here.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "config/loader.h"
#include "test_util.h"

namespace draftalign::config {
namespace {

std::vector<std::filesystem::path> shipped_configs() {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(DRAFTALIGN_SOURCE_DIR "/configs"))
    if (e.is_regular_file() && (e.path().extension() == ".yaml" || e.path().extension() == ".yml"))
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ShippedConfigs, EveryFileLoadsAndNamesItsCommand) {
  const auto files = shipped_configs();
  ASSERT_FALSE(files.empty());
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    EXPECT_NO_THROW({
      try {
        const Config c = load_config(f.string(), {}).cfg;
        const auto& prompts = c.generate.prompts;
        EXPECT_TRUE(!c.pipeline.target_prompts ||
                    std::find(prompts.begin(), prompts.end(), c.magpie.output) != prompts.end())
            << "the pipeline would refuse it: pipeline.target_prompts without magpie.output in generate.prompts";
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
      }
    });
    const std::string text = testing::read_text(f);
    const std::string first = text.substr(0, text.find('\n'));
    EXPECT_EQ(first.rfind("# ", 0), 0u) << "first line must be a comment with the command that runs this file";
    EXPECT_NE(first.find("draftalign"), std::string::npos) << first;
  }
}

TEST(ShippedConfigs, DemoIsTheEmbeddedDefault) {
  LoadedConfig demo = load_config(DRAFTALIGN_SOURCE_DIR "/configs/demo.yaml", {});
  Config defaults;
  EXPECT_EQ(defaults.evaluate.context_max_new_tokens, 1024) << "Spec-Bench's";
  defaults.evaluate.context_max_new_tokens = 256;  // the demo's: 1024-token turn-1 answers take 3x longer on 2 cores
  EXPECT_EQ(to_yaml(demo.raw, ""), to_yaml(defaults, ""))
      << "configs/demo.yaml and the defaults in src/config/config.h differ; regenerate the file with\n"
         "  build/draftalign pipeline --print-config evaluate.context_max_new_tokens=256";
}

}  // namespace
}  // namespace draftalign::config
