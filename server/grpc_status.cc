#include "server/grpc_status.h"

#include <string>

namespace vae::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    constexpr char kEllipsis[] = "...(truncated)";
    message.resize(kMaxStatusMessageBytes - (sizeof(kEllipsis) - 1));
    message += kEllipsis;
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

}  // namespace vae::server
