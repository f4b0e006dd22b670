// TrainingManager on the synthetic MNIST look-alike (tests/common/synthetic_mnist.h): events, publication,
// checkpoints, cancellation, resume, bad requests, a reader that falls behind, a full disk, divergence; and a Train
// stream whose client stops reading while the server shuts down.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "absl/time/clock.h"
#include "model/checkpoint.h"
#include "model/runtime.h"
#include "server/model_repository.h"
#include "server/server.h"
#include "server/server_core.h"
#include "server/training_job.h"
#include "tests/common/disk_limits.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/server/server_test_util.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::FileSizeLimit;
using ::vae::testing::SyntheticDataDir;
using ::vae::testing::TempDir;

using Kind = TrainEvent::Kind;

// Everything a job reported, in order, and its final status.
struct Drained {
  std::vector<TrainEvent> events;
  absl::Status status;
  std::vector<TrainEvent> Of(Kind kind) const {
    std::vector<TrainEvent> out;
    for (const auto& e : events) {
      if (e.progress.kind == kind) out.push_back(e);
    }
    return out;
  }
};

Drained Drain(TrainingJob& job) {
  Drained d;
  TrainEvent e;
  for (;;) {
    const auto poll = job.Next(&e, absl::Seconds(60));
    if (poll == TrainingJob::Poll::kEnd) break;
    if (poll == TrainingJob::Poll::kTimeout) {
      ADD_FAILURE() << "no training event for 60 s";
      break;
    }
    d.events.push_back(e);
  }
  d.status = job.status();
  return d;
}

// Waits for the first event of `kind`.
bool WaitFor(TrainingJob& job, Kind kind, std::vector<TrainEvent>* seen) {
  TrainEvent e;
  while (job.Next(&e, absl::Seconds(60)) == TrainingJob::Poll::kEvent) {
    seen->push_back(e);
    if (e.progress.kind == kind) return true;
  }
  return false;
}

class TrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureThreads(2); }
  void SetUp() override {
    RepositoryOptions o;
    o.root = model_dir_.path();
    repository_ = std::move(ModelRepository::Open(o, at::kCPU).value());
    // What ServerCore does on an empty repository: fresh weights serve as the default model's version 0.
    repository_->SetPlaceholder("default", SnapshotOfModel(NewSeededVae(*Preset("mnist"), 1), at::kCPU));
    manager_ = std::make_unique<TrainingManager>(repository_.get(), &datasets_, at::kCPU);
  }
  // What a request without a model spec is answered with.
  std::shared_ptr<const Snapshot> Served() { return repository_->Resolve(ModelRef{}).value(); }
  // The default model's folder, where its versions go.
  std::string ModelDir() const { return model_dir_.file("default"); }
  // 1000 images in batches of 100: 10 steps per epoch.
  static TrainSpec Small(int64_t epochs) {
    TrainSpec spec;
    spec.dataset = "mnist";
    spec.epochs = epochs;
    spec.batch_size = 100;
    spec.max_train_images = 1000;
    spec.log_every_steps = 5;
    return spec;
  }
  TempDir model_dir_;
  std::unique_ptr<ModelRepository> repository_;
  SyntheticDataDir data_dir_;
  DatasetRegistry datasets_{data_dir_.path()};
  std::unique_ptr<TrainingManager> manager_;
};

