// The VAE module (Kingma & Welling 2014) in LibTorch: an encoder q(z|x) = N(mu, diag(sigma^2)) that predicts mu and
// log sigma^2, the reparameterised sample z = mu + sigma * eps, and a decoder p(x|z) (Bernoulli logits, or a Gaussian
// mean with a learned or fixed variance). MLP or convolutional, per VaeOptions.
//
// Thread-safety: forward/encode/decode are const in effect (no buffers are written), so several threads may run
// inference on one module under c10::InferenceMode; training mutates parameters and must own its module.
#ifndef VAE_MODEL_VAE_H_
#define VAE_MODEL_VAE_H_

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include "model/options.h"

namespace vae {

// What the decoder returns for z of shape [N, J]; every tensor is [N, C, H, W].
struct DecoderOutput {
  torch::Tensor param;   // Bernoulli: logits. Gaussian: the mean mu' (through a sigmoid, so in (0, 1)).
  torch::Tensor logvar;  // Gaussian: log sigma'^2 (a constant for kGaussianFixed). Bernoulli: undefined.
};

struct VaeOutput {
  torch::Tensor mu;       // [N, J]
  torch::Tensor logvar;   // [N, J], log sigma^2
  torch::Tensor z;        // [L * N, J]; sample l of image n is row l * N + n
  DecoderOutput decoded;  // [L * N, C, H, W]
};

class VaeImpl : public torch::nn::Cloneable<VaeImpl> {
 public:
  explicit VaeImpl(VaeOptions options);

  // Builds (or rebuilds, with fresh random weights) every submodule. Called by the constructor and by clone().
  void reset() override;

  // x: [N, C, H, W] float in [0, 1] on this module's device. Returns {mu, logvar}, each [N, J].
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& x);
  // z: [N, J] -> decoder distribution parameters.
  DecoderOutput decode(const torch::Tensor& z);
  // The decoder's mean image in [0, 1]: sigmoid(logits) for Bernoulli, mu' for Gaussian. [N, C, H, W].
  torch::Tensor mean_image(const DecoderOutput& decoded) const;
  // Encode, draw L = options().mc_samples samples z = mu + sigma * eps (eps from `generator`, or torch's default
  // generator when none is given), decode.
  VaeOutput forward(const torch::Tensor& x, c10::optional<at::Generator> generator = c10::nullopt);

  // Data-dependent initialisation (as in Burda et al.'s IWAE code): sets the decoder's output bias so that an
  // untrained model's mean image is `pixel_mean` ([C, H, W] in [0, 1]; per channel for conv decoders) instead of
  // 0.5 everywhere. Training then starts from the marginal pixel statistics rather than spending its first steps
  // learning them.
  void init_output_bias(const torch::Tensor& pixel_mean);

  const VaeOptions& options() const { return options_; }
  int64_t parameter_count() const;

 private:
  VaeOptions options_;
  int64_t out_channels_ = 0;  // decoder output channels: C, or 2C for the learned-variance Gaussian
  // conv: the spatial size after the last stride-2 stage
  int64_t enc_h_ = 0, enc_w_ = 0;
  torch::nn::Sequential encoder_{nullptr};  // x -> [N, 2J] (mu | logvar)
  torch::nn::Sequential decoder_{nullptr};  // z -> [N, out_channels * H * W] or [N, out_channels, H, W]
};
TORCH_MODULE(Vae);

// Standard-normal noise of `shape` drawn from `generator` (CPU generators are used for any device: the draw happens
// on the CPU and is copied, so a seed gives the same numbers everywhere) or from torch's default generator.
torch::Tensor SampleStandardNormal(at::IntArrayRef shape, const torch::TensorOptions& options,
                                   c10::optional<at::Generator> generator);

// A CPU generator seeded with `seed`.
at::Generator MakeGenerator(uint64_t seed);

// A deep copy of `model` on `device` (parameters and buffers copied, no gradient history, same train/eval mode). At
// its peak it holds one copy of the weights beside `model`.
Vae CloneVae(const Vae& model, const torch::Device& device);

}  // namespace vae

#endif  // VAE_MODEL_VAE_H_
