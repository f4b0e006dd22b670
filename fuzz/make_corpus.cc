// Writes the seed corpus of every fuzz target into DIR/<target>/ (fuzz/corpus/ in the repository):
//   vae-fuzz-corpus DIR
// Small valid inputs, each in the layout its target's header comment describes (some targets take a leading
// selector byte), so the fuzzers start from the formats' interesting paths rather than from nothing. Deterministic:
// torch and the pixel noise are seeded.
#include <torch/torch.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "model/checkpoint.h"
#include "model/options.h"
#include "proto/tensor_proto.h"
#include "vae/v1/vae_service.pb.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = vae::v1;

fs::path root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

std::string Selector(int byte, const std::string& rest) { return std::string(1, static_cast<char>(byte)) + rest; }

std::string Serialized(const google::protobuf::Message& message) {
  std::string out;
  message.SerializeToString(&out);
  return out;
}

// Seeded pixels in [0, 1], [n, c, h, w].
torch::Tensor Images(int64_t n, int64_t c, int64_t h, int64_t w) { return torch::rand({n, c, h, w}); }

v1::Tensor TensorProto(const torch::Tensor& t) {
  v1::Tensor proto;
  vae::TensorToProto(t, &proto);
  return proto;
}

// An 8-bit image file (".png" or ".jpg") of a [c, h, w] tensor in [0, 1]; c = 1 or 3 (written as BGR).
std::string ImageFile(const torch::Tensor& image, const std::string& ext) {
  const torch::Tensor bytes = image.mul(255).round().to(torch::kByte).permute({1, 2, 0}).contiguous();
  const int c = static_cast<int>(image.size(0));
  cv::Mat mat(static_cast<int>(image.size(1)), static_cast<int>(image.size(2)), CV_8UC(c), bytes.data_ptr());
  std::vector<uchar> buffer;
  if (!cv::imencode(ext, mat, buffer)) std::exit(1);
  return std::string(buffer.begin(), buffer.end());
}

std::string Idx(const std::vector<uint32_t>& dims, uint8_t first_value) {
  std::string out = {0, 0, 0x08, static_cast<char>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>(first_value + i));
  return out;
}

