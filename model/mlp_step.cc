#include "model/mlp_step.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "model/fast_math.h"
#include "model/fused_adam.h"

namespace vae {
namespace {

using internal::ExpNeg;

// log(1 + e) for e in [0, 1] through log(1 + e) = 2 atanh(u), u = e / (2 + e) in [0, 1/3]: the series in w = u^2
// converges geometrically (w <= 1/9; the first omitted term is < 1e-9 relative) and keeps full relative precision
// for tiny e, where 1 + e would round.
inline float Log1pUnit(float e) {
  const float u = e / (2.0f + e);
  const float w = u * u;
  float s = 1.0f / 15.0f;
  s = s * w + 1.0f / 13.0f;
  s = s * w + 1.0f / 11.0f;
  s = s * w + 1.0f / 9.0f;
  s = s * w + 1.0f / 7.0f;
  s = s * w + 1.0f / 5.0f;
  s = s * w + 1.0f / 3.0f;
  s = s * w + 1.0f;
  return 2.0f * u * s;
}

// One row: returns sum_i softplus(l_i) - x_i l_i and overwrites l_i with scale * (sigmoid(l_i) - x_i). Both come
// from e = exp(-|l|): softplus(l) = max(l, 0) + log(1 + e), sigmoid(l) = (l >= 0 ? 1 : e) / (1 + e). No branch,
// so it vectorises; `omp simd` allows the reordered float sum.
__attribute__((target_clones("avx512f", "avx2", "default"))) float BernoulliRow(float* __restrict logits,
                                                                                const float* __restrict x, int64_t n,
                                                                                float scale) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float l = logits[i];
    const float t = x[i];
    const float a = l < 0.0f ? -l : l;
    const float e = ExpNeg(a);
    const float softplus = (l > 0.0f ? l : 0.0f) + Log1pUnit(e);
    sum += softplus - t * l;
    const float sigmoid = (l >= 0.0f ? 1.0f : e) / (1.0f + e);
    logits[i] = scale * (sigmoid - t);
  }
  return sum;
}

// grad <- grad * act'(pre-activation), given the activation's output h.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ReluBackward(float* __restrict grad,
                                                                               const float* __restrict h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) grad[i] = h[i] > 0.0f ? grad[i] : 0.0f;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void TanhBackward(float* __restrict grad,
                                                                               const float* __restrict h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) grad[i] *= 1.0f - h[i] * h[i];
}

// Rows per parallel task so that each task has at least ~16k elements (below that a fork/join costs more than it
// saves).
int64_t RowGrain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)); }

void ActivationBackward(Activation act, at::Tensor& grad, const at::Tensor& h) {
  float* g = grad.data_ptr<float>();
  const float* hv = h.data_ptr<float>();
  const int64_t cols = h.size(1);
  at::parallel_for(0, h.size(0), RowGrain(cols), [&](int64_t begin, int64_t end) {
    if (act == Activation::kRelu) {
      ReluBackward(g + begin * cols, hv + begin * cols, (end - begin) * cols);
    } else {
      TanhBackward(g + begin * cols, hv + begin * cols, (end - begin) * cols);
    }
  });
}

void ApplyActivation(Activation act, at::Tensor& h) {
  if (act == Activation::kRelu) {
    at::relu_(h);
  } else {
    at::tanh_(h);
  }
}

}  // namespace

namespace internal {
void BernoulliLossAndGrad(float* logits, const float* x, int64_t rows, int64_t cols, float scale, float* recon) {
  for (int64_t r = 0; r < rows; ++r) recon[r] = BernoulliRow(logits + r * cols, x + r * cols, cols, scale);
}
}  // namespace internal

bool MlpTrainStep::Supports(const VaeOptions& options, const torch::Device& device) {
  return device.is_cpu() && options.architecture == Architecture::kMlp &&
         options.likelihood == Likelihood::kBernoulli && options.mc_samples == 1;
}

