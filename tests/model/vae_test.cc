#include "model/vae.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/loss.h"
#include "model/runtime.h"

namespace vae {
namespace {

class VaeTest : public ::testing::Test {
 protected:
  // As every program here does (model/runtime.h), the thread count is settled before the first tensor op. Left
  // unset, LibTorch 1.13 runs the first convolution with OpenMP's default team and initialises its own count (1)
  // only at its first parallel_for, so two identical calls of the conv preset differ in the last bit (4.5e-8 on a
  // 2-core EPYC): the bitwise-determinism test below then fails.
  static void SetUpTestSuite() { ConfigureThreads(2); }
  void SetUp() override { torch::manual_seed(0); }
};

TEST_F(VaeTest, ForwardShapesForEveryPreset) {
  for (const auto& name : PresetNames()) {
    SCOPED_TRACE(name);
    auto o = *Preset(name);
    Vae model(o);
    c10::InferenceMode guard;
    auto x = torch::rand({2, o.channels, o.height, o.width});
    auto out = model->forward(x);
    EXPECT_EQ(out.mu.sizes(), (std::vector<int64_t>{2, o.latent_dim}));
    EXPECT_EQ(out.logvar.sizes(), (std::vector<int64_t>{2, o.latent_dim}));
    EXPECT_EQ(out.z.sizes(), (std::vector<int64_t>{2, o.latent_dim}));
    EXPECT_EQ(out.decoded.param.sizes(), (std::vector<int64_t>{2, o.channels, o.height, o.width}));
    auto img = model->mean_image(out.decoded);
    EXPECT_GE(img.min().item<float>(), 0.0f);
    EXPECT_LE(img.max().item<float>(), 1.0f);
    if (o.likelihood != Likelihood::kBernoulli) {
      EXPECT_EQ(out.decoded.logvar.sizes(), out.decoded.param.sizes());
    }
    auto loss = ComputeLoss(o, out, x);
    EXPECT_TRUE(std::isfinite(loss.total.item<double>()));
  }
}

TEST_F(VaeTest, SeedPresetHasTheSourcesParameterCount) {
  // Encoder 116412-1164-116-(2x10) plus the mirrored decoder 10-116-1164-116412, weights and biases.
  const int64_t d = 116412, h1 = 1164, h2 = 116, j = 10;
  const int64_t enc = d * h1 + h1 + h1 * h2 + h2 + h2 * 2 * j + 2 * j;
  const int64_t dec = j * h2 + h2 + h2 * h1 + h1 + h1 * d + d;
  Vae model(*Preset("seed"));
  EXPECT_EQ(model->parameter_count(), enc + dec);
  EXPECT_NEAR(static_cast<double>(enc + dec), 271.4e6, 0.1e6);
}

TEST_F(VaeTest, MnistPresetMatchesPytorchExamplesShapes) {
  Vae model(*Preset("mnist"));
  // 784*400+400 + 400*40+40 (encoder) + 20*400+400 + 400*784+784 (decoder)
  EXPECT_EQ(model->parameter_count(), 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784);
}

TEST_F(VaeTest, GradientsReachTheEncoderThroughZ) {
  // Only the reconstruction term: it depends on the encoder solely through z = mu + sigma * eps.
  auto o = *Preset("mnist");
  Vae model(o);
  auto x = torch::rand({8, 1, 28, 28});
  auto out = model->forward(x);
  ReconstructionNll(o, out.decoded, x).sum().backward();
  auto first = model->named_parameters()["encoder.0.weight"];
  ASSERT_TRUE(first.grad().defined());
  EXPECT_GT(first.grad().abs().sum().item<double>(), 0.0);
  // and through sigma: the log-variance half of the encoder's output layer gets gradient too
  auto head = model->named_parameters()["encoder.2.weight"];
  EXPECT_GT(head.grad().slice(0, o.latent_dim).abs().sum().item<double>(), 0.0);
}

TEST_F(VaeTest, SameGeneratorSeedGivesBitwiseSameSamples) {
  Vae model(*Preset("conv"));
  c10::InferenceMode guard;
  auto x = torch::rand({4, 1, 28, 28});
  auto a = model->forward(x, MakeGenerator(7));
  auto b = model->forward(x, MakeGenerator(7));
  auto c = model->forward(x, MakeGenerator(8));
  EXPECT_TRUE(torch::equal(a.z, b.z));
  EXPECT_FALSE(torch::equal(a.z, c.z));
}

TEST_F(VaeTest, McSamplesGiveLTimesNRows) {
  auto o = *Preset("mnist");
  o.mc_samples = 5;
  Vae model(o);
  c10::InferenceMode guard;
  auto x = torch::rand({3, 1, 28, 28});
  auto out = model->forward(x);
  EXPECT_EQ(out.z.size(0), 15);
  auto loss = ComputeLoss(o, out, x);
  EXPECT_EQ(loss.recon_per_image.size(0), 3);
}

TEST_F(VaeTest, CloneIsADeepCopy) {
  Vae model(*Preset("mnist"));
  Vae copy = CloneVae(model, torch::kCPU);
  auto p = model->named_parameters()["decoder.0.bias"];
  auto q = copy->named_parameters()["decoder.0.bias"];
  EXPECT_TRUE(torch::equal(p, q));
  {
    torch::NoGradGuard g;
    p.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(p, q));
}

}  // namespace
}  // namespace vae
