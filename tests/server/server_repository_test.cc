// ModelRepository on real checkpoints of tiny models: layout, labels persisted and reloaded, version numbers never
// reused, the keep policy, the memory budget with on-demand loads, the watch (copied-in, torn, temp-named and deleted
// files, model.json written by another process), the flat layout of older servers, and the errors.
#include "server/model_repository.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "model/checkpoint.h"
#include "model/runtime.h"
#include "tests/common/test_util.h"
#include "tests/server/server_test_util.h"

namespace vae::server {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::vae::testing::TempDir;
using ::vae::testing::TinyOptions;

// A model spec; ModelRef{name, version, label} spelled with defaults.
ModelRef Ref(std::string name = "", int64_t version = 0, std::string label = "") {
  return ModelRef{std::move(name), version, std::move(label)};
}

bool SameWeights(const Vae& a, const Vae& b) {
  const auto pa = a->parameters(), pb = b->parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!at::equal(pa[i].cpu(), pb[i].cpu())) return false;
  }
  return true;
}

class RepositoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureThreads(1); }

  std::unique_ptr<ModelRepository> Open(int keep = 3, int64_t max_loaded_bytes = 0) {
    RepositoryOptions o;
    o.root = root_.path();
    o.keep_versions = keep;
    o.max_loaded_bytes = max_loaded_bytes;
    auto repo = ModelRepository::Open(o, at::kCPU);
    EXPECT_TRUE(repo.ok()) << repo.status();
    return repo.ok() ? std::move(*repo) : nullptr;
  }

  // What a training job does for one epoch: reserve a number, write the checkpoint, publish. `seed` makes the
  // weights; `test_loss` is the version's test metric.
  static ModelVersion PublishVersion(ModelRepository& repo, const std::string& name, uint64_t seed,
                                     double test_loss = 100.0) {
    Vae model = NewSeededVae(TinyOptions(), seed);
    auto path = repo.ReserveVersionPath(name, TinyOptions());
    EXPECT_TRUE(path.ok()) << path.status();
    TrainState state;
    state.epochs_done = static_cast<int64_t>(seed);
    state.global_step = 10 * static_cast<int64_t>(seed);
    state.metrics_json = absl::StrCat(R"({"test": {"loss": )", test_loss, R"(, "recon": 1, "kl": 1}})");
    EXPECT_TRUE(SaveCheckpoint(*path, model, nullptr, state).ok());
    auto snapshot = SnapshotOfModel(model, at::kCPU);
    snapshot->checkpoint_path = *path;
    snapshot->version.epochs_trained = state.epochs_done;
    snapshot->version.global_step = state.global_step;
    snapshot->last_test = Metrics{test_loss, 1, 1};
    return repo.Publish(name, snapshot);
  }

  std::vector<int64_t> Versions(ModelRepository& repo, const std::string& name) {
    std::vector<int64_t> out;
    auto list = repo.List(name);
    EXPECT_TRUE(list.ok()) << list.status();
    if (list.ok()) {
      for (const auto& v : list->at(0).versions) out.push_back(v.version);
    }
    return out;
  }

  std::string VersionFile(const std::string& name, int64_t version) const {
    return (fs::path(root_.path()) / name / CheckpointFileName(version)).string();
  }

  TempDir root_;
};

