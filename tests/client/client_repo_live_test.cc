// The model repository (#13) through vae::Client and the real vae-client binary against the real vae-server shared
// by this test binary (live_server.h). The suite trains a model of its own ("pinned"), so the default model the
// other suites check never changes.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/client.h"
#include "model/dataset.h"
#include "tests/client/live_server.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "pinned";

class RepoLiveTest : public LiveServerTest {
 protected:
  static std::string IdxPath() { return DataDir() + "/mnist/t10k-images-idx3-ubyte"; }

  // One short epoch of kModel, with `extra` flags: --preset=mnist creates it, --resume continues its newest version.
  CliProcess::Result TrainOneEpoch(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"train",
                                     std::string("--model=") + kModel,
                                     "--dataset=mnist",
                                     "--epochs=1",
                                     "--batch_size=100",
                                     "--max_train_images=500",
                                     ServerFlag()};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunCli(args);
  }

  TempDir dir_;
};

TEST_F(RepoLiveTest, APinnedVersionKeepsItsCodesWhileTheModelTrainsOnAndStoredCodesKeepTheirVersion) {
  const auto first = TrainOneEpoch({"--preset=mnist", "--promote_label=stable"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr("label stable now names pinned version 1\n"));

  // Codes of version 1, by the library and by vae-client (which stores the version with them).
  const at::Tensor digits = LoadIdxDataset(IdxPath(), "", 4)->images;
  auto v1 = client().Encode(client::ImageInput::FromTensor(digits), client::ModelSpec::Pinned(kModel, 1));
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->version.model, kModel);
  EXPECT_EQ(v1->version.version, 1);
  const std::string z = dir_.file("z.json");
  ASSERT_EQ(RunCli({"encode", IdxPath(), "--limit=4", "--model=pinned", "--output=" + z, ServerFlag()}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(ReadFile(z))["version"]["version"], 1);

  // Version 2 (no promote_label: stable stays on 1). latest moves; the pin does not.
  ASSERT_EQ(TrainOneEpoch({"--resume"}).exit_code, 0);
  auto pinned = client().Encode(client::ImageInput::FromTensor(digits), client::ModelSpec::Pinned(kModel, 1));
  auto latest = client().Encode(client::ImageInput::FromTensor(digits), client::ModelSpec::Labelled(kModel, "latest"));
  ASSERT_TRUE(pinned.ok() && latest.ok());
  EXPECT_TRUE(at::equal(pinned->mu, v1->mu));  // bitwise
  EXPECT_TRUE(at::equal(pinned->sigma, v1->sigma));
  EXPECT_EQ(latest->version.version, 2);
  EXPECT_FALSE(at::equal(latest->mu, v1->mu));
  const std::string z_again = dir_.file("z-again.json");
  ASSERT_EQ(RunCli({"encode", IdxPath(), "--limit=4", "--model=pinned", "--label=stable", "--output=" + z_again,
                    ServerFlag()})
                .exit_code,
            0);
  EXPECT_EQ(ReadFile(z_again), ReadFile(z));  // stable is version 1: byte-identical codes

  // decode: the codes' own version by default; latest refused without --force.
  const auto decoded = RunCli({"decode", "--input=" + z, "--output=" + dir_.file("d.png"), ServerFlag()});
  ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_THAT(decoded.out, HasSubstr(", model pinned version 1 ("));
  const auto refused =
      RunCli({"decode", "--input=" + z, "--output=" + dir_.file("e.png"), "--label=latest", ServerFlag()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(refused.err, HasSubstr(" holds codes of pinned version 1; --label=latest is pinned version 2: "));

  // The repository as the server lists it.
  auto list = client().ListModels(kModel);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->models.size(), 1u);
  const client::ModelEntry& m = list->models[0];
  ASSERT_EQ(m.versions.size(), 2u);
  EXPECT_EQ(m.versions[0].version, 1);
  EXPECT_EQ(m.versions[1].version, 2);
  EXPECT_EQ(m.labels.at("stable"), 1);
  EXPECT_EQ(m.labels.at("latest"), 2);
  EXPECT_TRUE(m.versions[0].test.has_value());
  EXPECT_GT(m.versions[1].size_bytes, 0);
  const auto table = RunCli({"models", kModel, ServerFlag()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, ::testing::ContainsRegex("\npinned +1  stable +1 "));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("\npinned +2  latest\\* +2 "));

  // Labels and deletion: a labelled version needs --force; an unknown version is NOT_FOUND.
  const auto label = RunCli({"label", kModel, "canary", "2", ServerFlag()});
  ASSERT_EQ(label.exit_code, 0) << label.err;
  EXPECT_EQ(label.out, "pinned: label canary -> version 2 (new)\n");
  const auto missing = RunCli({"label", kModel, "canary", "9", ServerFlag()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr(": NOT_FOUND: "));
  const auto labelled = RunCli({"delete", kModel, "1", ServerFlag()});
  EXPECT_EQ(labelled.exit_code, 1);
  EXPECT_THAT(labelled.err, HasSubstr(": FAILED_PRECONDITION: "));
  const auto forced = RunCli({"delete", kModel, "1", "--force", ServerFlag()});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(forced.out, "deleted pinned version 1 and its labels stable\n");
  auto gone = client().Encode(client::ImageInput::FromTensor(digits), client::ModelSpec::Pinned(kModel, 1));
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  const auto model = RunCli({"delete", kModel, "--force", ServerFlag()});
  ASSERT_EQ(model.exit_code, 0) << model.err;
  EXPECT_EQ(model.out, "deleted model pinned (1 version)\n");
  EXPECT_EQ(client().ListModels(kModel).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vae::testing
