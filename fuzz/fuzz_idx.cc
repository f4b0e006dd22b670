// Fuzz target: bytes -> the idx reader (common/idx.h), both entry points: ParseIdx on the bytes in memory and ReadIdx
// on the same bytes written to a file (which also takes the gzip path when they start with 0x1f 0x8b).
// Properties: a rejection is INVALID_ARGUMENT; an accepted array has 1 to 4 dims (each a uint32; with a zero among
// them the others may be anything) and product(dims) bytes, at most kMaxBytes; for plain (not gzip) bytes both entry
// points give the same answer.
#include <cstdint>
#include <string>

#include "common/idx.h"
#include "fuzz/fuzz_util.h"

namespace {

constexpr int64_t kMaxBytes = int64_t{1} << 20;

void CheckArray(const absl::StatusOr<vae::IdxArray>& array) {
  if (!array.ok()) {
    FUZZ_CHECK(array.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!array->dims.empty() && array->dims.size() <= 4);
  bool any_zero = false;
  for (int64_t d : array->dims) {
    FUZZ_CHECK(d >= 0 && d <= int64_t{UINT32_MAX});
    any_zero = any_zero || d == 0;
  }
  int64_t elements = any_zero ? 0 : 1;
  for (int64_t d : array->dims) {
    if (any_zero) break;
    FUZZ_CHECK(elements <= kMaxBytes / d);
    elements *= d;
  }
  FUZZ_CHECK(static_cast<int64_t>(array->data.size()) == elements);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vae::fuzz::ScratchFile file("idx");
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<vae::IdxArray> parsed = vae::ParseIdx(bytes, "input", kMaxBytes);
  const absl::StatusOr<vae::IdxArray> read = vae::ReadIdx(file.Write(bytes), kMaxBytes);
  CheckArray(parsed);
  CheckArray(read);
  const bool gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!gzip) {
    FUZZ_CHECK(parsed.ok() == read.ok());
    if (parsed.ok()) {
      FUZZ_CHECK(parsed->dims == read->dims);
      FUZZ_CHECK(parsed->data == read->data);
    }
  }
  return 0;
}
