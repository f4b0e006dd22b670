// The hand-written MLP training step and the fused optimizer step against their autograd / torch::optim references.
#include "model/mlp_step.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "model/fused_adam.h"
#include "model/loss.h"

namespace vae {
namespace {

// max |a - b| relative to max |b| (plus a floor for all-zero references).
double RelMaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / (b.abs().max().item<double>() + 1e-12);
}

TEST(MlpStepTest, BernoulliKernelMatchesAtenLossAndGradient) {
  torch::manual_seed(7);
  const int64_t rows = 6, cols = 1001;
  // Logits over the whole range, saturated tails included; targets binary and grey.
  auto logits = torch::cat({torch::linspace(-100, 100, 2 * cols).view({2, cols}), 6 * torch::randn({rows - 2, cols})});
  auto x = torch::rand({rows, cols});
  x.slice(0, 0, 3).round_();
  auto logits64 = logits.to(torch::kFloat64), x64 = x.to(torch::kFloat64);
  auto ref_loss = at::binary_cross_entropy_with_logits(logits64, x64, {}, {}, at::Reduction::None).sum(1);
  const float scale = 0.25f;
  auto ref_grad = scale * (torch::sigmoid(logits64) - x64);

  auto work = logits.clone();
  std::vector<float> recon(rows);
  internal::BernoulliLossAndGrad(work.data_ptr<float>(), x.data_ptr<float>(), rows, cols, scale, recon.data());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NEAR(recon[r], ref_loss[r].item<double>(), 2e-6 * ref_loss[r].item<double>()) << "row " << r;
  }
  EXPECT_LT((work.to(torch::kFloat64) - ref_grad).abs().max().item<double>(), 1e-7);
}

TEST(MlpStepTest, SupportsOnlyCpuMlpBernoulliWithOneSample) {
  EXPECT_TRUE(MlpTrainStep::Supports(*Preset("mnist"), torch::kCPU));
  EXPECT_TRUE(MlpTrainStep::Supports(*Preset("aevb"), torch::kCPU));
  EXPECT_TRUE(MlpTrainStep::Supports(*Preset("seed"), torch::kCPU));
  EXPECT_FALSE(MlpTrainStep::Supports(*Preset("conv"), torch::kCPU));
  EXPECT_FALSE(MlpTrainStep::Supports(*Preset("fashion"), torch::kCPU));
  auto two_samples = *Preset("mnist");
  two_samples.mc_samples = 2;
  EXPECT_FALSE(MlpTrainStep::Supports(two_samples, torch::kCPU));
  EXPECT_FALSE(MlpTrainStep::Supports(*Preset("mnist"), torch::Device(torch::kCUDA, 0)));
}

struct StepCase {
  const char* name;
  VaeOptions options;
  int64_t iw_samples = 1;  // IWAE k (1: the ELBO)
};
void PrintTo(const StepCase& c, std::ostream* os) { *os << c.name; }

VaeOptions Custom(double beta = 0.5) {
  VaeOptions o;
  o.channels = 3;
  o.height = 8;
  o.width = 6;
  o.latent_dim = 5;
  o.hidden = {64, 32};
  o.beta = beta;
  return o;
}

class MlpStepGradientTest : public ::testing::TestWithParam<StepCase> {};

