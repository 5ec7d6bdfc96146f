#include "common/checksum.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#define XXH_INLINE_ALL  // header-only: nothing to link, nothing to ship to a machine that lacks libxxhash
#include <xxhash.h>

#include "common/error.h"
#include "common/fs.h"

namespace draftalign {

uint64_t checksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

uint64_t legacy_checksum(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * 0x100000001b3ULL;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

std::string checksum_hex(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

std::string checksum_hex(std::string_view bytes) { return checksum_hex(checksum(bytes.data(), bytes.size())); }

std::string file_checksum_hex(const std::filesystem::path& path, std::string_view algorithm) {
  if (algorithm == kLegacyChecksumAlgorithm) {  // older files only; hashed whole (8-byte words), as before
    const std::string all = fs::read_file(path);
    return checksum_hex(legacy_checksum(all.data(), all.size()));
  }
  DA_CHECK(algorithm == kChecksumAlgorithm, path.string(), ": unknown checksum algorithm '", algorithm, "' (known: ",
           kChecksumAlgorithm, ", ", kLegacyChecksumAlgorithm, ")");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  DA_CHECK(f != nullptr, path.string(), ": cannot open (", std::strerror(errno), ")");
  std::vector<char> buf(1 << 20);
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(), XXH3_freeState);
  XXH3_64bits_reset(state.get());
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0;) XXH3_64bits_update(state.get(), buf.data(), n);
  DA_CHECK(!std::ferror(f.get()), path.string(), ": read failed (", std::strerror(errno), ")");
  return checksum_hex(XXH3_64bits_digest(state.get()));
}

}  // namespace draftalign
