#include "model/fused_adam.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <memory>
#include <string>

namespace vae {
namespace {

struct Coefficients {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float inv_sqrt_bias_correction2;  // 1 / sqrt(1 - beta2^t)
  float step_size;                  // lr / (1 - beta1^t)
  float eps;
  float decay, one_minus_decay;  // moving average
};

// One element range. Built for AVX-512, AVX2 and the baseline, picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void UpdateRange(float* __restrict p, float* __restrict g,
                                                                              float* __restrict m, float* __restrict v,
                                                                              float* __restrict avg, int64_t begin,
                                                                              int64_t end, Coefficients c) {
  for (int64_t i = begin; i < end; ++i) {
    const float grad = g[i];
    // m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    const float mi = c.beta1 * m[i] + c.one_minus_beta1 * grad;
    const float vi = c.beta2 * v[i] + c.one_minus_beta2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    // p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    const float pi = p[i] - c.step_size * mi / (std::sqrt(vi) * c.inv_sqrt_bias_correction2 + c.eps);
    p[i] = pi;
    g[i] = 0.0f;
    if (avg != nullptr) avg[i] = c.decay * avg[i] + c.one_minus_decay * pi;
  }
}

}  // namespace

void FusedAdamStep(torch::optim::Adam& optimizer, const std::vector<torch::Tensor>& average, double decay) {
  torch::NoGradGuard no_grad;
  size_t index = 0;
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    TORCH_CHECK(options.weight_decay() == 0 && !options.amsgrad(),
                "FusedAdamStep: weight decay and amsgrad unsupported");
    const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
    for (auto& param : group.params()) {
      const size_t i = index++;
      auto& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(
          param.is_contiguous() && grad.is_contiguous() && param.scalar_type() == at::kFloat && param.device().is_cpu(),
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
      Coefficients c;
      c.beta1 = static_cast<float>(beta1);
      c.beta2 = static_cast<float>(beta2);
      c.one_minus_beta1 = static_cast<float>(1 - beta1);
      c.one_minus_beta2 = static_cast<float>(1 - beta2);
      c.inv_sqrt_bias_correction2 = static_cast<float>(1 / std::sqrt(1 - std::pow(beta2, t)));
      c.step_size = static_cast<float>(options.lr() / (1 - std::pow(beta1, t)));
      c.eps = static_cast<float>(options.eps());
      c.decay = static_cast<float>(decay);
      c.one_minus_decay = static_cast<float>(1 - decay);
      float* avg = nullptr;
      if (!average.empty()) {
        TORCH_CHECK(i < average.size() && average[i].sizes() == param.sizes() && average[i].is_contiguous(),
                    "FusedAdamStep: the average does not match the parameters");
        avg = average[i].data_ptr<float>();
      }
      float* p = param.data_ptr<float>();
      float* g = grad.data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, param.numel(), 1 << 15,
                       [&](int64_t begin, int64_t end) { UpdateRange(p, g, m, v, avg, begin, end, c); });
    }
  }
}

}  // namespace vae
