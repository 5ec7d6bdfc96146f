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

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
};

// The dtypes safetensors_dtype_bytes knows, as torch types.
constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

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
  if (size < 8) {  // too short to map: the header check says so
    ::close(fd);
    parse_safetensors_header(nullptr, size, file);
  }
  f.map_ = std::make_shared<Mapping>();
  // Private and writable: a caller that modifies a tensor in place gets its own page, never the file's.
  f.map_->base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  f.map_->size = size;
  ::close(fd);
  if (f.map_->base == MAP_FAILED) throw fail(str_cat("cannot map (", std::strerror(errno), ")"));
  const auto* bytes = static_cast<const unsigned char*>(f.map_->base);
  f.header_ = parse_safetensors_header(bytes, size, file);
  return f;
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = header_.index.find(name);
  DA_CHECK(it != header_.index.end(), path_.string(), ": no tensor named '", name, "'");
  return header_.entries[it->second];
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorEntry& e = entry(name);
  const DtypeInfo* dt = find_dtype(e.dtype);
  char* ptr = static_cast<char*>(map_->base) + header_.data_start + e.begin;
  const auto opts = torch::TensorOptions().dtype(dt->type);
  if (reinterpret_cast<uintptr_t>(ptr) % c10::elementSize(dt->type) != 0) {
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
