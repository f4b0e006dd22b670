// cv::Mat <-> image tensors for vae-server clients, and image grids.
//
// Conventions: tensors are [N, C, H, W] in RGB order (what the model is trained on; the server converts encoded
// files the same way); cv::Mat is OpenCV's order (gray, BGR, BGRA), ready for cv::imwrite. Float tensors hold [0, 1];
// 8-bit values v map to v / 255 and back with rounding. Everything is copied: no tensor aliases a Mat's memory or
// the other way round. Stateless and thread-safe.
#ifndef VAE_CLIENT_IMAGES_H_
#define VAE_CLIENT_IMAGES_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <opencv2/core/mat.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vae::client {

// What ConvertForModel changed, for messages such as "resized a.png from 64x64 to 28x28".
struct Conversion {
  bool resized = false;
  int from_height = 0, from_width = 0;
  int from_channels = 0;  // 1, 3 or 4; != the model's channels when the colour space was converted
};

// An image as cv::imread / cv::imdecode(IMREAD_UNCHANGED) give it (8- or 16-bit; 1, 3 or 4 channels in OpenCV
// order) -> an 8-bit image with `channels` (1: gray, 3: RGB order, as the model sees it) of height x width, resized
// with INTER_AREA when the size differs (the server's interpolation for encoded files). Alpha is dropped.
// INVALID_ARGUMENT for an empty image, channels other than 1 or 3, or an unsupported depth.
absl::StatusOr<cv::Mat> ConvertForModel(const cv::Mat& image, int64_t channels, int64_t height, int64_t width,
                                        Conversion* conversion = nullptr);

// Stacks 8-bit images of one size and channel count (already in the model's channel order, as ConvertForModel
// returns them) into a uint8 tensor [N, C, H, W]. INVALID_ARGUMENT when they differ or the list is empty.
absl::StatusOr<at::Tensor> MatsToTensor(const std::vector<cv::Mat>& images);

// float [N, C, H, W] in [0, 1] (C = 1, 3 or 4; values outside are clamped) -> N 8-bit Mats in OpenCV order
// (CV_8UC1 gray, CV_8UC3 BGR, CV_8UC4 BGRA). INVALID_ARGUMENT for another rank or channel count.
absl::StatusOr<std::vector<cv::Mat>> TensorToMats(const at::Tensor& images);

// Columns of a near-square grid of n cells: ceil(sqrt(n)) (n >= 1).
int GridColumns(int n);

// Tiles images of one size and type into a grid of `columns` columns (rows as needed, filled row by row), with a
// `border`-pixel gap of value `border_value` around and between the cells; empty cells stay border-coloured.
// Result: (rows * (h + border) + border) x (columns * (w + border) + border). INVALID_ARGUMENT when the images
// differ in size or type, the list is empty or columns < 1.
absl::StatusOr<cv::Mat> TileGrid(const std::vector<cv::Mat>& images, int columns, int border = 2,
                                 int border_value = 128);

// A PNG file's bytes. INTERNAL when OpenCV cannot encode the image.
absl::StatusOr<std::string> EncodePng(const cv::Mat& image);

}  // namespace vae::client

#endif  // VAE_CLIENT_IMAGES_H_