TEST_F(TrainingTest, TrainsPublishesAfterEachEpochAndCheckpoints) {
  auto job = manager_->Start(Small(2));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(manager_->Running(), *job);
  const Drained d = Drain(**job);
  ASSERT_TRUE(d.status.ok()) << d.status;

  ASSERT_FALSE(d.events.empty());
  const TrainEvent& started = d.events.front();
  EXPECT_EQ(started.progress.kind, Kind::kStarted);
  EXPECT_EQ(started.job_id, (*job)->id());
  EXPECT_EQ(started.dataset, "mnist");
  EXPECT_EQ(started.progress.epoch, 1);
  EXPECT_EQ(started.progress.epochs, 2);
  EXPECT_EQ(started.progress.steps_per_epoch, 10);
  EXPECT_EQ(started.progress.global_step, 0);
  EXPECT_EQ(started.version.version, 0);  // the fresh model, never stored

  // Steps 5, 10, 15, 20 report; each epoch ends with test metrics and a new version.
  const auto steps = d.Of(Kind::kStep);
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0].progress.global_step, 5);
  EXPECT_EQ(steps[0].progress.step_in_epoch, 5);
  EXPECT_EQ(steps[3].progress.global_step, 20);
  EXPECT_GT(steps[0].eta_sec, 0.0);
  const auto ends = d.Of(Kind::kEpochEnd);
  ASSERT_EQ(ends.size(), 2u);
  // An untrained Bernoulli decoder (logits ~0) scores ~784 ln 2 = 543 nats on any 28x28 image; 10 Adam steps cut that.
  EXPECT_LT(ends[0].progress.test.loss, 530.0);
  EXPECT_LT(ends[1].progress.test.loss, ends[0].progress.test.loss);
  EXPECT_NEAR(ends[1].progress.test.loss, ends[1].progress.test.recon + ends[1].progress.test.kl, 1e-3);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(ends[i].progress.has_test);
    EXPECT_EQ(ends[i].progress.epoch, i + 1);
    EXPECT_EQ(ends[i].progress.global_step, 10 * (i + 1));
    EXPECT_EQ(ends[i].version.model, "default");
    EXPECT_EQ(ends[i].version.version, 1 + i);
    EXPECT_EQ(ends[i].version.epochs_trained, i + 1);
    EXPECT_TRUE(std::filesystem::exists(ends[i].progress.checkpoint_path)) << ends[i].progress.checkpoint_path;
  }
  const TrainEvent& done = d.events.back();
  EXPECT_EQ(done.progress.kind, Kind::kDone);
  EXPECT_FALSE(done.progress.cancelled);
  EXPECT_EQ(done.progress.global_step, 20);
  EXPECT_EQ(done.version.version, 2);

  // The served snapshot is exactly the last checkpoint's weights.
  const auto served = Served();
  EXPECT_EQ(served->version.version, 2);
  EXPECT_EQ(ends[1].progress.checkpoint_path, ModelDir() + "/" + CheckpointFileName(2));
  EXPECT_EQ(served->version.global_step, 20);
  EXPECT_EQ(served->checkpoint_path, ends[1].progress.checkpoint_path);
  ASSERT_TRUE(served->last_test.has_value());
  EXPECT_DOUBLE_EQ(served->last_test->loss, ends[1].progress.test.loss);
  auto checkpoint = LoadCheckpoint(ends[1].progress.checkpoint_path, at::kCPU);
  ASSERT_TRUE(checkpoint.ok());
  const auto a = served->model->parameters(), b = checkpoint->model->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i]));
  EXPECT_EQ(manager_->Running(), nullptr);
}

TEST_F(TrainingTest, OneJobAtATimeAndCancelStopsWithACheckpoint) {
  auto job = manager_->Start(Small(100));
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<TrainEvent> seen;
  ASSERT_TRUE(WaitFor(**job, Kind::kStep, &seen));

  auto second = manager_->Start(Small(1));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr("training job " + (*job)->id() + " on dataset 'mnist' is already running (epoch 1/100"));

  (*job)->Cancel(TrainingJob::CancelReason::kClient);
  const Drained d = Drain(**job);
  EXPECT_TRUE(d.status.ok()) << d.status;
  ASSERT_FALSE(d.events.empty());
  const TrainEvent& done = d.events.back();
  EXPECT_EQ(done.progress.kind, Kind::kDone);
  EXPECT_TRUE(done.progress.cancelled);
  EXPECT_GE(done.progress.global_step, 5);
  EXPECT_LT(done.progress.global_step, 1000);
  EXPECT_TRUE(std::filesystem::exists(done.progress.checkpoint_path));
  auto checkpoint = LoadCheckpoint(done.progress.checkpoint_path, at::kCPU);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_EQ(checkpoint->state.global_step, done.progress.global_step);
  EXPECT_EQ(manager_->Running(), nullptr);
  // Regression: DONE of a stopped job said "epoch <epochs finished>, step 10/10" (epoch 0 when stopped in the
  // first). It says where the job stopped: the epoch it was in, and the steps done there.
  size_t epochs_finished = d.Of(Kind::kEpochEnd).size();
  for (const auto& e : seen) epochs_finished += e.progress.kind == Kind::kEpochEnd ? 1 : 0;
  EXPECT_EQ(done.progress.epoch, static_cast<int64_t>(epochs_finished) + 1);
  EXPECT_EQ(done.progress.step_in_epoch, done.progress.global_step - 10 * static_cast<int64_t>(epochs_finished));
  EXPECT_LT(done.progress.step_in_epoch, done.progress.steps_per_epoch);
  EXPECT_EQ(checkpoint->state.step_in_epoch, done.progress.step_in_epoch);

  // The slot is free again as soon as DONE was read.
  auto next = manager_->Start(Small(1));
  ASSERT_TRUE(next.ok()) << next.status();
  (*next)->Cancel(TrainingJob::CancelReason::kClient);
  Drain(**next);
}

