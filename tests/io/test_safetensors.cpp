// io/safetensors: round trips through our writer, files built byte by byte from the format description (so the
// reader is checked independently of the writer), and every malformed-file case the reader must name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "common/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace draftalign::io {
namespace {

using testing::ScratchDir;

// u64 little-endian header length, the header text, the data bytes.
std::string file_bytes(const std::string& header, const std::string& data, int64_t claimed_len = -1) {
  const uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(v.begin()), v.size() * sizeof(float));
}

// Opens a file with these bytes and returns the error message ("" when it opens).
std::string open_error(const ScratchDir& dir, const std::string& bytes) {
  const auto p = dir / "m.safetensors";
  testing::write_text(p, bytes);
  return testing::error_of([&] { SafetensorsFile::open(p); });
}

TEST(Safetensors, ReadsAHandBuiltFile) {
  ScratchDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
      R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  testing::write_text(dir / "m.safetensors", file_bytes(header, floats({1, 2, 3, -4.5f, 8})));
  auto f = SafetensorsFile::open(dir / "m.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_TRUE(torch::equal(f.get("a"), torch::tensor({1.f, 2.f, 3.f})));
  EXPECT_TRUE(torch::equal(f.get("b"), torch::tensor({-4.5f, 8.f})));
  EXPECT_THROW(f.get("c"), Error);
}

TEST(Safetensors, RoundTripEveryDtypeAndShape) {
  ScratchDir dir;
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"model.embed_tokens.weight", torch::randn({5, 3})},
      {"bf16", torch::randn({4, 2}).to(torch::kBFloat16)},
      {"f16", torch::randn({3}).to(torch::kFloat16)},
      {"f64", torch::randn({2, 2}, torch::kFloat64)},
      {"i64", torch::arange(7)},
      {"u8", torch::randint(0, 255, {9}).to(torch::kUInt8)},
      {"flags", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},  // not contiguous: written contiguous
  };
  save_safetensors(dir / "rt.safetensors", tensors, {{"format", "pt"}});
  auto f = SafetensorsFile::open(dir / "rt.safetensors");
  ASSERT_EQ(f.entries().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EXPECT_EQ(f.entries()[i].name, name) << "file order is kept";
    torch::Tensor back = f.get(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  const std::string raw = testing::read_text(dir / "rt.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[i]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section 8-byte aligned";
}

TEST(Safetensors, TensorsOutliveTheFileObjectAndWritesDoNotReachTheFile) {
  ScratchDir dir;
  save_safetensors(dir / "w.safetensors", {{"w", torch::ones({4})}});
  torch::Tensor t;
  {
    auto f = SafetensorsFile::open(dir / "w.safetensors");
    t = f.get("w");
  }
  t.add_(1);  // a view of a private mapping: copy-on-write
  EXPECT_TRUE(torch::equal(t, torch::full({4}, 2.f)));
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(dir / "w.safetensors").get("w"), torch::ones({4})));
}

TEST(Safetensors, MisalignedTensorIsCopied) {
  ScratchDir dir;
  // A 1-byte U8 tensor first puts the F32 tensor at an odd address.
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  testing::write_text(dir / "m.safetensors", file_bytes(header, std::string(1, '\x07') + floats({1.25f, -2})));
  auto f = SafetensorsFile::open(dir / "m.safetensors");
  EXPECT_TRUE(torch::equal(f.get("f"), torch::tensor({1.25f, -2.f})));
  EXPECT_EQ(f.get("u").item<uint8_t>(), 7);
}

TEST(SafetensorsErrors, TruncatedBeforeTheHeaderLength) {
  ScratchDir dir;
  const std::string e = open_error(dir, "abc");
  EXPECT_HAS(e, (dir / "m.safetensors").string() + ": truncated: 3 bytes");
}

