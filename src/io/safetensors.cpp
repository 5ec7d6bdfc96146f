#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"

namespace draftalign::io {
namespace {

// A header larger than this is not a real checkpoint's (Llama-2-70B's is ~100 KB): refuse before parsing it.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  uint64_t bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const char* kHint = " (re-export or re-download the checkpoint)";

}  // namespace

struct SafetensorsFile::Mapping {
  void* base = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (base != nullptr && base != MAP_FAILED) ::munmap(base, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.path_ = path;
  const std::string file = path.string();
  auto fail = [&](const std::string& what) -> Error { return Error(file + ": " + what); };

  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail(str_cat("cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  ::fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw fail(str_cat("truncated: ", size, " bytes, shorter than the 8-byte header length", kHint));
  }
  f.map_ = std::make_shared<Mapping>();
  // Private and writable: a caller that modifies a tensor in place gets its own page, never the file's.
  f.map_->base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  f.map_->size = size;
  ::close(fd);
  if (f.map_->base == MAP_FAILED) throw fail(str_cat("cannot map (", std::strerror(errno), ")"));
  const auto* bytes = static_cast<const unsigned char*>(f.map_->base);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8)
    throw fail(str_cat("header length ", header_len, " runs past the end of the file (", size, " bytes): truncated",
                       kHint));
  if (header_len > kMaxHeaderBytes) throw fail(str_cat("header length ", header_len, " is implausibly large"));
  f.data_start_ = 8 + header_len;
  const uint64_t data_size = size - f.data_start_;

  nlohmann::ordered_json header;  // keeps the header's order
  try {
    header = nlohmann::ordered_json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::parse_error& e) {
    throw fail(str_cat("header is not valid JSON at byte ", 8 + e.byte - 1, kHint));
  }
  if (!header.is_object()) throw fail("header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::ordered_json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail(str_cat("__metadata__ entry '", m.key(), "' is not a string"));
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail(str_cat("tensor '", name, "': ", what)); };
    if (!v.is_object()) throw bad("entry is not an object");
    TensorEntry e;
    e.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) throw bad("missing dtype");
    e.dtype = v["dtype"].get<std::string>();
    const DtypeInfo* dt = find_dtype(e.dtype);
    if (dt == nullptr) throw bad(str_cat("unknown or unsupported dtype '", e.dtype, "'"));
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
    if (__builtin_mul_overflow(numel, dt->bytes, &want) || want != e.end - e.begin)
      throw bad(str_cat("shape ", shape_text(e.shape), " of ", e.dtype, " needs ", numel * dt->bytes,
                        " bytes but data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin));
    f.index_[name] = f.entries_.size();
    f.entries_.push_back(std::move(e));
  }

  // No two tensors may share bytes.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : f.entries_)
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
  return f;
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  DA_CHECK(it != index_.end(), path_.string(), ": no tensor named '", name, "'");
  return entries_[it->second];
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorEntry& e = entry(name);
  const DtypeInfo* dt = find_dtype(e.dtype);
  char* ptr = static_cast<char*>(map_->base) + data_start_ + e.begin;
  const auto opts = torch::TensorOptions().dtype(dt->type);
  if (reinterpret_cast<uintptr_t>(ptr) % dt->bytes != 0) {
    // Misaligned for its element type: copy the bytes into a fresh tensor.
    torch::Tensor out = torch::empty(e.shape, opts);
    std::memcpy(out.data_ptr(), ptr, e.end - e.begin);
    return out;
  }
  std::shared_ptr<Mapping> keep = map_;
  return torch::from_blob(ptr, e.shape, [keep](void*) mutable { keep.reset(); }, opts);
}

torch::ScalarType scalar_type_of(const std::string& dtype) {
  const DtypeInfo* d = find_dtype(dtype);
  DA_CHECK(d != nullptr, "unsupported safetensors dtype '", dtype, "'");
  return d->type;
}

std::string dtype_name_of(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw Error(str_cat("dtype ", c10::toString(t), " cannot be stored in safetensors by draftalign"));
}

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DA_CHECK(name != "__metadata__" && !header.contains(name), path.string(), ": tensor name '", name,
             "' is reserved or repeated");
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t n = static_cast<uint64_t>(c.nbytes());
    header[name] = {{"dtype", dtype_name_of(c.scalar_type())}, {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  fs::AtomicWriter w(path);
  w.write(len, 8);
  w.write(text.data(), text.size());
  for (const auto& c : data) w.write(c.data_ptr(), c.nbytes());
  w.commit();
}

std::string shape_text(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void check_tensor_names(const std::string& what, const std::set<std::string>& present,
                        const std::set<std::string>& expected) {
  std::vector<std::string> missing, unexpected;
  std::set_difference(expected.begin(), expected.end(), present.begin(), present.end(), std::back_inserter(missing));
  std::set_difference(present.begin(), present.end(), expected.begin(), expected.end(),
                      std::back_inserter(unexpected));
  if (missing.empty() && unexpected.empty()) return;
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 8) s += str_cat(", ... (", v.size(), " in all)");
    return s;
  };
  throw Error(str_cat(what, ": tensor names do not match the model",
                      missing.empty() ? "" : "; missing: " + list(missing),
                      unexpected.empty() ? "" : "; unexpected: " + list(unexpected)));
}

}  // namespace draftalign::io
