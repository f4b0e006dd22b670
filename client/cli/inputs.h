// vae-client's inputs: PNG/JPEG files and idx files (such as MNIST's
// t10k-images-idx3-ubyte[.gz]), converted to the served model's channels and
// size.
#ifndef VAE_CLIENT_CLI_INPUTS_H_
#define VAE_CLIENT_CLI_INPUTS_H_

#include <opencv2/core.hpp>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/types.h"

namespace vae::cli {

struct Inputs {
  std::vector<cv::Mat> images;  // 8-bit, the model's channels (RGB order) and size
  std::vector<std::string> names;
};

// Loads every input: an idx file's first `limit` images (0: all), else a
// PNG/JPEG file, resized to the model's size unless `resize` is false (then
// another size is an error). Notes (resizes, limits) go to `err`. Errors name
// the file.
absl::Status LoadInputs(const std::vector<std::string>& paths, const client::ModelInfo& model, int32_t limit,
                        bool resize, std::ostream& err, Inputs* inputs);

}  // namespace vae::cli

#endif  // VAE_CLIENT_CLI_INPUTS_H_