TEST_F(TrainingTest, ResumeContinuesFromTheNewestCheckpoint) {
  auto first = manager_->Start(Small(1));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(Drain(**first).status.ok());

  TrainSpec spec = Small(1);
  spec.resume = true;
  auto resumed = manager_->Start(spec);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  const Drained d = Drain(**resumed);
  ASSERT_TRUE(d.status.ok()) << d.status;
  EXPECT_EQ(d.events.front().progress.epoch, 2);
  EXPECT_EQ(d.events.front().progress.epochs, 2);
  EXPECT_EQ(d.events.front().progress.global_step, 10);
  EXPECT_EQ(d.events.back().progress.global_step, 20);
  EXPECT_EQ(Served()->version.epochs_trained, 2);
  EXPECT_EQ(Served()->version.version, 2);
}

TEST_F(TrainingTest, ResumeWithoutACheckpointIsFailedPrecondition) {
  TrainSpec spec = Small(1);
  spec.resume = true;
  auto job = manager_->Start(spec);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(job.status().message(), HasSubstr("resume = true but model 'default' has no loadable version"));
}

TEST_F(TrainingTest, AFreshModelWithNewOptionsReplacesTheServedOneAtItsFirstEpoch) {
  VaeOptions options = *Preset("mnist");
  options.hidden = {64};
  options.latent_dim = 8;
  TrainSpec spec = Small(1);
  spec.options_json = ToJson(options);
  auto job = manager_->Start(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(Drain(**job).status.ok());
  EXPECT_EQ(Served()->options.latent_dim, 8);
  EXPECT_EQ(Served()->options.hidden, std::vector<int64_t>({64}));
  // From now on the model exists with these options: another preset is another model.
  TrainSpec other = Small(1);
  other.preset = "mnist";
  const auto refused = manager_->Start(other);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("model 'default' exists with options"));
  EXPECT_THAT(refused.status().message(), HasSubstr("the request's preset 'mnist' gives"));
  EXPECT_THAT(refused.status().message(), HasSubstr("train a new model name instead"));
}

