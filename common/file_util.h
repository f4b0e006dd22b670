// Crash-safe file writes and bounded reads. Torch-free.
#ifndef VAE_COMMON_FILE_UTIL_H_
#define VAE_COMMON_FILE_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vae {

// Writes a file so that `path` holds either its old content or the complete new one, never a torn mix:
// `write_body` streams into a temp file `<path>.tmp.<pid>.<random>` in the same directory (through `sink`, which
// returns false once a write failed; later calls write nothing), which is fsync'ed, renamed over `path`, and the
// directory fsync'ed. Every write, fsync, close and rename is checked. On any failure, including an exception thrown
// by `write_body` (returned as INTERNAL, never rethrown), the temp file is closed and deleted, and `path` is
// untouched. Codes: RESOURCE_EXHAUSTED when the disk or a quota is full or the file is over the size limit (the
// message names the path and the bytes still free there), INTERNAL for other I/O errors.
using ByteSink = std::function<bool(const void* data, size_t size)>;
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<absl::Status(const ByteSink& sink)>& write_body);
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// True for the name of a temp file WriteFileAtomically creates for the target `<prefix>...`: "<prefix>*.tmp.*".
// A process killed mid-write leaves one behind; nothing else ever renames or deletes it.
bool IsAtomicWriteTempFile(absl::string_view file_name, absl::string_view prefix);

// Bytes an unprivileged process may still write on the filesystem holding `path` (statvfs f_bavail * f_frsize);
// -1 when unknown.
int64_t FreeBytes(const std::string& path);

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

#endif  // VAE_COMMON_FILE_UTIL_H_
