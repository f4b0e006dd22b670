// Bearer-token authentication of vae.v1.VaeService calls (README "Authentication").
//
// With a token configured (ServerOptions::auth_token), every VaeService call must carry the metadata
// "authorization: Bearer <token>"; a missing, malformed or wrong token gets UNAUTHENTICATED. An optional second,
// read-only token (ServerOptions::auth_readonly_token) may call everything but Train and the repository's admin calls
// (SetLabel, DeleteVersion, DeleteModel), which answer it with
// PERMISSION_DENIED. Tokens are compared in constant time. grpc.health.v1.Health and server reflection are not
// VaeService methods and stay open: probes need no secret, and reflection only describes the public schema.
//
// Why a check at the start of each handler, and not a gRPC interceptor or an AuthMetadataProcessor: in gRPC 1.51 a
// server interceptor cannot end a call with a status of its choosing (only cancel it: the client would see
// CANCELLED; hijacking is client-side only), and an AuthMetadataProcessor hangs off secure server credentials
// (1.51's InsecureServerCredentials() does not take one) and sees every service, health too. The handler knows its
// method and finishes the call itself, with the right code, on both the callback API (Encode, ...) and the
// synchronous one (Train).
//
// Thread-safety: an Authenticator is immutable after construction; Check may be called from any thread.
#ifndef VAE_SERVER_AUTH_H_
#define VAE_SERVER_AUTH_H_

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vae::server {

// Environment variables read when the matching --auth_*_file flag is not given.
inline constexpr char kAuthTokenEnv[] = "VAE_AUTH_TOKEN";
inline constexpr char kAuthReadonlyTokenEnv[] = "VAE_AUTH_READONLY_TOKEN";

// True when the two strings are equal. Runs in time that depends only on the lengths, never on where the first
// difference is, so that a wrong guess does not reveal how much of it was right.
bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected);

// The token vae-server is started with: the content of `file` when it is not empty (ReadTokenFile: trailing newline
// trimmed; missing, empty or malformed files are errors whose message starts with `flag`), else the environment
// variable `env` (unset or empty: "", no token).
absl::StatusOr<std::string> LoadToken(const std::string& file, absl::string_view flag, const char* env);

// INVALID_ARGUMENT when the pair cannot be served: a token with characters that cannot travel in a header, a
// read-only token without the full one, or both the same (the role would be ambiguous).
absl::Status ValidateTokens(absl::string_view token, absl::string_view readonly_token);

class Authenticator {
 public:
  // What a call may do.
  enum class Access { kRead, kTrain };  // kTrain: Train and the calls that change the repository

  // Both empty: authentication is off and Check admits every call.
  Authenticator(std::string token, std::string readonly_token)
      : token_(std::move(token)), readonly_token_(std::move(readonly_token)) {}

  bool enabled() const { return !token_.empty(); }

  // OK when `context`'s "authorization" metadata grants `access` to `method` (its name, for messages and the log);
  // UNAUTHENTICATED for a missing, malformed or wrong token; PERMISSION_DENIED for the read-only token and kTrain.
  // Every refusal is logged (glog WARNING: method, peer, reason), never with the token presented.
  absl::Status Check(const grpc::ServerContextBase& context, absl::string_view method, Access access) const;

  // Check on the value of the "authorization" metadata (nullptr: none was sent), without logging.
  absl::Status CheckHeader(const absl::string_view* authorization, absl::string_view method, Access access) const;

 private:
  const std::string token_;
  const std::string readonly_token_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_AUTH_H_
