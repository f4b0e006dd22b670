#include "client/grpc_status.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vae::client {
namespace {

// Substrings (lower case) of the messages gRPC's client transport writes when no connection could be used, and the
// short cause each one means.
struct TransportFailure {
  absl::string_view needle;
  absl::string_view cause;
};
constexpr TransportFailure kTransportFailures[] = {
    // TLS first: their messages also say "failed to connect".
    {"certificate verify failed",
     "TLS: the server's certificate is not signed by a trusted CA (the client's --tls_ca) or does not name this "
     "address"},
    {"handshake failed", "TLS handshake failed"},
    {"connection refused", "connection refused"},
    {"dns resolution failed", "cannot resolve the host name"},
    {"domain name not found", "cannot resolve the host name"},
    {"name or service not known", "cannot resolve the host name"},
    {"no route to host", "no route to host"},
    {"network is unreachable", "network is unreachable"},
    {"connection reset", "connection reset"},
    {"socket closed", "connection closed (a TLS-only server closes plaintext connections)"},
    {"broken pipe", "connection closed"},
    {"connection timed out", "timed out while connecting"},
    {"empty address list", "cannot resolve the host name"},
    {"failed to connect", "cannot connect"},
    {"connections to all backends failing", "cannot connect"},
};

const TransportFailure* FindTransportFailure(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  for (const TransportFailure& f : kTransportFailures) {
    if (absl::StrContains(lower, f.needle)) return &f;
  }
  return nullptr;
}

}  // namespace

std::string ConnectionFailureCause(const grpc::Status& status) {
  if (const TransportFailure* f = FindTransportFailure(status.error_message())) return std::string(f->cause);
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return "timed out while connecting";
  return status.error_message();
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view target, bool channel_ready) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  const bool unavailable = status.error_code() == grpc::StatusCode::UNAVAILABLE;
  const bool deadline = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  // UNAVAILABLE is also what a draining server answers ("shutting down"): only gRPC's own transport words mark a call
  // that never got through. A deadline is the connection's fault when the channel never became ready.
  const bool unreachable =
      (unavailable && FindTransportFailure(status.error_message()) != nullptr) || (deadline && !channel_ready);
  if (unreachable) {
    return absl::Status(code, absl::StrCat(kCannotReachPrefix, target, ": ", ConnectionFailureCause(status)));
  }
  return absl::Status(code, status.error_message());
}

}  // namespace vae::client
