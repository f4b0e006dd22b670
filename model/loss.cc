#include "model/loss.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "model/mlp_step.h"

namespace vae {
namespace {
constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

torch::Tensor SumPerImage(const torch::Tensor& t) { return t.reshape({t.size(0), -1}).sum(1); }
}  // namespace

torch::Tensor KlDivergence(const torch::Tensor& mu, const torch::Tensor& logvar) {
  // KL = 0.5 * sum_j(mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)
  return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(1);
}

torch::Tensor BernoulliNll(const torch::Tensor& logits, const torch::Tensor& x) {
  // -[x log s(l) + (1 - x) log(1 - s(l))] = softplus(l) - x l, evaluated stably by ATen's fused kernel.
  auto elementwise = at::binary_cross_entropy_with_logits(logits, x, {}, {}, at::Reduction::None);
  return SumPerImage(elementwise);
}

torch::Tensor GaussianNll(const torch::Tensor& mean, const torch::Tensor& logvar, const torch::Tensor& x) {
  // sum(0.5 log 2pi + 0.5 log sigma'^2 + (x - mu')^2 / (2 sigma'^2))
  auto elementwise = 0.5 * (kLog2Pi + logvar + (x - mean).pow(2) * torch::exp(-logvar));
  return SumPerImage(elementwise);
}

torch::Tensor ReconstructionNll(const VaeOptions& options, const DecoderOutput& decoded, const torch::Tensor& x) {
  if (options.likelihood == Likelihood::kBernoulli) return BernoulliNll(decoded.param, x);
  return GaussianNll(decoded.param, decoded.logvar, x);
}

LossOutput ComputeLoss(const VaeOptions& options, const VaeOutput& out, const torch::Tensor& x) {
  const int64_t n = x.size(0);
  const int64_t l = out.z.size(0) / n;
  LossOutput loss;
  if (l == 1) {
    loss.recon_per_image = ReconstructionNll(options, out.decoded, x);
  } else {
    // Average -log p(x|z_l) over the L samples (row l * N + n is sample l of image n).
    auto xs = x.unsqueeze(0)
                  .expand({l, n, x.size(1), x.size(2), x.size(3)})
                  .reshape({l * n, x.size(1), x.size(2), x.size(3)});
    loss.recon_per_image = ReconstructionNll(options, out.decoded, xs).view({l, n}).mean(0);
  }
  loss.kl_per_image = KlDivergence(out.mu, out.logvar);
  loss.total_per_image = options.beta == 1.0 ? loss.recon_per_image + loss.kl_per_image
                                             : loss.recon_per_image + options.beta * loss.kl_per_image;
  loss.total = loss.total_per_image.mean();
  loss.recon = loss.recon_per_image.mean();
  loss.kl = loss.kl_per_image.mean();
  return loss;
}

namespace {

// log p(z) - log q(z|x) for z [K * N, J] (row k * N + n), mu/logvar [N, J] -> [K, N].
torch::Tensor LatentLogRatio(const torch::Tensor& mu, const torch::Tensor& logvar, const torch::Tensor& z) {
  const int64_t n = mu.size(0), j = mu.size(1);
  auto zk = z.view({z.size(0) / n, n, j});
  // log N(z; 0, I) and log N(z; mu, sigma^2), summed over the J latent dimensions.
  auto log_pz = -0.5 * (zk.pow(2) + kLog2Pi).sum(2);
  auto log_qz =
      -0.5 * ((zk - mu.unsqueeze(0)).pow(2) * torch::exp(-logvar).unsqueeze(0) + logvar.unsqueeze(0) + kLog2Pi).sum(2);
  return log_pz - log_qz;
}

// -log p(x|z) of Bernoulli logits [M, D] (row r decodes image r % N of x [N, D]) -> [M] float32, through the
// training step's fused kernel: one pass, no copy of x per sample. Overwrites `logits` (with the gradient).
torch::Tensor BernoulliNllOverwriting(torch::Tensor& logits, const torch::Tensor& x) {
  const int64_t m = logits.size(0), d = logits.size(1), n = x.size(0);
  auto recon = torch::empty({m}, logits.options());
  float* l = logits.data_ptr<float>();
  const float* xv = x.data_ptr<float>();
  float* out = recon.data_ptr<float>();
  at::parallel_for(0, m, std::max<int64_t>(1, 16384 / d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      internal::BernoulliLossAndGrad(l + r * d, xv + (r % n) * d, 1, d, 1.0f, out + r);
  });
  return recon;
}

}  // namespace

torch::Tensor LogImportanceWeights(const VaeOptions& options, const torch::Tensor& x, const torch::Tensor& mu,
                                   const torch::Tensor& logvar, const torch::Tensor& z, const DecoderOutput& decoded) {
  const int64_t n = x.size(0);
  const int64_t k = z.size(0) / n;
  auto xs =
      x.unsqueeze(0).expand({k, n, x.size(1), x.size(2), x.size(3)}).reshape({k * n, x.size(1), x.size(2), x.size(3)});
  auto log_px_z = -ReconstructionNll(options, decoded, xs).view({k, n});
  return log_px_z + LatentLogRatio(mu, logvar, z);
}

torch::Tensor LogMeanExp(const torch::Tensor& log_w) {
  // torch::logsumexp subtracts the max (and handles all -inf) before exp.
  return torch::logsumexp(log_w, /*dim=*/0) - std::log(static_cast<double>(log_w.size(0)));
}

LossOutput TrainingLoss(Vae& model, const torch::Tensor& x, int64_t k, at::Generator& generator) {
  const auto& options = model->options();
  if (k == 1) return ComputeLoss(options, model->forward(x, generator), x);
  TORCH_CHECK(options.beta == 1.0 && options.mc_samples == 1, "TrainingLoss: iw_samples ", k,
              " needs beta 1 and mc_samples 1, got beta ", options.beta, ", mc_samples ", options.mc_samples);
  auto [mu, logvar] = model->encode(x);
  const int64_t n = x.size(0), j = mu.size(1);
  auto eps = SampleStandardNormal({k, n, j}, mu.options(), generator);
  auto z = (mu.unsqueeze(0) + torch::exp(0.5 * logvar).unsqueeze(0) * eps).reshape({k * n, j});
  const DecoderOutput decoded = model->decode(z);
  auto log_w = LogImportanceWeights(options, x, mu, logvar, z, decoded);  // [k, N]
  LossOutput loss;
  loss.total_per_image = -LogMeanExp(log_w);
  auto xs =
      x.unsqueeze(0).expand({k, n, x.size(1), x.size(2), x.size(3)}).reshape({k * n, x.size(1), x.size(2), x.size(3)});
  loss.recon_per_image = ReconstructionNll(options, decoded, xs).view({k, n}).mean(0).detach();
  loss.kl_per_image = KlDivergence(mu, logvar).detach();
  loss.total = loss.total_per_image.mean();
  loss.recon = loss.recon_per_image.mean();
  loss.kl = loss.kl_per_image.mean();
  return loss;
}

torch::Tensor ImportanceWeightedLogLikelihood(Vae& model, const torch::Tensor& x, int64_t k,
                                              c10::optional<at::Generator> generator, int64_t chunk) {
  c10::NoGradGuard no_grad;
  const auto& options = model->options();
  auto [mu, logvar] = model->encode(x);
  const int64_t n = x.size(0), j = mu.size(1);
  auto sigma = torch::exp(0.5 * logvar);
  // Bernoulli float32 on the CPU: -log p(x|z) by the fused kernel (the same sum, ~1 ulp per pixel from ATen's).
  const bool fused =
      options.likelihood == Likelihood::kBernoulli && x.device().is_cpu() && x.scalar_type() == torch::kFloat32;
  const auto x_rows = fused ? x.reshape({n, -1}).contiguous() : x;
  torch::Tensor running;  // logsumexp of the log-weights seen so far, [N], float64 so that k = 5000 sums stay exact
  for (int64_t done = 0; done < k; done += chunk) {
    const int64_t m = std::min(chunk, k - done);
    auto eps = SampleStandardNormal({m, n, j}, mu.options(), generator);
    auto z = (mu.unsqueeze(0) + sigma.unsqueeze(0) * eps).reshape({m * n, j});
    DecoderOutput decoded = model->decode(z);
    torch::Tensor log_w;
    if (fused) {
      auto logits = decoded.param.reshape({m * n, -1}).contiguous();
      log_w = LatentLogRatio(mu, logvar, z) - BernoulliNllOverwriting(logits, x_rows).view({m, n});
    } else {
      log_w = LogImportanceWeights(options, x, mu, logvar, z, decoded);
    }
    auto lse = torch::logsumexp(log_w, /*dim=*/0).to(torch::kFloat64);
    running = running.defined() ? torch::logaddexp(running, lse) : lse;
  }
  return running - std::log(static_cast<double>(k));
}

}  // namespace vae
