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

}  // namespace vae

#endif  // VAE_MODEL_FUSED_ADAM_H_
