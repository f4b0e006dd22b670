// Helpers for the server test suites: small seeded models and images.
#ifndef VAE_TESTS_SERVER_SERVER_TEST_UTIL_H_
#define VAE_TESTS_SERVER_SERVER_TEST_UTIL_H_

#include <ATen/ATen.h>

#include <memory>

#include "model/options.h"
#include "model/vae.h"
#include "server/snapshot.h"

namespace vae::testing {

// 1x28x28 -> 32 -> J = 4, Bernoulli: MNIST-shaped, small enough that every test builds it in microseconds.
inline VaeOptions TinyOptions() {
  VaeOptions o;
  o.preset = "custom";
  o.hidden = {32};
  o.latent_dim = 4;
  return o;
}

// A published-style snapshot of a model with seeded random weights.
inline std::shared_ptr<server::Snapshot> TinySnapshot(uint64_t seed = 3, VaeOptions options = TinyOptions()) {
  return server::SnapshotOfModel(server::NewSeededVae(options, seed), at::kCPU);
}

// `n` images of shape [n, C, H, W] with values uniform in [0, 1), from a generator seeded with `seed`.
inline at::Tensor RandomImages(int64_t n, uint64_t seed, const VaeOptions& o = TinyOptions()) {
  return at::rand({n, o.channels, o.height, o.width}, MakeGenerator(seed));
}

}  // namespace vae::testing

#endif  // VAE_TESTS_SERVER_SERVER_TEST_UTIL_H_
