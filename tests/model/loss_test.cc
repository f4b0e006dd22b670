#include "model/loss.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <tuple>

namespace vae {
namespace {

constexpr double kLog2Pi = 1.8378770664093453;

class LossTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(1234); }
};

TEST_F(LossTest, KlOfStandardNormalToItselfIsZero) {
  auto mu = torch::zeros({3, 10});
  auto logvar = torch::zeros({3, 10});  // sigma = 1
  auto kl = KlDivergence(mu, logvar);
  EXPECT_EQ(kl.sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(kl.abs().max().item<double>(), 0.0);
}

TEST_F(LossTest, ClosedFormKlAgreesWithMonteCarloWithinOnePercent) {
  // KL(q || p) = E_q[log q(z) - log p(z)], estimated from 200k samples of z ~ q.
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto mu = torch::tensor({0.5, -1.0, 2.0, 0.3}, opts).unsqueeze(0);
  auto sigma = torch::tensor({0.8, 1.5, 0.5, 1.2}, opts).unsqueeze(0);
  auto logvar = (sigma * sigma).log();
  const double closed = KlDivergence(mu, logvar).item<double>();
  auto z = mu + sigma * torch::randn({200000, 4}, opts);
  auto log_q = (-0.5 * kLog2Pi - sigma.log() - (z - mu).pow(2) / (2 * sigma * sigma)).sum(1);
  auto log_p = (-0.5 * kLog2Pi - 0.5 * z.pow(2)).sum(1);
  const double mc = (log_q - log_p).mean().item<double>();
  // closed form: 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1) = 3.6157...
  EXPECT_NEAR(closed,
              0.5 * (0.25 + 1 + 4 + 0.09 + 0.64 + 2.25 + 0.25 + 1.44 - std::log(0.64) - std::log(2.25) -
                     std::log(0.25) - std::log(1.44) - 4),
              1e-12);
  EXPECT_NEAR(mc, closed, 0.01 * closed);
}

TEST_F(LossTest, BceWithLogitsEqualsTheSourcesFormula) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto p = torch::rand({4, 1, 5, 5}, opts) * 0.9 + 0.05;  // moderate p in [0.05, 0.95]
  auto x = torch::rand({4, 1, 5, 5}, opts);
  auto logits = torch::log(p) - torch::log1p(-p);
  auto ours = BernoulliNll(logits, x);
  auto source = -(x * p.log() + (1 - x) * (1 - p).log()).reshape({4, -1}).sum(1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(ours[i].item<double>(), source[i].item<double>(), 1e-5 * std::abs(source[i].item<double>()));
  }
}

TEST_F(LossTest, BceWithLogitsStaysFiniteAtSaturatedLogits) {
  // log(p + 1e-8) in the source caps the loss at 18.4 and loses precision; the logits form is exact:
  // x = 1 with logit -100 costs softplus(100) = 100 nats.
  auto logits = torch::tensor({-100.0f, 100.0f}).view({1, 2, 1, 1});
  auto x = torch::tensor({1.0f, 1.0f}).view({1, 2, 1, 1});
  EXPECT_NEAR(BernoulliNll(logits, x).item<double>(), 100.0, 1e-3);
}

TEST_F(LossTest, GaussianNllEqualsTheSourcesFormulaPlusTheNormaliser) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto mean = torch::rand({3, 1, 4, 4}, opts);
  auto logvar = torch::randn({3, 1, 4, 4}, opts);
  auto x = torch::rand({3, 1, 4, 4}, opts);
  auto ours = GaussianNll(mean, logvar, x);
  // Source: sum(0.5 log sigma'^2 + (x - mu')^2 / (2 sigma'^2)); ours adds the density's 0.5 log(2 pi) per pixel.
  auto source = (0.5 * logvar + (x - mean).pow(2) / (2 * logvar.exp())).reshape({3, -1}).sum(1);
  auto diff = ours - source;
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(diff[i].item<double>(), 16 * 0.5 * kLog2Pi, 1e-9);

  // sigma' = 1: 0.5 * squared error + const.
  auto unit = GaussianNll(mean, torch::zeros_like(logvar), x);
  auto half_se = 0.5 * (x - mean).pow(2).reshape({3, -1}).sum(1);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR((unit - half_se)[i].item<double>(), 16 * 0.5 * kLog2Pi, 1e-9);
}