TEST_F(RepositoryTest, LayoutIsOneFolderPerModelWithModelJsonAndNumberedCheckpoints) {
  auto repo = Open();
  EXPECT_EQ(PublishVersion(*repo, "mnist", 1).version, 1);
  EXPECT_EQ(PublishVersion(*repo, "mnist", 2).version, 2);
  EXPECT_EQ(PublishVersion(*repo, "fashion", 3).version, 1);  // numbers are per model
  EXPECT_TRUE(fs::exists(VersionFile("mnist", 1)));
  EXPECT_TRUE(fs::exists(VersionFile("mnist", 2)));
  EXPECT_TRUE(fs::exists(VersionFile("fashion", 1)));
  EXPECT_TRUE(fs::exists(root_.file("mnist/model.json")));

  // latest follows the newest version; a pin keeps its own weights.
  auto latest = repo->Resolve(Ref("mnist"));
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ((*latest)->version.model, "mnist");
  EXPECT_EQ((*latest)->version.version, 2);
  EXPECT_TRUE(SameWeights((*latest)->model, NewSeededVae(TinyOptions(), 2)));
  auto pinned = repo->Resolve(Ref("mnist", 1));
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ((*pinned)->version.version, 1);
  EXPECT_TRUE(SameWeights((*pinned)->model, NewSeededVae(TinyOptions(), 1)));
  EXPECT_EQ((*pinned)->version.epochs_trained, 1);
}

TEST_F(RepositoryTest, LabelsArePersistedAtomicallyAndSurviveAReopen) {
  {
    auto repo = Open();
    PublishVersion(*repo, "mnist", 1);
    PublishVersion(*repo, "mnist", 2);
    auto previous = repo->SetLabel("mnist", "stable", 1, /*make_default=*/true);
    ASSERT_TRUE(previous.ok()) << previous.status();
    EXPECT_EQ(*previous, 0);
    EXPECT_EQ(*repo->SetLabel("mnist", "canary", 2, false), 0);
    EXPECT_EQ(*repo->SetLabel("mnist", "canary", 1, false), 2);  // moved: the previous version is returned
  }
  // No temp file of model.json is left behind: it was written by rename.
  for (const auto& entry : fs::directory_iterator(root_.file("mnist"))) {
    EXPECT_FALSE(IsAtomicWriteTempFile(entry.path().filename().string(), "model.json")) << entry.path();
  }
  auto repo = Open();
  auto listing = repo->List("mnist");
  ASSERT_TRUE(listing.ok());
  EXPECT_EQ(listing->at(0).default_label, "stable");
  EXPECT_EQ(listing->at(0).labels.at("stable"), 1);
  EXPECT_EQ(listing->at(0).labels.at("canary"), 1);
  EXPECT_EQ(listing->at(0).labels.at("latest"), 2);
  EXPECT_THAT(listing->at(0).versions.at(0).labels, ElementsAre("canary", "stable"));
  ASSERT_TRUE(listing->at(0).versions.at(1).test.has_value());  // metrics come from model.json, nothing loaded
  EXPECT_DOUBLE_EQ(listing->at(0).versions.at(1).test->loss, 100.0);
  EXPECT_FALSE(listing->at(0).versions.at(1).loaded);
  // A request without a version uses the default label.
  auto served = repo->Resolve(Ref("mnist"));
  ASSERT_TRUE(served.ok());
  EXPECT_EQ((*served)->version.version, 1);
  EXPECT_EQ((*repo->Resolve(ModelRef{"mnist", 0, "latest"}))->version.version, 2);
}

TEST_F(RepositoryTest, VersionNumbersAreNeverReusedAfterADelete) {
  {
    auto repo = Open();
    PublishVersion(*repo, "mnist", 1);
    PublishVersion(*repo, "mnist", 2);
    PublishVersion(*repo, "mnist", 3);
    ASSERT_TRUE(repo->DeleteVersion("mnist", 3, false).ok());
    EXPECT_FALSE(fs::exists(VersionFile("mnist", 3)));
    EXPECT_EQ(PublishVersion(*repo, "mnist", 4).version, 4);
    ASSERT_TRUE(repo->DeleteVersion("mnist", 4, false).ok());
  }
  // The high-water mark is in model.json: a restart does not hand out 3 or 4 again.
  auto repo = Open();
  EXPECT_EQ(Versions(*repo, "mnist"), std::vector<int64_t>({1, 2}));
  EXPECT_EQ(PublishVersion(*repo, "mnist", 5).version, 5);
}

