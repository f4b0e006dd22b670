#include "server/tensor_codec.h"

#include <ATen/ATen.h>

#include <cmath>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/idle_helpers.h"

namespace vae::server {
namespace {

constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";  // PNG spec 5.2
constexpr char kJpegStart[] = "\xff\xd8\xff";          // SOI, then the first marker's 0xFF

// The unsigned big-endian integer of bytes[at, at + n); the caller has checked the length.
uint32_t BigEndian(const std::string& bytes, size_t at, int n) {
  uint32_t value = 0;
  for (int i = 0; i < n; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

absl::Status Malformed(const std::string& field, const char* format, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is not a valid ", format, " file: ", why));
}

absl::StatusOr<ImageHeader> ReadPngHeader(const std::string& bytes, const std::string& field) {
  // The signature, then the IHDR chunk, which PNG requires first: length 13, "IHDR", width, height (4 bytes each,
  // big-endian), ... (PNG spec 11.2.2). libpng sizes the image from exactly these fields.
  if (bytes.size() < 24 || BigEndian(bytes, 8, 4) != 13 || bytes.compare(12, 4, "IHDR") != 0) {
    return Malformed(field, "PNG", "no IHDR chunk after the signature");
  }
  return ImageHeader{ImageHeader::Format::kPng, BigEndian(bytes, 16, 4), BigEndian(bytes, 20, 4)};
}

absl::StatusOr<ImageHeader> ReadJpegHeader(const std::string& bytes, const std::string& field) {
  // SOI, then marker segments: 0xFF (fill bytes 0xFF may repeat), a marker code and, except for the standalone TEM and
  // RSTn, a 2-byte big-endian length that counts itself (ITU T.81 B.1.1). The frame header SOFn (C0-C3, C5-C7, C9-CB,
  // CD-CF) holds the precision (1 byte), the height and the width (2 bytes each). libjpeg walks the same segments by
  // the same lengths and refuses a second SOF, so the size read here is the size it allocates. This walk is stricter
  // than libjpeg (which skips stray bytes between segments with a warning) so that the two cannot disagree.
  size_t at = 2;
  for (;;) {
    if (at >= bytes.size() || static_cast<uint8_t>(bytes[at]) != 0xFF) {
      return Malformed(field, "JPEG", absl::StrCat("no marker at byte ", at, " before the frame header (SOFn)"));
    }
    while (at < bytes.size() && static_cast<uint8_t>(bytes[at]) == 0xFF) ++at;
    if (at >= bytes.size()) return Malformed(field, "JPEG", "it ends before the frame header (SOFn)");
    const uint8_t marker = static_cast<uint8_t>(bytes[at++]);
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // TEM, RSTn: no length
    if (marker == 0x00 || marker == 0xD8 || marker == 0xD9 || marker == 0xDA) {
      return Malformed(field, "JPEG",
                       absl::StrCat("marker 0x", absl::BytesToHexString(std::string(1, marker)), " at byte ", at - 1,
                                    " comes before the frame header (SOFn)"));
    }
    if (at + 2 > bytes.size()) return Malformed(field, "JPEG", "it ends before the frame header (SOFn)");
    const uint32_t length = BigEndian(bytes, at, 2);
    if (length < 2 || at + length > bytes.size()) {
      return Malformed(field, "JPEG", absl::StrCat("the segment at byte ", at - 2, " runs past the end of the file"));
    }
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (length < 8) return Malformed(field, "JPEG", "its frame header (SOFn) is too short");
      return ImageHeader{ImageHeader::Format::kJpeg, BigEndian(bytes, at + 5, 2), BigEndian(bytes, at + 3, 2)};
    }
    at += length;
  }
}

// One encoded image -> uint8 [C, H, W] tensor (RGB order for C = 3).
absl::StatusOr<at::Tensor> DecodeImage(const std::string& bytes, const VaeOptions& model, bool resize,
                                       const InputRules& rules, const EncodedImagesFields& fields, size_t index) {
  const std::string field = absl::StrCat(fields.files, "[", index, "]");
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty; expected a PNG or JPEG file"));
  // The header is checked before OpenCV sees the bytes: it allocates the whole declared image before decoding, so a
  // small file declaring a huge size (a decompression bomb) would cost its full size in memory.
  auto header = ReadImageHeader(bytes, field);
  if (!header.ok()) return header.status();
  if (absl::Status too_big = rules.CheckDeclaredPixels(field, header->width, header->height, model); !too_big.ok()) {
    return too_big;
  }
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
                                                       "; set ", fields.resize, " to resize it"));
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

absl::StatusOr<ImageHeader> ReadImageHeader(const std::string& bytes, const std::string& field) {
  absl::StatusOr<ImageHeader> header;
  if (bytes.compare(0, sizeof(kPngSignature) - 1, kPngSignature) == 0) {
    header = ReadPngHeader(bytes, field);
  } else if (bytes.compare(0, sizeof(kJpegStart) - 1, kJpegStart) == 0) {
    header = ReadJpegHeader(bytes, field);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not a PNG or JPEG file (it starts with bytes ",
                                                   absl::BytesToHexString(bytes.substr(0, 8)),
                                                   "); only PNG and JPEG are accepted"));
  }
  if (header.ok() && (header->width == 0 || header->height == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " declares ", header->width, "x", header->height, " (WxH) pixels; expected both > 0"));
  }
  return header;
}

