// Every YAML in configs/ loads through the real loader, starts with the command that runs it, and demo.yaml spells
// out the embedded defaults (the README main command runs it; `draftalign pipeline` with no file is the same), but for
// the options its 2-core budget sets, named here.
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

// The options in which the demo departs from the defaults, each for the 30-minute budget on 2 cores (the header of
// configs/demo.yaml says why): the defaults are what a science or GPU run wants.
const std::vector<std::string> kDemoOverrides = {
    "evaluate.context_max_new_tokens=256",  // Spec-Bench's 1024-token turn-1 answers take 3x longer
    "evaluate.repeats=2",                   // 3 repeats of 8 turns x 7 kinds: 1 more minute
    "evaluate.sampling_prompts=16",         // 24 turns: 1 more minute
    "pipeline.losses=[tvdpp, fkl]",         // TVD (the third loss) is compared with seeds in the science run
};

TEST(ShippedConfigs, DemoIsTheEmbeddedDefault) {
  LoadedConfig demo = load_config(DRAFTALIGN_SOURCE_DIR "/configs/demo.yaml", {});
  LoadedConfig defaults = load_config("", kDemoOverrides);
  std::string command = "build/draftalign pipeline --print-config";
  for (const auto& o : kDemoOverrides) command += " '" + o + "'";
  EXPECT_EQ(to_yaml(demo.raw, ""), to_yaml(defaults.raw, ""))
      << "configs/demo.yaml and the defaults in src/config/config.h differ (but for the demo's overrides); regenerate "
         "the file with\n  "
      << command << " | tail -n +2\n(then put its header lines back)";
}

TEST(ShippedConfigs, DemoOverridesAreNotTheDefaults) {
  // An override equal to the default would be a stale entry in the list above (and in the demo's header).
  const Config defaults;
  EXPECT_EQ(defaults.evaluate.context_max_new_tokens, 1024) << "Spec-Bench's";
  EXPECT_EQ(defaults.evaluate.repeats, 3);
  EXPECT_EQ(defaults.evaluate.sampling_prompts, 24);
  EXPECT_EQ(defaults.pipeline.losses.size(), 3u);
  const std::string header = testing::read_text(DRAFTALIGN_SOURCE_DIR "/configs/demo.yaml");
  for (const auto& o : kDemoOverrides) {
    const std::string key = o.substr(0, o.find('='));
    EXPECT_NE(header.substr(0, header.find("\nrun:")).find(key), std::string::npos)
        << "configs/demo.yaml's header does not name its override " << key;
  }
}

}  // namespace
}  // namespace draftalign::config
