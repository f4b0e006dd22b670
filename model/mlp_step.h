// The training step of an MLP VAE on the CPU, written out by hand: forward, loss and backward as explicit matrix
// products (BLAS through ATen) and single-pass kernels, with every intermediate in buffers allocated once.
//
// Why: for the mnist preset a step is ~4 ms, and autograd's generic path spends more of it outside the matrix
// products than in them: ~15 passes over the 100k decoder logits for BCE-with-logits forward and backward, a fresh
// allocation (page faults) for every intermediate, an OpenMP fork/join per element-wise op, and graph bookkeeping.
// Here the loss and its gradient with respect to the logits are one pass, activation backward is one pass, the 1/B of
// the batch mean is folded into that pass, and nothing is allocated after the first step. The result is the gradient
// autograd computes (tests/model/mlp_step_test.cc checks it against autograd for every supported configuration).
//
// Supports: Architecture::kMlp, Likelihood::kBernoulli, any hidden widths, relu or tanh, any beta, mc_samples == 1,
// the IWAE objective with k samples (beta == 1), float32 parameters on the CPU. Everything else trains through
// autograd (Trainer picks).
//
// With an optimizer (the Trainer's default) the step also applies Adam and the moving average of the weights
// (model/fused_adam.h) inside the backward pass, a layer at a time and a block of each weight gradient at a time,
// right after the block is computed: no parameter ever has a full-size gradient (for the seed preset that is 1.08 GB
// less at every step, BENCHMARKS.md §14). A layer's weights are updated only after the gradient that flows below it
// (dY W) has been computed from them, so the result is FusedAdamStep applied after the unfused step, bitwise when a
// layer's gradient fits one block (tests/model/mlp_step_test.cc).
//
// Not thread-safe; one per Trainer, used from its training thread.
#ifndef VAE_MODEL_MLP_STEP_H_
#define VAE_MODEL_MLP_STEP_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <vector>

#include "model/vae.h"

namespace torch::optim {
class Adam;
}  // namespace torch::optim

namespace vae {

// Batch means per image, nats (recon + beta * kl, -log p(x|z), KL).
struct StepLoss {
  double total = 0;
  double recon = 0;
  double kl = 0;
};

class MlpTrainStep {
 public:
  // Whether a model with `options` on `device` can be trained by this class.
  static bool Supports(const VaeOptions& options, const torch::Device& device);

  // Keeps a handle on `model`'s parameters (not a copy): Run() reads the current weights and writes their grads.
  // Requires Supports(model->options(), device of the parameters). `iw_samples` is the IWAE k (1: the ELBO); k > 1
  // needs beta == 1. With `optimizer` (not owned; its parameters must be `model`'s, in order), Run() updates the
  // weights itself instead: the parameters' grads are released here and never written.
  explicit MlpTrainStep(const Vae& model, torch::optim::Adam* optimizer = nullptr, int64_t iw_samples = 1);

  // The moving average of the weights that a fused Run() keeps (average <- decay * average + (1 - decay) * weight,
  // as FusedAdamStep). `tensors`: one per parameter, same order and shapes; null (the value-initialised {}) or empty:
  // no average.
  struct Average {
    const std::vector<at::Tensor>* tensors;
    double decay;
  };

  // One forward + backward for the batch x ([B, C, H, W], float32 in [0, 1]). Draws eps from `generator` exactly as
  // TrainingLoss (model/loss.h) does ([B, J] through VaeImpl::forward for k = 1, [k, B, J] for k > 1), so the same
  // seed gives the same noise on either path. The gradient is that of TrainingLoss(model, x, k).total: the mean over
  // the batch of recon + beta * KL (k = 1), or of the IWAE loss -log mean_i w_i (k > 1, decoding k * B rows). Without
  // an optimizer, overwrites every parameter's grad with it; with one, makes the optimizer's step with it and updates
  // `average`. Returns this batch's loss (for k > 1: total is the IWAE loss, recon the mean over the samples, kl the
  // closed-form KL).
  StepLoss Run(const at::Tensor& x, at::Generator& generator, const Average& average = {});

