// Reader for the idx format of MNIST / Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), plain or gzipped.
// Torch-free. Only unsigned-byte (type 0x08) arrays of 1 to 4 dimensions are accepted.
#ifndef VAE_MODEL_IDX_H_
#define VAE_MODEL_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vae {

struct IdxArray {
  std::vector<int64_t> dims;   // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<uint8_t> data;   // row-major, product(dims) bytes
};

// Reads `path` (gzip detected by its magic bytes, not its name). Errors:
//   NOT_FOUND          the file does not exist
//   INVALID_ARGUMENT   bad magic, unsupported type, 0 or > 4 dims, a header that promises more bytes than the file
//                      holds (truncated), trailing bytes, or a size over `max_bytes`
absl::StatusOr<IdxArray> ReadIdx(const std::string& path, int64_t max_bytes = int64_t{1} << 32);

// Parses an idx array already in memory (not gzipped).
absl::StatusOr<IdxArray> ParseIdx(const std::string& bytes, const std::string& what, int64_t max_bytes = int64_t{1} << 32);

}  // namespace vae

#endif  // VAE_MODEL_IDX_H_
