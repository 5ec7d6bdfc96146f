// Tokenizers and chat templates against transformers: the SmolLM2 byte-level BPE on the >= 100k-character text of
// tools/make_goldens.py, ChatML on its chat prompts, and a SentencePiece model trained here, compared with what
// transformers (tools/hf_tokenize.py) makes of the same model, text and Llama-2 chat template.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

namespace draftalign::tok {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;

using testing::kSmolDir;

// Index of the first difference of two id lists, with context, for failure messages.
std::string first_difference(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const Tokenizer& t) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "";
  auto show = [&](const std::vector<int64_t>& v) {
    std::string s;
    for (size_t k = i; k < std::min(v.size(), i + 6); ++k) s += str_cat(v[k], "'", t.piece(v[k]), "' ");
    return s;
  };
  return str_cat("first difference at token ", i, " (sizes ", a.size(), " vs ", b.size(), "): ours ", show(a),
                 "| reference ", show(b));
}

std::vector<Message> messages_of(const json& list) {
  std::vector<Message> out;
  for (const json& m : list) out.push_back({m["role"], m["content"]});
  return out;
}

TEST(BpeTokenizer, SmolLM2EqualsTransformersOnTheLongText) {
  const fsys::path dir = testing::golden_path("tokenizer");
  const std::string text = fs::read_file(dir / "text.txt");
  const std::vector<int64_t> want = json::parse(fs::read_file(dir / "smollm2_ids.json"))["ids"];
  ASSERT_GE(text.size(), 100000u);
  auto t = load_tokenizer(kSmolDir);
  EXPECT_EQ(t->kind(), "byte-level BPE");
  EXPECT_EQ(t->vocab_size(), 49152);
  const std::vector<int64_t> got = t->encode(text);
  EXPECT_EQ(got, want) << first_difference(got, want, *t);
  EXPECT_EQ(t->decode(got), text);
  std::cout << "[tokenizer] " << text.size() << " bytes -> " << got.size() << " tokens, equal to transformers\n";
}

// Tokenizers trained by tools/make_goldens.py with the `tokenizers` library in the configurations of Llama 3, Qwen2,
// GPT-4o, Mistral and Llama 2 exports (normalizers, pre-tokenizers, decoders, byte fallback): the whole text encodes
// to the library's ids and those decode to the library's text.
class TokenizerConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerConfig, EqualsHuggingFaceTokenizersOnTheLongText) {
  const fsys::path dir = testing::golden_path("tokenizer");
  const std::string text = fs::read_file(dir / "text.txt");
  const std::vector<int64_t> want = json::parse(fs::read_file(dir / GetParam() / "ids.json"))["ids"];
  auto t = load_bpe(dir / GetParam() / "tokenizer.json");
  const std::vector<int64_t> got = t->encode(text);
  EXPECT_EQ(got, want) << first_difference(got, want, *t);
  const std::string decoded = t->decode(want), want_decoded = fs::read_file(dir / GetParam() / "decoded.txt");
  size_t at = 0;
  while (at < decoded.size() && at < want_decoded.size() && decoded[at] == want_decoded[at]) ++at;
  EXPECT_EQ(at, std::max(decoded.size(), want_decoded.size()))
      << "decoded text differs at byte " << at << ": ours '" << decoded.substr(at, 40) << "' vs '"
      << want_decoded.substr(at, 40) << "'";
}

