// The one conversion from absl::Status to grpc::Status used by the service: the same numeric code (absl and gRPC
// share the canonical codes), the message truncated to kMaxStatusMessageBytes so that a runaway message (a torch
// backtrace, a long path list) cannot bloat the trailers.
#ifndef VAE_SERVER_GRPC_STATUS_H_
#define VAE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"

namespace vae::server {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace vae::server

#endif  // VAE_SERVER_GRPC_STATUS_H_
