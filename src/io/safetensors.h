// safetensors.h: read and write the Hugging Face safetensors format, memory-mapped and bounds-checked.
// Layout: u64 little-endian header length N | N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}} | the tensor bytes, offsets relative to the end of the header.
// The reader never trusts the file: a truncated file, a header length past the end, offsets out of range or
// overlapping, an unknown dtype or a shape that disagrees with the byte size is an Error naming the file and the
// tensor, raised when the file is opened, before any tensor is used; nothing is allocated from an unchecked size.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors_header.h"

namespace draftalign::io {

class SafetensorsFile {
 public:
  // Maps `path` and validates its whole header; throws Error naming the file and the tensor on any problem.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorEntry>& entries() const { return header_.entries; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  bool contains(const std::string& name) const { return header_.index.count(name) != 0; }
  const TensorEntry& entry(const std::string& name) const;

  // The tensor on the CPU: a view into the mapping (kept alive by the tensor) when its bytes are suitably aligned,
  // a copy otherwise.
  torch::Tensor get(const std::string& name) const;

 private:
  struct Mapping;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> map_;
  SafetensorsHeader header_;  // checked by parse_safetensors_header (safetensors_header.h)
};

// The torch dtype of a safetensors dtype string, and back. Throws Error for dtypes draftalign does not handle.
torch::ScalarType scalar_type_of(const std::string& dtype);
std::string dtype_name_of(torch::ScalarType t);

// Writes `tensors` (CPU or not; made contiguous) to `path` atomically, in the given order, data 8-byte aligned.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// "[2, 3]", for messages.
std::string shape_text(c10::IntArrayRef shape);

// Error naming the file, the missing and the unexpected tensor names, unless `present` equals `expected`.
void check_tensor_names(const std::string& what, const std::set<std::string>& present,
                        const std::set<std::string>& expected);

}  // namespace draftalign::io
