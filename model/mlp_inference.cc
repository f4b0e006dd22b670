#include "model/mlp_inference.h"

#include <c10/util/Exception.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "model/fast_math.h"

namespace vae {
namespace {

// Per-thread work space, grown on demand and kept: a server thread reuses it for every request it runs. Sized by
// the hidden layers and the encoder's output, never by the images.
struct Scratch {
  std::vector<float> a, b, out;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

float* Sized(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void ReluInPlace(float* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] > 0.0f ? v[i] : 0.0f;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void TanhInPlace(float* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = internal::Tanh(v[i]);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void SigmoidInPlace(float* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = internal::Sigmoid(v[i]);
}

}  // namespace

bool MlpInference::Supports(const Vae& model) {
  if (model.is_empty() || model->options().architecture != Architecture::kMlp) return false;
  for (const auto& p : model->parameters()) {
    if (!p.device().is_cpu() || p.scalar_type() != at::kFloat) return false;
  }
  return true;
}

MlpInference::MlpInference(const Vae& model) : options_(model->options()) {
  TORCH_CHECK(Supports(model), "MlpInference: not an MLP with float32 parameters on the CPU");
  auto params = model->parameters();
  const size_t per_side = options_.hidden.size() + 1;
  TORCH_CHECK(params.size() == 4 * per_side, "MlpInference: expected ", 4 * per_side, " parameters, the model has ",
              params.size());
  for (size_t i = 0; i < 2 * per_side; ++i) {
    Layer layer;
    layer.weight = params[2 * i].detach().contiguous();
    layer.bias = params[2 * i + 1].detach().contiguous();
    TORCH_CHECK(layer.weight.dim() == 2 && layer.bias.dim() == 1 && layer.weight.size(0) == layer.bias.size(0),
                "MlpInference: parameter ", 2 * i, " is not a Linear layer's weight");
    layer.out = layer.weight.size(0);
    layer.in = layer.weight.size(1);
    (i < per_side ? encoder_ : decoder_).push_back(std::move(layer));
  }
  const int64_t out_channels = options_.likelihood == Likelihood::kGaussianLearned ? 2 : 1;
  TORCH_CHECK(encoder_.front().in == input_dim() && encoder_.back().out == 2 * latent_dim() &&
                  decoder_.front().in == latent_dim() && decoder_.back().out == out_channels * input_dim(),
              "MlpInference: layer shapes do not match the options");
  for (int64_t h : options_.hidden) widest_ = std::max(widest_, h);
}

void MlpInference::Affine(const Layer& layer, int64_t out, const float* x, int64_t rows, float* y) {
  for (int64_t r = 0; r < rows; ++r) std::copy_n(layer.bias.data_ptr<float>(), out, y + r * out);
  if (rows == 1) {
    // One row: y = W x + y as a matrix-vector product. sgemm would first pack (copy) all of W into its panel layout,
    // on every call: `perf record` of vae-server under a b=1 Encode loop had OpenBLAS's sgemm_incopy at 23 % of the
    // server's samples, more than the multiply itself (BENCHMARKS.md §12).
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(layer.in), 1.0f,
                layer.weight.data_ptr<float>(), static_cast<int>(layer.in), x, 1, 1.0f, y, 1);
    return;
  }
  // Row-major y = x W^T + y: the call ATen's addmm makes for a Linear layer (sgemm "T","N" on the column-major view).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
              static_cast<int>(layer.in), 1.0f, x, static_cast<int>(layer.in), layer.weight.data_ptr<float>(),
              static_cast<int>(layer.in), 1.0f, y, static_cast<int>(out));
}

const float* MlpInference::Hidden(const std::vector<Layer>& layers, const float* x, int64_t rows) const {
  Scratch& s = ThreadScratch();
  float* bufs[2] = {Sized(s.a, rows * widest_), Sized(s.b, rows * widest_)};
  const float* in = x;
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    float* y = bufs[i % 2];
    Affine(layers[i], layers[i].out, in, rows, y);
    if (options_.activation == Activation::kTanh) {
      TanhInPlace(y, rows * layers[i].out);
    } else {
      ReluInPlace(y, rows * layers[i].out);
    }
    in = y;
  }
  return in;
}

void MlpInference::Encode(const float* x, int64_t rows, float* mu, float* sigma) const {
  const float* h = Hidden(encoder_, x, rows);
  const int64_t j = latent_dim();
  float* out = Sized(ThreadScratch().out, rows * 2 * j);
  Affine(encoder_.back(), 2 * j, h, rows, out);
  for (int64_t r = 0; r < rows; ++r) {
    const float* o = out + r * 2 * j;  // mu | log sigma^2
    std::copy_n(o, j, mu + r * j);
    for (int64_t k = 0; k < j; ++k) sigma[r * j + k] = std::exp(0.5f * o[j + k]);
  }
}

void MlpInference::DecodeMean(const float* z, int64_t rows, float* images) const {
  const float* h = Hidden(decoder_, z, rows);
  const int64_t d = input_dim();
  // Bernoulli: sigmoid of the logits. Gaussian: sigmoid of the mean's pre-activation, which is the first C*H*W
  // outputs (the learned variance's outputs follow them and are not needed for the mean). Computed in `images`
  // itself: no scratch the size of a batch of images (29 MB for 63 rows of the seed preset).
  Affine(decoder_.back(), d, h, rows, images);
  SigmoidInPlace(images, rows * d);
}

}  // namespace vae