std::string Gzip(const std::string& bytes) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::exit(1);
  std::string out(deflateBound(&z, bytes.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::exit(1);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A checkpoint of a tiny model written by SaveCheckpoint, read back as bytes.
std::string CheckpointFile(const vae::VaeOptions& options, bool with_optimizer) {
  const fs::path path = root / "tmp.vae";
  vae::Vae model(options);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  vae::TrainState state;
  state.epochs_done = 1;
  state.global_step = 3;
  if (!vae::SaveCheckpoint(path.string(), model, with_optimizer ? &adam : nullptr, state).ok()) std::exit(1);
  auto bytes = vae::ReadFileToString(path.string());
  fs::remove(path);
  if (!bytes.ok()) std::exit(1);
  return *bytes;
}

vae::VaeOptions Tiny(vae::Architecture architecture) {
  vae::VaeOptions o;
  o.preset = "custom";
  o.channels = 1;
  o.height = 4;
  o.width = 4;
  o.hidden = {4};
  o.latent_dim = 2;
  o.architecture = architecture;
  return o;
}

void TensorSeeds() {
  Write("fuzz_tensor_proto", "float_2x3", Serialized(TensorProto(torch::randn({2, 3}))));
  Write("fuzz_tensor_proto", "uint8_image", Serialized(TensorProto(Images(1, 1, 4, 4).mul(255).to(torch::kByte))));
  Write("fuzz_tensor_proto", "float_empty", Serialized(TensorProto(torch::zeros({0, 20}))));
  Write("fuzz_tensor_proto", "float_scalar", Serialized(TensorProto(torch::ones({}))));
}

void ImageSeeds() {
  // Byte 0: the model shape (0: 1x28x28, 1: 3x64x64, 2: 1x8x8, 3: 3x28x28) | 4 to resize.
  Write("fuzz_image_decode", "png_gray_28", Selector(0, ImageFile(Images(1, 1, 28, 28)[0], ".png")));
  Write("fuzz_image_decode", "png_rgb_16_resize", Selector(1 | 4, ImageFile(Images(1, 3, 16, 16)[0], ".png")));
  Write("fuzz_image_decode", "jpg_gray_8", Selector(2, ImageFile(Images(1, 1, 8, 8)[0], ".jpg")));
  Write("fuzz_image_decode", "jpg_rgb_12_resize", Selector(3 | 4, ImageFile(Images(1, 3, 12, 12)[0], ".jpg")));
}

void IdxSeeds() {
  Write("fuzz_idx", "images_3x2x2", Idx({3, 2, 2}, 0));
  Write("fuzz_idx", "labels_5", Idx({5}, 1));
  Write("fuzz_idx", "images_2x3x3.gz", Gzip(Idx({2, 3, 3}, 7)));
}

void CheckpointSeeds() {
  // Byte 0: 0 = the whole file, 1 = the payload only (the target frames it).
  const std::string mlp = CheckpointFile(Tiny(vae::Architecture::kMlp), /*with_optimizer=*/true);
  const std::string conv = CheckpointFile(Tiny(vae::Architecture::kConv), /*with_optimizer=*/false);
  constexpr size_t kHeader = 8, kTrailer = 16;
  Write("fuzz_checkpoint", "mlp_file", Selector(0, mlp));
  Write("fuzz_checkpoint", "mlp_payload", Selector(1, mlp.substr(kHeader, mlp.size() - kHeader - kTrailer)));
  Write("fuzz_checkpoint", "conv_payload", Selector(1, conv.substr(kHeader, conv.size() - kHeader - kTrailer)));
}

void OptionsSeeds() {
  for (const std::string& name : {"mnist", "conv", "fashion"})
    Write("fuzz_options_json", name, vae::ToJson(*vae::Preset(name)));
  vae::VaeOptions fixed = Tiny(vae::Architecture::kMlp);
  fixed.likelihood = vae::Likelihood::kGaussianFixed;
  fixed.fixed_sigma = 0.5;
  fixed.beta = 2.0;
  fixed.mc_samples = 3;
  fixed.activation = vae::Activation::kTanh;
  Write("fuzz_options_json", "custom_gaussian_fixed", vae::ToJson(fixed));
}

void RequestSeeds() {
  // Byte 0: 0 Encode, 1 Decode, 2 Sample, 3 Reconstruct. The served model is the mnist preset (1x28x28, J = 20).
  v1::EncodeRequest encode;
  *encode.mutable_images()->mutable_tensor() = TensorProto(Images(1, 1, 28, 28));
  Write("fuzz_service_requests", "encode_float", Selector(0, Serialized(encode)));
  encode.mutable_images()->clear_tensor();
  encode.mutable_images()->add_encoded(ImageFile(Images(1, 1, 14, 14)[0], ".png"));
  encode.mutable_images()->set_resize(true);
  Write("fuzz_service_requests", "encode_png_resize", Selector(0, Serialized(encode)));

  v1::DecodeRequest decode;
  *decode.mutable_z() = TensorProto(torch::randn({2, 20}));
  decode.set_format(v1::IMAGE_FORMAT_TENSOR_AND_PNG);
  Write("fuzz_service_requests", "decode_tensor_and_png", Selector(1, Serialized(decode)));

  v1::SampleRequest sample;
  sample.set_count(3);
  sample.set_seed(7);
  sample.set_temperature(0.5f);
  sample.set_format(v1::IMAGE_FORMAT_PNG);
  Write("fuzz_service_requests", "sample_png", Selector(2, Serialized(sample)));

  v1::ReconstructRequest reconstruct;
  *reconstruct.mutable_images()->mutable_tensor() = TensorProto(Images(2, 1, 28, 28).mul(255).to(torch::kByte));
  reconstruct.set_sample_z(true);
  reconstruct.set_seed(3);
  Write("fuzz_service_requests", "reconstruct_uint8", Selector(3, Serialized(reconstruct)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  root = argv[1];
  torch::manual_seed(1);
  TensorSeeds();
  ImageSeeds();
  IdxSeeds();
  CheckpointSeeds();
  OptionsSeeds();
  RequestSeeds();
  return 0;
}
