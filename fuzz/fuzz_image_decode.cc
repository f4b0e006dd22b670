// Fuzz target: encoded image bytes -> ImagesFromProto (server/tensor_codec.h),
// the server's PNG/JPEG decoding of ImageBatch.encoded. Input: byte 0 picks the
// model's input shape (kShapes) and images.resize (bit 2); the rest is one
// image file. Properties: a rejection is INVALID_ARGUMENT naming
// images.encoded[0]; an accepted image is float32 [1, C, H, W] of the model's
// shape with every value in [0, 1].
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "model/options.h"
#include "server/tensor_codec.h"

namespace {

struct Shape {
  int64_t channels, height, width;
};
constexpr Shape kShapes[] = {{1, 28, 28}, {3, 64, 64}, {1, 8, 8}, {3, 28, 28}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Shape& shape = kShapes[data[0] % 4];
  vae::VaeOptions model;
  model.channels = shape.channels;
  model.height = shape.height;
  model.width = shape.width;
  vae::v1::ImageBatch batch;
  batch.set_resize((data[0] & 4) != 0);
  batch.add_encoded(reinterpret_cast<const char*>(data) + 1, size - 1);
  const absl::StatusOr<at::Tensor> images = vae::server::ImagesFromProto(
      batch, model, vae::server::InputRules(/*max_batch=*/4, /*max_image_pixels=*/64 * 64));
  if (!images.ok()) {
    FUZZ_CHECK(images.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(images.status().message().find("images.encoded[0]") != std::string::npos);
    return 0;
  }
  FUZZ_CHECK(images->scalar_type() == at::kFloat);
  FUZZ_CHECK(images->sizes() == at::IntArrayRef({1, shape.channels, shape.height, shape.width}));
  FUZZ_CHECK(images->min().item<float>() >= 0.0f && images->max().item<float>() <= 1.0f);
  return 0;
}
