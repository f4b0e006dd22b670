#include "common/tool_flags.h"

#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vae {

std::vector<char*> ParseToolFlags(int argc, char** argv, const ToolUsage& tool) {
  absl::SetProgramUsageMessage(tool.usage);
  absl::FlagsUsageConfig config;
  // absl keeps the std::function objects for the life of the process: capture copies, not the caller's views.
  config.version_string = [version = absl::StrCat(tool.name, " ", VAE_PROJECT_VERSION, "\n")] { return version; };
  config.contains_help_flags = [part = std::string(tool.flags_path)](absl::string_view path) {
    return absl::StrContains(path, part);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace vae
