// Fuzz target: bytes -> LoadCheckpoint (model/checkpoint.h), the loader of every file in --model_dir.
// Input: byte 0 picks the mode, the rest is the data. Even: the data is the whole file, so the fuzzer exercises the
// framing (magic, trailer, length, CRC). Odd: the data is the payload (the torch archive), wrapped in a valid header,
// length and CRC-32 here, so the fuzzer gets past the integrity checks into the archive, the options JSON inside it
// and the weights.
// Framed inputs reach LibTorch's TorchScript importer, which crashes (SEGV, no exception to catch) on some malformed
// code records, e.g. in torch::jit::ScriptTypeParser::parseClassConstant: a LibTorch 1.13 bug that LoadCheckpoint
// cannot turn into a Status (FUZZING.md, "Known limits"). They are fuzzed only with VAE_FUZZ_TORCH_ARCHIVE=1, so that
// the runs CI makes test this project's code; bench/fuzz.sh sets it to replay fuzz/regressions/.
// Properties: a rejection is DATA_LOSS; an accepted checkpoint has valid options and a model that runs: encoding one
// image of its input shape gives mu and log sigma^2 of shape [1, latent_dim].
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/file_util.h"
#include "fuzz/fuzz_util.h"
#include "model/checkpoint.h"

namespace {

void PutLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The checkpoint file framing around `payload` (layout in model/checkpoint.h).
std::string Framed(const std::string& payload) {
  std::string file = "VAECKPT1" + payload;
  PutLe(file, payload.size(), 8);
  PutLe(file, vae::Crc32(payload.data(), payload.size()), 4);
  return file + "VEND";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vae::fuzz::ScratchFile file("checkpoint");
  static const bool framed_on =
      std::getenv("VAE_FUZZ_TORCH_ARCHIVE") != nullptr && std::string(std::getenv("VAE_FUZZ_TORCH_ARCHIVE")) == "1";
  if (size == 0 || (data[0] % 2 == 1 && !framed_on)) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string& path = file.Write(data[0] % 2 == 1 ? Framed(rest) : rest);
  absl::StatusOr<vae::Checkpoint> ckpt = vae::LoadCheckpoint(path, torch::kCPU);
  if (!ckpt.ok()) {
    FUZZ_CHECK(ckpt.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  const vae::VaeOptions& o = ckpt->options;
  FUZZ_CHECK(vae::Validate(o).ok());
  FUZZ_CHECK(!ckpt->model.is_empty());
  // Bounded work per input: the weights came from the input, but a conv model's activations grow with H x W.
  if (o.input_dim() > (int64_t{1} << 16)) return 0;
  torch::NoGradGuard no_grad;
  const auto [mu, logvar] = ckpt->model->encode(torch::zeros({1, o.channels, o.height, o.width}));
  FUZZ_CHECK(mu.sizes() == torch::IntArrayRef({1, o.latent_dim}));
  FUZZ_CHECK(logvar.sizes() == torch::IntArrayRef({1, o.latent_dim}));
  return 0;
}
