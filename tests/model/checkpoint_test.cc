#include "model/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "tests/common/disk_limits.h"
#include "tests/common/test_util.h"
#include "tests/model/status_matchers.h"

namespace vae {
namespace {

using ::vae::testing::FileNames;
using ::vae::testing::FileSizeLimit;
using ::vae::testing::HasCodeAndWords;
using ::vae::testing::TempDir;
using ::vae::testing::TmpfsMount;

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
  EXPECT_EQ(ListCheckpoints(dir_.path()), std::vector<std::string>{dir_.file(CheckpointFileName(10))});
  TempDir empty;
  EXPECT_EQ(LoadNewestCheckpoint(empty.path(), torch::kCPU).status().code(), absl::StatusCode::kNotFound);
}

// The torch zip writer used to see the short write, throw, and throw again from its destructor: SIGABRT.
TEST_F(CheckpointTest, AWriteErrorIsResourceExhaustedNotAnAbortAndKeepsTheOldFile) {
  const auto path = dir_.file(CheckpointFileName(1));
  ASSERT_TRUE(SaveCheckpoint(path, model_, nullptr, state_).ok());
  state_.global_step = 99;
  absl::Status status;
  {
    FileSizeLimit limit(256 << 10);  // the conv checkpoint with Adam's moments is ~3 MB
    status = SaveCheckpoint(path, model_, optimizer_.get(), state_);
  }
  EXPECT_TRUE(HasCodeAndWords(status, absl::StatusCode::kResourceExhausted, {path, "File too large"}));
  EXPECT_EQ(FileNames(dir_.path()), std::vector<std::string>{CheckpointFileName(1)});
  EXPECT_EQ(LoadCheckpoint(path, torch::kCPU)->state.global_step, 1234);
  // Once the limit is gone the same save works.
  ASSERT_TRUE(SaveCheckpoint(path, model_, optimizer_.get(), state_).ok());
  EXPECT_EQ(LoadCheckpoint(path, torch::kCPU)->state.global_step, 99);
}

// The same on a real full filesystem (ENOSPC), with the free space in the message.
TEST_F(CheckpointTest, AFullTmpfsIsResourceExhaustedNamingTheFreeSpace) {
  std::string why_not;
  auto disk = TmpfsMount::Mount(8 << 20, &why_not);
  if (disk == nullptr) GTEST_SKIP() << why_not;
  const auto first = disk->file(CheckpointFileName(1));
  ASSERT_TRUE(SaveCheckpoint(first, model_, optimizer_.get(), state_).ok());
  const auto size = static_cast<int64_t>(std::filesystem::file_size(first));
  TmpfsMount::FillUntilFree(disk->file("filler"), size / 2);
  const auto second = disk->file(CheckpointFileName(2));
  const absl::Status status = SaveCheckpoint(second, model_, optimizer_.get(), state_);
  EXPECT_TRUE(HasCodeAndWords(status, absl::StatusCode::kResourceExhausted,
                              {second, "No space left on device", "bytes free on the filesystem of " + disk->path()}));
  EXPECT_EQ(FileNames(disk->path()), (std::vector<std::string>{CheckpointFileName(1), "filler"}));
  // The temp file was deleted: its space is free again, and a retry fails the same way rather than worse.
  EXPECT_GE(TmpfsMount::Free(first), size / 2 - 4096);
  EXPECT_EQ(SaveCheckpoint(second, model_, optimizer_.get(), state_).code(), absl::StatusCode::kResourceExhausted);
  std::filesystem::remove(disk->file("filler"));
  ASSERT_TRUE(SaveCheckpoint(second, model_, optimizer_.get(), state_).ok());
  EXPECT_TRUE(LoadCheckpoint(second, torch::kCPU).ok());
}

// Sequence 10^12 needs 13 digits: it used to be ignored, so a restart loaded the epoch before it.
TEST_F(CheckpointTest, ThirteenDigitSequencesSortAfterTwelveDigitOnes) {
  state_.global_step = 1;
  ASSERT_TRUE(SaveCheckpoint(dir_.file(CheckpointFileName(999'999'999'999)), model_, nullptr, state_).ok());
  EXPECT_EQ(NextCheckpointPath(dir_.path()), dir_.file("ckpt-1000000000000.vae"));
  state_.global_step = 2;
  ASSERT_TRUE(SaveCheckpoint(NextCheckpointPath(dir_.path()), model_, nullptr, state_).ok());
  EXPECT_EQ(ListCheckpoints(dir_.path()),
            (std::vector<std::string>{dir_.file("ckpt-1000000000000.vae"), dir_.file("ckpt-999999999999.vae")}));
  EXPECT_EQ(LoadNewestCheckpoint(dir_.path(), torch::kCPU)->state.global_step, 2);
  EXPECT_EQ(NextCheckpointPath(dir_.path()), dir_.file("ckpt-1000000000001.vae"));
  // Not checkpoints: no digits, a sign, a sequence past int64.
  for (const char* name :
       {"ckpt-.vae", "ckpt-+12.vae", "ckpt-99999999999999999999.vae", "ckpt-000000000003.vae.tmp.1.2"}) {
    ASSERT_TRUE(WriteFileAtomically(dir_.file(name), "x").ok());
  }
  EXPECT_EQ(ListCheckpoints(dir_.path()).size(), 2u);
}

// Five broken files newer than three valid ones, keep = 3: the three newest valid ones stay (it used to keep one).
TEST_F(CheckpointTest, PruningCountsOnlyValidCheckpointsAndDeletesBrokenOnes) {
  for (int64_t seq = 1; seq <= 3; ++seq) {
    ASSERT_TRUE(SaveCheckpoint(dir_.file(CheckpointFileName(seq)), model_, nullptr, state_).ok());
  }
  for (int64_t seq = 4; seq <= 8; ++seq) {
    std::filesystem::copy_file(dir_.file(CheckpointFileName(1)), dir_.file(CheckpointFileName(seq)));
    std::filesystem::resize_file(dir_.file(CheckpointFileName(seq)), 5000 * seq);  // torn
  }
  ASSERT_TRUE(SaveCheckpoint(NextCheckpointPath(dir_.path()), model_, nullptr, state_).ok());
  EXPECT_TRUE(VerifyCheckpointFile(dir_.file(CheckpointFileName(9))).ok());
  EXPECT_EQ(VerifyCheckpointFile(dir_.file(CheckpointFileName(8))).code(), absl::StatusCode::kDataLoss);
  PruneCheckpoints(dir_.path(), 3);
  EXPECT_EQ(FileNames(dir_.path()),
            (std::vector<std::string>{CheckpointFileName(2), CheckpointFileName(3), CheckpointFileName(9)}));
}

TEST_F(CheckpointTest, StaleTempFilesAreRemovedAndNothingElse) {
  ASSERT_TRUE(SaveCheckpoint(dir_.file(CheckpointFileName(1)), model_, nullptr, state_).ok());
  for (const char* name : {"ckpt-000000000002.vae.tmp.4242.17", "ckpt-000000000003.vae.tmp.1.2", "notes.tmp.1.2",
                           "ckpt-000000000004.vae.bak"}) {
    std::ofstream(dir_.file(name)) << "partial";
  }
  EXPECT_EQ(RemoveStaleTempFiles(dir_.path()), 2);
  EXPECT_EQ(FileNames(dir_.path()),
            (std::vector<std::string>{CheckpointFileName(1), "ckpt-000000000004.vae.bak", "notes.tmp.1.2"}));
  EXPECT_EQ(RemoveStaleTempFiles(dir_.path()), 0);
}

}  // namespace
}  // namespace vae
