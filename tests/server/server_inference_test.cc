#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <thread>
#include <vector>

#include "model/loss.h"
#include "model/runtime.h"
#include "server/inference.h"
#include "tests/server/server_test_util.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::RandomImages;
using ::vae::testing::TinySnapshot;

constexpr absl::Time kNoDeadline = absl::InfiniteFuture();

class InferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureThreads(2); }
  std::shared_ptr<Snapshot> model_ = TinySnapshot();
  InferenceEngine engine_{8};
};

TEST_F(InferenceTest, EncodeReturnsTheModelsPosterior) {
  const at::Tensor x = RandomImages(5, 1);
  auto result = engine_.Encode(*model_, x, kNoDeadline);
  ASSERT_TRUE(result.ok()) << result.status();
  auto [mu, logvar] = model_->model->encode(x);
  ASSERT_EQ(result->mu.sizes(), at::IntArrayRef({5, 4}));
  ASSERT_EQ(result->sigma.sizes(), at::IntArrayRef({5, 4}));
  // The same weights on the same input. Small batches of an MLP run through MlpInference: the same sgemm calls as
  // the module's addmm (so mu is bitwise the same) and its own exp (within rounding of ATen's); sigma =
  // exp(0.5 * log sigma^2).
  ASSERT_NE(model_->mlp, nullptr);
  EXPECT_TRUE(at::equal(result->mu, mu));
  EXPECT_TRUE(at::allclose(result->sigma, at::exp(0.5 * logvar), 1e-6, 0.0));
  EXPECT_TRUE(result->mu.is_contiguous());
}

struct BadImages {
  const char* name;
  at::Tensor images;
  const char* message;
};

