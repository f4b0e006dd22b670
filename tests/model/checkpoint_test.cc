#include "model/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "model/file_util.h"
#include "tests/common/test_util.h"

namespace vae {
namespace {

using ::vae::testing::TempDir;

void ExpectSameParameters(Vae& a, Vae& b) {
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    ASSERT_TRUE(pb.contains(item.key())) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    model_ = Vae(*Preset("conv"));
    optimizer_ = std::make_unique<torch::optim::Adam>(model_->parameters(), torch::optim::AdamOptions(1e-3));
    // One real step so Adam has moments to save.
    auto x = torch::rand({4, 1, 28, 28});
    auto out = model_->forward(x);
    (out.decoded.param.sum() + out.mu.sum()).backward();
    optimizer_->step();
    state_.epochs_done = 2;
    state_.step_in_epoch = 17;
    state_.global_step = 1234;
    state_.seed = 42;
    state_.rng_state = MakeGenerator(9).get_state();
    state_.metrics_json = R"({"test":{"loss":101.5}})";
  }
  Vae model_{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer_;
  TrainState state_;
  TempDir dir_;
};

TEST_F(CheckpointTest, RoundTripsBitwise) {
  const auto path = dir_.file(CheckpointFileName(state_.global_step));
  ASSERT_TRUE(SaveCheckpoint(path, model_, optimizer_.get(), state_).ok());
  auto ckpt = LoadCheckpoint(path, torch::kCPU);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ToJson(ckpt->options), ToJson(model_->options()));
  ExpectSameParameters(model_, ckpt->model);
  EXPECT_EQ(ckpt->state.epochs_done, 2);
  EXPECT_EQ(ckpt->state.step_in_epoch, 17);
  EXPECT_EQ(ckpt->state.global_step, 1234);
  EXPECT_EQ(ckpt->state.seed, 42u);
  EXPECT_EQ(ckpt->state.metrics_json, state_.metrics_json);
  EXPECT_TRUE(torch::equal(ckpt->state.rng_state, state_.rng_state));
  ASSERT_NE(ckpt->optimizer, nullptr);
  // Adam's moments come back: a second optimizer loaded from the file takes the identical next step.
  Vae twin = CloneVae(model_, torch::kCPU);
  torch::optim::Adam restored(ckpt->model->parameters(), torch::optim::AdamOptions(1e-3));
  restored.load(*ckpt->optimizer);
  auto x = torch::rand({4, 1, 28, 28});
  optimizer_->zero_grad();
  restored.zero_grad();
  for (auto* pair : {&model_, &ckpt->model}) {
    auto out = (*pair)->forward(x, MakeGenerator(1));
    (out.decoded.param.sum() + out.mu.sum()).backward();
  }
  optimizer_->step();
  restored.step();
  ExpectSameParameters(model_, ckpt->model);
  // Nothing but the checkpoint is left in the folder (the temp file was renamed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_.path()), {}), 1);
}

TEST_F(CheckpointTest, CorruptByteIsRejectedWithCrcError) {
  const auto path = dir_.file("ckpt-000000000001.vae");
  ASSERT_TRUE(SaveCheckpoint(path, model_, nullptr, state_).ok());
  auto bytes = *ReadFileToString(path);
  bytes[bytes.size() / 2] ^= 0x5a;
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  auto ckpt = LoadCheckpoint(path, torch::kCPU);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(ckpt.status().message().find("CRC"), std::string::npos) << ckpt.status();
}

TEST_F(CheckpointTest, TruncatedFileIsRejected) {
  const auto path = dir_.file("ckpt-000000000001.vae");
  ASSERT_TRUE(SaveCheckpoint(path, model_, nullptr, state_).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 3);
  auto ckpt = LoadCheckpoint(path, torch::kCPU);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(ckpt.status().message().find("torn"), std::string::npos) << ckpt.status();
}

TEST_F(CheckpointTest, NotACheckpointAndMissingFile) {
  const auto path = dir_.file("ckpt-000000000001.vae");
  ASSERT_TRUE(WriteFileAtomically(path, std::string(100, 'x')).ok());
  EXPECT_EQ(LoadCheckpoint(path, torch::kCPU).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(LoadCheckpoint(dir_.file("nope.vae"), torch::kCPU).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, NewestValidCheckpointWinsAndCorruptOnesAreSkipped) {
  state_.global_step = 10;
  ASSERT_TRUE(SaveCheckpoint(dir_.file(CheckpointFileName(10)), model_, nullptr, state_).ok());
  state_.global_step = 20;
  ASSERT_TRUE(SaveCheckpoint(dir_.file(CheckpointFileName(20)), model_, nullptr, state_).ok());
  EXPECT_EQ(ListCheckpoints(dir_.path()).front(), dir_.file(CheckpointFileName(20)));
  EXPECT_EQ(LoadNewestCheckpoint(dir_.path(), torch::kCPU)->state.global_step, 20);

  // Tear the newest: the previous one loads.
  std::filesystem::resize_file(dir_.file(CheckpointFileName(20)), 1000);
  auto ckpt = LoadNewestCheckpoint(dir_.path(), torch::kCPU);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->state.global_step, 10);

  PruneCheckpoints(dir_.path(), 1);
  EXPECT_EQ(ListCheckpoints(dir_.path()).size(), 1u);
  TempDir empty;
  EXPECT_EQ(LoadNewestCheckpoint(empty.path(), torch::kCPU).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vae
