// safetensors_header.h: the safetensors header, parsed and checked without torch (the fuzzed part of the reader).
// Layout: u64 little-endian header length N | N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}} | the tensor bytes, offsets relative to the end of the header.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace draftalign::io {

struct TensorEntry {
  std::string name;
  std::string dtype;             // as in the file: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // byte range relative to the start of the data section
};

struct SafetensorsHeader {
  uint64_t data_start = 0;                  // 8 + header length: where the data section starts
  std::vector<TensorEntry> entries;         // in file order
  std::map<std::string, size_t> index;      // name -> position in entries
  std::map<std::string, std::string> metadata;
};

// Checks the `size` bytes of a whole safetensors file (`file` names it in errors) and returns its header: a truncated
// file, a header length past the end, JSON that is not the layout above, an unknown dtype, a shape that disagrees
// with its byte range, ranges out of the file or overlapping are each an Error naming the file and the tensor.
SafetensorsHeader parse_safetensors_header(const unsigned char* bytes, uint64_t size, const std::string& file);

// Bytes per element of a safetensors dtype draftalign reads ("F32" -> 4), or 0 for any other.
uint64_t safetensors_dtype_bytes(const std::string& dtype);

}  // namespace draftalign::io