TEST_F(LossTest, ComputeLossAddsBetaTimesKl) {
  auto o = *Preset("mnist");
  o.beta = 4.0;
  Vae model(o);
  auto x = torch::rand({5, 1, 28, 28});
  auto out = model->forward(x);
  auto l = ComputeLoss(o, out, x);
  EXPECT_TRUE(torch::allclose(l.total_per_image, l.recon_per_image + 4.0 * l.kl_per_image));
  EXPECT_NEAR(l.total.item<double>(), l.total_per_image.mean().item<double>(), 1e-4);
  EXPECT_EQ(l.kl_per_image.sizes(), (std::vector<int64_t>{5}));
}

class IwTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(99);
    model_ = Vae(*Preset("mnist"));
    x_ = torch::rand({256, 1, 28, 28}).gt(0.7).to(torch::kFloat32);
  }
  Vae model_{nullptr};
  torch::Tensor x_;
};

TEST_F(IwTest, WithOneSampleItIsTheSingleSampleElbo) {
  c10::NoGradGuard no_grad;
  auto iw = ImportanceWeightedLogLikelihood(model_, x_, 1, MakeGenerator(5));
  // The same eps, drawn through forward(): ELBO_1 = log p(x|z) + log p(z) - log q(z|x) at that z.
  auto out = model_->forward(x_, MakeGenerator(5));
  auto sigma = torch::exp(0.5 * out.logvar);
  auto log_q = (-0.5 * kLog2Pi - sigma.log() - (out.z - out.mu).pow(2) / (2 * sigma * sigma)).sum(1);
  auto log_p = (-0.5 * kLog2Pi - 0.5 * out.z.pow(2)).sum(1);
  auto elbo1 = -BernoulliNll(out.decoded.param, x_) + log_p - log_q;
  EXPECT_TRUE(torch::allclose(iw.to(torch::kFloat32), elbo1, /*rtol=*/1e-5, /*atol=*/1e-3)) << (iw - elbo1).abs().max();
}

TEST_F(IwTest, OnAverageItBoundsTheElboAndGrowsWithK) {
  c10::NoGradGuard no_grad;
  auto out = model_->forward(x_);
  const double elbo = -ComputeLoss(model_->options(), out, x_).total.item<double>();  // analytic KL
  const double iw1 = ImportanceWeightedLogLikelihood(model_, x_, 1, MakeGenerator(1)).mean().item<double>();
  const double iw10 = ImportanceWeightedLogLikelihood(model_, x_, 10, MakeGenerator(2)).mean().item<double>();
  const double iw200 = ImportanceWeightedLogLikelihood(model_, x_, 200, MakeGenerator(3), 64).mean().item<double>();
  // E[IW_1] is the ELBO itself; with 256 images its mean sits within a fraction of a nat of it.
  EXPECT_NEAR(iw1, elbo, 0.5);
  EXPECT_GT(iw10, elbo);
  EXPECT_GT(iw200, iw10);
}

TEST_F(IwTest, ChunkingDoesNotChangeTheEstimate) {
  c10::NoGradGuard no_grad;
  auto small = x_.slice(0, 0, 16);
  auto a = ImportanceWeightedLogLikelihood(model_, small, 64, MakeGenerator(11), 64);
  auto b = ImportanceWeightedLogLikelihood(model_, small, 64, MakeGenerator(11), 64);
  EXPECT_TRUE(torch::equal(a, b));
  auto c = ImportanceWeightedLogLikelihood(model_, small, 64, MakeGenerator(11), 16);
  // Different chunking draws eps in a different layout, so only statistical agreement: within 1 nat per image.
  EXPECT_LT((a - c).abs().mean().item<double>(), 1.0);
}

