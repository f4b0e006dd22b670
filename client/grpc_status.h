// The client's one conversion from grpc::Status to absl::Status.
//
// The code is kept (gRPC and abseil share the canonical numeric codes) and the server's message reaches the caller
// unchanged. The exception is a call that never reached vae-server: the channel could not connect (refused, DNS,
// unreachable network) or the deadline passed while it was still connecting. gRPC's transport message for those is
// long and technical ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect
// to remote host: Connection refused"); it becomes one line naming the address and the cause:
//   "cannot reach vae-server at 127.0.0.1:50051: connection refused"
// Stateless and thread-safe.
#ifndef VAE_CLIENT_GRPC_STATUS_H_
#define VAE_CLIENT_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vae::client {

// The prefix of every "the server could not be reached" message; callers may match on it.
inline constexpr absl::string_view kCannotReachPrefix = "cannot reach vae-server at ";

// `target` is the address the channel dials ("host:port"). The call never reached the server when its status is
// UNAVAILABLE with one of gRPC's transport messages ("failed to connect", "Connection refused", "DNS resolution
// failed", "Socket closed", ...), or DEADLINE_EXCEEDED while the channel was not connected (`channel_ready` is
// whether it was GRPC_CHANNEL_READY when the call failed). Any other UNAVAILABLE (a draining server) or
// DEADLINE_EXCEEDED keeps its message.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view target, bool channel_ready);

// The short cause in an unreachable message, derived from gRPC's transport message: "connection refused",
// "cannot resolve the host name", "no route to host", "network is unreachable", "connection closed (...)", a TLS
// handshake failure, "timed out while connecting" (for DEADLINE_EXCEEDED), else gRPC's message itself.
std::string ConnectionFailureCause(const grpc::Status& status);

}  // namespace vae::client

#endif  // VAE_CLIENT_GRPC_STATUS_H_
