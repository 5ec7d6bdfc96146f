#include "io/safetensors_header.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace draftalign::io {
namespace {

// A header larger than this is not a real checkpoint's (Llama-2-70B's is ~100 KB): refuse before parsing it.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

const char* kHint = " (re-export or re-download the checkpoint)";

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

uint64_t safetensors_dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, uint64_t> kBytes = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2},
                                                         {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
                                                         {"U8", 1},  {"BOOL", 1}};
  const auto it = kBytes.find(dtype);
  return it == kBytes.end() ? 0 : it->second;
}

SafetensorsHeader parse_safetensors_header(const unsigned char* bytes, uint64_t size, const std::string& file) {
  auto fail = [&](const std::string& what) -> Error { return Error(file + ": " + what); };
  if (size < 8) throw fail(str_cat("truncated: ", size, " bytes, shorter than the 8-byte header length", kHint));
  SafetensorsHeader h;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8)
    throw fail(str_cat("header length ", header_len, " runs past the end of the file (", size, " bytes): truncated",
                       kHint));
  if (header_len > kMaxHeaderBytes) throw fail(str_cat("header length ", header_len, " is implausibly large"));
  h.data_start = 8 + header_len;
  const uint64_t data_size = size - h.data_start;

  nlohmann::ordered_json header;  // keeps the header's order
  try {
    header = nlohmann::ordered_json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::parse_error& e) {
    throw fail(str_cat("header is not valid JSON at byte ", 8 + e.byte - 1, kHint));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number too large for any type ("1E999")
    throw fail(str_cat("header is not valid JSON (", e.what(), ")", kHint));
  }
  if (!header.is_object()) throw fail("header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::ordered_json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail(str_cat("__metadata__ entry '", m.key(), "' is not a string"));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail(str_cat("tensor '", name, "': ", what)); };
    if (!v.is_object()) throw bad("entry is not an object");
    TensorEntry e;
    e.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) throw bad("missing dtype");
    e.dtype = v["dtype"].get<std::string>();
    const uint64_t dt_bytes = safetensors_dtype_bytes(e.dtype);
    if (dt_bytes == 0) throw bad(str_cat("unknown or unsupported dtype '", e.dtype, "'"));
    if (!v.contains("shape") || !v["shape"].is_array()) throw bad("missing shape");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw bad("shape has an entry that is not a non-negative integer");
      const uint64_t n = d.get<uint64_t>();
      if (n > (1ull << 40) || __builtin_mul_overflow(numel, n, &numel))
        throw bad(str_cat("shape ", d.dump(), " is implausibly large"));
      e.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::ordered_json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets must be [begin, end] of non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end) throw bad(str_cat("data_offsets [", e.begin, ", ", e.end, "] end before they begin"));
    if (e.end > data_size)
      throw bad(str_cat("data_offsets [", e.begin, ", ", e.end, "] run past the end of the data (", data_size,
                        " bytes): file truncated or header corrupt", kHint));
    uint64_t want = 0;
    if (__builtin_mul_overflow(numel, dt_bytes, &want) || want != e.end - e.begin)
      throw bad(str_cat("shape ", shape_text(e.shape), " of ", e.dtype, " needs ", numel * dt_bytes,
                        " bytes but data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin));
    h.index[name] = h.entries.size();
    h.entries.push_back(std::move(e));
  }

  // No two tensors may share bytes.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : h.entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& a = *by_offset[i - 1];
    const TensorEntry& b = *by_offset[i];
    if (b.begin < a.end)
      throw fail(str_cat("tensors '", a.name, "' [", a.begin, ", ", a.end, ") and '", b.name, "' [", b.begin, ", ",
                         b.end, ") overlap", kHint));
  }
  return h;
}

}  // namespace draftalign::io
