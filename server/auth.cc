#include "server/auth.h"

#include <glog/logging.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace vae::server {

bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected) {
  // OR of the XORs over every byte of `expected`: no early exit, and no branch on the bytes' values.
  unsigned char difference = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    difference |= p ^ static_cast<unsigned char>(expected[i]);
  }
  // A volatile read keeps the compiler from turning the loop into an early-exit comparison.
  volatile unsigned char result = difference;
  return result == 0;
}

absl::StatusOr<std::string> LoadToken(const std::string& file, absl::string_view flag, const char* env) {
  if (!file.empty()) {
    auto token = ReadTokenFile(file);
    if (!token.ok()) return absl::Status(token.status().code(), absl::StrCat(flag, ": ", token.status().message()));
    return token;
  }
  const char* value = std::getenv(env);
  return std::string(value == nullptr ? "" : value);
}

absl::Status ValidateTokens(absl::string_view token, absl::string_view readonly_token) {
  if (!token.empty() && !IsValidToken(token)) {
    return absl::InvalidArgumentError(
        "auth: the token (--auth_token_file / $VAE_AUTH_TOKEN) holds characters a token cannot have (spaces, control "
        "or non-ASCII characters)");
  }
  if (!readonly_token.empty() && !IsValidToken(readonly_token)) {
    return absl::InvalidArgumentError(
        "auth: the read-only token (--auth_readonly_token_file / $VAE_AUTH_READONLY_TOKEN) holds characters a token "
        "cannot have (spaces, control or non-ASCII characters)");
  }
  if (!readonly_token.empty() && token.empty()) {
    return absl::InvalidArgumentError(
        "auth: a read-only token needs the full token too (--auth_token_file or $VAE_AUTH_TOKEN); without it every "
        "call would be open");
  }
  if (!token.empty() && token == readonly_token) {
    return absl::InvalidArgumentError("auth: the read-only token is the same as the full token; use two tokens");
  }
  return absl::OkStatus();
}

absl::Status Authenticator::CheckHeader(const absl::string_view* authorization, absl::string_view method,
                                        Access access) const {
  if (!enabled()) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        absl::StrCat(method,
                     ": no authorization metadata; this server requires \"authorization: Bearer <token>\" (vae-client: "
                     "--token_file or $VAE_TOKEN)"));
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (!absl::StartsWithIgnoreCase(*authorization, kScheme)) {
    return absl::UnauthenticatedError(
        absl::StrCat(method, ": the authorization metadata is not of the form \"Bearer <token>\""));
  }
  const absl::string_view presented = absl::StripAsciiWhitespace(authorization->substr(kScheme.size()));
  // Both comparisons always run, so the time taken does not tell which token (if any) matched.
  const bool full = ConstantTimeEquals(presented, token_);
  const bool readonly = !readonly_token_.empty() && ConstantTimeEquals(presented, readonly_token_);
  if (full) return absl::OkStatus();
  if (!readonly) return absl::UnauthenticatedError(absl::StrCat(method, ": wrong token"));
  if (access == Access::kTrain) {
    return absl::PermissionDeniedError(absl::StrCat(
        method,
        ": the token presented has the read-only role, which may call everything but Train, SetLabel, "
        "DeleteVersion and DeleteModel; these need the full token"));
  }
  return absl::OkStatus();
}

absl::Status Authenticator::Check(const grpc::ServerContextBase& context, absl::string_view method,
                                  Access access) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  absl::string_view value;
  if (it != metadata.end()) value = absl::string_view(it->second.data(), it->second.size());
  absl::Status status = CheckHeader(it == metadata.end() ? nullptr : &value, method, access);
  // The message never holds the token presented (CheckHeader does not quote it).
  if (!status.ok()) LOG(WARNING) << "auth: refused a call from " << context.peer() << ": " << status;
  return status;
}

}  // namespace vae::server
