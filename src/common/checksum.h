// checksum.h: the checksum of everything draftalign writes and checks again (token shards, index.json, manifests,
// checkpoint states) and of its input fingerprints: XXH3-64 (xxHash 0.8, Debian's libxxhash, header-only here), a
// standard 64-bit hash that `xxhsum -H3 FILE` reproduces. Files name it: kChecksumAlgorithm.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace draftalign {

inline constexpr const char* kChecksumAlgorithm = "xxh3-64";
// What files written before XXH3 used (shard version 1, checkpoint states naming no algorithm): FNV-1a's constants
// over 8-byte little-endian words, then the tail bytes. Only read, never written.
inline constexpr const char* kLegacyChecksumAlgorithm = "fnv1a64-words";

uint64_t checksum(const void* data, size_t bytes);
uint64_t legacy_checksum(const void* data, size_t bytes);
// 16 lowercase hex digits, as the files store them (and xxhsum prints them).
std::string checksum_hex(uint64_t value);
std::string checksum_hex(std::string_view bytes);
// Of a whole file, read in 1 MiB pieces (checkpoint files can be gigabytes); `algorithm` is kChecksumAlgorithm or
// kLegacyChecksumAlgorithm. Throws Error naming the file when it cannot be read.
std::string file_checksum_hex(const std::filesystem::path& path, std::string_view algorithm = kChecksumAlgorithm);

}  // namespace draftalign
