#include "model/vae.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

namespace vae {
namespace {

// Lower bound of the learned decoder log-variance, log sigma'^2 >= -9 (sigma' >= 0.011): images have 8-bit
// precision, and without a floor the variance of always-black background pixels collapses and the NLL diverges.
constexpr double kMinDecoderLogvar = -9.0;

void AddActivation(torch::nn::Sequential& seq, Activation act) {
  if (act == Activation::kTanh) {
    seq->push_back(torch::nn::Tanh());
  } else {
    seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
  }
}

}  // namespace

VaeImpl::VaeImpl(VaeOptions options) : options_(std::move(options)) { reset(); }

void VaeImpl::reset() {
  const auto& o = options_;
  const int64_t j = o.latent_dim;
  out_channels_ = o.likelihood == Likelihood::kGaussianLearned ? 2 * o.channels : o.channels;
  torch::nn::Sequential enc, dec;
  if (o.architecture == Architecture::kMlp) {
    // Encoder D -> h_1 -> ... -> h_n -> 2J; decoder mirrored J -> h_n -> ... -> h_1 -> D (x2 for the variance).
    int64_t in = o.input_dim();
    for (int64_t h : o.hidden) {
      enc->push_back(torch::nn::Linear(in, h));
      AddActivation(enc, o.activation);
      in = h;
    }
    enc->push_back(torch::nn::Linear(in, 2 * j));
    in = j;
    for (auto it = o.hidden.rbegin(); it != o.hidden.rend(); ++it) {
      dec->push_back(torch::nn::Linear(in, *it));
      AddActivation(dec, o.activation);
      in = *it;
    }
    dec->push_back(torch::nn::Linear(in, out_channels_ * o.height * o.width));
  } else {
    // Each stage is a 4x4 stride-2 convolution that halves H and W exactly (Validate checks divisibility);
    // the decoder mirrors it with 4x4 stride-2 transposed convolutions.
    int64_t in = o.channels;
    enc_h_ = o.height;
    enc_w_ = o.width;
    for (int64_t c : o.hidden) {
      enc->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, c, 4).stride(2).padding(1)));
      AddActivation(enc, o.activation);
      in = c;
      enc_h_ /= 2;
      enc_w_ /= 2;
    }
    const int64_t flat = in * enc_h_ * enc_w_;
    enc->push_back(torch::nn::Flatten());
    enc->push_back(torch::nn::Linear(flat, 2 * j));

    dec->push_back(torch::nn::Linear(j, flat));
    AddActivation(dec, o.activation);
    dec->push_back(torch::nn::Unflatten(torch::nn::UnflattenOptions(1, {in, enc_h_, enc_w_})));
    for (size_t i = o.hidden.size(); i-- > 0;) {
      const int64_t out = i == 0 ? out_channels_ : o.hidden[i - 1];
      dec->push_back(
          torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(o.hidden[i], out, 4).stride(2).padding(1)));
      if (i != 0) AddActivation(dec, o.activation);
    }
  }
  encoder_ = register_module("encoder", enc);
  decoder_ = register_module("decoder", dec);
}

std::pair<torch::Tensor, torch::Tensor> VaeImpl::encode(const torch::Tensor& x) {
  auto input = options_.architecture == Architecture::kMlp ? x.reshape({x.size(0), -1}) : x;
  auto h = encoder_->forward(input);
  auto parts = h.chunk(2, /*dim=*/1);
  return {parts[0], parts[1]};
}

DecoderOutput VaeImpl::decode(const torch::Tensor& z) {
  const auto& o = options_;
  auto out = decoder_->forward(z).view({z.size(0), out_channels_, o.height, o.width});
  DecoderOutput d;
  switch (o.likelihood) {
    case Likelihood::kBernoulli:
      d.param = out;
      break;
    case Likelihood::kGaussianFixed:
      d.param = torch::sigmoid(out);
      d.logvar = torch::full_like(d.param, 2.0 * std::log(o.fixed_sigma));
      break;
    case Likelihood::kGaussianLearned: {
      auto parts = out.chunk(2, /*dim=*/1);
      d.param = torch::sigmoid(parts[0]);
      // Smooth floor: logvar = min + softplus(raw - min) > min, and ~raw well above it.
      d.logvar = kMinDecoderLogvar + torch::softplus(parts[1] - kMinDecoderLogvar);
      break;
    }
  }
  return d;
}

