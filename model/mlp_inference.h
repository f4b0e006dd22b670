// Inference of an MLP VAE on the CPU for small batches, straight through BLAS: the encoder's (mu, sigma) and the
// decoder's mean image written into caller buffers, with no ATen dispatch, no tensor allocation and no autograd
// bookkeeping on the way.
//
// Why: a served Encode of one MNIST image is ~15 us of matrix-vector work, and the module's forward through ATen
// (reshape, two addmm, relu, chunk, exp, two output copies: a dozen dispatcher trips and allocations) added another
// 10-15 us to it in-process and more in a server, where every request finds the dispatcher's code and data cold.
// Large batches are dominated by the matrix products either way and stay on the module's own forward.
//
// Computes what VaeImpl::encode (+ sigma = exp(0.5 log sigma^2)) and VaeImpl::mean_image(decode(z)) compute: the same
// sgemm calls on the same weights, with the element-wise functions from model/fast_math.h (~1 ulp from ATen's);
// tests/model/mlp_inference_test.cc compares them for every likelihood and activation.
//
// Supports: Architecture::kMlp, any likelihood, hidden widths and activation, float32 parameters on the CPU.
// Thread-safety: const after construction; any number of threads may call it at once (scratch space is per thread).
// BLAS threads: whatever the calling thread's OpenMP setting allows (the server limits it per call).
#ifndef VAE_MODEL_MLP_INFERENCE_H_
#define VAE_MODEL_MLP_INFERENCE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "model/vae.h"

namespace vae {

class MlpInference {
 public:
  // Whether `model` (its options and the device of its parameters) can be run by this class.
  static bool Supports(const Vae& model);

  // Keeps handles on `model`'s parameters (shares their storage, copies nothing): the weights must not change while
  // this object is used, which holds for a served snapshot. Requires Supports(model).
  explicit MlpInference(const Vae& model);

  // x: `rows` images of input_dim() floats each, row-major. Writes mu and sigma, `rows` x latent_dim() each.
  void Encode(const float* x, int64_t rows, float* mu, float* sigma) const;

  // z: `rows` codes of latent_dim() floats. Writes the decoder's mean image (in [0, 1]), `rows` x input_dim().
  void DecodeMean(const float* z, int64_t rows, float* images) const;

  int64_t input_dim() const { return options_.input_dim(); }
  int64_t latent_dim() const { return options_.latent_dim; }

 private:
  struct Layer {
    at::Tensor weight;  // [out, in], contiguous
    at::Tensor bias;    // [out]
    int64_t in = 0, out = 0;
  };
  // y[rows, out] = x[rows, in] W^T + b, for the first `out` outputs of `layer` (a prefix of its rows of W).
  static void Affine(const Layer& layer, int64_t out, const float* x, int64_t rows, float* y);
  // Runs the hidden layers of `layers` (all but the last) with the activation; returns the last one's input.
  const float* Hidden(const std::vector<Layer>& layers, const float* x, int64_t rows) const;

  VaeOptions options_;
  int64_t widest_ = 0;          // the widest hidden layer
  std::vector<Layer> encoder_;  // D -> h_1 -> ... -> 2J
  std::vector<Layer> decoder_;  // J -> h_n -> ... -> D (x2 for the learned-variance Gaussian)
};

}  // namespace vae

#endif  // VAE_MODEL_MLP_INFERENCE_H_
