#include "model/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

#include "model/loss.h"
#include "model/runtime.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/model/status_matchers.h"

namespace vae {
namespace {

using ::vae::testing::DataDir;
using ::vae::testing::HasCodeAndWords;
using ::vae::testing::SyntheticDataDir;
using ::vae::testing::TempDir;

Dataset Head(const Dataset& d, int64_t n) { return {d.images.slice(0, 0, n), d.labels.slice(0, 0, n)}; }

// A dataset loaded once for a suite: the synthetic MNIST look-alike (tests/common/synthetic_mnist.h) for the tests
// of the trainer's mechanics, the real MNIST for what only real digits can show.
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ConfigureThreads(2);
    const SyntheticDataDir dir(/*train=*/5000, /*test=*/2000);
    Load(dir.path());
  }
  static void Load(const std::string& data_dir) {
    auto split = LoadNamedDataset(data_dir, "mnist");
    ASSERT_TRUE(split.ok()) << split.status();
    data_ = new TrainTestSplit(std::move(*split));
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(data_, nullptr);
    torch::manual_seed(0);
  }
  static inline TrainTestSplit* data_ = nullptr;
};

class TrainerRealDataTest : public TrainerTest {
 protected:
  static void SetUpTestSuite() {
    ConfigureThreads(2);
    Load(DataDir());
  }
};

TEST_F(TrainerRealDataTest, OneEpochOnRealMnistLearns) {
  // An untrained Bernoulli decoder scores ~545 nats/image on MNIST (784 pixels at p ~ 0.5 cost ~ln 2 each, minus
  // what the near-zero pixels save); pytorch/examples' net reaches 127.5 after one epoch on all 60k images. Half the
  // training set must get it well under 150.
  TrainOptions opts;
  opts.epochs = 1;
  opts.seed = 1;
  Trainer trainer(Vae(*Preset("mnist")), opts, torch::kCPU);
  const auto before = Evaluate(trainer.model(), data_->test, 1000, 7, torch::kCPU);
  ASSERT_TRUE(before.ok());
  EXPECT_GT(before->loss, 500.0);
  auto result = trainer.Run(Head(data_->train, 30000), &data_->test);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->epoch_test.size(), 1u);
  const auto& test = result->epoch_test[0];
  EXPECT_LT(test.loss, 150.0);
  EXPECT_NEAR(test.loss, test.recon + test.kl, 1e-3);
  EXPECT_GT(test.kl, 5.0);  // the latent code is in use (no posterior collapse)
  EXPECT_EQ(result->state.global_step, 30000 / 128 + 1);
}

// Also with a learning-rate schedule: each epoch's rate follows from the model's epoch count, so the resumed run
// trains the rest of the schedule exactly as the uninterrupted one, and the checkpoint says where in it the run is.
TEST_F(TrainerTest, ResumeGivesTheSameWeightsAsAnUninterruptedRun) {
  const auto train = Head(data_->train, 2000);
  TrainOptions opts;
  opts.epochs = 2;
  opts.batch_size = 100;
  opts.seed = 5;
  opts.binarize = true;  // the generator's state must survive the checkpoint too
  opts.adam_eps = 1e-4;
  opts.lr_schedule = {{1, 2e-3}, {1, 1e-4}, {5, 5e-4}};

  torch::manual_seed(0);
  Trainer straight(Vae(*Preset("mnist")), opts, torch::kCPU);
  Vae initial = CloneVae(straight.model(), torch::kCPU);
  ASSERT_TRUE(straight.Run(train, nullptr).ok());

  TempDir dir;
  TrainOptions first = opts;
  first.checkpoint_dir = dir.path();
  first.max_steps = 27;  // stops in the middle of epoch 2 (20 steps per epoch)
  Trainer interrupted(CloneVae(initial, torch::kCPU), first, torch::kCPU);
  auto part = interrupted.Run(train, nullptr);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_TRUE(part->cancelled);
  EXPECT_EQ(part->state.global_step, 27);

  auto ckpt = LoadNewestCheckpoint(dir.path(), torch::kCPU);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->state.epochs_done, 1);
  EXPECT_EQ(ckpt->state.step_in_epoch, 7);
  EXPECT_NE(ckpt->state.train_json.find("\"lr_stage\":1"), std::string::npos) << ckpt->state.train_json;
  EXPECT_NE(ckpt->state.train_json.find("\"current_learning_rate\":0.0001"), std::string::npos);
  EXPECT_NE(ckpt->state.train_json.find("\"lr_schedule\":\"1:0.002,1:0.0001,5:0.0005\""), std::string::npos);
  TrainOptions second = opts;
  second.checkpoint_dir = dir.path();
  Trainer resumed(ckpt->model, second, torch::kCPU);
  ASSERT_TRUE(resumed.Resume(*ckpt).ok());
  auto rest = resumed.Run(train, nullptr);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->state.global_step, 40);

  // Both the optimizer's weights and their moving average (the served weights) must match bitwise.
  for (bool serving : {false, true}) {
    auto a = (serving ? straight.serving_model() : straight.model())->named_parameters();
    auto b = (serving ? resumed.serving_model() : resumed.model())->named_parameters();
    for (const auto& item : a) {
      EXPECT_TRUE(torch::equal(item.value(), b[item.key()]))
          << (serving ? "serving " : "train ") << item.key() << " max diff "
          << (item.value() - b[item.key()]).abs().max().item<float>();
    }
  }
  // The same run at the first stage's constant rate ends elsewhere: the schedule's second stage was applied.
  TrainOptions constant = opts;
  constant.lr_schedule.clear();
  constant.learning_rate = 2e-3;
  Trainer flat(CloneVae(initial, torch::kCPU), constant, torch::kCPU);
  ASSERT_TRUE(flat.Run(train, nullptr).ok());
  EXPECT_FALSE(torch::equal(flat.model()->parameters()[0], straight.model()->parameters()[0]));
}