MlpTrainStep::MlpTrainStep(const Vae& model, torch::optim::Adam* optimizer, int64_t iw_samples)
    : options_(model->options()), optimizer_(optimizer), iw_samples_(iw_samples) {
  TORCH_CHECK(iw_samples_ >= 1 && (iw_samples_ == 1 || options_.beta == 1.0), "MlpTrainStep: iw_samples ", iw_samples_,
              " needs beta 1, got ", options_.beta);
  auto params = model->parameters();
  const size_t layers = options_.hidden.size() + 1;  // per side
  TORCH_CHECK(params.size() == 4 * layers, "MlpTrainStep: expected ", 4 * layers, " parameters, the model has ",
              params.size());
  TORCH_CHECK(Supports(options_, params[0].device()), "MlpTrainStep: unsupported model options or device");
  for (size_t i = 0; i < 2 * layers; ++i) {
    Layer layer;
    layer.weight = params[2 * i];
    layer.bias = params[2 * i + 1];
    layer.index = 2 * i;
    TORCH_CHECK(layer.weight.dim() == 2 && layer.bias.dim() == 1 && layer.weight.size(0) == layer.bias.size(0) &&
                    layer.weight.scalar_type() == at::kFloat && layer.weight.is_contiguous() &&
                    layer.bias.is_contiguous(),
                "MlpTrainStep: parameter ", 2 * i, " is not a float32 Linear layer");
    if (optimizer_ != nullptr) {
      // Fused: gradients never exist in full; one a caller left would only hold memory.
      layer.weight.mutable_grad().reset();
      layer.bias.mutable_grad().reset();
      layer.grad_bias = at::zeros_like(layer.bias);
    } else {
      // The grads are written in place from now on, so the optimizer sees them through the same tensors.
      if (!layer.weight.mutable_grad().defined()) layer.weight.mutable_grad() = at::zeros_like(layer.weight);
      if (!layer.bias.mutable_grad().defined()) layer.bias.mutable_grad() = at::zeros_like(layer.bias);
      layer.grad_weight = layer.weight.mutable_grad();
      layer.grad_bias = layer.bias.mutable_grad();
    }
    (i < layers ? encoder_ : decoder_).push_back(std::move(layer));
  }
  TORCH_CHECK(encoder_.front().weight.size(1) == options_.input_dim() &&
                  encoder_.back().weight.size(0) == 2 * options_.latent_dim &&
                  decoder_.front().weight.size(1) == options_.latent_dim &&
                  decoder_.back().weight.size(0) == options_.input_dim(),
              "MlpTrainStep: layer shapes do not match the options");
  set_gradient_block(kGradientBlock);
}

void MlpTrainStep::set_gradient_block(int64_t elements) {
  TORCH_CHECK(elements >= 1, "MlpTrainStep: gradient block must be >= 1 element");
  gradient_block_ = elements;
  if (optimizer_ == nullptr) return;
  // The largest block UpdateLayer computes: whole rows or whole columns, at least one of them.
  int64_t largest = 0;
  for (const auto* side : {&encoder_, &decoder_}) {
    for (const Layer& layer : *side) {
      const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
      const int64_t line = std::min(out, in), lines = std::max(out, in);
      largest = std::max(largest, line * std::clamp<int64_t>(elements / line, 1, lines));
    }
  }
  grad_block_ = at::empty({largest}, at::TensorOptions().dtype(at::kFloat));
}

void MlpTrainStep::EnsureCapacity(int64_t batch) {
  if (batch <= capacity_) return;
  const auto f = at::TensorOptions().dtype(at::kFloat);
  enc_hidden_.clear();
  enc_hidden_grad_.clear();
  dec_hidden_.clear();
  dec_hidden_grad_.clear();
  for (size_t i = 0; i + 1 < encoder_.size(); ++i) {
    enc_hidden_.push_back(at::empty({batch, encoder_[i].weight.size(0)}, f));
    enc_hidden_grad_.push_back(at::empty({batch, encoder_[i].weight.size(0)}, f));
  }
  const int64_t samples = batch * iw_samples_;  // decoder rows
  for (size_t i = 0; i + 1 < decoder_.size(); ++i) {
    dec_hidden_.push_back(at::empty({samples, decoder_[i].weight.size(0)}, f));
    dec_hidden_grad_.push_back(at::empty({samples, decoder_[i].weight.size(0)}, f));
  }
  const int64_t j = options_.latent_dim, d = options_.input_dim();
  enc_out_ = at::empty({batch, 2 * j}, f);
  z_ = at::empty({samples, j}, f);
  z_grad_ = at::empty({samples, j}, f);
  sigma_ = at::empty({batch, j}, f);
  logits_ = at::empty({samples, d}, f);
  row_recon_.assign(samples, 0.0f);
  row_kl_.assign(batch, 0.0f);
  if (iw_samples_ > 1) {
    row_scale_.assign(samples, 0.0f);
    row_log_w_.assign(samples, 0.0);
  }
  capacity_ = batch;
}