  // Elements of the largest weight-gradient block a fused step computes at once (default kGradientBlock). Any value
  // >= 1 gives the same update up to BLAS's summation order; tests use small ones to exercise the blocking.
  void set_gradient_block(int64_t elements);
  static constexpr int64_t kGradientBlock = int64_t{1} << 18;  // 1 MiB of float32: stays in cache for the update

 private:
  struct Layer {
    at::Tensor weight;  // [out, in]
    at::Tensor bias;    // [out]

    at::Tensor grad_weight;  // undefined when fused
    at::Tensor grad_bias;    // fused: a work buffer, not the parameter's grad
    size_t index = 0;        // of the weight among the model's parameters; the bias is index + 1
  };
  void EnsureCapacity(int64_t batch);
  // k > 1: from the encoder's output [B, 2J] through the k samples, the decoder and the IWAE loss back to
  // enc_out, which it overwrites with d loss / d(mu | logvar).
  StepLoss IwaeLatentAndDecoder(const at::Tensor& x, at::Tensor& enc_out, at::Generator& generator);
  // Through `layers` (hidden ones followed by the activation) from `input` ([B, in]); writes the activations into
  // rows [0, B) of `hidden` and the last layer's output into `out`. Returns each layer's input.
  std::vector<at::Tensor> Forward(const std::vector<Layer>& layers, std::vector<at::Tensor>& hidden,
                                  const at::Tensor& input, at::Tensor& out) const;
  // Back through `layers` given d loss / d out: writes every weight's and bias's grad (fused: makes their optimizer
  // step instead), the hidden activations' gradients into `hidden_grad`, and d loss / d input into `input_grad` when
  // it is not null.
  void Backward(std::vector<Layer>& layers, const std::vector<at::Tensor>& inputs, std::vector<at::Tensor>& hidden_grad,
                const at::Tensor& out_grad, at::Tensor* input_grad);
  // Fused: the optimizer's step for `layer`'s weight and bias from d loss / d out `dy` and the layer's input.
  void UpdateLayer(Layer& layer, const at::Tensor& dy, const at::Tensor& input);

  VaeOptions options_;
  torch::optim::Adam* optimizer_ = nullptr;  // fused when not null
  Average average_{};                        // of the Run() in progress
  int64_t gradient_block_ = 0;               // see set_gradient_block
  at::Tensor grad_block_;                    // fused: one block of a weight gradient

  int64_t iw_samples_ = 1;      // k; the decoder-side buffers hold k rows per image
  std::vector<Layer> encoder_;  // D -> h_1 -> ... -> 2J
  std::vector<Layer> decoder_;  // J -> h_n -> ... -> D

  // Work buffers for `capacity_` rows; a batch of B uses rows [0, B).
  int64_t capacity_ = 0;
  std::vector<at::Tensor> enc_hidden_;       // activations after each encoder hidden layer
  std::vector<at::Tensor> dec_hidden_;       // activations after each decoder hidden layer
  std::vector<at::Tensor> enc_hidden_grad_;  // gradients with respect to them
  std::vector<at::Tensor> dec_hidden_grad_;
  at::Tensor enc_out_;  // [B, 2J] mu | logvar, then their gradients
  at::Tensor z_;        // [B, J]
  at::Tensor z_grad_;   // [B, J]
  at::Tensor sigma_;    // [B, J]
  at::Tensor logits_;   // [B, D], then d loss / d logits
  std::vector<float> row_recon_, row_kl_;
  std::vector<float> row_scale_;   // k > 1: [k * B] normalised importance weight / B of each sample
  std::vector<double> row_log_w_;  // k > 1: [k * B] log p(z) - log q(z|x), then log w
};

namespace internal {
// Exposed for tests. One row block of the fused Bernoulli loss: for each of `rows` rows of `cols` logits and targets,
// recon[r] = sum_i softplus(l_i) - x_i l_i, and l_i is overwritten with scale * (sigmoid(l_i) - x_i).
void BernoulliLossAndGrad(float* logits, const float* x, int64_t rows, int64_t cols, float scale, float* recon);
}  // namespace internal

}  // namespace vae

#endif  // VAE_MODEL_MLP_STEP_H_
