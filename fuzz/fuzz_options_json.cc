// Fuzz target: bytes -> OptionsFromJson (model/options.h), the parser of TrainRequest.options_json and of the options
// stored in every checkpoint.
// Properties: a rejection is INVALID_ARGUMENT; accepted options pass Validate and survive ToJson -> OptionsFromJson
// unchanged.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "model/options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<vae::VaeOptions> options = vae::OptionsFromJson(text);
  if (!options.ok()) {
    FUZZ_CHECK(options.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(vae::Validate(*options).ok());
  const std::string json = vae::ToJson(*options);
  const absl::StatusOr<vae::VaeOptions> again = vae::OptionsFromJson(json);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(vae::ToJson(*again) == json);
  return 0;
}
