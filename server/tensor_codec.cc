#include "server/tensor_codec.h"

#include <ATen/ATen.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace vae::server {
namespace {

// One encoded image -> uint8 [C, H, W] tensor (RGB order for C = 3).
absl::StatusOr<at::Tensor> DecodeImage(const std::string& bytes, const VaeOptions& model, bool resize, int index) {
  const std::string field = absl::StrCat("images.encoded[", index, "]");
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty; expected a PNG or JPEG file"));
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    cv::Mat image = cv::imdecode(raw, model.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    if (image.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " (", bytes.size(), " bytes) is not a decodable PNG or JPEG image"));
    }
    if (image.rows != model.height || image.cols != model.width) {
      if (!resize) {
        return absl::InvalidArgumentError(absl::StrCat(field, " is ", image.cols, "x", image.rows,
                                                       " (WxH), the model expects ", model.width, "x", model.height,
                                                       "; set images.resize to resize it"));
      }
      cv::Mat resized;
      cv::resize(image, resized, cv::Size(static_cast<int>(model.width), static_cast<int>(model.height)), 0, 0,
                 cv::INTER_AREA);
      image = resized;
    }
    if (model.channels == 3) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
    if (!image.isContinuous()) image = image.clone();
    // from_blob borrows the Mat, so copy before it goes away. Not .contiguous(): for one channel the permuted view
    // already counts as contiguous and would still alias the Mat.
    return at::from_blob(image.data, {image.rows, image.cols, image.channels()}, at::kByte)
        .permute({2, 0, 1})
        .clone(at::MemoryFormat::Contiguous);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(field, " cannot be decoded: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<at::Tensor> ImagesFromProto(const v1::ImageBatch& batch, const VaeOptions& model, int64_t max_batch) {
  const bool has_tensor = batch.has_tensor();
  const bool has_encoded = batch.encoded_size() > 0;
  if (has_tensor && has_encoded) {
    return absl::InvalidArgumentError("images: both images.tensor and images.encoded are set; expected exactly one");
  }
  if (!has_tensor && !has_encoded) {
    return absl::InvalidArgumentError("images is an empty batch: neither images.tensor nor images.encoded is set");
  }
  if (has_tensor) {
    // A view of the request's bytes: the request outlives the call, and nothing writes to input images.
    auto tensor = TensorViewOfProto(batch.tensor(), "images.tensor");
    if (!tensor.ok()) return tensor.status();
    if (tensor->scalar_type() == at::kByte) return tensor->to(at::kFloat).div_(255.0f);
    return tensor;
  }
  if (batch.encoded_size() > max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("images.encoded holds ", batch.encoded_size(),
                                                   " images, over the limit of ", max_batch, " (--max_batch)"));
  }
  if (model.channels != 1 && model.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("images.encoded: the model has ", model.channels,
                                                   " channels; encoded images work for 1 or 3, send images.tensor"));
  }
  std::vector<at::Tensor> images;
  images.reserve(batch.encoded_size());
  for (int i = 0; i < batch.encoded_size(); ++i) {
    auto image = DecodeImage(batch.encoded(i), model, batch.resize(), i);
    if (!image.ok()) return image.status();
    images.push_back(std::move(*image));
  }
  return at::stack(images).to(at::kFloat).div_(255.0f);
}

absl::StatusOr<std::vector<std::string>> EncodePngs(const at::Tensor& images) {
  if (images.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("png: images have ", images.dim(), " dims, expected [N, C, H, W]"));
  }
  const int64_t c = images.size(1);
  if (c != 1 && c != 3 && c != 4) {
    return absl::InvalidArgumentError(absl::StrCat("format: PNG output needs 1, 3 or 4 channels, the model has ", c,
                                                   "; ask for IMAGE_FORMAT_TENSOR"));
  }
  // [0, 1] -> 0..255 rounded to nearest, as [N, H, W, C] bytes.
  const at::Tensor bytes = images.to(at::kCPU, at::kFloat)
                               .clamp(0.0, 1.0)
                               .mul(255.0)
                               .round()
                               .to(at::kByte)
                               .permute({0, 2, 3, 1})
                               .contiguous();
  const int h = static_cast<int>(images.size(2)), w = static_cast<int>(images.size(3));
  std::vector<std::string> pngs;
  pngs.reserve(images.size(0));
  try {
    for (int64_t i = 0; i < images.size(0); ++i) {
      cv::Mat image(h, w, CV_8UC(static_cast<int>(c)), bytes[i].data_ptr());
      cv::Mat bgr;
      if (c == 3) {
        cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
      } else if (c == 4) {
        cv::cvtColor(image, bgr, cv::COLOR_RGBA2BGRA);
      } else {
        bgr = image;
      }
      std::vector<uchar> buffer;
      if (!cv::imencode(".png", bgr, buffer)) return absl::InternalError("png: OpenCV could not encode an image");
      pngs.emplace_back(buffer.begin(), buffer.end());
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("png: ", e.what()));
  }
  return pngs;
}

}  // namespace vae::server
