// Snapshots, seeded models, parameter counts, and ServerCore's start-up: which model it serves.
#include "server/server_core.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/checkpoint.h"
#include "model/runtime.h"
#include "server/training_job.h"
#include "tests/common/test_util.h"
#include "tests/server/server_test_util.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::TempDir;
using ::vae::testing::TinyOptions;
using ::vae::testing::TinySnapshot;

bool SameWeights(const Vae& a, const Vae& b) {
  const auto pa = a->parameters(), pb = b->parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!at::equal(pa[i].cpu(), pb[i].cpu())) return false;
  }
  return true;
}

TEST(SnapshotTest, SnapshotsAreDeepCopiesInEvalMode) {
  Vae source = NewSeededVae(TinyOptions(), 5);
  auto snapshot = SnapshotOfModel(source, at::kCPU);
  EXPECT_FALSE(snapshot->model->is_training());
  EXPECT_TRUE(SameWeights(snapshot->model, source));
  {
    at::NoGradGuard no_grad;
    source->parameters()[0].add_(1.0);  // the trainer goes on changing its module
  }
  EXPECT_FALSE(SameWeights(snapshot->model, source));
}

TEST(SnapshotTest, SeededModelsAreReproducible) {
  EXPECT_TRUE(SameWeights(NewSeededVae(TinyOptions(), 8), NewSeededVae(TinyOptions(), 8)));
  EXPECT_FALSE(SameWeights(NewSeededVae(TinyOptions(), 8), NewSeededVae(TinyOptions(), 9)));
}

TEST(SnapshotTest, MetricsJsonParsesTrainAndTestAndSkipsMissingParts) {
  std::optional<Metrics> train, test;
  ParseMetricsJson(R"({"train": {"loss": 110.5, "recon": 90.25, "kl": 20.25}, "test": {"loss": null}})", &train, &test);
  ASSERT_TRUE(train.has_value());
  EXPECT_DOUBLE_EQ(train->loss, 110.5);
  EXPECT_DOUBLE_EQ(train->recon, 90.25);
  EXPECT_DOUBLE_EQ(train->kl, 20.25);
  EXPECT_FALSE(test.has_value());  // NaN is written as null
  ParseMetricsJson("not json", &train, &test);
  EXPECT_FALSE(train.has_value());
}

TEST(CountParametersTest, MatchesTheBuiltModuleForEveryArchitecture) {
  for (const std::string name : {"mnist", "aevb", "conv", "conv64", "fashion"}) {
    SCOPED_TRACE(name);
    const VaeOptions o = *Preset(name);
    EXPECT_EQ(CountParameters(o), Vae(o)->parameter_count());
  }
  VaeOptions gaussian_conv = *Preset("conv");
  gaussian_conv.likelihood = Likelihood::kGaussianLearned;
  EXPECT_EQ(CountParameters(gaussian_conv), Vae(gaussian_conv)->parameter_count());
  // pytorch/examples' MNIST VAE: 784*400+400 + 400*40+40 + 20*400+400 + 400*784+784.
  EXPECT_EQ(CountParameters(*Preset("mnist")), 652824);
  // The source document's net is ~271M parameters: under the server's limit.
  EXPECT_GT(CountParameters(*Preset("seed")), 270'000'000);
  EXPECT_LT(CountParameters(*Preset("seed")), TrainingManager::kMaxParameters);
}

class ServerCoreTest : public ::testing::Test {
 protected:
  ServerOptions Options() const {
    ServerOptions o;
    o.model_dir = model_dir_.path();
    o.data_dir = "/nonexistent";
    o.device = "cpu";
    o.threads = 2;
    o.seed = 17;
    return o;
  }
  // Writes a checkpoint of a seeded tiny model, as if `epochs` epochs of `steps` steps had been trained.
  std::string WriteCheckpoint(uint64_t seed, int64_t epochs, int64_t steps) {
    Vae model = NewSeededVae(TinyOptions(), seed);
    TrainState state;
    state.epochs_done = epochs;
    state.global_step = steps;
    state.metrics_json = R"({"train": {"loss": 150.0, "recon": 130.0, "kl": 20.0}})";
    // The flat layout of an older server: ServerCore moves it into the default model.
    const std::string path = NextCheckpointPath(model_dir_.path());
    EXPECT_TRUE(SaveCheckpoint(path, model, nullptr, state).ok());
    return path;
  }
  TempDir model_dir_;
};

TEST_F(ServerCoreTest, WithoutACheckpointServesAFreshSeededPresetModel) {
  auto core = ServerCore::Create(Options());
  ASSERT_TRUE(core.ok()) << core.status();
  const auto snapshot = (*core)->Resolve(ModelRef{}).value();
  EXPECT_EQ(snapshot->options.preset, "mnist");
  EXPECT_EQ(snapshot->version.model, "default");
  EXPECT_EQ(snapshot->version.version, 0);  // fresh weights: never stored, not a pinnable version
  EXPECT_EQ(snapshot->version.global_step, 0);
  EXPECT_EQ(snapshot->checkpoint_path, "");
  EXPECT_FALSE(snapshot->last_train.has_value());
  EXPECT_TRUE(SameWeights(snapshot->model, NewSeededVae(*Preset("mnist"), 17)));
  EXPECT_EQ((*core)->device().str(), "cpu");
  EXPECT_EQ((*core)->training().Running(), nullptr);
}

TEST_F(ServerCoreTest, LoadsTheNewestCheckpointAndSkipsATornOne) {
  WriteCheckpoint(1, 1, 10);
  const std::string newest_valid = WriteCheckpoint(2, 2, 20);
  // A torn write: the newest file lost its tail (and so its end marker and CRC).
  const std::string torn = WriteCheckpoint(3, 3, 30);
  const auto size = std::filesystem::file_size(torn);
  std::filesystem::resize_file(torn, size / 2);

  auto core = ServerCore::Create(Options());
  ASSERT_TRUE(core.ok()) << core.status();
  const auto snapshot = (*core)->Resolve(ModelRef{}).value();
  const std::string moved = model_dir_.file("default/" + std::filesystem::path(newest_valid).filename().string());
  EXPECT_EQ(snapshot->checkpoint_path, moved);
  EXPECT_EQ(snapshot->version.version, 2);  // the checkpoint's number is the version number
  EXPECT_EQ(snapshot->version.epochs_trained, 2);
  EXPECT_EQ(snapshot->version.global_step, 20);
  ASSERT_TRUE(snapshot->last_train.has_value());
  EXPECT_DOUBLE_EQ(snapshot->last_train->loss, 150.0);
  EXPECT_EQ(snapshot->options.latent_dim, 4);
  EXPECT_TRUE(SameWeights(snapshot->model, NewSeededVae(TinyOptions(), 2)));
}

TEST_F(ServerCoreTest, BadOptionsFailWithTheFieldNamed) {
  ServerOptions device = Options();
  device.device = "tpu";
  EXPECT_EQ(ServerCore::Create(device).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ServerCore::Create(device).status().message(), HasSubstr("device: unknown device 'tpu'"));

  ServerOptions preset = Options();
  preset.preset = "imagenet";
  EXPECT_EQ(ServerCore::Create(preset).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ServerCore::Create(preset).status().message(), HasSubstr("unknown preset 'imagenet'"));

  ServerOptions batch = Options();
  batch.max_batch = 0;
  EXPECT_EQ(ServerCore::Create(batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ServerCore::Create(batch).status().message(), HasSubstr("max_batch is 0, expected >= 1"));

  ServerOptions no_dir = Options();
  no_dir.model_dir = "";
  EXPECT_EQ(ServerCore::Create(no_dir).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vae::server
