// Bytes <-> tensors for the gRPC service: vae.v1.Tensor (raw little-endian data with an explicit shape and dtype),
// vae.v1.ImageBatch (a tensor or encoded PNG/JPEG files) and PNG output (server/png_writer.h). It converts bytes <->
// tensors only (header parsing, decoding, encoding); the input rules it must apply before decoding (how many encoded
// images, how many pixels each declares) are the InputRules it is handed (server/inference.h), which hold every input
// rule.
//
// A float32 images.tensor is returned as a view of the request's bytes (no copy): it is valid while the request is,
// and must not be written to. Everything else (uint8 and encoded images, z, outputs) is copied. Errors are
// INVALID_ARGUMENT naming the field and the expected value; the semantic checks (rank, the model's shape, value ranges,
// batch limits) are InputRules', applied by the InferenceEngine. Stateless and thread-safe.
#ifndef VAE_SERVER_TENSOR_CODEC_H_
#define VAE_SERVER_TENSOR_CODEC_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/options.h"
#include "proto/tensor_proto.h"
#include "server/idle_helpers.h"
#include "server/inference.h"
#include "server/png_writer.h"
#include "vae/v1/vae_service.pb.h"

namespace vae::server {

// The raw tensor codec lives in proto/tensor_proto.h (the client uses it too).
using ::vae::kMaxTensorElements;
using ::vae::kMaxTensorRank;
using ::vae::TensorFromProto;
using ::vae::TensorToProto;
using ::vae::TensorViewOfProto;

// What an encoded image's header declares, read from its first bytes without decoding anything.
struct ImageHeader {
  enum class Format { kPng, kJpeg };
  Format format;
  int64_t width = 0;
  int64_t height = 0;
};

// Recognises a PNG (8-byte signature, then IHDR) or a JPEG (SOI, then the segments up to the first SOFn frame
// header) and returns its declared size. Anything else -- another format OpenCV could decode (BMP, PGM, TIFF, ...), a
// truncated or malformed header, a zero width or height -- is INVALID_ARGUMENT naming `field`.
absl::StatusOr<ImageHeader> ReadImageHeader(const std::string& bytes, const std::string& field);

// The images of a request as float32 [N, C, H, W] for a model with input `model`:
//   tensor float32 -> as sent (the engine checks range and finiteness);  tensor uint8 -> value / 255;
//   encoded        -> first the count is checked (rules.CheckEncodedCount); each file's header is read first
//                     (ReadImageHeader): only PNG and JPEG are accepted, and one whose declared width x height
//                     rules.CheckDeclaredPixels refuses (--max_image_pixels) is refused before any pixel buffer is
//                     allocated; then it is decoded by OpenCV to the model's channels (grayscale, or BGR converted to
//                     RGB), resized with INTER_AREA when batch.resize is set and the size differs, else rejected.
//                     Files are decoded one at a time.
// Exactly one of tensor and encoded must be set.
absl::StatusOr<at::Tensor> ImagesFromProto(const v1::ImageBatch& batch, const VaeOptions& model,
                                           const InputRules& rules);

// How errors name the fields of encoded images: the list (an item is "<files>[i]"), the resize switch, and what to
// send instead when the model's channels cannot be encoded. The defaults are vae.v1.ImageBatch's.
struct EncodedImagesFields {
  std::string files = "images.encoded";
  std::string resize = "images.resize";
  std::string tensor_instead = "images.tensor";
};

// The encoded branch of ImagesFromProto, for any transport (the HTTP API builds the list from base64 strings):
// PNG/JPEG `files` -> float32 [N, C, H, W] in [0, 1] under `rules`, errors naming `fields`. N >= 1 is the caller's
// check (an empty list is refused by the count rule only when over the limit).
absl::StatusOr<at::Tensor> ImagesFromEncoded(const google::protobuf::RepeatedPtrField<std::string>& files, bool resize,
                                             const VaeOptions& model, const InputRules& rules,
                                             const EncodedImagesFields& fields);

// How EncodePngs writes its files.
struct PngEncoding {
  PngOptions png = kServingPngOptions;  // compression level and row filter (server/png_writer.h)
  // Where the images of a batch may be encoded in parallel: helper threads that run only on otherwise idle cores
  // (server/idle_helpers.h). nullptr: all on the calling thread.
  IdleHelpers* helpers = &IdleHelpers::Shared();
  // Batches under this many pixel bytes (N x C x H x W) stay on the calling thread: waking a helper costs ~20-25 us
  // on a VM, about the time of 8 MNIST-sized images.
  int64_t min_parallel_bytes = 32 * 1024;
};

// One 8-bit PNG per image of `images` (float [N, C, H, W] in [0, 1]; C = 1 grayscale, 3 RGB or 4 RGBA): each value
// clamped to [0, 1] and rounded half to even to 0..255 (NaN -> 0), written by WritePng (libdeflate, not OpenCV).
absl::StatusOr<std::vector<std::string>> EncodePngs(const at::Tensor& images, const PngEncoding& encoding = {});

}  // namespace vae::server

#endif  // VAE_SERVER_TENSOR_CODEC_H_
