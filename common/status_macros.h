// Two tiny helpers for absl::Status plumbing. Abseil 20220623 (Debian 12) ships no ASSIGN_OR_RETURN.
#ifndef VAE_COMMON_STATUS_MACROS_H_
#define VAE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define VAE_STATUS_CONCAT_INNER_(a, b) a##b
#define VAE_STATUS_CONCAT_(a, b) VAE_STATUS_CONCAT_INNER_(a, b)

// Returns `expr` from the enclosing function when it is not OK.
#define VAE_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status _vae_status = (expr);       \
    if (!_vae_status.ok()) return _vae_status; \
  } while (0)

// `VAE_ASSIGN_OR_RETURN(auto x, Foo());` declares x from an OK StatusOr or returns its status.
#define VAE_ASSIGN_OR_RETURN(lhs, expr) \
  VAE_ASSIGN_OR_RETURN_IMPL_(VAE_STATUS_CONCAT_(_vae_statusor_, __LINE__), lhs, expr)
#define VAE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#endif  // VAE_COMMON_STATUS_MACROS_H_
