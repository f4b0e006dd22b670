// vae-client's command line: its flags (absl flags hold the definitions, help
// texts and value parsers), the commands and their help, and the parser that
// decides which word is a flag, so that every mistake is a one-line usage error
// with exit code 2 (absl::ParseCommandLine would exit(1) with its own text).
// Every flag is listed under the commands it applies to in Commands(); a flag
// given to a command it does not apply to is a usage error.
#ifndef VAE_CLIENT_CLI_FLAGS_H_
#define VAE_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(bool, tls);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, token_file);
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, dataset);
ABSL_DECLARE_FLAG(int32_t, epochs);
ABSL_DECLARE_FLAG(int32_t, batch_size);
ABSL_DECLARE_FLAG(double, lr);
ABSL_DECLARE_FLAG(std::optional<uint64_t>, seed);
ABSL_DECLARE_FLAG(bool, resume);
ABSL_DECLARE_FLAG(std::string, preset);
ABSL_DECLARE_FLAG(std::string, options_json);
ABSL_DECLARE_FLAG(int32_t, max_train_images);
ABSL_DECLARE_FLAG(int32_t, log_every_steps);
ABSL_DECLARE_FLAG(bool, binarize);
ABSL_DECLARE_FLAG(int32_t, iw_samples);
ABSL_DECLARE_FLAG(double, adam_eps);
ABSL_DECLARE_FLAG(std::string, lr_schedule);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(int32_t, limit);
ABSL_DECLARE_FLAG(bool, resize);
ABSL_DECLARE_FLAG(int32_t, count);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(bool, sample_z);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int64_t, model_version);  // --version=N on the command line (see CliFlagName)
ABSL_DECLARE_FLAG(std::string, label);
ABSL_DECLARE_FLAG(std::string, promote_label);
ABSL_DECLARE_FLAG(bool, force);
ABSL_DECLARE_FLAG(bool, make_default);  // --default on the command line

namespace vae::cli {

// Two flags have other names on the command line than in absl: --version=N is FLAGS_model_version (absl's usage
// library defines a flag `version` of its own; `vae-client --version` without a number prints the program's version)
// and --default is FLAGS_make_default. FlagDoc, ParsedArgs::flags and messages use the command-line names.
std::string AbslFlagName(const std::string& cli_name);

struct FlagDoc {
  const char* name;  // the command-line name
  const char* help;  // overrides the flag's own help text for this command when not null
};

struct Command {
  const char* name;
  const char* usage;    // after "vae-client "
  const char* summary;  // one line, for the command list
  const char* details;  // paragraphs for `COMMAND --help`
  std::vector<FlagDoc> flags;
};

// The flags every command takes (--server, --timeout, TLS).
const std::vector<FlagDoc>& GlobalFlags();
const std::vector<Command>& Commands();
// Null when there is no such command.
const Command* FindCommand(const std::string& name);

void PrintMainHelp(std::ostream& out);
void PrintCommandHelp(const Command& c, std::ostream& out);

struct ParsedArgs {
  std::string command;
  std::vector<std::string> args;  // positional arguments after the command
  std::set<std::string> flags;    // the flags given
  bool help = false;
  bool version = false;
};

// Resets every flag to its default, then parses argv. INVALID_ARGUMENT names
// the flag: unknown, missing value, unparseable value.
absl::Status ParseArgs(int argc, char** argv, ParsedArgs* parsed);

// INVALID_ARGUMENT naming the first flag in `args` that `command` does not
// take.
absl::Status CheckFlagsApply(const Command& command, const ParsedArgs& args);

}  // namespace vae::cli

#endif  // VAE_CLIENT_CLI_FLAGS_H_