std::vector<at::Tensor> MlpTrainStep::Forward(const std::vector<Layer>& layers, std::vector<at::Tensor>& hidden,
                                              const at::Tensor& input, at::Tensor& out) const {
  const int64_t b = input.size(0);
  std::vector<at::Tensor> inputs{input};
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    auto h = hidden[i].narrow(0, 0, b);
    at::addmm_out(h, layers[i].bias, inputs.back(), layers[i].weight.t());
    ApplyActivation(options_.activation, h);
    inputs.push_back(h);
  }
  at::addmm_out(out, layers.back().bias, inputs.back(), layers.back().weight.t());
  return inputs;
}

void MlpTrainStep::Backward(std::vector<Layer>& layers, const std::vector<at::Tensor>& inputs,
                            std::vector<at::Tensor>& hidden_grad, const at::Tensor& out_grad, at::Tensor* input_grad) {
  const int64_t b = out_grad.size(0);
  at::Tensor dy = out_grad;
  for (size_t i = layers.size(); i-- > 0;) {
    // dX = dY W (not for the first layer's input unless asked), first: a fused step updates W just below.
    at::Tensor dx;
    if (i > 0) {
      dx = hidden_grad[i - 1].narrow(0, 0, b);
      at::mm_out(dx, dy, layers[i].weight);
    } else if (input_grad != nullptr) {
      at::mm_out(*input_grad, dy, layers[i].weight);
    }
    // dW = dY^T X, db = sum over rows of dY.
    if (optimizer_ != nullptr) {
      UpdateLayer(layers[i], dy, inputs[i]);
    } else {
      at::mm_out(layers[i].grad_weight, dy.t(), inputs[i]);
      at::sum_out(layers[i].grad_bias, dy, {0});
    }
    if (i == 0) break;
    ActivationBackward(options_.activation, dx, inputs[i]);
    dy = dx;
  }
}

void MlpTrainStep::UpdateLayer(Layer& layer, const at::Tensor& dy, const at::Tensor& input) {
  auto average_of = [&](size_t index) {
    const auto* avg = average_.tensors;
    return avg != nullptr && !avg->empty() ? avg->at(index) : at::Tensor();
  };
  at::sum_out(layer.grad_bias, dy, {0});
  AdamParamUpdate(*optimizer_, layer.bias, average_of(layer.index + 1), average_.decay)
      .Apply(0, layer.grad_bias.data_ptr<float>(), layer.bias.numel());

  // dW = dY^T X a block at a time, each block applied as soon as it is computed (while it is in cache): whole
  // columns (dY^T X[:, c0:c1]) when the input side is the longer one, as for the first encoder layer of an image
  // model, else whole rows (dY[:, r0:r1]^T X), as for the last decoder layer.
  const AdamParamUpdate update(*optimizer_, layer.weight, average_of(layer.index), average_.decay);
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
  float* g = grad_block_.data_ptr<float>();
  if (in >= out) {
    const int64_t cols = std::clamp<int64_t>(gradient_block_ / out, 1, in);
    for (int64_t c0 = 0; c0 < in; c0 += cols) {
      const int64_t n = std::min(cols, in - c0);
      auto block = grad_block_.narrow(0, 0, out * n).view({out, n});
      at::mm_out(block, dy.t(), input.narrow(1, c0, n));
      at::parallel_for(0, out, RowGrain(n), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) update.Apply(r * in + c0, g + r * n, n);
      });
    }
  } else {
    const int64_t rows = std::clamp<int64_t>(gradient_block_ / in, 1, out);
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
      const int64_t m = std::min(rows, out - r0);
      auto block = grad_block_.narrow(0, 0, m * in).view({m, in});
      at::mm_out(block, dy.narrow(1, r0, m).t(), input);
      at::parallel_for(0, m * in, RowGrain(1),
                       [&](int64_t begin, int64_t end) { update.Apply(r0 * in + begin, g + begin, end - begin); });
    }
  }
}