absl::StatusOr<at::Tensor> ImagesFromProto(const v1::ImageBatch& batch, const VaeOptions& model,
                                           const InputRules& rules) {
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
  return ImagesFromEncoded(batch.encoded(), batch.resize(), model, rules, EncodedImagesFields{});
}

absl::StatusOr<at::Tensor> ImagesFromEncoded(const google::protobuf::RepeatedPtrField<std::string>& files, bool resize,
                                             const VaeOptions& model, const InputRules& rules,
                                             const EncodedImagesFields& fields) {
  if (absl::Status too_many = rules.CheckEncodedCount(files.size()); !too_many.ok()) return too_many;
  if (model.channels != 1 && model.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(fields.files, ": the model has ", model.channels,
                                                   " channels; encoded images work for 1 or 3, send ",
                                                   fields.tensor_instead));
  }
  std::vector<at::Tensor> images;
  images.reserve(files.size());
  for (int i = 0; i < files.size(); ++i) {
    auto image = DecodeImage(files.Get(i), model, resize, rules, fields, i);
    if (!image.ok()) return image.status();
    images.push_back(std::move(*image));
  }
  return at::stack(images).to(at::kFloat).div_(255.0f);
}

absl::StatusOr<std::vector<std::string>> EncodePngs(const at::Tensor& images, const PngEncoding& encoding) {
  if (images.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("png: images have ", images.dim(), " dims, expected [N, C, H, W]"));
  }
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (c != 1 && c != 3 && c != 4) {
    return absl::InvalidArgumentError(absl::StrCat("format: PNG output needs 1, 3 or 4 channels, the model has ", c,
                                                   "; ask for IMAGE_FORMAT_TENSOR"));
  }
  // Held by value: a helper may still be producing a (dropped) duplicate after this call returns (IdleHelpers).
  const at::Tensor planes = images.to(at::kCPU, at::kFloat).contiguous();
  const PngOptions png = encoding.png;
  auto encode_one = [planes, png, c, h, w](int64_t i) -> absl::StatusOr<std::string> {
    // [C, H, W] floats in [0, 1] -> interleaved [H, W, C] bytes, value = round-half-to-even(clamp(v, 0, 1) * 255)
    // (what at::round does; NaN -> 0), then one PNG.
    thread_local std::vector<uint8_t> pixels;
    pixels.resize(static_cast<size_t>(c * h * w));
    const float* in = planes.data_ptr<float>() + i * c * h * w;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* plane = in + ch * h * w;
      uint8_t* out = pixels.data() + ch;
      for (int64_t p = 0; p < h * w; ++p) {
        const float v = plane[p];
        const float clamped = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;  // NaN fails v > 0: 0
        out[p * c] = static_cast<uint8_t>(std::nearbyint(clamped * 255.0f));
      }
    }
    return WritePng(pixels.data(), w, h, static_cast<int>(c), png);
  };
  std::vector<absl::StatusOr<std::string>> files;
  if (encoding.helpers != nullptr && n * c * h * w >= encoding.min_parallel_bytes) {
    files = encoding.helpers->Map<absl::StatusOr<std::string>>(n, encode_one);
  } else {
    files.reserve(n);
    for (int64_t i = 0; i < n; ++i) files.push_back(encode_one(i));
  }
  std::vector<std::string> pngs;
  pngs.reserve(n);
  for (auto& file : files) {
    if (!file.ok()) return file.status();
    pngs.push_back(std::move(*file));
  }
  return pngs;
}

}  // namespace vae::server
