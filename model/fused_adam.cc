#include "model/fused_adam.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <memory>
#include <string>

namespace vae {
namespace {

using Coefficients = AdamParamUpdate::Coefficients;

// n elements from the given pointers (each already offset to the first). One body for both kernels below, so the
// two compute the same floats.
template <bool kZeroGrad>
inline __attribute__((always_inline)) void UpdateBody(float* __restrict p, float* __restrict g, float* __restrict m,
                                                      float* __restrict v, float* __restrict avg, int64_t n,
                                                      const Coefficients& c) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = g[i];
    // m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    const float mi = c.beta1 * m[i] + c.one_minus_beta1 * grad;
    const float vi = c.beta2 * v[i] + c.one_minus_beta2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    // p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    const float pi = p[i] - c.step_size * mi / (std::sqrt(vi) * c.inv_sqrt_bias_correction2 + c.eps);
    p[i] = pi;
    if constexpr (kZeroGrad) g[i] = 0.0f;
    if (avg != nullptr) avg[i] = c.decay * avg[i] + c.one_minus_decay * pi;
  }
}

// Built for AVX-512, AVX2 and the baseline, picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void UpdateAndZeroGrad(
    float* __restrict p, float* __restrict g, float* __restrict m, float* __restrict v, float* __restrict avg,
    int64_t n, Coefficients c) {
  UpdateBody<true>(p, g, m, v, avg, n, c);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Update(float* __restrict p, const float* __restrict g,
                                                                         float* __restrict m, float* __restrict v,
                                                                         float* __restrict avg, int64_t n,
                                                                         Coefficients c) {
  UpdateBody<false>(p, const_cast<float*>(g), m, v, avg, n, c);  // not written: kZeroGrad is false
}

}  // namespace

AdamParamUpdate::AdamParamUpdate(torch::optim::Adam& optimizer, const torch::Tensor& param,
                                 const torch::Tensor& average, double decay) {
  const torch::optim::AdamOptions* options = nullptr;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      if (p.is_same(param)) options = &static_cast<const torch::optim::AdamOptions&>(group.options());
    }
  }
  TORCH_CHECK(options != nullptr, "AdamParamUpdate: the tensor is not a parameter of the optimizer");
  TORCH_CHECK(options->weight_decay() == 0 && !options->amsgrad(),
              "FusedAdamStep: weight decay and amsgrad unsupported");
  TORCH_CHECK(param.is_contiguous() && param.scalar_type() == at::kFloat && param.device().is_cpu(),
              "FusedAdamStep: needs contiguous float32 CPU parameters");
  // State keyed as torch::optim::Adam keys it, so its save/load see these moments.
  const std::string key = c10::guts::to_string(param.unsafeGetTensorImpl());
  auto& slot = optimizer.state()[key];
  if (!slot) {
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(0);
    state->exp_avg(torch::zeros_like(param, at::MemoryFormat::Preserve));
    state->exp_avg_sq(torch::zeros_like(param, at::MemoryFormat::Preserve));
    slot = std::move(state);
  }
  auto& state = static_cast<torch::optim::AdamParamState&>(*slot);
  state.step(state.step() + 1);
  const double t = static_cast<double>(state.step());
  const double beta1 = std::get<0>(options->betas()), beta2 = std::get<1>(options->betas());
  c_.beta1 = static_cast<float>(beta1);
  c_.beta2 = static_cast<float>(beta2);
  c_.one_minus_beta1 = static_cast<float>(1 - beta1);
  c_.one_minus_beta2 = static_cast<float>(1 - beta2);
  c_.inv_sqrt_bias_correction2 = static_cast<float>(1 / std::sqrt(1 - std::pow(beta2, t)));
  c_.step_size = static_cast<float>(options->lr() / (1 - std::pow(beta1, t)));
  c_.eps = static_cast<float>(options->eps());
  c_.decay = static_cast<float>(decay);
  c_.one_minus_decay = static_cast<float>(1 - decay);
  if (average.defined()) {
    TORCH_CHECK(average.sizes() == param.sizes() && average.is_contiguous() && average.scalar_type() == at::kFloat,
                "FusedAdamStep: the average does not match the parameters");
    avg_ = average.data_ptr<float>();
  }
  p_ = param.data_ptr<float>();
  m_ = state.exp_avg().data_ptr<float>();
  v_ = state.exp_avg_sq().data_ptr<float>();
  numel_ = param.numel();
}

void AdamParamUpdate::Apply(int64_t offset, const float* grad, int64_t n) const {
  TORCH_CHECK(offset >= 0 && n >= 0 && offset + n <= numel_, "AdamParamUpdate: elements out of range");
  Update(p_ + offset, grad, m_ + offset, v_ + offset, avg_ != nullptr ? avg_ + offset : nullptr, n, c_);
}

void AdamParamUpdate::ApplyAndZeroGrad(int64_t offset, float* grad, int64_t n) const {
  UpdateAndZeroGrad(p_ + offset, grad, m_ + offset, v_ + offset, avg_ != nullptr ? avg_ + offset : nullptr, n, c_);
}

void FusedAdamStep(torch::optim::Adam& optimizer, const std::vector<torch::Tensor>& average, double decay) {
  torch::NoGradGuard no_grad;
  size_t index = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& param : group.params()) {
      const size_t i = index++;
      auto& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(grad.is_contiguous() && grad.sizes() == param.sizes(), "FusedAdamStep: needs contiguous gradients");
      TORCH_CHECK(average.empty() || i < average.size(), "FusedAdamStep: the average does not match the parameters");
      const AdamParamUpdate update(optimizer, param, average.empty() ? torch::Tensor() : average[i], decay);
      float* g = grad.data_ptr<float>();
      at::parallel_for(0, param.numel(), 1 << 15,
                       [&](int64_t begin, int64_t end) { update.ApplyAndZeroGrad(begin, g + begin, end - begin); });
    }
  }
}

}  // namespace vae
