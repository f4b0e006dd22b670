// vae-client: the command-line face of vae::Client. client/main.cc only calls Run; the commands live here so that
// tests can reach the pieces (exit codes, message formats, progress lines).
//
//   vae-client [--server=HOST:PORT] [--timeout=30s] COMMAND [ARGS...] [FLAGS...]
//   commands: health, info, train, encode, decode, sample, reconstruct; `vae-client COMMAND --help` lists a
//   command's flags (absl flags: their help texts and defaults come from the definitions in cli/flags.cc).
//
// Output: results (tables, JSON, "wrote FILE" lines, training epochs) on `out`; notes and the live training bar on
// `err`. Every failure is one line on `err` naming the cause (and the server address when the server is involved)
// and a non-zero exit code (kExit*); nothing throws and no stack trace is printed.
//
// Threading: Run is not reentrant (flags are process-wide; Run resets them to their defaults before parsing). `train`
// blocks SIGINT and SIGTERM in the calling thread before the first gRPC call, so that gRPC's threads inherit the
// mask and one watcher thread receives them: the first cancels the job (the server checkpoints it), a second exits
// at once.
#ifndef VAE_CLIENT_CLI_H_
#define VAE_CLIENT_CLI_H_

#include <ostream>
#include <string>

#include "client/types.h"

namespace vae::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;          // the server, an RPC, or writing an output failed
inline constexpr int kExitUsage = 2;          // bad command, flag, argument or input file
inline constexpr int kExitNotServing = 3;     // health: the server answered, but not SERVING
inline constexpr int kExitInterrupted = 130;  // train: cancelled by SIGINT / SIGTERM (128 + SIGINT)

// The address used when --server is not given: $VAE_SERVER, else 127.0.0.1:50051.
std::string DefaultServer();

// Runs one command line (argv[0] is the program name). Returns the exit code.
int Run(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace vae::cli

#endif  // VAE_CLIENT_CLI_H_
