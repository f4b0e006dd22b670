// vae::cli::Run in the test's own process, as client/main.cc calls it, with stdout and stderr captured.
#ifndef VAE_TESTS_CLIENT_RUN_CLI_H_
#define VAE_TESTS_CLIENT_RUN_CLI_H_

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"

namespace vae::testing {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// `args` follow the program name. Not reentrant (vae::cli::Run is not: flags are process-wide).
inline CliRun RunInProcess(const std::vector<std::string>& args) {
  std::vector<std::string> strings = {"vae-client"};
  strings.insert(strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  CliRun r;
  r.exit_code = cli::Run(static_cast<int>(strings.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// A command line that must fail before connecting, and its exact one-line message.
struct UsageCase {
  std::vector<std::string> args;
  std::string err;
};

// Runs each case against an address nothing listens on (never contacted) and expects exit code 2, `err` on stderr
// and nothing on stdout.
inline void ExpectUsageErrors(const std::vector<UsageCase>& cases) {
  for (const UsageCase& c : cases) {
    std::vector<std::string> args = c.args;
    args.push_back("--server=127.0.0.1:1");
    const CliRun r = RunInProcess(args);
    EXPECT_EQ(r.exit_code, 2) << (c.args.empty() ? "" : c.args[0]);
    EXPECT_EQ(r.err, c.err);
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace vae::testing

#endif  // VAE_TESTS_CLIENT_RUN_CLI_H_
