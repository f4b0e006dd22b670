// Bytes <-> tensors for the gRPC service: vae.v1.Tensor (raw little-endian data with an explicit shape and dtype),
// vae.v1.ImageBatch (a tensor or encoded PNG/JPEG files) and PNG output.
//
// A float32 images.tensor is returned as a view of the request's bytes (no copy): it is valid while the request is,
// and must not be written to. Everything else (uint8 and encoded images, z, outputs) is copied. Errors are INVALID_ARGUMENT naming the field and the expected value; the semantic checks (rank,
// the model's shape, value ranges, batch limits) belong to the InferenceEngine. Stateless and thread-safe.
#ifndef VAE_SERVER_TENSOR_CODEC_H_
#define VAE_SERVER_TENSOR_CODEC_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/options.h"
#include "proto/tensor_proto.h"
#include "vae/v1/vae_service.pb.h"

namespace vae::server {

// The raw tensor codec lives in proto/tensor_proto.h (the client uses it too).
using ::vae::kMaxTensorElements;
using ::vae::kMaxTensorRank;
using ::vae::TensorFromProto;
using ::vae::TensorToProto;
using ::vae::TensorViewOfProto;

// The images of a request as float32 [N, C, H, W] for a model with input `model`:
//   tensor float32 -> as sent (the engine checks range and finiteness);  tensor uint8 -> value / 255;
//   encoded        -> each file decoded by OpenCV (PNG or JPEG, detected from the bytes) to the model's channels
//                     (grayscale, or BGR converted to RGB), resized with INTER_AREA when batch.resize is set and the
//                     size differs, else rejected. At most `max_batch` files are decoded.
// Exactly one of tensor and encoded must be set.
absl::StatusOr<at::Tensor> ImagesFromProto(const v1::ImageBatch& batch, const VaeOptions& model, int64_t max_batch);

// One 8-bit PNG per image of `images` (float [N, C, H, W] in [0, 1]; C = 1 grayscale, 3 RGB or 4 RGBA).
absl::StatusOr<std::vector<std::string>> EncodePngs(const at::Tensor& images);

}  // namespace vae::server

#endif  // VAE_SERVER_TENSOR_CODEC_H_
