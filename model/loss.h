// The VAE objective and the importance-weighted log-likelihood estimate.
// All per-image quantities are in nats, summed over pixels / latent dimensions.
#ifndef VAE_MODEL_LOSS_H_
#define VAE_MODEL_LOSS_H_

#include <ATen/core/Tensor.h>

#include "model/vae.h"

namespace vae {

// KL(N(mu, sigma^2) || N(0, I)) per row: 0.5 * sum_j(mu_j^2 + sigma_j^2 - log sigma_j^2 - 1). mu, logvar: [N, J] ->
// [N].
torch::Tensor KlDivergence(const torch::Tensor& mu, const torch::Tensor& logvar);

// -log Bernoulli(x | sigmoid(logits)) summed over all but the first dim, computed stably from logits
// (softplus(l) - x * l). Equals -sum(x log p + (1 - x) log(1 - p)). -> [N].
torch::Tensor BernoulliNll(const torch::Tensor& logits, const torch::Tensor& x);

// -log N(x | mean, exp(logvar)) summed over all but the first dim:
// sum(0.5 log(2 pi) + 0.5 logvar + (x - mean)^2 / (2 exp(logvar))). -> [N].
torch::Tensor GaussianNll(const torch::Tensor& mean, const torch::Tensor& logvar, const torch::Tensor& x);

// -log p(x | z) under the model's likelihood for decoder output `decoded` ([M, C, H, W]) and x ([M, C, H, W]) -> [M].
torch::Tensor ReconstructionNll(const VaeOptions& options, const DecoderOutput& decoded, const torch::Tensor& x);

struct LossOutput {
  torch::Tensor total;            // scalar: mean over the batch of recon + beta * kl (the training objective)
  torch::Tensor recon;            // scalar: batch mean of recon_per_image
  torch::Tensor kl;               // scalar: batch mean of kl_per_image
  torch::Tensor total_per_image;  // [N]: recon + beta * kl
  torch::Tensor recon_per_image;  // [N]: -log p(x|z), averaged over the L samples
  torch::Tensor kl_per_image;     // [N]: closed-form KL
};

// The negative ELBO (with beta) for `out = model->forward(x)`; x: [N, C, H, W].
LossOutput ComputeLoss(const VaeOptions& options, const VaeOutput& out, const torch::Tensor& x);

// The training objective for the batch x ([N, C, H, W]) with `k` importance samples per image, noise from
// `generator`. k = 1: ComputeLoss(options, model->forward(x, generator), x), the negative ELBO with the closed-form
// KL. k > 1: the IWAE loss (Burda et al. 2015, eq. 8), total = -mean_n log((1/k) sum_i w_ni) with
// log w_ni = log p(x_n | z_ni) + log p(z_ni) - log q(z_ni | x_n), z_ni = mu_n + sigma_n * eps_ni and eps drawn as one
// [k, N, J] tensor (sample i of image n at row i * N + n); recon_per_image is then the mean over the k samples of
// -log p(x|z), kl_per_image the closed-form KL (both reported, not optimised: total is not recon + KL), beta must be
// 1 and the model's mc_samples 1. total_per_image is [N]. Differentiable (autograd).
LossOutput TrainingLoss(Vae& model, const torch::Tensor& x, int64_t k, at::Generator& generator);

// log-mean-exp over dim 0 of log_w ([K, ...]): log((1/K) sum_k exp(log_w_k)), stable for any magnitude (the max is
// taken out before exp). -> log_w.shape[1:].
torch::Tensor LogMeanExp(const torch::Tensor& log_w);

// log w = log p(x | z) + log p(z) - log q(z | x) for given z ([K * N, J], sample k of image n at row k * N + n),
// mu/logvar [N, J] and decoder output for z. -> [K, N].
torch::Tensor LogImportanceWeights(const VaeOptions& options, const torch::Tensor& x, const torch::Tensor& mu,
                                   const torch::Tensor& logvar, const torch::Tensor& z, const DecoderOutput& decoded);

// Burda et al. (2015): log p(x) ~= logsumexp_k(log w_k) - log k with z_k ~ q(z|x). Returns [N] float64 (nats; the
// NLL is the negation). Samples are drawn `chunk` at a time and combined with a running logsumexp, so memory stays at
// chunk * N decoder outputs. Runs without autograd. With k = 1 it is the single-sample ELBO estimate.
torch::Tensor ImportanceWeightedLogLikelihood(Vae& model, const torch::Tensor& x, int64_t k,
                                              c10::optional<at::Generator> generator = c10::nullopt,
                                              int64_t chunk = 100);

}  // namespace vae

#endif  // VAE_MODEL_LOSS_H_