TEST_F(TrainingTest, BadRequestsAreRejectedWithoutChangingAnything) {
  auto with = [](auto change) {
    TrainSpec spec = Small(1);
    change(spec);
    return spec;
  };
  VaeOptions huge = *Preset("mnist");
  huge.hidden = {65536, 65536};
  VaeOptions color = *Preset("conv64");
  VaeOptions many_samples = *Preset("mnist");
  many_samples.mc_samples = 1000;
  struct Case {
    TrainSpec spec;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {with([](TrainSpec& s) { s.epochs = 0; }), absl::StatusCode::kInvalidArgument, "epochs is 0, expected 1 to 1000"},
      {with([](TrainSpec& s) { s.epochs = 1001; }), absl::StatusCode::kInvalidArgument, "epochs is 1001"},
      {with([](TrainSpec& s) { s.batch_size = 0; }), absl::StatusCode::kInvalidArgument,
       "batch_size is 0, expected 1 to 65536"},
      {with([](TrainSpec& s) { s.learning_rate = -1; }), absl::StatusCode::kInvalidArgument,
       "learning_rate is -1, expected a value in (0, 10]"},
      {with([](TrainSpec& s) { s.learning_rate = std::numeric_limits<double>::quiet_NaN(); }),
       absl::StatusCode::kInvalidArgument, "learning_rate is nan"},
      {with([](TrainSpec& s) { s.log_every_steps = 0; }), absl::StatusCode::kInvalidArgument,
       "log_every_steps is 0, expected >= 1"},
      {with([](TrainSpec& s) { s.max_train_images = -1; }), absl::StatusCode::kInvalidArgument,
       "max_train_images is -1"},
      {with([](TrainSpec& s) { s.resume = true, s.preset = "mnist"; }), absl::StatusCode::kInvalidArgument,
       "preset and options_json only apply to a fresh model"},
      {with([](TrainSpec& s) { s.preset = "imagenet"; }), absl::StatusCode::kInvalidArgument,
       "unknown preset 'imagenet'"},
      {with([](TrainSpec& s) { s.options_json = "{"; }), absl::StatusCode::kInvalidArgument,
       "options_json: model options: not a JSON object"},
      {with([&](TrainSpec& s) { s.options_json = ToJson(huge); }), absl::StatusCode::kInvalidArgument,
       "parameters, over the limit of 300000000"},
      {with([&](TrainSpec& s) { s.options_json = ToJson(color); }), absl::StatusCode::kInvalidArgument,
       "dataset mnist has images [1,28,28], the model expects [3,64,64]"},
      {with([&](TrainSpec& s) { s.options_json = ToJson(many_samples), s.batch_size = 1000; }),
       absl::StatusCode::kInvalidArgument,
       "batch_size 1000 x mc_samples 1000 x 784 pixels is over the limit of 268435456 values per batch"},
      {with([](TrainSpec& s) { s.preset = "fashion", s.binarize = true; }), absl::StatusCode::kInvalidArgument,
       "binarize needs a bernoulli likelihood, the model's is gaussian"},
      {with([](TrainSpec& s) { s.iw_samples = 0; }), absl::StatusCode::kInvalidArgument,
       "iw_samples is 0, expected 1 to 1000"},
      {with([](TrainSpec& s) { s.adam_eps = -1e-4; }), absl::StatusCode::kInvalidArgument, "adam_eps is -0.0001"},
      {with([](TrainSpec& s) {
         s.lr_schedule = {{3, 1e-3}, {2, 0.0}};
       }),
       absl::StatusCode::kInvalidArgument, "lr_schedule[1].learning_rate is 0"},
      {with([&](TrainSpec& s) { s.options_json = ToJson(many_samples), s.iw_samples = 5; }),
       absl::StatusCode::kInvalidArgument, "iw_samples is 5: the IWAE objective needs a model with mc_samples 1"},
      {with([](TrainSpec& s) { s.iw_samples = 1000, s.batch_size = 1000; }), absl::StatusCode::kInvalidArgument,
       "batch_size 1000 x iw_samples 1000 x 784 pixels is over the limit"},
      {with([](TrainSpec& s) { s.dataset = "../etc"; }), absl::StatusCode::kPermissionDenied, "contains '..'"},
      {with([](TrainSpec& s) { s.dataset = "/etc"; }), absl::StatusCode::kPermissionDenied, "absolute path"},
      {with([](TrainSpec& s) { s.dataset = "celeba"; }), absl::StatusCode::kNotFound, "not found under --data_dir"},
      {with([](TrainSpec& s) { s.dataset = ""; }), absl::StatusCode::kInvalidArgument, "dataset is empty"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    auto job = manager_->Start(c.spec);
    EXPECT_EQ(job.status().code(), c.code);
    EXPECT_THAT(job.status().message(), HasSubstr(c.message));
  }
  EXPECT_EQ(manager_->Running(), nullptr);
  EXPECT_EQ(Served()->version.version, 0);
  EXPECT_TRUE(ListCheckpoints(ModelDir()).empty());
}

bool AllFinite(const Vae& model) {
  for (const auto& p : model->parameters()) {
    if (!p.isfinite().all().item<bool>()) return false;
  }
  return true;
}

// lr = 10 (inside the documented (0, 10]) on 128 images in one batch: within a few epochs a step takes the weights to
// inf/NaN. Such an epoch used to be published (Encode then answered sigma = +Inf) and checkpointed (a restart loaded
// it).
TEST_F(TrainingTest, ADivergedJobIsAbortedAndTheLastGoodWeightsStayServedAndOnDisk) {
  TrainSpec spec = Small(5);
  spec.learning_rate = 10;
  spec.batch_size = 128;
  spec.max_train_images = 128;
  auto job = manager_->Start(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  const Drained d = Drain(**job);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kAborted) << d.status;
  EXPECT_THAT(d.status.message(), HasSubstr("train: job " + (*job)->id() + " failed: training diverged"));
  EXPECT_THAT(d.status.message(), HasSubstr("retry with a lower learning_rate than 10"));
  const auto ends = d.Of(Kind::kEpochEnd);
  ASSERT_LT(ends.size(), 5u);
  for (const auto& e : ends) EXPECT_TRUE(std::isfinite(e.progress.test.loss)) << "epoch " << e.progress.epoch;
  EXPECT_NE(d.events.back().progress.kind, Kind::kDone);
  // One version per finite epoch (version 0: the fresh model); the served weights are finite.
  const auto served = Served();
  EXPECT_EQ(served->version.version, static_cast<int64_t>(ends.size()));
  EXPECT_TRUE(AllFinite(served->model));
  // What a restarted server would serve: the last finite epoch's checkpoint, or none at all.
  auto restart = LoadNewestCheckpoint(ModelDir(), at::kCPU);
  if (ends.empty()) {
    EXPECT_EQ(restart.status().code(), absl::StatusCode::kNotFound);
  } else {
    ASSERT_TRUE(restart.ok()) << restart.status();
    EXPECT_EQ(restart->path, ends.back().progress.checkpoint_path);
    EXPECT_EQ(restart->path, served->checkpoint_path);
    EXPECT_TRUE(AllFinite(restart->model));
  }
  EXPECT_EQ(manager_->Running(), nullptr);
}

// A checkpoint that cannot be written (here: over the process's file size limit, EFBIG, as ENOSPC on a full disk;
// tests/integration/integration_disk_test.cc does it on a real full tmpfs) fails the job with RESOURCE_EXHAUSTED
// before its epoch is published; it used to abort the whole process.
TEST_F(TrainingTest, ACheckpointThatDoesNotFitFailsTheJobAndPublishesNothing) {
  Drained d;
  {
    FileSizeLimit limit(1 << 20);  // the mnist checkpoint (weights, average, Adam moments) is ~10 MB
    auto job = manager_->Start(Small(1));
    ASSERT_TRUE(job.ok()) << job.status();
    d = Drain(**job);
  }
  EXPECT_EQ(d.status.code(), absl::StatusCode::kResourceExhausted) << d.status;
  EXPECT_THAT(d.status.message(), HasSubstr("checkpoint at step 10 failed, so its weights were not published"));
  EXPECT_THAT(d.status.message(), HasSubstr(ModelDir() + "/ckpt-000000000001.vae: File too large"));
  EXPECT_TRUE(d.Of(Kind::kEpochEnd).empty());
  EXPECT_EQ(Served()->version.version, 0);
  // No checkpoint and no temp file: only model.json, which reserved version number 1.
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(ModelDir())) {
    files.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(files, std::vector<std::string>({"model.json"}));
  // Once there is room the same request works; the reserved number 1 is not handed out again.
  auto retry = manager_->Start(Small(1));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(Drain(**retry).status.ok());
  EXPECT_EQ(Served()->version.version, 2);
  EXPECT_EQ(ListCheckpoints(ModelDir()).size(), 1u);
}

// kill -9 during a checkpoint write leaves ckpt-*.tmp.*; nothing used to delete them. The next job of the model (this
// process is the repository's one trainer) does.
TEST_F(TrainingTest, AJobRemovesCheckpointTempFilesLeftByAKilledProcess) {
  std::filesystem::create_directories(ModelDir());
  for (const char* name : {"ckpt-000000000001.vae.tmp.12.3456", "ckpt-000000000002.vae.tmp.1.2", "keep.txt"}) {
    std::ofstream(ModelDir() + "/" + name) << std::string(1000, 'x');
  }
  auto job = manager_->Start(Small(1));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(Drain(**job).status.ok());
  EXPECT_TRUE(std::filesystem::exists(ModelDir() + "/keep.txt"));
  EXPECT_FALSE(std::filesystem::exists(ModelDir() + "/ckpt-000000000001.vae.tmp.12.3456"));
  EXPECT_FALSE(std::filesystem::exists(ModelDir() + "/ckpt-000000000002.vae.tmp.1.2"));
}

// A job that names a model trains only that one: the default model keeps serving what it served; promote_label
// moves a label that does not exist yet, and DONE says so.
TEST_F(TrainingTest, ANamedModelIsCreatedFromItsPresetAndPromotesItsLabel) {
  TrainSpec spec = Small(1);
  spec.model = "fashion-like";
  spec.preset = "fashion";
  spec.promote_label = "stable";
  auto job = manager_->Start(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  const Drained d = Drain(**job);
  ASSERT_TRUE(d.status.ok()) << d.status;
  EXPECT_TRUE(d.events.back().label_moved);
  EXPECT_EQ(d.events.back().version.model, "fashion-like");
  EXPECT_EQ(d.events.back().version.version, 1);
  auto trained = repository_->Resolve(ModelRef{"fashion-like", 0, "stable"});
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ((*trained)->options.preset, "fashion");
  EXPECT_EQ(Served()->version.version, 0);  // the default model did not change
  EXPECT_EQ(Served()->options.preset, "mnist");
  spec.model = "../x";
  EXPECT_EQ(manager_->Start(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.model = "x";
  spec.promote_label = "latest";
  EXPECT_THAT(manager_->Start(spec).status().message(), HasSubstr("promote_label cannot be 'latest'"));
}

TEST_F(TrainingTest, ShutdownStopsTheJobWithACheckpointAndRefusesNewOnes) {
  auto job = manager_->Start(Small(100));
  ASSERT_TRUE(job.ok());
  std::vector<TrainEvent> seen;
  ASSERT_TRUE(WaitFor(**job, Kind::kStep, &seen));
  manager_->Shutdown();  // returns once the training thread has ended
  const Drained d = Drain(**job);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(d.status.message(), HasSubstr("server is shutting down"));
  ASSERT_FALSE(d.events.empty());
  const TrainEvent& done = d.events.back();
  EXPECT_TRUE(done.progress.cancelled);
  EXPECT_THAT(d.status.message(), HasSubstr("stopped at epoch " + std::to_string(done.progress.epoch) + "/100, step " +
                                            std::to_string(done.progress.step_in_epoch) + "/10"));
  EXPECT_THAT(d.status.message(), HasSubstr(done.progress.checkpoint_path + " was written: resume it"));
  EXPECT_FALSE(ListCheckpoints(ModelDir()).empty());
  // The stopped job's checkpoint is a version too.
  EXPECT_EQ(Served()->checkpoint_path, done.progress.checkpoint_path);
  EXPECT_EQ(Served()->version.global_step, done.progress.global_step);
  EXPECT_EQ(manager_->Start(Small(1)).status().code(), absl::StatusCode::kUnavailable);
}

// Regression: a shutdown that came after the job's last step (while its last epoch was evaluated on the 10k test
// images and checkpointed) reported the finished job as "stopped by the shutdown, resume it".
TEST_F(TrainingTest, AShutdownAfterTheLastStepLeavesAFinishedJobFinished) {
  TrainSpec spec = Small(1);
  spec.log_every_steps = 10;  // one STEP, at the last step: the trainer looks at the cancel flag no more after it
  auto job = manager_->Start(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<TrainEvent> seen;
  ASSERT_TRUE(WaitFor(**job, Kind::kStep, &seen));
  ASSERT_EQ(seen.back().progress.global_step, 10);
  manager_->Shutdown();  // cancels the job, then waits for its thread
  const Drained d = Drain(**job);
  EXPECT_TRUE(d.status.ok()) << d.status;
  ASSERT_FALSE(d.events.empty());
  const TrainEvent& done = d.events.back();
  EXPECT_EQ(done.progress.kind, Kind::kDone);
  EXPECT_FALSE(done.progress.cancelled);
  EXPECT_EQ(done.progress.epoch, 1);
  EXPECT_EQ(done.progress.step_in_epoch, 10);
  ASSERT_EQ(d.Of(Kind::kEpochEnd).size(), 1u);
  EXPECT_EQ(Served()->version.epochs_trained, 1);
}

// Regression: the queue grew by every event a slow reader had not taken (+17 MB per 60k events). A reader that takes
// nothing until the job has ended finds one STEP per epoch, merged from that epoch's ten, and every EPOCH_END.
TEST_F(TrainingTest, AReaderThatFallsBehindGetsMergedStepsAndEveryEpochEnd) {
  TrainSpec spec = Small(3);
  spec.log_every_steps = 1;  // 30 STEPs
  auto job = manager_->Start(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  while (manager_->Running() != nullptr) absl::SleepFor(absl::Milliseconds(10));  // every STEP is queued by then
  const Drained d = Drain(**job);
  ASSERT_TRUE(d.status.ok()) << d.status;
  std::vector<Kind> kinds;
  for (const auto& e : d.events) kinds.push_back(e.progress.kind);
  EXPECT_EQ(kinds, std::vector<Kind>({Kind::kStarted, Kind::kStep, Kind::kEpochEnd, Kind::kStep, Kind::kEpochEnd,
                                      Kind::kStep, Kind::kEpochEnd, Kind::kDone}));
  const auto steps = d.Of(Kind::kStep), ends = d.Of(Kind::kEpochEnd);
  ASSERT_EQ(steps.size(), 3u);
  ASSERT_EQ(ends.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(steps[i].progress.global_step, 10 * static_cast<int64_t>(i + 1));
    EXPECT_EQ(steps[i].progress.step_in_epoch, 10);
    EXPECT_EQ(steps[i].mean_steps, 10);
    // The mean over an epoch's ten equal batches is the epoch's mean: merging weighted each STEP by its steps.
    EXPECT_NEAR(steps[i].progress.train.loss, ends[i].progress.train.loss, 1e-9 * ends[i].progress.train.loss);
    EXPECT_NEAR(steps[i].progress.train.recon, ends[i].progress.train.recon, 1e-9 * ends[i].progress.train.recon);
    EXPECT_NEAR(steps[i].progress.train.kl, ends[i].progress.train.kl, 1e-9 * ends[i].progress.train.kl + 1e-12);
    EXPECT_GT(steps[i].progress.images_per_sec, 0.0);
  }
}

// Regression: a Train stream whose client stopped reading held SIGTERM for the whole grace period -- its writes
// wait on HTTP/2 flow control, so its last messages and status could never go out -- and was then cut. The drain
// ends it with UNAVAILABLE once a write has waited kStalledStreamLimit; the client reads that status after the
// messages it had already received.
TEST(TrainStreamShutdownTest, AStreamWhoseClientStoppedReadingIsEndedWithUnavailable) {
  TempDir model_dir;
  const SyntheticDataDir data_dir;
  ServerOptions options;
  options.port = 0;
  options.model_dir = model_dir.path();
  options.data_dir = data_dir.path();
  options.device = "cpu";
  options.threads = 1;  // batch-1 steps are tiny: a second torch thread only adds waiting on a busy machine
  auto server = VaeServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto port = (*server)->Start();
  ASSERT_TRUE(port.ok()) << port.status();
  // The client announces a 1 KiB stream window and, reading nothing, never widens it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto stub = v1::VaeService::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(*port), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  v1::TrainRequest request;
  request.set_dataset("mnist");
  request.set_epochs(1000);
  request.set_batch_size(1);
  request.set_max_train_images(3000);
  request.set_log_every_steps(1);  // 3000 STEP messages an epoch, ~450 KB: far more than the window and gRPC's buffer
  auto reader = stub->Train(&context, request);
  v1::TrainProgress progress;
  ASSERT_TRUE(reader->Read(&progress));
  EXPECT_EQ(progress.kind(), v1::TrainProgress::STARTED);
  // Once the first epoch is published, 3000 STEPs were produced and the handler's write is stuck.
  while ((*server)->core().Resolve(ModelRef{}).value()->version.epochs_trained < 1) {
    absl::SleepFor(absl::Milliseconds(20));
  }

  (*server)->Shutdown(absl::Seconds(30));
  int messages = 1;
  while (reader->Read(&progress)) ++messages;
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down and this stream's client stopped reading"));
  EXPECT_LT(messages, 3000);                                         // it did stop reading: the rest was never sent
  EXPECT_FALSE(ListCheckpoints(model_dir.file("default")).empty());  // the job was stopped with a checkpoint
}

}  // namespace
}  // namespace vae::server