// TakeServingModel hands out the average itself (no copy) at every epoch end: the handed-out module never changes
// afterwards (publication stays immutable), and training goes on exactly as if nothing had been handed out.
TEST_F(TrainerTest, TakenServingModelIsNeverWrittenAndTrainingContinuesUnchanged) {
  const auto train = Head(data_->train, 1000);
  TrainOptions opts;
  opts.epochs = 3;
  opts.batch_size = 100;
  opts.seed = 8;
  torch::manual_seed(0);
  Trainer plain(Vae(*Preset("mnist")), opts, torch::kCPU);
  Trainer taking(CloneVae(plain.model(), torch::kCPU), opts, torch::kCPU);
  ASSERT_TRUE(plain.Run(train, nullptr).ok());

  std::vector<Vae> taken;
  std::vector<std::vector<torch::Tensor>> at_take;  // their values when taken
  auto result = taking.Run(train, nullptr, [&](const Progress& p, const Vae& serving) {
    if (p.kind != Progress::Kind::kEpochEnd) return;
    taken.push_back(taking.TakeServingModel());
    EXPECT_EQ(taken.back().get(), serving.get()) << "the average itself, not a copy";
    at_take.emplace_back();
    for (const auto& t : taken.back()->parameters()) at_take.back().push_back(t.detach().clone());
  });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(taken.size(), 3u);
  for (size_t e = 0; e < taken.size(); ++e) {
    auto params = taken[e]->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(torch::equal(params[i], at_take[e][i])) << "epoch " << e + 1 << " parameter " << i << " changed";
    }
  }
  EXPECT_FALSE(torch::equal(at_take[0][0], at_take[1][0]));  // a new average at every epoch
  for (bool serving : {false, true}) {
    auto a = (serving ? plain.serving_model() : plain.model())->parameters();
    auto b = (serving ? taking.serving_model() : taking.model())->parameters();
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(a[i], b[i])) << (serving ? "serving " : "train ") << "parameter " << i;
    }
  }
}

TEST_F(TrainerTest, CancelStopsAtTheNextStepAndKeepsACheckpoint) {
  TempDir dir;
  TrainOptions opts;
  opts.epochs = 3;
  opts.log_every_steps = 5;
  opts.checkpoint_dir = dir.path();
  std::atomic<bool> cancel{false};
  int64_t reports = 0;
  Trainer trainer(Vae(*Preset("mnist")), opts, torch::kCPU);
  auto result = trainer.Run(
      Head(data_->train, 5000), nullptr,
      [&](const Progress& p, const Vae&) {
        if (p.kind == Progress::Kind::kStep) {
          ++reports;
          if (p.global_step == 10) cancel = true;
        }
      },
      &cancel);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->cancelled);
  EXPECT_EQ(result->state.global_step, 10);
  EXPECT_EQ(reports, 2);
  auto ckpt = LoadNewestCheckpoint(dir.path(), torch::kCPU);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ(ckpt->state.global_step, 10);
}

