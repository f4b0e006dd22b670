// Crash-safe file writes and bounded reads. Torch-free.
#ifndef VAE_MODEL_FILE_UTIL_H_
#define VAE_MODEL_FILE_UTIL_H_

#include <algorithm>
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

// A bearer token as a file holds it: the whole file less its trailing line break(s) ("\n", "\r\n"). NOT_FOUND when
// the file is missing; INVALID_ARGUMENT when it is empty (after trimming), over 4 KiB, or not a valid token
// (IsValidToken). Messages name the path, never the content.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// A token that can travel as "authorization: Bearer <token>": 1 or more visible ASCII characters (0x21-0x7E; HTTP/2
// header values allow no control characters, and a space would end the token). Inline: the client library uses it
// without linking vae::model.
inline bool IsValidToken(absl::string_view token) {
  return !token.empty() && std::all_of(token.begin(), token.end(), [](char c) { return c >= 0x21 && c <= 0x7e; });
}

// zlib's CRC-32, continuing from `crc` (0 to start).
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace vae

#endif  // VAE_MODEL_FILE_UTIL_H_
