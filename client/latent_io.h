// Files of latent codes for vae-client: what `encode` writes and `decode --input` reads. Torch-free; stateless and
// thread-safe. The format is chosen by the file's extension (case-insensitive):
//
//   .json  {"mu": [[...], ...], "sigma": [[...], ...], "inputs": ["a.png", ...], "latent_dim": J,
//           "version": {"model": "mnist", "version": v, "generation": v, "epochs_trained": e, "global_step": s}}
//          Floats are written with enough digits to read back bitwise equal.
//   .csv   a header "input,mu_0,...,mu_{J-1},sigma_0,...,sigma_{J-1},model,version", then one row per image (%.9g).
//   .npy   NumPy format 1.0, '<f4', C order, shape (N, J): mu goes to FILE.npy and sigma to FILE_sigma.npy; the
//          model version and the inputs to FILE_version.json ({"version": {...} as above, "inputs", "latent_dim"}).
//
// Every format stores the model name and version the codes were computed with: codes of different versions live in
// different latent spaces, so whoever reads them back must decode (or compare) them with that version.
//
// ReadCodes reads any of them back for `decode`: JSON "z" (else "mu", or a bare array of rows); CSV columns z_* (else
// mu_*, or every column when there is no header); .npy '<f4' or '<f8', shape (N, J) or (J,). ReadCodesVersion reads
// the version they name, if any.
#ifndef VAE_CLIENT_LATENT_IO_H_
#define VAE_CLIENT_LATENT_IO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/types.h"

namespace vae::client {

// A row-major float matrix: `rows` codes of `cols` dimensions.
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;  // rows * cols
  float at(int64_t r, int64_t c) const { return values[r * cols + c]; }
};

enum class LatentFormat { kJson, kCsv, kNpy };

// The format of `path` by its extension. INVALID_ARGUMENT naming the supported ones otherwise.
absl::StatusOr<LatentFormat> LatentFormatOf(const std::string& path);

// "z.npy" -> "z_sigma.npy" (where an .npy encoding keeps sigma).
std::string SigmaNpyPath(const std::string& npy_path);
// "z.npy" -> "z_version.json" (where an .npy encoding keeps its model version and inputs).
std::string VersionJsonPath(const std::string& npy_path);

struct Encoding {
  Matrix mu;
  Matrix sigma;                     // same shape as mu
  std::vector<std::string> inputs;  // one name per row ("a.png", "t10k-images-idx3-ubyte[17]")
  ModelVersion version;
};

// Writes `encoding` to `path` in the format its extension names. INVALID_ARGUMENT for an unknown extension or
// inconsistent shapes; NOT_FOUND / PERMISSION_DENIED / INTERNAL when a file cannot be written (the message names it).
absl::Status WriteEncoding(const std::string& path, const Encoding& encoding);

// Reads codes for decode (see above). NOT_FOUND for a missing file; INVALID_ARGUMENT naming the file and what is
// wrong (not numbers, ragged rows, no rows, an unsupported dtype or shape).
absl::StatusOr<Matrix> ReadCodes(const std::string& path);

// The model name and version that a codes file names (its JSON "version" object, its CSV model and version
// columns, or the FILE_version.json beside an .npy file). nullopt when it names none (written by hand, by another
// tool, or by a vae-client before model versions). INVALID_ARGUMENT naming the file when it is malformed or its rows
// name different versions.
absl::StatusOr<std::optional<ModelVersion>> ReadCodesVersion(const std::string& path);

// NumPy .npy 1.0, '<f4', shape (rows, cols); and its reader (shape (N, J) or (J,), '<f4' or '<f8', C order).
std::string NpyBytes(const Matrix& m);
absl::StatusOr<Matrix> ParseNpy(const std::string& bytes, const std::string& what);

}  // namespace vae::client

#endif  // VAE_CLIENT_LATENT_IO_H_