StepLoss MlpTrainStep::Run(const at::Tensor& x_in, at::Generator& generator, const Average& average) {
  const int64_t b = x_in.size(0), j = options_.latent_dim, d = options_.input_dim();
  TORCH_CHECK(x_in.numel() == b * d && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "MlpTrainStep: x must be float32 [B, ", options_.channels, ", ", options_.height, ", ", options_.width,
              "] on the CPU");
  c10::NoGradGuard no_grad;  // gradients are computed here, not recorded
  EnsureCapacity(b);
  average_ = average;
  const auto x = x_in.reshape({b, d}).contiguous();
  auto rows = [b](const at::Tensor& t) { return t.narrow(0, 0, b); };
  const float beta = static_cast<float>(options_.beta);
  const float inv_b = 1.0f / static_cast<float>(b);

  // Encoder: h_i = act(h_{i-1} W_i^T + b_i), then [mu | logvar] = h_n W^T + b.
  auto enc_out = rows(enc_out_);
  const std::vector<at::Tensor> enc_in = Forward(encoder_, enc_hidden_, x, enc_out);
  if (iw_samples_ > 1) {
    const StepLoss loss = IwaeLatentAndDecoder(x, enc_out, generator);
    Backward(encoder_, enc_in, enc_hidden_grad_, enc_out, nullptr);
    return loss;
  }

  // Reparameterisation z = mu + sigma * eps and the closed-form KL, one pass over [B, J].
  const auto eps = SampleStandardNormal({b, j}, x.options(), generator);
  auto z = rows(z_);
  auto sigma = rows(sigma_);
  {
    const float* e = enc_out.data_ptr<float>();
    const float* n = eps.data_ptr<float>();
    float* zv = z.data_ptr<float>();
    float* s = sigma.data_ptr<float>();
    for (int64_t r = 0; r < b; ++r) {
      float kl = 0.0f;
      for (int64_t c = 0; c < j; ++c) {
        const float mu = e[r * 2 * j + c], logvar = e[r * 2 * j + j + c];
        const float sg = std::exp(0.5f * logvar);
        s[r * j + c] = sg;
        zv[r * j + c] = mu + sg * n[r * j + c];
        kl += mu * mu + sg * sg - logvar - 1.0f;
      }
      row_kl_[r] = 0.5f * kl;
    }
  }

  // Decoder: g_i = act(g_{i-1} W_i^T + b_i), logits = g_n W^T + b.
  auto logits = rows(logits_);
  const std::vector<at::Tensor> dec_in = Forward(decoder_, dec_hidden_, z, logits);

  // Loss and d(mean loss)/d logits = (sigmoid(l) - x) / B, in place, one pass.
  {
    float* l = logits.data_ptr<float>();
    const float* xv = x.data_ptr<float>();
    float* recon = row_recon_.data();
    at::parallel_for(0, b, RowGrain(d), [&](int64_t begin, int64_t end) {
      internal::BernoulliLossAndGrad(l + begin * d, xv + begin * d, end - begin, d, inv_b, recon + begin);
    });
  }
  StepLoss loss;
  for (int64_t r = 0; r < b; ++r) {
    loss.recon += row_recon_[r];
    loss.kl += row_kl_[r];
  }
  loss.recon /= b;
  loss.kl /= b;
  loss.total = loss.recon + options_.beta * loss.kl;

  // Decoder backward, from the logits down to z.
  auto dz = rows(z_grad_);
  Backward(decoder_, dec_in, dec_hidden_grad_, logits, &dz);

  // Through the reparameterisation and the KL: with dz = d loss / dz,
  //   d/dmu = dz + beta mu / B,  d/dlogvar = dz eps sigma / 2 + beta (sigma^2 - 1) / (2B). Overwrites enc_out.
  {
    float* e = enc_out.data_ptr<float>();
    const float* g = dz.data_ptr<float>();
    const float* n = eps.data_ptr<float>();
    const float* s = sigma.data_ptr<float>();
    const float kl_scale = beta * inv_b;
    for (int64_t r = 0; r < b; ++r) {
      for (int64_t c = 0; c < j; ++c) {
        const int64_t k = r * j + c;
        const float mu = e[r * 2 * j + c];
        e[r * 2 * j + c] = g[k] + kl_scale * mu;
        e[r * 2 * j + j + c] = 0.5f * g[k] * n[k] * s[k] + 0.5f * kl_scale * (s[k] * s[k] - 1.0f);
      }
    }
  }

  // Encoder backward; the input x needs no gradient.
  Backward(encoder_, enc_in, enc_hidden_grad_, enc_out, nullptr);
  return loss;
}

