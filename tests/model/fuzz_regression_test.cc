// Inputs the fuzz targets (fuzz/, FUZZING.md) found to crash or misbehave, as unit tests of the owning parser. The
// exact crashing inputs are also replayed under ASan/UBSan by bench/fuzz.sh (fuzz/regressions/<target>/).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <string>

#include "common/file_util.h"
#include "common/idx.h"
#include "model/checkpoint.h"
#include "model/options.h"
#include "tests/common/test_util.h"

namespace vae {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::TempDir;

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// fuzz_idx: a header with a zero dimension made ReadIdx call memcpy on the null data() of the empty array (undefined
// behaviour that UBSan reports; the fuzz build replays fuzz/regressions/fuzz_idx/zero_dimension). An empty array is
// valid: 0 x 0 x 256 elements, no data bytes.
TEST(FuzzRegressionTest, IdxWithAZeroDimensionIsAnEmptyArray) {
  const std::string bytes("\x00\x00\x08\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00", 16);
  TempDir dir;
  WriteBytes(dir.file("empty.idx"), bytes);
  for (const auto& array : {ReadIdx(dir.file("empty.idx")), ParseIdx(bytes, "empty")}) {
    ASSERT_TRUE(array.ok()) << array.status();
    EXPECT_EQ(array->dims, (std::vector<int64_t>{0, 0, 256}));
    EXPECT_TRUE(array->data.empty());
  }
}

// fuzz_options_json: `"channels": 1e30` converted a double outside int64's range to int64 (undefined behaviour), and
// `"channels": 1.5` was silently truncated to 1. Integer fields now take JSON integers only.
TEST(FuzzRegressionTest, OptionsJsonRejectsNonIntegerNumbers) {
  const std::string base = ToJson(*Preset("mnist"));
  struct Case {
    std::string from, to, field;
  };
  for (const Case& c :
       {Case{"\"channels\":1", "\"channels\":1e30", "channels"}, Case{"\"channels\":1", "\"channels\":1.5", "channels"},
        Case{"\"latent_dim\":20", "\"latent_dim\":20.0", "latent_dim"},
        Case{"\"hidden\":[400]", "\"hidden\":[400.5]", "hidden[0]"},
        Case{"\"mc_samples\":1", "\"mc_samples\":-1e300", "mc_samples"}}) {
    std::string json = base;
    const size_t at = json.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from << " not in " << json;
    json.replace(at, c.from.size(), c.to);
    const auto options = OptionsFromJson(json);
    ASSERT_FALSE(options.ok()) << json;
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(options.status().message()), HasSubstr(c.field + " must be an integer")) << json;
  }
  EXPECT_TRUE(OptionsFromJson(base).ok());
}

// fuzz_checkpoint: an archive whose TorchScript code names an unknown type (the fuzzer renamed a code entry; here the
// type name in the code is changed) made LoadCheckpoint throw torch::jit::ErrorReport, which is not a c10::Error,
// out of the loader: the server died on start instead of skipping the file. Framing and CRC are valid, so only the
// archive itself is bad.
TEST(FuzzRegressionTest, CheckpointWhoseCodeDoesNotParseIsDataLoss) {
  TempDir dir;
  VaeOptions options = *Preset("mnist");
  options.height = options.width = 4;
  options.hidden = {4};
  options.latent_dim = 2;
  Vae model(options);
  const std::string path = dir.file(CheckpointFileName(1));
  ASSERT_TRUE(SaveCheckpoint(path, model, nullptr, TrainState{}).ok());
  std::string file = *ReadFileToString(path);
  // File layout (model/checkpoint.h): "VAECKPT1" | archive | length (8) | CRC-32 (4) | "VEND".
  std::string archive = file.substr(8, file.size() - 8 - 16);
  const std::string from = ".Module\n", to = ".Modulf\n";
  const size_t at = archive.find(from);
  ASSERT_NE(at, std::string::npos);
  archive.replace(at, from.size(), to);
  const uint32_t crc = Crc32(archive.data(), archive.size());
  file.replace(8, archive.size(), archive);
  for (int i = 0; i < 4; ++i) file[file.size() - 8 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  WriteBytes(path, file);

  const auto ckpt = LoadCheckpoint(path, torch::kCPU);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("is corrupt"));
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("Modulf"));
}

}  // namespace
}  // namespace vae