TEST_F(RepositoryTest, KeepsTheNewestKVersionsAndEveryLabelledOne) {
  auto repo = Open(/*keep=*/2);
  PublishVersion(*repo, "mnist", 1);
  ASSERT_TRUE(repo->SetLabel("mnist", "stable", 1, false).ok());
  PublishVersion(*repo, "mnist", 2);
  PublishVersion(*repo, "mnist", 3);
  PublishVersion(*repo, "mnist", 4);
  // 2 is neither among the newest two nor labelled.
  EXPECT_EQ(Versions(*repo, "mnist"), std::vector<int64_t>({1, 3, 4}));
  EXPECT_TRUE(fs::exists(VersionFile("mnist", 1)));
  EXPECT_FALSE(fs::exists(VersionFile("mnist", 2)));
  EXPECT_TRUE(fs::exists(VersionFile("mnist", 3)));
  EXPECT_EQ(repo->Resolve(Ref("mnist", 2)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RepositoryTest, TheBudgetEvictsOldVersionsWhichLoadAgainOnDemandOnce) {
  // One tiny version's weights: its float32 parameters (784x32+32, 32x8+8, 4x32+32, 32x784+784: 51,400 floats).
  const int64_t one = ::vae::testing::TinySnapshot(1)->parameter_count;
  ASSERT_EQ(one, 784 * 32 + 32 + 32 * 8 + 8 + 4 * 32 + 32 + 32 * 784 + 784);
  auto repo = Open(/*keep=*/10, /*max_loaded_bytes=*/one * 4 * 3 / 2);  // room for 1.5 versions
  PublishVersion(*repo, "mnist", 1);
  auto held = repo->Resolve(Ref("mnist", 1));  // a request in flight on version 1
  ASSERT_TRUE(held.ok());
  PublishVersion(*repo, "mnist", 2);
  EXPECT_EQ(repo->loaded_bytes(), one * 4);  // version 1 was evicted, version 2 is cached
  EXPECT_TRUE(SameWeights((*held)->model, NewSeededVae(TinyOptions(), 1)));  // the request's snapshot lives on
  auto listing = repo->List("mnist");
  EXPECT_FALSE(listing->at(0).versions.at(0).loaded);
  EXPECT_TRUE(listing->at(0).versions.at(1).loaded);
  held = absl::InternalError("released");

  // Eight concurrent requests for the evicted version: loaded from disk once, all get that one snapshot.
  std::vector<std::shared_ptr<const Snapshot>> got(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto s = repo->Resolve(Ref("mnist", 1));
      if (s.ok()) got[i] = *s;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : got) {
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s.get(), got[0].get());
  }
  EXPECT_TRUE(SameWeights(got[0]->model, NewSeededVae(TinyOptions(), 1)));
  EXPECT_EQ(got[0]->version.version, 1);
  EXPECT_EQ(repo->loaded_bytes(), one * 4);  // and version 2 made room
}

TEST_F(RepositoryTest, TheWatchServesCopiedInCheckpointsNeverTornOrTempOnesAndUnloadsDeletedOnes) {
  auto writer = Open();
  PublishVersion(*writer, "mnist", 1);
  PublishVersion(*writer, "mnist", 2);
  auto reader = Open();
  EXPECT_EQ(Versions(*reader, "mnist"), std::vector<int64_t>({1, 2}));

  // Another process copies version 7 in (atomically: a temp name, then a rename), a torn copy as version 8 and a
  // temp file as version 9.
  const std::string source = VersionFile("mnist", 2);
  const auto size = fs::file_size(source);
  fs::copy_file(source, VersionFile("mnist", 7) + ".tmp.1.2");
  fs::copy_file(source, VersionFile("mnist", 8));
  fs::resize_file(VersionFile("mnist", 8), size - 100);
  fs::copy_file(source, VersionFile("mnist", 9) + ".tmp.3.4");
  reader->Rescan();
  EXPECT_EQ(Versions(*reader, "mnist"), std::vector<int64_t>({1, 2}));
  fs::rename(VersionFile("mnist", 7) + ".tmp.1.2", VersionFile("mnist", 7));
  reader->Rescan();
  EXPECT_EQ(Versions(*reader, "mnist"), std::vector<int64_t>({1, 2, 7}));
  auto seven = reader->Resolve(Ref("mnist", 7));
  ASSERT_TRUE(seven.ok()) << seven.status();
  EXPECT_TRUE(SameWeights((*seven)->model, NewSeededVae(TinyOptions(), 2)));
  EXPECT_EQ(reader->Resolve(Ref("mnist", 8)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*reader->Resolve(Ref("mnist")))->version.version, 7);

  // Labels written by the writer are re-read; a deleted version leaves memory and the listing.
  ASSERT_TRUE(writer->SetLabel("mnist", "stable", 1, false).ok());
  fs::remove(VersionFile("mnist", 7));
  reader->Rescan();
  EXPECT_EQ(Versions(*reader, "mnist"), std::vector<int64_t>({1, 2}));
  EXPECT_EQ((*reader->Resolve(ModelRef{"mnist", 0, "stable"}))->version.version, 1);
  EXPECT_EQ(reader->Resolve(Ref("mnist", 7)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(SameWeights((*seven)->model, NewSeededVae(TinyOptions(), 2)));  // a holder keeps its snapshot

  // The torn file, once completed by its writer, is picked up (it is read again when its size changes).
  fs::remove(VersionFile("mnist", 8));
  fs::copy_file(source, VersionFile("mnist", 8));
  reader->Rescan();
  EXPECT_EQ(Versions(*reader, "mnist"), std::vector<int64_t>({1, 2, 8}));
}

TEST_F(RepositoryTest, TheWatchThreadPicksUpANewVersionWithoutARescanCall) {
  auto writer = Open();
  PublishVersion(*writer, "mnist", 1);
  RepositoryOptions o;
  o.root = root_.path();
  o.poll_interval = absl::Milliseconds(20);
  auto reader = ModelRepository::Open(o, at::kCPU);
  ASSERT_TRUE(reader.ok());
  PublishVersion(*writer, "mnist", 2);
  // No time bound is asserted: the test waits until the thread has seen it (ctest's timeout catches a hang).
  while (Versions(**reader, "mnist").size() < 2) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ((*(*reader)->Resolve(Ref("mnist")))->version.version, 2);
}

TEST_F(RepositoryTest, AFlatModelDirIsMovedIntoTheDefaultModel) {
  for (uint64_t seed : {1, 2}) {
    Vae model = NewSeededVae(TinyOptions(), seed);
    ASSERT_TRUE(SaveCheckpoint(NextCheckpointPath(root_.path()), model, nullptr, TrainState()).ok());
  }
  auto repo = Open();
  EXPECT_TRUE(ListCheckpoints(root_.path()).empty());
  EXPECT_EQ(ListCheckpoints(root_.file("default")).size(), 2u);
  EXPECT_EQ(Versions(*repo, "default"), std::vector<int64_t>({1, 2}));
  auto served = repo->Resolve(Ref());
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ((*served)->version.model, "default");
  EXPECT_EQ((*served)->version.version, 2);
  EXPECT_TRUE(SameWeights((*served)->model, NewSeededVae(TinyOptions(), 2)));
  EXPECT_EQ(PublishVersion(*repo, "default", 3).version, 3);  // numbering continues
}

TEST_F(RepositoryTest, PromoteMovesALabelOnlyOnImprovement) {
  auto repo = Open();
  PublishVersion(*repo, "mnist", 1, /*test_loss=*/100);
  EXPECT_TRUE(*repo->Promote("mnist", "stable", 1));  // no label yet
  PublishVersion(*repo, "mnist", 2, /*test_loss=*/120);
  EXPECT_FALSE(*repo->Promote("mnist", "stable", 2));  // worse
  EXPECT_EQ(repo->List("mnist")->at(0).labels.at("stable"), 1);
  PublishVersion(*repo, "mnist", 3, /*test_loss=*/90);
  EXPECT_TRUE(*repo->Promote("mnist", "stable", 3));  // better
  EXPECT_EQ(repo->List("mnist")->at(0).labels.at("stable"), 3);
}

TEST_F(RepositoryTest, ErrorsNameTheFieldAndWhatExists) {
  auto repo = Open();
  PublishVersion(*repo, "mnist", 1);
  PublishVersion(*repo, "mnist", 2);
  ASSERT_TRUE(repo->SetLabel("mnist", "stable", 1, false).ok());
  struct Case {
    ModelRef ref;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {Ref("fashion"), absl::StatusCode::kNotFound, "model 'fashion' not found; models: mnist"},
      {Ref(""), absl::StatusCode::kNotFound, "model 'default' not found; models: mnist"},
      {Ref("mnist", 5), absl::StatusCode::kNotFound, "model 'mnist' has no version 5; versions: 1, 2"},
      {Ref("mnist", 0, "canary"), absl::StatusCode::kNotFound, "model 'mnist' has no label 'canary'; labels: latest, stable"},
      {Ref("mnist", 1, "stable"), absl::StatusCode::kInvalidArgument, "version (1) and label ('stable') are both set"},
      {Ref("mnist", -1), absl::StatusCode::kInvalidArgument, "model_spec.version is -1"},
      {Ref("../etc"), absl::StatusCode::kInvalidArgument, "model_spec.name is '../etc', expected 1 to 64 letters"},
      {Ref(".hidden"), absl::StatusCode::kInvalidArgument, "not starting with '.'"},
      {Ref(std::string(65, 'a')), absl::StatusCode::kInvalidArgument, "model_spec.name"},
      {Ref("mnist", 0, "a b"), absl::StatusCode::kInvalidArgument, "model_spec.label is 'a b'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    const auto status = repo->Resolve(c.ref).status();
    EXPECT_EQ(status.code(), c.code) << status;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
  EXPECT_EQ(repo->SetLabel("mnist", "latest", 1, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(repo->SetLabel("mnist", "x", 9, false).status().message(),
              HasSubstr("model 'mnist' has no version 9; versions: 1, 2"));
  EXPECT_EQ(repo->SetLabel("mnist", "x", 9, false).status().code(), absl::StatusCode::kNotFound);

  // A labelled version is only deleted with force, which drops its labels.
  const auto refused = repo->DeleteVersion("mnist", 1, false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("version 1 of model 'mnist' is labelled stable"));
  EXPECT_TRUE(fs::exists(VersionFile("mnist", 1)));
  const auto forced = repo->DeleteVersion("mnist", 1, true);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_THAT(*forced, ElementsAre("stable"));
  EXPECT_EQ(repo->Resolve(ModelRef{"mnist", 0, "stable"}).status().code(), absl::StatusCode::kNotFound);

  // A model with labels is only deleted with force; then its folder is gone.
  ASSERT_TRUE(repo->SetLabel("mnist", "stable", 2, false).ok());
  EXPECT_EQ(repo->DeleteModel("mnist", false).status().code(), absl::StatusCode::kFailedPrecondition);
  repo->SetTraining("mnist");
  EXPECT_THAT(repo->DeleteModel("mnist", true).status().message(), HasSubstr("is being trained"));
  EXPECT_EQ(repo->DeleteVersion("mnist", 2, true).status().code(), absl::StatusCode::kFailedPrecondition);
  repo->SetTraining("");
  EXPECT_EQ(*repo->DeleteModel("mnist", true), 1);
  EXPECT_FALSE(fs::exists(root_.file("mnist")));
  EXPECT_EQ(repo->Resolve(Ref("mnist")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vae::server
