#include "client/images.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace vae::client {

absl::StatusOr<cv::Mat> ConvertForModel(const cv::Mat& image, int64_t channels, int64_t height, int64_t width,
                                        Conversion* conversion) {
  if (image.empty()) return absl::InvalidArgumentError("the image is empty");
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("model channels ", channels, "; expected 1 or 3"));
  }
  if (height < 1 || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model size ", height, "x", width, "; expected positive"));
  }
  cv::Mat eight_bit;
  switch (image.depth()) {
    case CV_8U:
      eight_bit = image;
      break;
    case CV_16U:
      image.convertTo(eight_bit, CV_8U, 1.0 / 257.0);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported pixel depth ", image.depth(), "; expected 8 or 16 bits per channel"));
  }
  const int from = eight_bit.channels();
  cv::Mat converted;
  if (from == 1) {
    if (channels == 1) {
      converted = eight_bit.clone();
    } else {
      cv::cvtColor(eight_bit, converted, cv::COLOR_GRAY2RGB);
    }
  } else if (from == 3) {
    cv::cvtColor(eight_bit, converted, channels == 1 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGR2RGB);
  } else if (from == 4) {
    cv::cvtColor(eight_bit, converted, channels == 1 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGRA2RGB);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(from, " channels; expected 1, 3 or 4"));
  }
  if (conversion != nullptr) {
    conversion->from_height = image.rows;
    conversion->from_width = image.cols;
    conversion->from_channels = from;
    conversion->resized = image.rows != height || image.cols != width;
  }
  if (converted.rows != height || converted.cols != width) {
    cv::Mat resized;
    cv::resize(converted, resized, cv::Size(static_cast<int>(width), static_cast<int>(height)), 0, 0, cv::INTER_AREA);
    converted = resized;
  }
  return converted;
}

absl::StatusOr<at::Tensor> MatsToTensor(const std::vector<cv::Mat>& images) {
  if (images.empty()) return absl::InvalidArgumentError("no images");
  const cv::Mat& first = images.front();
  const int c = first.channels(), h = first.rows, w = first.cols;
  for (size_t i = 0; i < images.size(); ++i) {
    const cv::Mat& m = images[i];
    if (m.depth() != CV_8U || m.channels() != c || m.rows != h || m.cols != w) {
      return absl::InvalidArgumentError(absl::StrCat("image ", i, " is ", m.rows, "x", m.cols, "x", m.channels(),
                                                     " (depth ", m.depth(), "); expected 8-bit ", h, "x", w, "x", c));
    }
  }
  try {
    at::Tensor out = at::empty({static_cast<int64_t>(images.size()), c, h, w}, at::kByte);
    uint8_t* dst = out.data_ptr<uint8_t>();
    for (const cv::Mat& m : images) {
      // HWC (interleaved) -> CHW (planar).
      std::vector<cv::Mat> planes;
      cv::split(m, planes);
      for (const cv::Mat& plane : planes) {
        const cv::Mat p = plane.isContinuous() ? plane : plane.clone();
        std::memcpy(dst, p.data, static_cast<size_t>(h) * w);
        dst += static_cast<size_t>(h) * w;
      }
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("images to tensor: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::vector<cv::Mat>> TensorToMats(const at::Tensor& images) {
  if (!images.defined() || images.dim() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("images: expected a [N, C, H, W] tensor, got rank ", images.defined() ? images.dim() : 0));
  }
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (c != 1 && c != 3 && c != 4) {
    return absl::InvalidArgumentError(absl::StrCat("images: ", c, " channels; expected 1, 3 or 4"));
  }
  std::vector<cv::Mat> out;
  try {
    // Round to the nearest 8-bit value: v * 255 + 0.5, truncated, after clamping to [0, 1].
    const at::Tensor bytes =
        images.to(at::kCPU).to(at::kFloat).clamp(0.0, 1.0).mul(255.0).add(0.5).floor().to(at::kByte).contiguous();
    const uint8_t* src = bytes.data_ptr<uint8_t>();
    const int type = CV_8UC(static_cast<int>(c));
    for (int64_t i = 0; i < n; ++i) {
      std::vector<cv::Mat> planes;
      for (int64_t k = 0; k < c; ++k) {
        planes.emplace_back(static_cast<int>(h), static_cast<int>(w), CV_8UC1,
                            const_cast<uint8_t*>(src + ((i * c + k) * h * w)));
      }
      cv::Mat merged(static_cast<int>(h), static_cast<int>(w), type);
      cv::merge(planes, merged);  // copies out of the tensor
      if (c == 3) cv::cvtColor(merged, merged, cv::COLOR_RGB2BGR);
      if (c == 4) cv::cvtColor(merged, merged, cv::COLOR_RGBA2BGRA);
      out.push_back(merged);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("tensor to images: ", e.what_without_backtrace()));
  }
  return out;
}

int GridColumns(int n) {
  int columns = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  // Guard against sqrt rounding on perfect squares.
  while (columns > 1 && (columns - 1) * (columns - 1) >= n) --columns;
  return columns < 1 ? 1 : columns;
}

absl::StatusOr<cv::Mat> TileGrid(const std::vector<cv::Mat>& images, int columns, int border, int border_value) {
  if (images.empty()) return absl::InvalidArgumentError("grid: no images");
  if (columns < 1) return absl::InvalidArgumentError(absl::StrCat("grid: columns ", columns, "; expected >= 1"));
  if (border < 0) return absl::InvalidArgumentError(absl::StrCat("grid: border ", border, "; expected >= 0"));
  const cv::Mat& first = images.front();
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i].size() != first.size() || images[i].type() != first.type()) {
      return absl::InvalidArgumentError(absl::StrCat("grid: image ", i, " differs in size or type from image 0"));
    }
  }
  const int n = static_cast<int>(images.size());
  const int rows = (n + columns - 1) / columns;
  const int h = first.rows, w = first.cols;
  cv::Mat grid(rows * (h + border) + border, columns * (w + border) + border, first.type(),
               cv::Scalar::all(border_value));
  for (int i = 0; i < n; ++i) {
    const int r = i / columns, c = i % columns;
    images[i].copyTo(grid(cv::Rect(border + c * (w + border), border + r * (h + border), w, h)));
  }
  return grid;
}

absl::StatusOr<std::string> EncodePng(const cv::Mat& image) {
  std::vector<uchar> bytes;
  bool ok = false;
  try {
    ok = cv::imencode(".png", image, bytes);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", e.what()));
  }
  if (!ok) return absl::InternalError("PNG encoding failed");
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace vae::client
