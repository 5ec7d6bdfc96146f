// `draftalign data import`, as the real binary: chat JSONL (OpenAI "messages" and ShareGPT "conversations", two files)
// becomes a distillation data directory in generate's format. Each assistant turn is one record whose prompt is the
// conversation before it as the target's template renders it and whose response is that turn; `data show` prints
// them back; distill's online teacher trains on them end to end; bad lines name file:line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "tiny_models.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::train {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;

std::string import_cmd(const testing::ScratchDir& d, const std::string& inputs, const std::string& extra = "") {
  return str_cat(DRAFTALIGN_BIN, " data import run.output_dir=", (d / "run").string(),
                 " target.dir=", (d / "target").string(), " data.inputs=[", inputs, "] data.dir=",
                 (d / "imported").string(), " ", extra);
}

TEST(DataImport, RoundTripToDataShowAndDistilsEndToEnd) {
  testing::ScratchDir d;
  testing::save_tiny(d / "target", 2, 5, 30.0);
  testing::save_tiny(d / "drafter", 1, 9, 1.0, d / "target");
  // 24 conversations: OpenAI messages (half with a system turn, a third with two assistant turns) and ShareGPT.
  std::string chat, sharegpt;
  std::vector<std::vector<tok::Message>> conversations;
  for (int i = 0; i < 16; ++i) {
    std::vector<tok::Message> m;
    if (i % 2 == 0) m.push_back({"system", "You are a counting assistant."});
    m.push_back({"user", str_cat("What comes after ", i, "?")});
    m.push_back({"assistant", str_cat(i + 1, " comes after ", i, ".")});
    if (i % 3 == 0) {
      m.push_back({"user", "And after that?"});
      m.push_back({"assistant", str_cat("Then ", i + 2, ".")});
    }
    json list = json::array();
    for (const auto& x : m) list.push_back({{"role", x.role}, {"content", x.content}});
    chat += json({{"messages", list}}).dump() + "\n";
    conversations.push_back(m);
  }
  for (int i = 0; i < 8; ++i) {
    sharegpt += json({{"conversations", {{{"from", "human"}, {"value", str_cat("Spell ", i, " in words.")}},
                                          {{"from", "gpt"}, {"value", str_cat("It is spelled number-", i, ".")}}}}})
                    .dump() +
                "\n\n";  // blank lines are skipped
    conversations.push_back({{"user", str_cat("Spell ", i, " in words.")},
                             {"assistant", str_cat("It is spelled number-", i, ".")}});
  }
  testing::write_text(d / "chat.jsonl", chat);
  testing::write_text(d / "sharegpt.jsonl", sharegpt);
  auto r = run_command(
      import_cmd(d, str_cat((d / "chat.jsonl").string(), ",", (d / "sharegpt.jsonl").string()), "data.shard_size=10"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "24 conversations -> 30 records (one per assistant turn)");
  const json manifest = json::parse(testing::read_text(d / "imported" / "manifest.json"));
  EXPECT_EQ(manifest["records"], 30);
  EXPECT_EQ(manifest["shards"].size(), 3u);

  // Every record is the template's prompt for the conversation before an assistant turn, then that turn.
  const auto tokenizer = tok::load_tokenizer(d / "target");
  const auto chat_template = tok::ChatTemplate::from_dir(d / "target");
  std::vector<std::pair<std::string, std::string>> want;  // (prompt, response) in record order
  for (const auto& m : conversations)
    for (size_t a = 1; a < m.size(); ++a)
      if (m[a].role == "assistant")
        want.push_back({chat_template.render({m.begin(), m.begin() + a}, true), m[a].content + "<|im_end|>"});
  size_t k = 0;
  for (const auto& file : {"shard-00000", "shard-00001", "shard-00002"}) {
    const auto f = io::SafetensorsFile::open(d / "imported" / (std::string(file) + ".safetensors"));
    const torch::Tensor tokens = f.get("tokens").to(torch::kInt64), offsets = f.get("offsets"),
                        plen = f.get("prompt_lens"), mask = f.get("loss_mask");
    for (int64_t i = 0; i + 1 < offsets.size(0); ++i, ++k) {
      const int64_t lo = offsets[i].item<int64_t>(), hi = offsets[i + 1].item<int64_t>(), p = plen[i].item<int32_t>();
      auto ids = [&](int64_t a, int64_t b) {
        const torch::Tensor t = tokens.narrow(0, a, b - a).contiguous();
        return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
      };
      ASSERT_LT(k, want.size());
      EXPECT_EQ(tokenizer->decode(ids(lo, lo + p)), want[k].first) << "record " << k;
      EXPECT_EQ(tokenizer->decode(ids(lo + p, hi)), want[k].second) << "record " << k;
      EXPECT_EQ(mask.narrow(0, lo, hi - lo).sum().item<int64_t>(), hi - lo - p) << "the loss mask is the response";
    }
  }
  EXPECT_EQ(k, want.size());
  // The second assistant turn of conversation 0 sees the first one in its prompt.
  EXPECT_HAS(want[1].first, "1 comes after 0.<|im_end|>\n<|im_start|>user\nAnd after that?<|im_end|>");

  r = run_command(str_cat(DRAFTALIGN_BIN, " data show data.samples=2 data.first=1 data.dir=", (d / "imported").string(),
                          " target.dir=", (d / "target").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "=== record 1: request 1");
  EXPECT_HAS(r.output, "--- prompt (as the target saw it)\n" + want[1].first + "\n--- response\nThen 2.<|im_end|>");
  EXPECT_HAS(r.output, "=== record 2: request 2");

  // Importing the same files again is allowed; other inputs or another shard size into the same directory are not.
  r = run_command(import_cmd(d, str_cat((d / "chat.jsonl").string(), ",", (d / "sharegpt.jsonl").string()),
                             "data.shard_size=10"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_command(import_cmd(d, (d / "chat.jsonl").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "holds data made from other inputs or settings");
  r = run_command(import_cmd(d, str_cat((d / "chat.jsonl").string(), ",", (d / "sharegpt.jsonl").string()),
                             "data.shard_size=7"));  // other shards would leave stale ones beside them
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "holds data made from other inputs or settings");

  // Distillation with the online teacher runs on the imported records.
  r = run_command(str_cat(DRAFTALIGN_BIN, " distill run.threads=2 run.log_every=5 distill.teacher=online target.dir=",
                          (d / "target").string(), " run.output_dir=", (d / "run").string(), " distill.data_dir=", (d / "imported").string(),
                          " distill.student=", (d / "drafter").string(), " distill.output_dir=", (d / "out").string(),
                          " distill.loss=tvdpp distill.val_fraction=0.25 distill.train.steps=10",
                          " distill.train.seq_len=64 distill.train.micro_batch_size=4 distill.train.eval_every=0",
                          " distill.train.eval_batches=2 distill.train.save_every=0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string metrics = testing::read_text(d / "out" / "tvdpp-token-q" / "metrics.jsonl");
  EXPECT_HAS(metrics, "\"val_alpha\"");
  EXPECT_HAS(metrics, "\"step\":10");
  EXPECT_TRUE(fsys::exists(d / "out" / "tvdpp-token-q" / "final" / "model.safetensors"));
}

TEST(DataImport, BadLinesNameFileAndLineAndCanBeSkipped) {
  testing::ScratchDir d;
  testing::save_tiny(d / "target", 1, 5, 1.0);
  const std::string good =
      json({{"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello."}}}}})
          .dump();
  testing::write_text(d / "bad.jsonl", good + "\n{\"messages\": [\n" + good + "\n" +
                                           R"({"messages": [{"role": "assistant", "content": "first"}]})" + "\n" +
                                           R"({"conversations": [{"from": "human", "value": "no answer"}]})" + "\n" +
                                           R"({"prompt": "not a chat"})" + "\n");
  auto r = run_command(import_cmd(d, (d / "bad.jsonl").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "bad.jsonl:2: not valid JSON");
  EXPECT_FALSE(fsys::exists(d / "imported" / "manifest.json"));
  r = run_command(import_cmd(d, (d / "bad.jsonl").string(), "data.on_bad_record=skip"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "skipped 4 malformed lines (the first: ");
  EXPECT_HAS(r.output, "2 conversations -> 2 records");
  for (const auto& [line, why] : std::vector<std::pair<std::string, std::string>>{
           {R"({"messages": [{"role": "assistant", "content": "first"}]})", "does not follow a user turn"},
           {R"({"conversations": [{"from": "human", "value": "no answer"}]})", "no assistant turn"},
           {R"({"prompt": "not a chat"})", "expected \"messages\" or \"conversations\""},
           {R"({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]})",
            "messages[1]: unknown role \"bot\""}}) {
    testing::write_text(d / "one.jsonl", good + "\n" + line + "\n");
    r = run_command(import_cmd(d, (d / "one.jsonl").string(), "data.dir=" + (d / "other").string()));
    EXPECT_EQ(r.exit_code, 1) << line;
    EXPECT_HAS(r.output, "one.jsonl:2: ");
    EXPECT_HAS(r.output, why);
  }
  r = run_command(import_cmd(d, (d / "missing.jsonl").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "missing.jsonl: chat file not found (data.inputs)");
}

}  // namespace
}  // namespace draftalign::train