// lr = 1 and 10 are inside the documented (0, 10]. With 128 images in one batch of 128 the loss before each step is
// finite, but a step can take the weights to inf/NaN (here the second: epoch 2's test loss is NaN). Such an epoch used
// to be checkpointed and reported as kEpochEnd (and so published).
TEST_F(TrainerTest, ADivergedEpochIsAbortedAndNeitherReportedNorCheckpointed) {
  for (const double lr : {1.0, 10.0}) {
    SCOPED_TRACE(lr);
    TempDir dir;
    TrainOptions opts;
    opts.epochs = 5;
    opts.batch_size = 128;
    opts.learning_rate = lr;
    opts.checkpoint_dir = dir.path();
    int64_t epoch_ends = 0;
    Trainer trainer(Vae(*Preset("mnist")), opts, torch::kCPU);
    auto result = trainer.Run(Head(data_->train, 128), &data_->test, [&](const Progress& p, const Vae& model) {
      if (p.kind != Progress::Kind::kEpochEnd) return;
      ++epoch_ends;
      EXPECT_TRUE(std::isfinite(p.test.loss) && std::isfinite(p.test.kl)) << "epoch " << p.epoch;
      for (const auto& param : model->parameters()) EXPECT_TRUE(param.isfinite().all().item<bool>());
    });
    EXPECT_TRUE(HasCodeAndWords(
        result.status(), absl::StatusCode::kAborted,
        {"training diverged at step", "nothing of this epoch was published", "retry with a lower learning_rate"}));
    EXPECT_LT(epoch_ends, opts.epochs);
    // Only the reported epochs were checkpointed, and each of those checkpoints is finite.
    const auto checkpoints = ListCheckpoints(dir.path());
    EXPECT_EQ(static_cast<int64_t>(checkpoints.size()), std::min<int64_t>(epoch_ends, opts.keep_checkpoints));
    for (const auto& path : checkpoints) {
      auto ckpt = LoadCheckpoint(path, torch::kCPU);
      ASSERT_TRUE(ckpt.ok()) << ckpt.status();
      EXPECT_EQ(ckpt->state.metrics_json.find("null"), std::string::npos) << ckpt->state.metrics_json;  // JSON NaN
      for (const auto& param : ckpt->model->parameters()) EXPECT_TRUE(param.isfinite().all().item<bool>()) << path;
    }
  }
}

TEST_F(TrainerTest, OutputBiasInitStartsFromTheMeanImage) {
  // Before any step, the decoder's mean image is the training set's mean image (to the clamp at 1e-3).
  auto o = *Preset("mnist");
  Vae model(o);
  auto train = Head(data_->train, 5000);
  auto mean = train.images.mean(0);
  model->init_output_bias(mean);
  torch::NoGradGuard no_grad;
  // The last layer's weights still mix in z, so compare at its bias alone: decode with a zero-weight last layer.
  auto last = model->named_parameters()["decoder.2.weight"];
  last.zero_();
  auto img = model->mean_image(model->decode(torch::zeros({1, o.latent_dim})))[0];
  EXPECT_LT((img - mean.clamp(1e-3, 1 - 1e-3)).abs().max().item<double>(), 1e-5);
}

TEST_F(TrainerTest, EvaluateIsDeterministicForASeed) {
  Vae model(*Preset("mnist"));
  auto small = Head(data_->test, 2000);
  auto a = Evaluate(model, small, 500, 3, torch::kCPU);
  auto b = Evaluate(model, small, 500, 3, torch::kCPU);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->loss, b->loss);
  EXPECT_NEAR(a->loss, a->recon + a->kl, 1e-3);
}

TEST_F(TrainerTest, ShapeMismatchIsAnError) {
  Trainer trainer(Vae(*Preset("conv64")), TrainOptions(), torch::kCPU);
  auto result = trainer.Run(Head(data_->train, 10), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("[N, 3, 64, 64]"), std::string::npos) << result.status();
}