TEST_F(InferenceTest, EncodeAndReconstructRejectBadImagesWithTheFieldAndExpectedValue) {
  at::Tensor nan = RandomImages(2, 1);
  nan[1][0][3][4] = std::numeric_limits<float>::quiet_NaN();
  at::Tensor inf = RandomImages(1, 1);
  inf[0][0][0][0] = std::numeric_limits<float>::infinity();
  at::Tensor too_bright = RandomImages(1, 1);
  too_bright[0][0][0][2] = 1.5f;
  const std::vector<BadImages> cases = {
      {"rank 3", at::rand({1, 28, 28}), "images.shape [1,28,28] does not match model input [N,1,28,28]"},
      {"channels", at::rand({2, 3, 28, 28}), "images.shape [2,3,28,28] does not match model input [N,1,28,28]"},
      {"size", at::rand({2, 1, 32, 32}), "images.shape [2,1,32,32] does not match model input [N,1,28,28]"},
      {"empty", at::rand({0, 1, 28, 28}), "images is an empty batch (N = 0); expected 1 to 8 items"},
      {"over max_batch", at::rand({9, 1, 28, 28}), "images holds 9 items, over the limit of 8 (--max_batch)"},
      // Flat index 784 + 3 * 28 + 4.
      {"NaN", nan, "images holds a non-finite value (NaN or Inf) at flat index 872; expected finite values"},
      {"Inf", inf, "images holds a non-finite value (NaN or Inf) at flat index 0"},
      {"out of range", too_bright, "images value 1.5 at flat index 2 is outside the expected range [0, 1]"},
      {"dtype", at::zeros({1, 1, 28, 28}, at::kDouble), "images.dtype Double is not supported, expected float32"},
      {"undefined", at::Tensor(), "images is not set"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto encoded = engine_.Encode(*model_, c.images, kNoDeadline);
    EXPECT_EQ(encoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(encoded.status().message(), HasSubstr(std::string("encode: ") + c.message));
    auto reconstructed = engine_.Reconstruct(*model_, c.images, false, 0, kNoDeadline);
    EXPECT_EQ(reconstructed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(reconstructed.status().message(), HasSubstr(std::string("reconstruct: ") + c.message));
  }
}

TEST_F(InferenceTest, APassedDeadlineIsDeadlineExceededBeforeTheModelRuns) {
  const absl::Time past = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(engine_.Encode(*model_, RandomImages(1, 1), past).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(engine_.Decode(*model_, at::zeros({1, 4}), past).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(engine_.Sample(*model_, 1, 1, 1.0, past).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(engine_.Reconstruct(*model_, RandomImages(1, 1), false, 0, past).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(InferenceTest, DecodeReturnsTheMeanImage) {
  const at::Tensor z = at::randn({3, 4}, MakeGenerator(2));
  auto result = engine_.Decode(*model_, z, kNoDeadline);
  ASSERT_TRUE(result.ok()) << result.status();
  // Bernoulli: the mean image is sigmoid(logits), so strictly inside (0, 1); MlpInference's sigmoid is within
  // rounding of ATen's.
  EXPECT_TRUE(at::allclose(result->images, at::sigmoid(model_->model->decode(z).param), 1e-6, 1e-7));
  EXPECT_EQ(result->images.sizes(), at::IntArrayRef({3, 1, 28, 28}));
  EXPECT_GT(result->images.min().item<float>(), 0.0f);
  EXPECT_LT(result->images.max().item<float>(), 1.0f);
}

TEST_F(InferenceTest, SmallAndLargeBatchesAgree) {
  // Under kParallelRows rows an MLP runs through MlpInference, from there on through the module: one image gets the
  // same answer either way.
  const InferenceEngine big(128);
  const int64_t large = InferenceEngine::kParallelRows + 6;
  const at::Tensor x = RandomImages(large, 4);
  const at::Tensor z = at::randn({large, 4}, MakeGenerator(5));
  auto encoded_large = big.Encode(*model_, x, kNoDeadline);
  auto encoded_small = big.Encode(*model_, x.slice(0, 0, 3), kNoDeadline);
  auto decoded_large = big.Decode(*model_, z, kNoDeadline);
  auto decoded_small = big.Decode(*model_, z.slice(0, 0, 3), kNoDeadline);
  ASSERT_TRUE(encoded_large.ok() && encoded_small.ok() && decoded_large.ok() && decoded_small.ok());
  EXPECT_TRUE(at::allclose(encoded_small->mu, encoded_large->mu.slice(0, 0, 3), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(encoded_small->sigma, encoded_large->sigma.slice(0, 0, 3), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(decoded_small->images, decoded_large->images.slice(0, 0, 3), 1e-5, 1e-6));
  EXPECT_GT(decoded_small->images.std().item<double>(), 1e-3);  // not a constant image
}

TEST_F(InferenceTest, DecodeRejectsBadCodes) {
  const std::vector<std::pair<at::Tensor, std::string>> cases = {
      {at::zeros({2, 5}), "decode: z.shape [2,5] does not match the model's latent size [N,4]"},
      {at::zeros({4}), "decode: z.shape [4] does not match the model's latent size [N,4]"},
      {at::zeros({0, 4}), "decode: z is an empty batch (N = 0)"},
      {at::zeros({9, 4}), "decode: z holds 9 items, over the limit of 8"},
      {at::full({1, 4}, std::numeric_limits<float>::infinity()), "decode: z holds a non-finite value"},
      {at::zeros({1, 4}, at::kByte), "decode: z.dtype Byte is not supported, expected float32"},
  };
  for (const auto& [z, message] : cases) {
    SCOPED_TRACE(message);
    auto result = engine_.Decode(*model_, z, kNoDeadline);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(), HasSubstr(message));
  }
}

TEST_F(InferenceTest, SampleWithASeedIsBitwiseRepeatableAndDecodesItsZ) {
  auto a = engine_.Sample(*model_, 6, 42, 1.0, kNoDeadline);
  auto b = engine_.Sample(*model_, 6, 42, 1.0, kNoDeadline);
  auto c = engine_.Sample(*model_, 6, 43, 1.0, kNoDeadline);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->seed, 42u);
  EXPECT_TRUE(at::equal(a->images, b->images));
  EXPECT_TRUE(at::equal(a->z, b->z));
  EXPECT_FALSE(at::equal(a->z, c->z));
  // z is eps ~ N(0, I) from a CPU generator seeded with the seed, and the images are its decoding.
  EXPECT_TRUE(at::equal(a->z, at::randn({6, 4}, MakeGenerator(42))));
  // (Engine outputs are inference tensors: clone before they meet autograd.)
  EXPECT_TRUE(at::equal(a->images, at::sigmoid(model_->model->decode(a->z.clone()).param)));
  // An unset seed is drawn at random, returned, and reproduces the images.
  auto random = engine_.Sample(*model_, 2, std::nullopt, 1.0, kNoDeadline);
  ASSERT_TRUE(random.ok());
  auto again = engine_.Sample(*model_, 2, random->seed, 1.0, kNoDeadline);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal(random->images, again->images));
}

TEST_F(InferenceTest, SampleTemperatureScalesZ) {
  InferenceEngine big(4096);
  auto cold = big.Sample(*model_, 4000, 7, 0.5, kNoDeadline);
  auto hot = big.Sample(*model_, 4000, 7, 2.0, kNoDeadline);
  ASSERT_TRUE(cold.ok() && hot.ok());
  // Same eps, scaled: z_hot = 4 z_cold exactly up to float rounding; 16000 draws give std within 2% of temperature.
  EXPECT_TRUE(at::allclose(hot->z, 4.0 * cold->z, 1e-6, 1e-6));
  EXPECT_NEAR(cold->z.std().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(hot->z.std().item<double>(), 2.0, 0.04);
}

TEST_F(InferenceTest, SampleRejectsBadCountAndTemperature) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::tuple<int64_t, double, std::string>> cases = {
      {0, 1.0, "sample: count is 0, expected 1 to 8 (--max_batch)"},
      {-3, 1.0, "sample: count is -3, expected 1 to 8"},
      {9, 1.0, "sample: count is 9, expected 1 to 8"},
      {1, 0.0, "sample: temperature is 0, expected a value in (0, 10]"},
      {1, -1.0, "sample: temperature is -1, expected a value in (0, 10]"},
      {1, 10.5, "sample: temperature is 10.5, expected a value in (0, 10]"},
      {1, nan, "sample: temperature is nan"},
  };
  for (const auto& [count, temperature, message] : cases) {
    SCOPED_TRACE(message);
    auto result = engine_.Sample(*model_, count, 1, temperature, kNoDeadline);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(), HasSubstr(message));
  }
}

TEST_F(InferenceTest, ConcurrentSamplesShareNoRandomState) {
  auto reference = engine_.Sample(*model_, 4, 99, 1.0, kNoDeadline);
  ASSERT_TRUE(reference.ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto r = engine_.Sample(*model_, 4, 99, 1.0, kNoDeadline);
        if (!r.ok() || !at::equal(r->images, reference->images)) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(InferenceTest, ReconstructScoresEachImage) {
  const at::Tensor x = RandomImages(3, 5);
  auto result = engine_.Reconstruct(*model_, x, /*sample_z=*/false, 0, kNoDeadline);
  ASSERT_TRUE(result.ok()) << result.status();
  auto [mu, logvar] = model_->model->encode(x);
  const DecoderOutput decoded = model_->model->decode(mu);
  // z = mu: recon is the Bernoulli NLL of x under the decoder's logits at mu, KL the closed form.
  EXPECT_TRUE(at::allclose(result->recon_nll, BernoulliNll(decoded.param, x), 1e-6, 1e-5));
  EXPECT_TRUE(at::allclose(result->kl, KlDivergence(mu, logvar), 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(result->images, at::sigmoid(decoded.param)));
  EXPECT_EQ(result->recon_nll.sizes(), at::IntArrayRef({3}));
  // 784 pixels with p near 0.5 cost about ln 2 = 0.693 nats each when the model is untrained.
  EXPECT_NEAR(result->recon_nll.mean().item<double>(), 784 * std::log(2.0), 784 * 0.1);

  auto sampled = engine_.Reconstruct(*model_, x, /*sample_z=*/true, 11, kNoDeadline);
  auto resampled = engine_.Reconstruct(*model_, x, /*sample_z=*/true, 11, kNoDeadline);
  ASSERT_TRUE(sampled.ok() && resampled.ok());
  EXPECT_TRUE(at::equal(sampled->images, resampled->images));
  EXPECT_FALSE(at::equal(sampled->images, result->images));
  EXPECT_TRUE(at::equal(sampled->kl, result->kl));  // KL depends on q(z|x) only, not on the drawn z
}

}  // namespace
}  // namespace vae::server
