// Fuzz target: bytes -> vae.v1.Tensor -> TensorFromProto / TensorViewOfProto (proto/tensor_proto.h), the decoder of
// every tensor a request carries (images.tensor, z).
// Properties: both functions agree; a rejection is INVALID_ARGUMENT naming the field; an accepted tensor has the
// message's dtype and shape and holds exactly its bytes (TensorToProto gives the message back).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "proto/tensor_proto.h"

namespace {

void CheckRoundTrip(const vae::v1::Tensor& proto, const at::Tensor& tensor) {
  FUZZ_CHECK(tensor.dim() == proto.shape_size());
  for (int i = 0; i < proto.shape_size(); ++i) FUZZ_CHECK(tensor.size(i) == proto.shape(i));
  vae::v1::Tensor back;
  vae::TensorToProto(tensor, &back);
  FUZZ_CHECK(back.dtype() == proto.dtype());
  FUZZ_CHECK(back.data() == proto.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vae::v1::Tensor proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  const absl::StatusOr<at::Tensor> copy = vae::TensorFromProto(proto, "z");
  const absl::StatusOr<at::Tensor> view = vae::TensorViewOfProto(proto, "z");
  FUZZ_CHECK(copy.ok() == view.ok());
  if (!copy.ok()) {
    FUZZ_CHECK(copy.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(copy.status() == view.status());
    FUZZ_CHECK(copy.status().message().substr(0, 2) == "z.");
    return 0;
  }
  CheckRoundTrip(proto, *copy);
  CheckRoundTrip(proto, *view);
  return 0;
}
