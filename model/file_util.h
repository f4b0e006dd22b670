// Crash-safe file writes and bounded reads. Torch-free.
#ifndef VAE_MODEL_FILE_UTIL_H_
#define VAE_MODEL_FILE_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vae {

// Writes a file so that `path` holds either its old content or the complete new one, never a torn mix:
// `write_body` streams into a temp file in the same directory (through `sink`, which returns false on an I/O error),
// which is fsync'ed, renamed over `path`, and the directory fsync'ed. The temp file is removed on failure.
using ByteSink = std::function<bool(const void* data, size_t size)>;
absl::Status WriteFileAtomically(const std::string& path, const std::function<absl::Status(const ByteSink& sink)>& write_body);
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Reads a whole file. NOT_FOUND when missing; FAILED_PRECONDITION when larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, int64_t max_bytes = int64_t{1} << 34);

// zlib's CRC-32, continuing from `crc` (0 to start).
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace vae

#endif  // VAE_MODEL_FILE_UTIL_H_