// The gradients of every parameter and the loss equal what autograd computes through TrainingLoss (VaeImpl::forward
// and ComputeLoss for k = 1, the IWAE bound for k > 1) for the same weights, batch and noise seed; a larger batch
// first, then a smaller one (buffer reuse).
TEST_P(MlpStepGradientTest, EqualsAutograd) {
  torch::manual_seed(11);
  const auto& options = GetParam().options;
  const int64_t k = GetParam().iw_samples;
  Vae model(options);
  MlpTrainStep step(model, /*optimizer=*/nullptr, k);
  auto params = model->parameters();
  for (int64_t batch : {16, 5}) {
    auto x = torch::rand({batch, options.channels, options.height, options.width});

    for (auto& p : params) p.mutable_grad().zero_();
    auto gen = MakeGenerator(99 + batch);
    auto ref = TrainingLoss(model, x, k, gen);
    ref.total.backward();
    std::vector<torch::Tensor> ref_grads;
    for (auto& p : params) ref_grads.push_back(p.grad().clone());

    auto gen2 = MakeGenerator(99 + batch);
    const StepLoss loss = step.Run(x, gen2);
    EXPECT_NEAR(loss.total, ref.total.item<double>(), 1e-5 * std::abs(ref.total.item<double>()));
    EXPECT_NEAR(loss.recon, ref.recon.item<double>(), 1e-5 * std::abs(ref.recon.item<double>()));
    EXPECT_NEAR(loss.kl, ref.kl.item<double>(), 1e-4 * std::abs(ref.kl.item<double>()) + 1e-6);
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_GT(ref_grads[i].abs().max().item<double>(), 0.0) << "parameter " << i;
      EXPECT_LT(RelMaxDiff(params[i].grad(), ref_grads[i]), 2e-4) << "parameter " << i << ", batch " << batch;
    }
    // Both paths drew the same noise from the same seed: the generators are in the same state afterwards.
    EXPECT_TRUE(torch::equal(gen.get_state(), gen2.get_state()));
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, MlpStepGradientTest,
                         ::testing::Values(StepCase{"mnist", *Preset("mnist")}, StepCase{"aevb_tanh", *Preset("aevb")},
                                           StepCase{"two_layers_rgb_beta_half", Custom()},
                                           StepCase{"iwae1_k1", *Preset("iwae1"), 1},
                                           StepCase{"iwae1_k5", *Preset("iwae1"), 5},
                                           StepCase{"mnist_relu_k5", *Preset("mnist"), 5},
                                           StepCase{"two_layers_rgb_k3", Custom(1.0), 3}),
                         [](const auto& info) { return std::string(info.param.name); });

// With k = 1 the IWAE loss is the VAE's: TrainingLoss is ComputeLoss of forward() exactly (same noise, same value),
// and the k-sample bound is tighter (lower) than the ELBO on average: E[-log mean_i w_i] <= -ELBO (Burda et al., Thm
// 1).
TEST(IwaeLossTest, OneSampleIsTheElboAndMoreSamplesTightenIt) {
  torch::manual_seed(5);
  Vae model(*Preset("iwae1"));
  auto x = torch::rand({64, 1, 28, 28}).gt(0.6).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto gen_a = MakeGenerator(3), gen_b = MakeGenerator(3);
  const auto one = TrainingLoss(model, x, 1, gen_a);
  const auto elbo = ComputeLoss(model->options(), model->forward(x, gen_b), x);
  EXPECT_EQ(one.total.item<double>(), elbo.total.item<double>());
  EXPECT_TRUE(torch::equal(one.total_per_image, elbo.total_per_image));
  auto gen_c = MakeGenerator(4);
  const double five = TrainingLoss(model, x, 5, gen_c).total.item<double>();
  // An untrained model's log-weights spread over several nats, so the gap is far above the noise of 64 images.
  EXPECT_LT(five, elbo.total.item<double>() - 1.0) << "IWAE k=5 " << five << " vs -ELBO " << elbo.total.item<double>();
}

// FusedAdamStep makes exactly torch::optim::Adam's update and keeps the average, over several steps.
TEST(FusedAdamTest, MatchesTorchAdamAndAveragesTheWeights) {
  torch::manual_seed(3);
  auto a = torch::randn({70000}).requires_grad_();  // above the parallel grain: split across threads
  auto b = a.detach().clone().requires_grad_();
  auto avg = a.detach().clone();
  torch::optim::Adam reference({a}, torch::optim::AdamOptions(1e-2));
  torch::optim::Adam fused({b}, torch::optim::AdamOptions(1e-2));
  auto expected_avg = avg.clone();
  for (int step = 0; step < 4; ++step) {
    auto g = torch::randn({70000});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    reference.step();
    FusedAdamStep(fused, {avg}, 0.9);
    expected_avg = 0.9 * expected_avg + 0.1 * b.detach();
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-6) << "step " << step;
    EXPECT_LT((avg - expected_avg).abs().max().item<double>(), 1e-6) << "step " << step;
    EXPECT_EQ(b.grad().abs().max().item<double>(), 0.0);  // left zeroed
  }
  EXPECT_GT((a.detach() - avg).abs().max().item<double>(), 1e-3);  // the average lags: the test can tell them apart
}