INSTANTIATE_TEST_SUITE_P(Configs, TokenizerConfig,
                         ::testing::Values("llama3", "qwen2-nfc", "gpt4o-nfkc", "nfd-lowercase-strip-accents",
                                           "metaspace-first", "prepend-replace", "metaspace-unk",
                                           "metaspace-split-nfkd"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(BpeTokenizer, SpecialTokensFromTokenizerConfig) {
  auto t = load_tokenizer(kSmolDir);
  EXPECT_EQ(t->special().bos, 1);
  EXPECT_EQ(t->special().eos, 2);
  EXPECT_EQ(t->special().pad, 2);
  EXPECT_EQ(t->special().unk, 0);
  EXPECT_EQ(t->special().eos_text, "<|im_end|>");
  EXPECT_EQ(t->encode("<|im_start|>user"), (std::vector<int64_t>{1, 4093}));
  EXPECT_EQ(t->id_of("<|im_end|>"), 2);
  EXPECT_EQ(t->id_of("no such token"), -1);
}

// SmolLM2's shipped template (Jinja, through transformers' renderer) and the built-in ChatML renderer both give what
// transformers' apply_chat_template gave for the golden prompts, and their tokens.
TEST(ChatTemplate, SmolLM2TemplateEqualsApplyChatTemplate) {
  const json prompts = json::parse(fs::read_file(testing::golden_path("smollm2") / "prompts.json"))["prompts"];
  auto t = load_tokenizer(kSmolDir);
  const ChatTemplate jinja = ChatTemplate::from_dir(kSmolDir), chatml = ChatTemplate::from_dir(kSmolDir, "chatml");
  EXPECT_EQ(jinja.name(), "jinja");
  EXPECT_EQ(chatml.default_system(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  int checked = 0;
  for (const json& p : prompts) {
    if (!p.contains("messages")) continue;
    for (const ChatTemplate* chat : {&jinja, &chatml}) {
      const std::string text = chat->render(messages_of(p["messages"]));
      EXPECT_EQ(text, p["rendered"].get<std::string>()) << chat->name();
      EXPECT_EQ(t->encode(text), p["ids"].get<std::vector<int64_t>>()) << chat->name();
    }
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

// The templates Llama 3.1, Qwen2.5, Qwen3, Mistral (Nemo), SmolLM2 and Llama 2 ship, with their special tokens
// (tools/make_goldens.py, chat/): six conversations each (one and several turns, with and without a system turn,
// ending with a user turn to prompt or an assistant turn to train on) render as apply_chat_template rendered them.
class ShippedTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(ShippedTemplate, RendersAsApplyChatTemplate) {
  const fsys::path dir = testing::golden_path("chat") / GetParam();
  const json golden = json::parse(fs::read_file(dir / "golden.json"))["conversations"];
  const ChatTemplate chat = ChatTemplate::from_dir(dir);
  ASSERT_EQ(golden.size(), 6u);
  for (size_t i = 0; i < golden.size(); ++i) {
    const std::string want = golden[i]["text"];
    EXPECT_EQ(chat.render(messages_of(golden[i]["messages"]), golden[i]["add_generation_prompt"]), want)
        << "conversation " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ShippedTemplate,
                         ::testing::Values("llama3.1", "qwen2.5", "qwen3", "mistral", "smollm2", "llama2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// user_prefix is what render writes before the user's words (render equals transformers, above), with and without a
// system prompt, for shipped templates and the built-in ones; user_turn_end is what follows them.
TEST(ChatTemplate, UserPrefixOpensTheUserTurnAsRenderDoes) {
  const fsys::path chats = testing::golden_path("chat");
  const std::vector<ChatTemplate> templates = {ChatTemplate::from_dir(kSmolDir),
                                               ChatTemplate::from_dir(kSmolDir, "chatml"),
                                               ChatTemplate(ChatTemplate::Format::kLlama2, "<s>", "</s>"),
                                               ChatTemplate::from_dir(chats / "llama3.1"),
                                               ChatTemplate::from_dir(chats / "mistral"),
                                               ChatTemplate::from_dir(chats / "qwen3")};
  const std::vector<std::string> ends = {"<|im_end|>", "<|im_end|>", "[/INST]", "<|eot_id|>", "[/INST]", "<|im_end|>"};
  for (size_t k = 0; k < templates.size(); ++k) {
    const ChatTemplate& chat = templates[k];
    EXPECT_EQ(chat.user_turn_end(), ends[k]) << k;
    const std::string with_system = chat.render({{"system", "Be brief."}, {"user", "XYZ"}});
    EXPECT_EQ(with_system.rfind(chat.user_prefix("Be brief.") + "XYZ", 0), 0u) << k << ": " << with_system;
    const std::string bare = chat.render({{"user", "XYZ"}});
    EXPECT_EQ(bare.rfind(chat.user_prefix() + "XYZ", 0), 0u) << k << ": " << bare;
    const size_t end = (chat.user_prefix() + "XYZ").size();
    EXPECT_EQ(bare.find_first_not_of(" \n", end), bare.find(chat.user_turn_end(), end)) << k;
  }
  EXPECT_HAS(templates[1].user_prefix(), templates[1].default_system());
  EXPECT_HAS(templates[0].user_prefix(), templates[1].default_system());
}

TEST(BpeTokenizerErrors, NameTheFileAndThePlace) {
  testing::ScratchDir dir;
  json j = json::parse(fs::read_file(kSmolDir / "tokenizer.json"));
  auto error_with = [&](const std::function<void(json&)>& edit) {
    json k = j;
    edit(k);
    testing::write_text(dir / "tokenizer.json", k.dump());
    return testing::error_of([&] { load_bpe(dir / "tokenizer.json"); });
  };
  EXPECT_HAS(error_with([](json& k) { k["model"]["type"] = "Unigram"; }), "model.type 'Unigram' is not supported");
  EXPECT_HAS(error_with([](json& k) {
               k["model"]["vocab"] = {{"a", 20}, {"b", 21}};
               k["model"]["merges"] = json::array();
             }),
             "tokens for only 2 of the 256 byte symbols");
  EXPECT_HAS(error_with([](json& k) { k["model"]["merges"][5] = {"zzzq", "qqqz"}; }), "model.merges[5]");
  EXPECT_HAS(error_with([](json& k) {
               k["pre_tokenizer"] = {{"type", "Whitespace"}};
             }),
             "tokenizer.json: pre_tokenizer: pre-tokenizer type 'Whitespace' is not supported");
  EXPECT_HAS(error_with([](json& k) {
               k["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"},
                                                 {"type": "BertNormalizer"}]})");
             }),
             "tokenizer.json: normalizer.normalizers[1]: normalizer type 'BertNormalizer' is not supported");
  EXPECT_HAS(error_with([](json& k) {
               k["decoder"] = {{"type", "WordPiece"}};
             }),
             "tokenizer.json: decoder: decoder type 'WordPiece' is not supported");
  EXPECT_HAS(error_with([](json& k) {
               k["normalizer"] = json::parse(R"({"type": "Replace", "pattern": {"Regex": "(["}, "content": ""})");
             }),
             "normalizer.pattern: regex does not compile");
  EXPECT_HAS(error_with([](json& k) {
               k["pre_tokenizer"] = {{"type", "Metaspace"}, {"prepend_scheme", "twice"}};
             }),
             "prepend_scheme 'twice' is not one of always, first, never");
  EXPECT_HAS(error_with([](json& k) { k["model"]["unk_token"] = "<nope>"; }), "model.unk_token '<nope>' is not in");
  testing::write_text(dir / "tokenizer.json", "{\"model\": ");
  EXPECT_HAS(testing::error_of([&] { load_bpe(dir / "tokenizer.json"); }), "tokenizer.json: not valid JSON");
  EXPECT_HAS(testing::error_of([&] { load_tokenizer(dir / "nowhere"); }), "no tokenizer.json or tokenizer.model");
}

TEST(BpeTokenizerErrors, InvalidUtf8AndUnknownIds) {
  auto t = load_tokenizer(kSmolDir);
  EXPECT_HAS(testing::error_of([&] { t->encode("ok \xC3\x28 bad"); }), "not valid UTF-8 at byte 3");
  EXPECT_HAS(testing::error_of([&] { t->decode({5, 49152}); }), "token id 49152 is outside the vocabulary");
  EXPECT_EQ(invalid_utf8_offset("\xF0\x9F\x98\x80 \xE2\x82"), 5);  // an emoji, then a truncated sequence
  EXPECT_EQ(invalid_utf8_offset("\xED\xA0\x80"), 0);                // a UTF-16 surrogate
  EXPECT_EQ(invalid_utf8_offset("plain"), -1);
  // Decoded text cut inside characters, as HF's decode(errors="replace") gives it: each bad byte becomes U+FFFD, and
  // the result encodes again.
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(replace_invalid_utf8("\xF0\x9F\x98\x80 \xE2\x82"), "\xF0\x9F\x98\x80 " + fffd + fffd);
  EXPECT_EQ(replace_invalid_utf8("a\xED\xA0\x80" "b"), "a" + fffd + fffd + fffd + "b");
  EXPECT_EQ(replace_invalid_utf8("plain"), "plain");
  EXPECT_FALSE(t->encode(replace_invalid_utf8("ok \xC3\x28 bad")).empty());
}

TEST(VocabCompatibility, SameTokenizerPassesADifferenceIsNamed) {
  testing::ScratchDir dir;
  auto target = load_tokenizer(kSmolDir);
  EXPECT_NO_THROW(check_vocab_compatible(*target, *load_tokenizer(kSmolDir)));
  json j = json::parse(fs::read_file(kSmolDir / "tokenizer.json"));
  // A drafter whose tokens 500 and 501 are swapped.
  std::string a = target->piece(500), b = target->piece(501);
  j["model"]["vocab"][a] = 501;
  j["model"]["vocab"][b] = 500;
  testing::write_text(dir / "tokenizer.json", j.dump());
  testing::write_text(dir / "tokenizer_config.json", fs::read_file(kSmolDir / "tokenizer_config.json"));
  const std::string e = testing::error_of([&] { check_vocab_compatible(*target, *load_tokenizer(dir.path())); });
  EXPECT_HAS(e, "differ at token id 500");
  EXPECT_HAS(e, dir.path().string());
  // Another EOS.
  json c = json::parse(fs::read_file(kSmolDir / "tokenizer_config.json"));
  c["eos_token"] = "<|endoftext|>";
  testing::write_text(dir / "tokenizer.json", fs::read_file(kSmolDir / "tokenizer.json"));
  testing::write_text(dir / "tokenizer_config.json", c.dump());
  EXPECT_HAS(testing::error_of([&] { check_vocab_compatible(*target, *load_tokenizer(dir.path())); }),
             "different EOS tokens (2 vs 0)");
}

// --- SentencePiece ---------------------------------------------------------------------------------------------------

// A Llama-2-like SentencePiece model (BPE, byte fallback, no normalisation, dummy prefix) trained on the long text,
// in a HF directory with the Llama-2 Chat tokenizer_config.json.
fsys::path train_sentencepiece(const testing::ScratchDir& dir) {
  const fsys::path text = testing::golden_path("tokenizer") / "text.txt";
  const auto status = sentencepiece::SentencePieceTrainer::Train(str_cat(
      "--input=", text.string(), " --model_prefix=", (dir / "tokenizer").string(),
      " --model_type=bpe --vocab_size=1500 --byte_fallback=true --normalization_rule_name=identity",
      " --remove_extra_whitespaces=false --add_dummy_prefix=true --split_digits=true --character_coverage=0.9995",
      " --max_sentence_length=100000 --num_threads=1 --minloglevel=2",
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --unk_piece=<unk> --bos_piece=<s> --eos_piece=</s>"));
  EXPECT_TRUE(status.ok()) << status.ToString();
  fsys::copy_file(fsys::path(DRAFTALIGN_SOURCE_DIR) / "data/fixtures/llama2-chat/tokenizer_config.json",
                  dir / "tokenizer_config.json");
  return dir.path();
}

TEST(SentencePieceTokenizer, EqualsTransformersWithLlama2ChatTemplate) {
  testing::ScratchDir dir;
  const fsys::path model_dir = train_sentencepiece(dir);
  const json chats = json::array({
      json::array({{{"role", "user"}, {"content", "What is the capital of France?"}}}),
      json::array({{{"role", "system"}, {"content", "Answer briefly."}},
                   {{"role", "user"}, {"content", "  Name a prime above 10. "}},
                   {{"role", "assistant"}, {"content", "11 is prime."}},
                   {{"role", "user"}, {"content", "And above 100?"}}}),
  });
  testing::write_text(dir / "chats.json", chats.dump());
  const fsys::path text_file = testing::golden_path("tokenizer") / "text.txt";
  auto r = testing::run_command(str_cat(DRAFTALIGN_TEST_PYTHON, " ", DRAFTALIGN_SOURCE_DIR, "/tools/hf_tokenize.py ",
                                        model_dir, " ", text_file, " ", dir / "chats.json", " ", dir / "hf.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json hf = json::parse(fs::read_file(dir / "hf.json"));

  auto t = load_tokenizer(model_dir);
  EXPECT_EQ(t->kind(), "SentencePiece");
  EXPECT_EQ(t->vocab_size(), 1500);
  EXPECT_EQ(t->special().bos, 1);
  EXPECT_EQ(t->special().eos_text, "</s>");
  const std::string text = fs::read_file(text_file);
  const std::vector<int64_t> got = t->encode(text), want = hf["ids"];
  EXPECT_EQ(got, want) << first_difference(got, want, *t);
  EXPECT_EQ(t->decode(got), text);

  const ChatTemplate chat = ChatTemplate::from_dir(model_dir), builtin = ChatTemplate::from_dir(model_dir, "llama2");
  EXPECT_EQ(chat.name(), "jinja");
  for (size_t i = 0; i < chats.size(); ++i) {
    const std::string rendered = chat.render(messages_of(chats[i]));
    EXPECT_EQ(rendered, hf["chats"][i]["text"].get<std::string>());
    EXPECT_EQ(builtin.render(messages_of(chats[i])), rendered);
    const std::vector<int64_t> ids = t->encode(rendered), hf_ids = hf["chats"][i]["ids"];
    EXPECT_EQ(ids, hf_ids) << first_difference(ids, hf_ids, *t);
    EXPECT_EQ(ids.front(), 1) << "the rendered <s> is the BOS id";
  }
  std::cout << "[tokenizer] SentencePiece: " << text.size() << " bytes -> " << got.size()
            << " tokens, equal to transformers\n";
}

TEST(ChatTemplate, Llama2RolesMustAlternate) {
  const ChatTemplate chat(ChatTemplate::Format::kLlama2, "<s>", "</s>");
  EXPECT_HAS(testing::error_of([&] { chat.render({{"user", "a"}, {"user", "b"}}); }), "must alternate");
  EXPECT_HAS(testing::error_of([&] { chat.render({{"tool", "a"}}); }), "message 0 has role 'tool'");
  EXPECT_EQ(chat.render({{"user", "hi"}, {"assistant", "hello"}, {"user", "bye"}}),
            "<s>[INST] hi [/INST] hello </s><s>[INST] bye [/INST]");
}

TEST(ChatTemplate, NoTemplateAsksForTheYamlKey) {
  testing::ScratchDir dir;
  testing::write_text(dir / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_HAS(testing::error_of([&] { ChatTemplate::from_dir(dir.path()); }), "set target.chat_template");
  EXPECT_EQ(ChatTemplate::from_dir(dir.path(), "llama2").name(), "llama2");
}

// A template that does not compile names the file, the line and the construct; one that fails while rendering names
// what failed; a Python that cannot be started is named with the variable that chooses it.
TEST(ChatTemplate, TemplatesThatCannotRenderAreNamed) {
  testing::ScratchDir dir;
  auto error_for = [&](const std::string& jinja) {
    testing::write_text(dir / "chat_template.jinja", jinja);
    return testing::error_of([&] { ChatTemplate::from_dir(dir.path()).render({{"user", "hi"}}); });
  };
  const std::string tag = error_for("{% for m in messages %}{{ m.content }}\n{% frobnicate %}{% endfor %}");
  EXPECT_HAS(tag, "chat_template.jinja: chat template: line 2");
  EXPECT_HAS(tag, "frobnicate");
  EXPECT_HAS(error_for("{{ messages[0].content | shout }}"), "No filter named 'shout'");
  EXPECT_HAS(error_for("{{ raise_exception('Only system and user roles, please') }}"),
             "Only system and user roles, please");
  EXPECT_HAS(error_for("{{ messages[0].content.nosuchmethod() }}"), "nosuchmethod");
  testing::write_text(dir / "chat_template.jinja", "{{ bos_token }}{{ messages[0].content }}");
  testing::write_text(dir / "tokenizer_config.json", R"({"bos_token": {"content": "<B>"}})");
  EXPECT_EQ(ChatTemplate::from_dir(dir.path()).render({{"user", "hi"}}), "<B>hi");
  setenv("DRAFTALIGN_PYTHON", "/nonexistent/python3", 1);
  const std::string no_python = testing::error_of([&] { ChatTemplate::from_dir(dir.path()); });
  unsetenv("DRAFTALIGN_PYTHON");
  EXPECT_HAS(no_python, "cannot start '/nonexistent/python3'");
  EXPECT_HAS(no_python, "DRAFTALIGN_PYTHON");
}

TEST(SentencePieceTokenizer, NotAModelIsNamed) {
  testing::ScratchDir dir;
  testing::write_text(dir / "tokenizer.model", "garbage");
  EXPECT_HAS(testing::error_of([&] { load_tokenizer(dir.path()); }), "tokenizer.model: not a SentencePiece model");
}

}  // namespace
}  // namespace draftalign::tok
