// Every conversion between the vae.v1 protos and the client library's public types (client/types.h, client/client.h),
// in one place. Internal to vae::client: the public headers never include it, so no proto type reaches the API.
// Pure functions of their arguments; thread-safe.
#ifndef VAE_CLIENT_PROTO_MAPPING_H_
#define VAE_CLIENT_PROTO_MAPPING_H_

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "client/types.h"
#include "vae/v1/vae_service.pb.h"

namespace vae::client {

ModelVersion FromProto(const v1::ModelVersion& version);
Metrics FromProto(const v1::Metrics& metrics);
TrainProgress FromProto(const v1::TrainProgress& progress);  // an unknown kind reads as kUnspecified
ModelInfo FromProto(const v1::ModelInfo& info);
VersionInfo FromProto(const v1::VersionInfo& version);
ModelEntry FromProto(const v1::ModelEntry& model);  // versions keep the server's order (oldest first)
ModelList FromProto(const v1::ListModelsResponse& list);

// Sets `request`'s model_spec from `spec`, field by field, and only when `spec` is not the default: a request
// without a spec stays byte for byte what clients before model versions sent.
template <typename Request>
void SetModelSpec(const ModelSpec& spec, Request* request) {
  if (spec.name.empty() && spec.version == 0 && spec.label.empty()) return;
  v1::ModelSpec* out = request->mutable_model_spec();
  out->set_name(spec.name);
  out->set_version(spec.version);
  out->set_label(spec.label);
}

// TrainOptions -> TrainRequest, field by field: zeros stay zeros (the server's defaults), model and promote_label
// included. `timeout` is the call's.
void ToProto(const TrainOptions& options, v1::TrainRequest* out);

// The tensor as a vae.v1.Tensor (uint8 stays uint8, everything else becomes float32). INVALID_ARGUMENT naming `field`
// for an undefined or unconvertible tensor.
absl::Status ToProto(const at::Tensor& tensor, const char* field, v1::Tensor* out);
// INVALID_ARGUMENT unless exactly one of images.tensor and images.encoded is set.
absl::Status ToProto(const ImageInput& images, v1::ImageBatch* out);
// A CPU tensor holding a copy of `proto`'s bytes. INTERNAL when the server sent something inconsistent (the codec's
// INVALID_ARGUMENT is about a request; here the fault is the server's).
absl::StatusOr<at::Tensor> FromProto(const v1::Tensor& proto, const char* field);

}  // namespace vae::client

#endif  // VAE_CLIENT_PROTO_MAPPING_H_