// log-mean-exp takes the maximum out before exp: log-weights of +-1e4 nats (exp over- or underflows in any float
// type) give the exact answer, and one -inf weight is a zero weight.
TEST(LogMeanExpTest, IsStableForLargeMagnitudes) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  // mean(e^a, e^(a + log 3)) = 2 e^a: the answer is a + log 2 whatever a is.
  for (double a : {-1e4, -700.0, 0.0, 700.0, 1e4}) {
    auto log_w = torch::tensor({a, a + std::log(3.0)}, f64).unsqueeze(1);
    EXPECT_NEAR(LogMeanExp(log_w).item<double>(), a + std::log(2.0), 1e-12 * std::max(1.0, std::abs(a))) << a;
  }
  auto f32 = torch::tensor({-1e4f, -1e4f}).unsqueeze(1);
  EXPECT_EQ(LogMeanExp(f32).item<float>(), -1e4f);
  auto with_zero_weight = torch::tensor({0.0, -std::numeric_limits<double>::infinity()}, f64).unsqueeze(1);
  EXPECT_NEAR(LogMeanExp(with_zero_weight).item<double>(), -std::log(2.0), 1e-15);
  // Over dim 0 only: [K, N] -> [N].
  EXPECT_EQ(LogMeanExp(torch::zeros({7, 3})).sizes(), (std::vector<int64_t>{3}));
}

// A tiny model (4x4 binary images, one hidden layer of 8, J = 2) whose weights are scaled up so that the log-weights
// spread over nats and the k-dependence is large.
class TinyIwTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(21);
    VaeOptions o;
    o.height = 4;
    o.width = 4;
    o.hidden = {8};
    o.latent_dim = 2;
    model_ = Vae(o);
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) p.mul_(3.0);
    x_ = torch::rand({4000, 1, 4, 4}).gt(0.5).to(torch::kFloat32);
  }
  torch::Tensor NllPerImage(int64_t k, uint64_t seed) {
    return -ImportanceWeightedLogLikelihood(model_, x_, k, MakeGenerator(seed), /*chunk=*/50);
  }
  Vae model_{nullptr};
  torch::Tensor x_;
};

// E_z[-log w] = E_z[-log p(x|z)] + KL(q || p) = -ELBO, so the k = 1 IW-NLL is the -ELBO (closed-form KL) in
// expectation. Both sides are estimated per image from one sample each, with independent noise, on the same 4000
// images: the per-image differences d_n have mean 0 and their mean has standard error s = std(d) / sqrt(N) (the spread
// between images cancels in d). Fixed seeds make the test deterministic; |mean d| < 4 s would fail by chance with
// probability 6e-5 for a correct estimator, while a wrong one (a dropped or doubled log q or log p(z) term: the KL,
// several nats here) is off by many s.
TEST_F(TinyIwTest, OneSampleIwNllIsTheNegativeElboInExpectation) {
  c10::NoGradGuard no_grad;
  const auto iw1 = NllPerImage(1, 1);
  const auto elbo = ComputeLoss(model_->options(), model_->forward(x_, MakeGenerator(2)), x_);
  const auto d = iw1 - elbo.total_per_image.to(torch::kFloat64);
  const double s = d.std().item<double>() / std::sqrt(static_cast<double>(x_.size(0)));
  EXPECT_LT(std::abs(d.mean().item<double>()), 4 * s)
      << "IW-NLL(k=1) " << iw1.mean().item<double>() << ", -ELBO " << elbo.total.item<double>() << ", s " << s;
  // The bound is tight against the terms it checks: 4 s is well under the KL it would miss.
  EXPECT_LT(4 * s, 0.5 * elbo.kl.item<double>()) << "s " << s << ", KL " << elbo.kl.item<double>();
}

// E[IW-NLL_k] is non-increasing in k (Burda et al. 2015, Theorem 1). With fixed seeds, the mean over 4000 images drops
// from k = 1 to 10 to 100 by far more than the noise: each drop is checked against 4 paired standard errors
// (the per-image differences, same images for both k).
TEST_F(TinyIwTest, IwNllIsNonIncreasingInK) {
  c10::NoGradGuard no_grad;
  const auto nll1 = NllPerImage(1, 11), nll10 = NllPerImage(10, 12), nll100 = NllPerImage(100, 13);
  const double n = static_cast<double>(x_.size(0));
  for (const auto& [more, fewer, name] :
       {std::tuple{nll10, nll1, "k=10 vs k=1"}, std::tuple{nll100, nll10, "k=100 vs k=10"}}) {
    const auto drop = fewer - more;
    const double stderr_drop = drop.std().item<double>() / std::sqrt(n);
    EXPECT_GT(drop.mean().item<double>(), 4 * stderr_drop) << name << ": mean drop " << drop.mean().item<double>();
  }
}

}  // namespace
}  // namespace vae
