// Status assertions shared by the data-layer test suites (tests/common/idx_test.cc, dataset_test.cc).
#ifndef VAE_TESTS_MODEL_STATUS_MATCHERS_H_
#define VAE_TESTS_MODEL_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"

namespace vae::testing {

// Passes when `status` has `code` and its message contains every one of `words`; says which is off otherwise.
inline ::testing::AssertionResult HasCodeAndWords(const absl::Status& status, absl::StatusCode code,
                                                  std::initializer_list<std::string> words) {
  if (status.code() != code) {
    return ::testing::AssertionFailure() << "code is " << absl::StatusCodeToString(status.code()) << ", expected "
                                         << absl::StatusCodeToString(code) << " (" << status << ")";
  }
  for (const std::string& w : words) {
    if (!absl::StrContains(status.message(), w)) {
      return ::testing::AssertionFailure() << "message \"" << status.message() << "\" lacks \"" << w << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace vae::testing

#endif  // VAE_TESTS_MODEL_STATUS_MATCHERS_H_