StepLoss MlpTrainStep::IwaeLatentAndDecoder(const at::Tensor& x, at::Tensor& enc_out, at::Generator& generator) {
  const int64_t b = x.size(0), j = options_.latent_dim, d = options_.input_dim(), k = iw_samples_, m = k * b;
  const float inv_b = 1.0f / static_cast<float>(b);
  // Sample i of image n is row i * B + n, as in TrainingLoss.
  const auto eps = SampleStandardNormal({k, b, j}, x.options(), generator);
  auto z = z_.narrow(0, 0, m);
  auto sigma = sigma_.narrow(0, 0, b);
  float* e = enc_out.data_ptr<float>();
  const float* n = eps.data_ptr<float>();
  float* zv = z.data_ptr<float>();
  float* s = sigma.data_ptr<float>();
  // sigma, the closed-form KL (reported only), z = mu + sigma eps, and log p(z) - log q(z|x) of every sample:
  // with z - mu = sigma eps, -0.5 sum_j z_j^2 + 0.5 sum_j (eps_j^2 + log sigma_j^2) (the log 2 pi terms cancel).
  for (int64_t r = 0; r < b; ++r) {
    float kl = 0.0f, sum_logvar = 0.0f;
    for (int64_t c = 0; c < j; ++c) {
      const float mu = e[r * 2 * j + c], logvar = e[r * 2 * j + j + c];
      const float sg = std::exp(0.5f * logvar);
      s[r * j + c] = sg;
      kl += mu * mu + sg * sg - logvar - 1.0f;
      sum_logvar += logvar;
    }
    row_kl_[r] = 0.5f * kl;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t row = i * b + r;
      double z2 = 0, eps2 = 0;
      for (int64_t c = 0; c < j; ++c) {
        const float ep = n[row * j + c];
        const float zc = e[r * 2 * j + c] + s[r * j + c] * ep;
        zv[row * j + c] = zc;
        z2 += zc * zc;
        eps2 += ep * ep;
      }
      row_log_w_[row] = 0.5 * (eps2 + sum_logvar - z2);
    }
  }

  auto logits = logits_.narrow(0, 0, m);
  const std::vector<at::Tensor> dec_in = Forward(decoder_, dec_hidden_, z, logits);
  // recon of every sample, and the logits overwritten with sigmoid(l) - x (scaled by each sample's weight below).
  float* l = logits.data_ptr<float>();
  const float* xv = x.data_ptr<float>();
  at::parallel_for(0, m, RowGrain(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      internal::BernoulliLossAndGrad(l + row * d, xv + (row % b) * d, 1, d, 1.0f, row_recon_.data() + row);
    }
  });
  // log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x); loss = -(1/B) sum_n [logsumexp_i log w_ni - log k], so
  // d loss / d log w_ni = -w~_ni / B with w~_ni = softmax_i(log w_ni), the normalised importance weights.
  StepLoss loss;
  for (int64_t r = 0; r < b; ++r) {
    double max_log_w = -INFINITY;
    for (int64_t i = 0; i < k; ++i) {
      double& lw = row_log_w_[i * b + r];
      lw -= row_recon_[i * b + r];
      max_log_w = std::max(max_log_w, lw);
    }
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += std::exp(row_log_w_[i * b + r] - max_log_w);
    loss.total -= max_log_w + std::log(sum / static_cast<double>(k));
    for (int64_t i = 0; i < k; ++i) {
      row_scale_[i * b + r] = static_cast<float>(std::exp(row_log_w_[i * b + r] - max_log_w) / sum) * inv_b;
      loss.recon += row_recon_[i * b + r];
    }
    loss.kl += row_kl_[r];
  }
  loss.total /= b;
  loss.recon /= m;
  loss.kl /= b;
  // d loss / d logits of sample (i, n) = w~_ni / B * (sigmoid(l) - x).
  at::parallel_for(0, m, RowGrain(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float scale = row_scale_[row];
      float* lr = l + row * d;
      for (int64_t i = 0; i < d; ++i) lr[i] *= scale;
    }
  });

  auto dz = z_grad_.narrow(0, 0, m);
  Backward(decoder_, dec_in, dec_hidden_grad_, logits, &dz);

  // dz += w~/B z (from log p(z) = -0.5 |z|^2), then through z = mu + sigma eps, summed over the k samples:
  //   d/dmu = sum_i dz_i,  d/dlogvar = sum_i dz_i eps_i sigma / 2 - 1 / (2B)  (-log q holds +0.5 log sigma^2 and the
  //   weights sum to 1). Overwrites enc_out.
  float* g = dz.data_ptr<float>();
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t c = 0; c < j; ++c) {
      float dmu = 0.0f, dlogvar = 0.0f;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t at = (i * b + r) * j + c;
        const float gz = g[at] + row_scale_[i * b + r] * zv[at];
        dmu += gz;
        dlogvar += gz * n[at];
      }
      e[r * 2 * j + c] = dmu;
      e[r * 2 * j + j + c] = 0.5f * dlogvar * s[r * j + c] - 0.5f * inv_b;
    }
  }
  return loss;
}

}  // namespace vae
