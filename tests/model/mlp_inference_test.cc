// The BLAS-only MLP inference path against the module's own forward, and its element-wise functions against libm.
#include "model/mlp_inference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <thread>
#include <vector>

#include "model/fast_math.h"

namespace vae {
namespace {

TEST(FastMathTest, SigmoidAndTanhMatchDoublePrecision) {
  double worst_sigmoid = 0, worst_tanh = 0;
  for (int i = -200000; i <= 200000; ++i) {
    const float x = static_cast<float>(i) * 5e-4f;  // -100 .. 100
    const double xd = x;
    worst_sigmoid = std::max(worst_sigmoid, std::abs(internal::Sigmoid(x) - 1.0 / (1.0 + std::exp(-xd))));
    worst_tanh = std::max(worst_tanh, std::abs(internal::Tanh(x) - std::tanh(xd)));
  }
  EXPECT_LT(worst_sigmoid, 1.5e-7);
  EXPECT_LT(worst_tanh, 2.5e-7);
  EXPECT_EQ(internal::Sigmoid(-1000.0f), internal::Sigmoid(-1000.0f));  // clamped, not NaN
  EXPECT_LT(internal::Sigmoid(-1000.0f), 1e-37f);
  EXPECT_EQ(internal::Sigmoid(1000.0f), 1.0f);
}

TEST(MlpInferenceTest, SupportsMlpsOnTheCpuOnly) {
  EXPECT_TRUE(MlpInference::Supports(Vae(*Preset("mnist"))));
  EXPECT_TRUE(MlpInference::Supports(Vae(*Preset("fashion"))));
  EXPECT_FALSE(MlpInference::Supports(Vae(*Preset("conv"))));
  EXPECT_FALSE(MlpInference::Supports(Vae(nullptr)));
  Vae doubled(*Preset("mnist"));
  doubled->to(torch::kFloat64);
  EXPECT_FALSE(MlpInference::Supports(doubled));
}

struct InferCase {
  const char* name;
  VaeOptions options;
};
void PrintTo(const InferCase& c, std::ostream* os) { *os << c.name; }

VaeOptions Rgb(Likelihood likelihood) {
  VaeOptions o;
  o.preset = "custom";
  o.channels = 3;
  o.height = 6;
  o.width = 5;
  o.hidden = {40, 24};
  o.latent_dim = 7;
  o.likelihood = likelihood;
  return o;
}

class MlpInferenceMatchesModule : public ::testing::TestWithParam<InferCase> {};

TEST_P(MlpInferenceMatchesModule, EncodeAndDecodeMean) {
  torch::manual_seed(11);
  Vae model(GetParam().options);
  model->eval();
  {
    // Larger weights than the initialisation gives, so activations and sigmoids leave their linear range.
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.mul_(3.0);
  }
  const MlpInference fast(model);
  const auto& o = model->options();
  ASSERT_EQ(fast.input_dim(), o.input_dim());
  ASSERT_EQ(fast.latent_dim(), o.latent_dim);
  for (int64_t rows : {1, 5, 63}) {
    SCOPED_TRACE(rows);
    torch::NoGradGuard no_grad;
    const auto x = torch::rand({rows, o.channels, o.height, o.width});
    auto [mu_ref, logvar_ref] = model->encode(x);
    const auto sigma_ref = torch::exp(0.5 * logvar_ref);
    auto mu = torch::full({rows, o.latent_dim}, std::nanf(""));
    auto sigma = torch::full({rows, o.latent_dim}, std::nanf(""));
    fast.Encode(x.data_ptr<float>(), rows, mu.data_ptr<float>(), sigma.data_ptr<float>());
    EXPECT_TRUE(torch::allclose(mu, mu_ref, 1e-5, 1e-5)) << (mu - mu_ref).abs().max();
    EXPECT_TRUE(torch::allclose(sigma, sigma_ref, 1e-5, 1e-6)) << (sigma - sigma_ref).abs().max();

    const auto z = 3.0 * torch::randn({rows, o.latent_dim});
    const auto images_ref = model->mean_image(model->decode(z));
    auto images = torch::full({rows, o.channels, o.height, o.width}, std::nanf(""));
    fast.DecodeMean(z.data_ptr<float>(), rows, images.data_ptr<float>());
    EXPECT_TRUE(torch::allclose(images, images_ref, 1e-5, 1e-6)) << (images - images_ref).abs().max();
    // The decoded means are not all in a sigmoid's flat tails: the comparison above tests something.
    EXPECT_GT(images_ref.std().item<double>(), 0.05);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MlpInferenceMatchesModule,
                         ::testing::Values(InferCase{"mnist_relu_bernoulli", *Preset("mnist")},
                                           InferCase{"aevb_tanh", *Preset("aevb")},
                                           InferCase{"fashion_two_hidden_gaussian_learned", *Preset("fashion")},
                                           InferCase{"rgb_gaussian_fixed", Rgb(Likelihood::kGaussianFixed)},
                                           InferCase{"rgb_bernoulli", Rgb(Likelihood::kBernoulli)}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(MlpInferenceTest, ThreadsGetTheirOwnScratch) {
  torch::manual_seed(3);
  Vae model(*Preset("mnist"));
  model->eval();
  const MlpInference fast(model);
  torch::NoGradGuard no_grad;
  const auto x = torch::rand({8, 1, 28, 28});
  auto expected = torch::empty({8, 20});
  auto unused = torch::empty({8, 20});
  fast.Encode(x.data_ptr<float>(), 8, expected.data_ptr<float>(), unused.data_ptr<float>());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // A thread's BLAS may split the products differently from the main thread's (another OpenMP team size), so
      // across threads the results agree to rounding; within a thread, every call must repeat the first bit for bit.
      auto first = torch::empty({8, 20}), mu = torch::empty({8, 20}), sigma = torch::empty({8, 20});
      fast.Encode(x.data_ptr<float>(), 8, first.data_ptr<float>(), sigma.data_ptr<float>());
      if (!torch::allclose(first, expected, 1e-5, 1e-6)) ++mismatches[t];
      for (int i = 0; i < 50; ++i) {
        fast.Encode(x.data_ptr<float>(), 8, mu.data_ptr<float>(), sigma.data_ptr<float>());
        if (!torch::equal(mu, first)) ++mismatches[t];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace vae