// IWAE k = 5 trains through both paths (the hand-written step and autograd) from the same start to nearly the same
// loss: the two compute the same gradient (tests/model/mlp_step_test.cc) up to float rounding, which grows over the
// 50 steps, so only closeness is asserted, plus that the model learned.
TEST_F(TrainerTest, IwaeObjectiveTrainsOnBothPaths) {
  const auto train = Head(data_->train, 2000);
  TrainOptions opts;
  opts.epochs = 1;
  opts.batch_size = 40;
  opts.iw_samples = 5;
  torch::manual_seed(0);
  Vae initial(*Preset("iwae1"));
  const auto before = Evaluate(initial, data_->test, 1000, 7, torch::kCPU);
  ASSERT_TRUE(before.ok());
  std::vector<double> train_loss, test_loss;
  for (bool fast : {true, false}) {
    opts.fast_mlp_step = fast;
    Trainer trainer(CloneVae(initial, torch::kCPU), opts, torch::kCPU);
    auto result = trainer.Run(train, &data_->test);
    ASSERT_TRUE(result.ok()) << result.status();
    train_loss.push_back(result->last_train.loss);
    test_loss.push_back(result->last_test.loss);
    // The k = 5 bound is below recon + KL on the training batches (Burda et al., Theorem 1).
    EXPECT_LT(result->last_train.loss, result->last_train.recon + result->last_train.kl);
  }
  EXPECT_LT(test_loss[0], before->loss - 100.0) << "before " << before->loss;
  EXPECT_NEAR(train_loss[0], train_loss[1], 0.01 * train_loss[1]);
  EXPECT_NEAR(test_loss[0], test_loss[1], 0.01 * test_loss[1]);
}

TEST_F(TrainerTest, InvalidIwaeAndScheduleOptionsAreRejectedNamingTheField) {
  const auto train = Head(data_->train, 100);
  struct Case {
    std::function<void(TrainOptions&, VaeOptions&)> set;
    std::string word, other_word;  // both must be in the message
  };
  const std::vector<Case> cases = {
      {[](TrainOptions& t, VaeOptions&) { t.iw_samples = 0; }, "iw_samples is 0", "1 to 1000"},
      {[](TrainOptions& t, VaeOptions&) { t.iw_samples = kMaxIwSamples + 1; }, "iw_samples is 1001", ""},
      {[](TrainOptions& t, VaeOptions&) { t.adam_eps = 0; }, "adam_eps is 0", ""},
      {[](TrainOptions& t, VaeOptions&) {
         t.lr_schedule = {{2, 1e-3}, {0, 1e-3}};
       },
       "lr_schedule[1].epochs is 0", ""},
      {[](TrainOptions& t, VaeOptions& o) {
         t.iw_samples = 5;
         o.mc_samples = 2;
       },
       "iw_samples is 5", "mc_samples is 2"},
      {[](TrainOptions& t, VaeOptions& o) {
         t.iw_samples = 5;
         o.beta = 0.5;
       },
       "iw_samples is 5", "beta"},
  };
  for (const auto& c : cases) {
    TrainOptions t;
    VaeOptions o = *Preset("mnist");
    c.set(t, o);
    Trainer trainer(Vae(o), t, torch::kCPU);
    EXPECT_TRUE(HasCodeAndWords(trainer.Run(train, nullptr).status(), absl::StatusCode::kInvalidArgument,
                                {c.word, c.other_word}));
  }
}

// IW-NLL of every image, in float64; per-batch seeds make an image's score independent of the batching.
TEST_F(TrainerTest, EvaluateIwNllScoresEveryImage) {
  Vae model(*Preset("mnist"));
  auto small = Head(data_->test, 300);
  auto a = EvaluateIwNll(model, small, 20, 3, torch::kCPU, /*images_per_batch=*/100, /*chunk=*/7);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->sizes(), (std::vector<int64_t>{300}));
  EXPECT_EQ(a->scalar_type(), torch::kFloat64);
  EXPECT_TRUE(a->isfinite().all().item<bool>());
  auto b = EvaluateIwNll(model, Head(data_->test, 100), 20, 3, torch::kCPU, 100, 7);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(torch::equal(a->slice(0, 0, 100), *b));
  // IW-NLL(20) <= -ELBO on average (both in nats per image).
  auto elbo = Evaluate(model, small, 300, 3, torch::kCPU);
  EXPECT_LT(a->mean().item<double>(), elbo->loss);
  EXPECT_EQ(EvaluateIwNll(model, small, 0, 3, torch::kCPU).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vae