// The fused step (Adam and the moving average applied inside the backward pass, a block of each weight gradient at a
// time) ends where the unfused step followed by FusedAdamStep ends, over several steps, and never gives a parameter
// a gradient. With the default block every layer of this net is one block: the same sgemm calls and the same
// per-element arithmetic, so bitwise equal. With 7-element blocks (one column or one row at a time, both blocking
// directions: 64x144 by columns, 144x64 by rows) each gradient element is still the same dot product over the batch,
// but BLAS may sum it in another order (~1e-7 relative), and Adam's m / (sqrt(v) + eps) magnifies that without bound
// for a gradient that cancels to ~eps (seen: 1.4e-6 with eps = 1e-8). So that case runs with eps = 1, where the update
// moves by at most lr / eps = 1e-3 times the change of the gradient (<= 1e-9 here), while an element updated twice,
// never, or from another element's gradient would be off by ~lr |g| / (|g| + 1) ~ 1e-5: 1e-7 tells them apart.
// The same holds for the IWAE objective (k = 5: its branch of Run() ends in the same fused backward pass).
TEST(MlpStepTest, FusedAdamEqualsTheUnfusedStepThenFusedAdamStep) {
  for (const auto& [k, block] : std::vector<std::pair<int64_t, int64_t>>{
           {1, MlpTrainStep::kGradientBlock}, {1, 7}, {5, MlpTrainStep::kGradientBlock}, {5, 7}}) {
    SCOPED_TRACE(absl::StrCat("k = ", k, ", block = ", block));
    const VaeOptions options = Custom(k == 1 ? 0.5 : 1.0);  // IWAE needs beta 1
    torch::manual_seed(21);
    Vae unfused_model(options);
    Vae fused_model = CloneVae(unfused_model, torch::kCPU);
    std::vector<torch::Tensor> unfused_avg, fused_avg;
    for (const auto& p : unfused_model->parameters()) unfused_avg.push_back(p.detach().clone());
    for (const auto& p : fused_model->parameters()) fused_avg.push_back(p.detach().clone());
    const bool one_block = block == MlpTrainStep::kGradientBlock;
    const auto adam_options = torch::optim::AdamOptions(1e-3).eps(one_block ? 1e-8 : 1.0);
    torch::optim::Adam unfused_adam(unfused_model->parameters(), adam_options);
    torch::optim::Adam fused_adam(fused_model->parameters(), adam_options);
    MlpTrainStep unfused(unfused_model, /*optimizer=*/nullptr, k);
    MlpTrainStep fused(fused_model, &fused_adam, k);
    fused.set_gradient_block(block);
    for (int step = 0; step < 4; ++step) {
      auto x = torch::rand({16, options.channels, options.height, options.width});
      const double decay = 0.5 + 0.1 * step;
      auto gen_a = MakeGenerator(40 + step), gen_b = MakeGenerator(40 + step);
      const StepLoss a = unfused.Run(x, gen_a);
      FusedAdamStep(unfused_adam, unfused_avg, decay);
      const StepLoss b = fused.Run(x, gen_b, {&fused_avg, decay});
      EXPECT_NEAR(a.total, b.total, one_block ? 0.0 : 1e-5 * a.total) << "step " << step;
      auto pa = unfused_model->parameters(), pb = fused_model->parameters();
      for (size_t i = 0; i < pa.size(); ++i) {
        EXPECT_FALSE(pb[i].grad().defined()) << "parameter " << i << " has a gradient";
        if (one_block) {
          EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "parameter " << i << ", step " << step;
          EXPECT_TRUE(torch::equal(unfused_avg[i], fused_avg[i])) << "average " << i << ", step " << step;
        } else {
          EXPECT_LT((pa[i] - pb[i]).abs().max().item<double>(), 1e-7) << "parameter " << i << ", step " << step;
          EXPECT_LT((unfused_avg[i] - fused_avg[i]).abs().max().item<double>(), 1e-7) << "average " << i;
        }
      }
    }
    // The test can fail: the steps moved the weights (by more than the tolerance) and the average lags them.
    EXPECT_GT((unfused_model->parameters()[0] - unfused_avg[0]).abs().max().item<double>(), 1e-5);
  }
}

}  // namespace
}  // namespace vae
