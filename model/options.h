// VaeOptions: everything that defines a VAE's architecture and objective, plus the named presets.
// Plain data, torch-free, copyable; serialised to JSON inside checkpoints and reported by GetModelInfo.
#ifndef VAE_MODEL_OPTIONS_H_
#define VAE_MODEL_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vae {

enum class Activation { kRelu, kTanh };
enum class Architecture { kMlp, kConv };
// kBernoulli: decoder outputs logits, loss = BCE-with-logits summed over pixels.
// kGaussianLearned: decoder outputs mean and a per-pixel log-variance (a function of z).
// kGaussianFixed: decoder outputs the mean; sigma' = VaeOptions::fixed_sigma for every pixel.
enum class Likelihood { kBernoulli, kGaussianLearned, kGaussianFixed };

struct VaeOptions {
  std::string preset = "custom";        // name of the preset these options came from, "custom" otherwise
  int64_t channels = 1;                 // input C
  int64_t height = 28;                  // input H (pixels)
  int64_t width = 28;                   // input W (pixels)
  int64_t latent_dim = 20;              // J, size of z
  std::vector<int64_t> hidden = {400};  // MLP: hidden layer widths; conv: channels of each stride-2 stage
  Activation activation = Activation::kRelu;
  Architecture architecture = Architecture::kMlp;
  Likelihood likelihood = Likelihood::kBernoulli;
  double fixed_sigma = 1.0;  // sigma' for kGaussianFixed (1 -> loss is 0.5 * squared error + const)
  double beta = 1.0;         // weight of the KL term (beta-VAE; 1 = the ELBO)
  int64_t mc_samples = 1;    // L, Monte Carlo samples of z per image in the loss

  int64_t input_dim() const { return channels * height * width; }  // D
  std::vector<int64_t> input_shape() const { return {channels, height, width}; }
};

// Checks ranges and that conv shapes divide evenly. INVALID_ARGUMENT naming the field otherwise.
absl::Status Validate(const VaeOptions& options);

// Named presets:
//   mnist   1x28x28, 784-400-20 ReLU, Bernoulli (pytorch/examples' VAE)
//   aevb    1x28x28, one 500-unit tanh layer, J=20, Bernoulli (Kingma & Welling's MNIST net)
//   iwae1   1x28x28, 784-200-200-50 tanh, Bernoulli (Burda et al.'s IWAE net with one stochastic layer)
//   seed    3x218x178 (D=116412), 1164-116 ReLU, J=10, Bernoulli (the source document's net, ~271M parameters)
//   conv    1x28x28 convolutional, stages 32-64, J=20, Bernoulli
//   conv64  3x64x64 convolutional, stages 32-64-128-256, J=32, Bernoulli
//   fashion 1x28x28, 784-512-256-16 ReLU, Gaussian decoder with learned per-pixel variance
absl::StatusOr<VaeOptions> Preset(const std::string& name);
std::vector<std::string> PresetNames();

std::string ToString(Activation a);
std::string ToString(Architecture a);
std::string ToString(Likelihood l);
absl::StatusOr<Activation> ParseActivation(const std::string& s);
absl::StatusOr<Architecture> ParseArchitecture(const std::string& s);
absl::StatusOr<Likelihood> ParseLikelihood(const std::string& s);

// JSON round trip (used by checkpoints and GetModelInfo).
std::string ToJson(const VaeOptions& options);
absl::StatusOr<VaeOptions> OptionsFromJson(const std::string& json);

}  // namespace vae

#endif  // VAE_MODEL_OPTIONS_H_
