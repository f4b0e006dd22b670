// Command-line parsing shared by the absl-flags tools (vae-server, vae-bench, vae-grpc-floor): one place that makes
// `--help` list the tool's own flags. absl's default --help lists only flags defined in a file named like the program
// (`vae-bench` -> `vae-bench.cc`, `vae-bench_main.cc`, ...); ours are `bench/vae_bench.cc` and `server/main.cc`, so
// --help used to print "No flags matched" and only --helpfull worked. Torch-free; call once, first thing in main().
#ifndef VAE_COMMON_TOOL_FLAGS_H_
#define VAE_COMMON_TOOL_FLAGS_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace vae {

// What a tool says about itself on --help / --version.
struct ToolUsage {
  absl::string_view name;        // the program, e.g. "vae-bench" (--version prints it with the project's version)
  absl::string_view usage;       // the usage message printed first by --help
  absl::string_view flags_path;  // a part of the paths of the source files that define its flags, e.g.
                                 // "server/main.cc" or "bench/": --help and --helpshort list exactly those flags
};

// Sets absl's program usage message and usage config from `tool`, then parses argv as absl::ParseCommandLine does
// (exits after --help, --version or an unknown flag) and returns the positional arguments, argv[0] first.
std::vector<char*> ParseToolFlags(int argc, char** argv, const ToolUsage& tool);

}  // namespace vae

#endif  // VAE_COMMON_TOOL_FLAGS_H_
