// Reader for the idx format of MNIST / Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), plain or gzipped.
// Torch-free. Only unsigned-byte (type 0x08) arrays of 1 to 4 dimensions are accepted. Layout: bytes 0x00 0x00,
// the type, the number of dims, then each dim as a big-endian uint32, then product(dims) bytes of data.
// Thread-safe: no shared state. No input makes these functions crash or allocate more than `max_bytes` of data.
#ifndef VAE_COMMON_IDX_H_
#define VAE_COMMON_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vae {

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<uint8_t> data;  // row-major, product(dims) bytes
};

// Reads `path` (gzip detected by its magic bytes 0x1f 0x8b, not its name; the gzip CRC is checked). `max_bytes`
// bounds product(dims), checked from the header before anything is allocated or inflated. Errors, each message
// naming the file and the expected vs actual values:
//   NOT_FOUND          the file does not exist
//   INVALID_ARGUMENT   bad magic, unsupported type, 0 or > 4 dims, a header that promises more bytes than the file
//                      holds (truncated), trailing bytes, dims over `max_bytes` ("oversized header"), a corrupt
//                      gzip stream, or a path that is not a regular file
absl::StatusOr<IdxArray> ReadIdx(const std::string& path, int64_t max_bytes = int64_t{1} << 32);

// Parses an idx array already in memory (not gzipped); `what` names it in error messages. Same checks as ReadIdx.
absl::StatusOr<IdxArray> ParseIdx(const std::string& bytes, const std::string& what,
                                  int64_t max_bytes = int64_t{1} << 32);

}  // namespace vae

#endif  // VAE_COMMON_IDX_H_