torch::Tensor VaeImpl::mean_image(const DecoderOutput& decoded) const {
  return options_.likelihood == Likelihood::kBernoulli ? torch::sigmoid(decoded.param) : decoded.param;
}

VaeOutput VaeImpl::forward(const torch::Tensor& x, c10::optional<at::Generator> generator) {
  VaeOutput out;
  std::tie(out.mu, out.logvar) = encode(x);
  const int64_t n = out.mu.size(0), j = out.mu.size(1), l = options_.mc_samples;
  // Reparameterisation: z = mu + sigma * eps with sigma = exp(0.5 * log sigma^2), eps ~ N(0, I).
  auto sigma = torch::exp(0.5 * out.logvar);
  if (l == 1) {
    out.z = out.mu + sigma * SampleStandardNormal({n, j}, out.mu.options(), generator);
  } else {
    auto eps = SampleStandardNormal({l, n, j}, out.mu.options(), generator);
    out.z = (out.mu.unsqueeze(0) + sigma.unsqueeze(0) * eps).reshape({l * n, j});
  }
  out.decoded = decode(out.z);
  return out;
}

void VaeImpl::init_output_bias(const torch::Tensor& pixel_mean) {
  torch::NoGradGuard no_grad;
  // The decoder's mean goes through a sigmoid for every likelihood, so its bias is logit(mean pixel).
  auto p = pixel_mean.to(torch::kFloat32).clamp(1e-3, 1 - 1e-3);
  auto logit = (p.log() - (-p).log1p()).reshape({options_.channels, -1});
  auto last = decoder_->ptr(decoder_->size() - 1);
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(last.get())) {
    // Output layout [out_channels, H, W]: the first C channels are the mean (then the log-variance, if learned).
    linear->bias.slice(0, 0, options_.input_dim()).copy_(logit.reshape({-1}).to(linear->bias.device()));
  } else if (auto* conv = dynamic_cast<torch::nn::ConvTranspose2dImpl*>(last.get())) {
    conv->bias.slice(0, 0, options_.channels).copy_(logit.mean(1).to(conv->bias.device()));
  }
}

int64_t VaeImpl::parameter_count() const {
  int64_t count = 0;
  for (const auto& p : parameters()) count += p.numel();
  return count;
}

torch::Tensor SampleStandardNormal(at::IntArrayRef shape, const torch::TensorOptions& options,
                                   c10::optional<at::Generator> generator) {
  if (!generator.has_value()) return torch::randn(shape, options);
  auto cpu = at::randn(shape, generator, options.device(torch::kCPU));
  return options.device().is_cpu() ? cpu : cpu.to(options.device());
}

at::Generator MakeGenerator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

Vae CloneVae(const Vae& model, const torch::Device& device) {
  // Not model->clone(): Cloneable::clone builds a fresh module (every weight allocated and randomly initialised), then
  // replaces each submodule by a clone of its own (built fresh again) and only then copies the weights: for the seed
  // preset ~2 GB more than the copy at its peak. Here one module, its weights overwritten in place.
  torch::NoGradGuard no_grad;
  Vae copy(model->options());
  copy->to(device);
  auto src = model->parameters(), dst = copy->parameters();
  for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
  auto src_buffers = model->buffers(), dst_buffers = copy->buffers();
  for (size_t i = 0; i < dst_buffers.size(); ++i) dst_buffers[i].copy_(src_buffers[i]);
  copy->train(model->is_training());
  return copy;
}

}  // namespace vae
