// One pass per parameter for the optimizer step: Adam's update (Kingma & Ba 2015, exactly torch::optim::Adam's
// formula, weight decay and amsgrad not supported), the moving average of the weights, and zeroing the gradient
// for the next backward. torch::optim::Adam does this in ~8 separate passes over each tensor and the average in
// another; for the mnist preset those passes cost about as much as the matrix products (see BENCHMARKS.md).
//
// The moments live in `optimizer`'s own state (AdamParamState, created on first use exactly as Adam::step does), so
// Adam::save/load, checkpoints and resume work unchanged. Called from the training thread only.
#ifndef VAE_MODEL_FUSED_ADAM_H_
#define VAE_MODEL_FUSED_ADAM_H_

#include <torch/optim/adam.h>

#include <vector>

namespace vae {

// Updates every parameter of `optimizer` with its current gradient (parameters without a gradient are skipped),
// then, when `average` is not empty (same order and shapes as the optimizer's parameters), average <- decay *
// average + (1 - decay) * parameter. Leaves each gradient zeroed.
void FusedAdamStep(torch::optim::Adam& optimizer, const std::vector<torch::Tensor>& average, double decay);

// The same step for one parameter, applied piece by piece as its gradient becomes known, so that no gradient the
// size of the parameter is ever kept (model/mlp_step.h computes a layer's weight gradient a block at a time). The
// constructor starts the parameter's step as FusedAdamStep does (moments created on first use, step count + 1);
// Apply then updates any elements, each exactly once per step, with FusedAdamStep's arithmetic: a parameter updated
// in pieces ends bitwise equal to one updated by FusedAdamStep with the same gradient. Holds pointers into the
// tensors: use it within the step, while they live. Not thread-safe; Apply may be called from inside a parallel
// region (it does not fork).
class AdamParamUpdate {
 public:
  // `param` is one of `optimizer`'s parameters (contiguous float32 on the CPU). `average`: its moving average (same
  // shape, contiguous), or an undefined tensor for none.
  AdamParamUpdate(torch::optim::Adam& optimizer, const torch::Tensor& param, const torch::Tensor& average,
                  double decay);

  // Elements [offset, offset + n) of the parameter, flat in row-major order, with `grad` their n gradient values.
  void Apply(int64_t offset, const float* grad, int64_t n) const;

  // Coefficients of this step; public for the kernels in fused_adam.cc.
  struct Coefficients {
    float beta1, beta2, one_minus_beta1, one_minus_beta2;
    float inv_sqrt_bias_correction2;  // 1 / sqrt(1 - beta2^t)
    float step_size;                  // lr / (1 - beta1^t)
    float eps;
    float decay, one_minus_decay;  // moving average
  };

 private:
  float* p_ = nullptr;
  float* m_ = nullptr;
  float* v_ = nullptr;
  float* avg_ = nullptr;  // null: no average
  int64_t numel_ = 0;
  Coefficients c_{};

  friend void FusedAdamStep(torch::optim::Adam&, const std::vector<torch::Tensor>&, double);
  // Apply, and zeroes grad[0, n) in the same pass (FusedAdamStep's full-size gradients).
  void ApplyAndZeroGrad(int64_t offset, float* grad, int64_t n) const;
};

}  // namespace vae

#endif  // VAE_MODEL_FUSED_ADAM_H_