TEST(SafetensorsErrors, HeaderLengthPastTheEnd) {
  ScratchDir dir;
  EXPECT_HAS(open_error(dir, file_bytes("{}", "", 1000)), "header length 1000 runs past the end of the file (10 bytes)");
  EXPECT_HAS(open_error(dir, file_bytes("{}", "", int64_t(1) << 62)), "runs past the end of the file");
}

TEST(SafetensorsErrors, HeaderNotJson) {
  ScratchDir dir;
  EXPECT_HAS(open_error(dir, file_bytes(R"({"a": {"dtype": )", "")), "header is not valid JSON at byte");
  EXPECT_HAS(open_error(dir, file_bytes("[1, 2]", "")), "header is not a JSON object");
}

TEST(SafetensorsErrors, OffsetsOutOfRange) {
  ScratchDir dir;
  const std::string e =
      open_error(dir, file_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", floats({1, 2})));
  EXPECT_HAS(e, "tensor 'w': data_offsets [0, 16] run past the end of the data (8 bytes)");
  EXPECT_HAS(open_error(dir, file_bytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", floats({1, 2}))),
             "tensor 'w': data_offsets [8, 4] end before they begin");
  EXPECT_HAS(open_error(dir, file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "")),
             "tensor 'w': data_offsets must be [begin, end]");
}

TEST(SafetensorsErrors, OverlappingTensors) {
  ScratchDir dir;
  const std::string e = open_error(dir, file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                                   floats({1, 2, 3})));
  EXPECT_HAS(e, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
}

TEST(SafetensorsErrors, UnknownDtype) {
  ScratchDir dir;
  EXPECT_HAS(open_error(dir, file_bytes(R"({"q":{"dtype":"Q4_1","shape":[2],"data_offsets":[0,2]}})", "xx")),
             "tensor 'q': unknown or unsupported dtype 'Q4_1'");
}

TEST(SafetensorsErrors, ShapeDisagreesWithByteSize) {
  ScratchDir dir;
  EXPECT_HAS(open_error(dir, file_bytes(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}})",
                                        floats({1, 2}))),
             "tensor 'w': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 8] hold 8");
  // A shape whose byte count overflows must be refused, not allocated.
  EXPECT_HAS(open_error(dir, file_bytes(R"({"w":{"dtype":"F32","shape":[1000000000000,1000000000000],)"
                                        R"("data_offsets":[0,8]}})",
                                        floats({1, 2}))),
             "tensor 'w': shape");
}

TEST(SafetensorsErrors, TruncatedRealFile) {
  ScratchDir dir;
  save_safetensors(dir / "full.safetensors", {{"a", torch::randn({64})}, {"b", torch::randn({64})}});
  std::string bytes = testing::read_text(dir / "full.safetensors");
  bytes.resize(bytes.size() - 10);
  EXPECT_HAS(open_error(dir, bytes), "tensor 'b': data_offsets [256, 512] run past the end of the data (502 bytes)");
}

TEST(SafetensorsErrors, MissingFile) {
  ScratchDir dir;
  EXPECT_HAS(testing::error_of([&] { SafetensorsFile::open(dir / "none.safetensors"); }),
             "none.safetensors: cannot open");
}

TEST(SafetensorsErrors, TensorNamesMustMatchTheModel) {
  EXPECT_NO_THROW(check_tensor_names("m.safetensors", {"a", "b"}, {"a", "b"}));
  EXPECT_HAS(testing::error_of([] { check_tensor_names("m.safetensors", {"a", "extra"}, {"a", "b"}); }),
             "m.safetensors: tensor names do not match the model; missing: b; unexpected: extra");
}

TEST(SafetensorsErrors, WriterKeepsTheOldFileOnFailure) {
  ScratchDir dir;
  save_safetensors(dir / "k.safetensors", {{"w", torch::ones({2})}});
  EXPECT_THROW(save_safetensors(dir / "k.safetensors", {{"w", torch::ones({2})}, {"w", torch::ones({2})}}), Error);
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(dir / "k.safetensors").get("w"), torch::ones({2})));
}

}  // namespace
}  // namespace draftalign::io
