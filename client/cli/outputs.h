// vae-client's outputs: PNG grids and folders of PNGs, and the text that names
// what was written. (Latent codes: client/latent_io.h.)
#ifndef VAE_CLIENT_CLI_OUTPUTS_H_
#define VAE_CLIENT_CLI_OUTPUTS_H_

#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/latent_io.h"
#include "client/types.h"

namespace vae::cli {

// "WxH", as every message names an image size.
std::string SizeText(int height, int width);
// "mnist version 3": what every message calls a model version ("version 3" from a server before model versions,
// which names no model; its generation is the version).
std::string VersionName(const client::ModelVersion& v);
// "mnist version 3 (2 epochs, 938 steps)".
std::string VersionText(const client::ModelVersion& v);
// "812 B", "7.8 kB", "2.6 MB", "1.08 GB" (powers of 1000).
std::string ByteSize(int64_t bytes);

// --output=DIR/ (or an existing folder): one PNG per image; else a grid PNG.
bool IsFolderOutput(const std::string& path);
// INVALID_ARGUMENT unless `path` is a .png file (or, when `folder_allowed`, a
// folder).
absl::Status CheckPngOutput(const std::string& path, bool folder_allowed);

// Writes `images` (float [N, C, H, W] in [0, 1]) as a grid PNG or a folder of
// PNGs. Returns what was written, for the "wrote ..." line.
absl::StatusOr<std::string> WriteImages(const at::Tensor& images, const std::string& output);

// A grid PNG of (original | reconstruction) pairs: originals are the uint8
// inputs as sent, reconstructions float.
absl::Status WritePairs(const at::Tensor& originals, const at::Tensor& reconstructions, const std::string& output);

// A float [N] or [N, M] tensor as a Matrix; appends `part`'s rows to `all`.
client::Matrix ToMatrix(const at::Tensor& t);
void AppendRows(const client::Matrix& part, client::Matrix* all);

}  // namespace vae::cli

#endif  // VAE_CLIENT_CLI_OUTPUTS_H_
