// Bearer tokens end to end: the real vae-server started with --auth_token_file (the token file ends in a newline)
// and a read-only token from $VAE_AUTH_READONLY_TOKEN, called by the C++ client library (ClientOptions::token) and
// by the vae-client binary (--token_file, $VAE_TOKEN). Also: an empty token file stops vae-server at start-up with
// one line, and the server's log of refused calls never holds a token.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/client/live_server.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "full-b7d04e9a1c3f";
constexpr char kReadonlyToken[] = "ro-62e8f1a09d4c";

class ClientAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = new vae::testing::SyntheticDataDir();
    std::ofstream(dir_->file("token")) << kToken << "\n";  // as `echo TOKEN > file` writes it
    std::ofstream(dir_->file("readonly-token")) << kReadonlyToken << "\n";
    std::ofstream(dir_->file("wrong-token")) << "full-b7d04e9a1c3e\n";
    std::ofstream(dir_->file("empty-token")) << "";
    setenv("VAE_AUTH_READONLY_TOKEN", kReadonlyToken, 1);  // inherited by the server
    server_ =
        ServerProcess::Start(VAE_SERVER_BINARY, {"--model_dir=" + dir_->file("models"), "--data_dir=" + data_->path(),
                                                 "--auth_token_file=" + dir_->file("token")})
            .release();
    unsetenv("VAE_AUTH_READONLY_TOKEN");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
    delete data_;
    data_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static std::unique_ptr<client::Client> Connect(const std::string& token) {
    client::ClientOptions options;
    options.timeout = absl::Seconds(20);
    options.token = token;
    auto c = client::Client::Create(server_->address(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  static std::string File(const std::string& name) { return dir_->file(name); }
  static std::string ServerFlag() { return "--server=" + server_->address(); }

  static client::TrainOptions TinyTraining() {
    client::TrainOptions options;
    options.dataset = "mnist";
    options.epochs = 1;
    options.batch_size = 100;
    options.max_train_images = 200;
    options.log_every_steps = 1;
    return options;
  }
  static TempDir* dir_;
  static vae::testing::SyntheticDataDir* data_;
  static ServerProcess* server_;
};
TempDir* ClientAuthTest::dir_ = nullptr;
vae::testing::SyntheticDataDir* ClientAuthTest::data_ = nullptr;
ServerProcess* ClientAuthTest::server_ = nullptr;

TEST_F(ClientAuthTest, TheFullTokenCallsEverythingIncludingTrain) {
  auto client = Connect(kToken);
  ASSERT_NE(client, nullptr);
  auto info = client->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->latent_dim, 20);
  auto encoded = client->Encode(client::ImageInput::FromTensor(at::zeros({2, 1, 28, 28})));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->mu.sizes(), (std::vector<int64_t>{2, 20}));
  // The Train stream carries the token too: a real (tiny) job runs to its end.
  auto trained = client->Train(TinyTraining());
  ASSERT_TRUE(trained.ok()) << trained.status() << "\n" << server_->log();
  EXPECT_EQ(trained->last.kind, client::TrainProgress::Kind::kDone);
  EXPECT_EQ(trained->last.global_step, 2);  // a fresh model: 200 images / 100 per step
}

TEST_F(ClientAuthTest, WithoutATokenOnlyHealthAnswers) {
  auto client = Connect("");
  ASSERT_NE(client, nullptr);
  auto health = client->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::ServingStatus::kServing);
  auto info = client->GetModelInfo();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(info.status().message(), HasSubstr("GetModelInfo: no authorization metadata"));
  auto trained = client->Train(TinyTraining());
  EXPECT_EQ(trained.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(trained.status().message(), HasSubstr("Train: no authorization metadata"));
}

TEST_F(ClientAuthTest, AWrongTokenIsUnauthenticated) {
  auto client = Connect("full-b7d04e9a1c3e");
  ASSERT_NE(client, nullptr);
  auto sample = client->Sample({});
  EXPECT_EQ(sample.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(sample.status().message(), "Sample: wrong token");
}

TEST_F(ClientAuthTest, TheReadOnlyTokenEncodesButCannotTrain) {
  auto client = Connect(kReadonlyToken);
  ASSERT_NE(client, nullptr);
  auto encoded = client->Encode(client::ImageInput::FromTensor(at::zeros({1, 1, 28, 28})));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  auto trained = client->Train(TinyTraining());
  EXPECT_EQ(trained.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(trained.status().message(), HasSubstr("read-only role"));
}

TEST_F(ClientAuthTest, CreateRefusesATokenThatCannotBeSent) {
  client::ClientOptions options;
  options.token = "two words";
  auto c = client::Client::Create("127.0.0.1:1", options);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("token: holds characters a token cannot have"));
}

TEST_F(ClientAuthTest, TheCliTakesTheTokenFromTokenFileOrVaeToken) {
  const CliProcess::Result with_file = RunCli({ServerFlag(), "--token_file=" + File("token"), "info", "--json"});
  EXPECT_EQ(with_file.exit_code, 0) << with_file.err;
  EXPECT_THAT(with_file.out, HasSubstr("\"latent_dim\""));

  const CliProcess::Result with_env = RunCli({ServerFlag(), "info", "--json"}, {std::string("VAE_TOKEN=") + kToken});
  EXPECT_EQ(with_env.exit_code, 0) << with_env.err;
  EXPECT_EQ(with_env.out, with_file.out);

  // --token_file wins over $VAE_TOKEN.
  const CliProcess::Result file_wins =
      RunCli({ServerFlag(), "--token_file=" + File("wrong-token"), "info"}, {std::string("VAE_TOKEN=") + kToken});
  EXPECT_EQ(file_wins.exit_code, 1);
  EXPECT_EQ(file_wins.err, "vae-server at " + server_->address() + ": UNAUTHENTICATED: GetModelInfo: wrong token\n");

  const CliProcess::Result readonly = RunCli({ServerFlag(), "--token_file=" + File("readonly-token"), "train",
                                              "--dataset=mnist", "--max_train_images=200", "--batch_size=100"});
  EXPECT_EQ(readonly.exit_code, 1);
  EXPECT_THAT(readonly.err, HasSubstr(": PERMISSION_DENIED: Train: the token presented has the read-only role"));
}

TEST_F(ClientAuthTest, TheCliWithoutATokenIsRefusedButHealthAnswers) {
  const CliProcess::Result info = RunCli({ServerFlag(), "info"});
  EXPECT_EQ(info.exit_code, 1);
  EXPECT_THAT(info.err, HasSubstr("vae-server at " + server_->address() +
                                  ": UNAUTHENTICATED: GetModelInfo: no authorization metadata"));
  const CliProcess::Result health = RunCli({ServerFlag(), "health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
}

TEST_F(ClientAuthTest, TheCliRejectsAnEmptyOrMissingTokenFile) {
  const CliProcess::Result empty = RunCli({ServerFlag(), "--token_file=" + File("empty-token"), "info"});
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_THAT(empty.err, HasSubstr("vae-client info: --token_file: " + File("empty-token") + " is empty"));
  const CliProcess::Result missing = RunCli({ServerFlag(), "--token_file=" + File("nope"), "info"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--token_file: no such file: " + File("nope")));
}

TEST_F(ClientAuthTest, TheServerLogsRefusalsWithoutTheTokens) {
  ASSERT_EQ(RunCli({ServerFlag(), "--token_file=" + File("wrong-token"), "info"}).exit_code, 1);
  ASSERT_EQ(
      RunCli({ServerFlag(), "--token_file=" + File("readonly-token"), "train", "--max_train_images=200"}).exit_code, 1);
  const std::string log = server_->log();
  EXPECT_THAT(log, HasSubstr("bearer token required (full or read-only)"));  // the start-up line
  EXPECT_THAT(log, HasSubstr("auth: refused a call from ipv4:127.0.0.1:"));
  EXPECT_THAT(log, HasSubstr("UNAUTHENTICATED: GetModelInfo: wrong token"));
  EXPECT_THAT(log, HasSubstr("PERMISSION_DENIED: Train: the token presented has the read-only role"));
  EXPECT_THAT(log, Not(HasSubstr("full-b7d04e9a1c3")));  // the full token, and the wrong one tried
  EXPECT_THAT(log, Not(HasSubstr(kReadonlyToken)));
}

TEST(ServerTokenFileTest, AnEmptyTokenFileStopsTheServerWithOneLine) {
  TempDir dir;
  std::ofstream(dir.file("token")) << "\n";
  const std::string command = std::string(VAE_SERVER_BINARY) + " --port=0 --model_dir=" + dir.file("models") +
                              " --auth_token_file=" + dir.file("token") + " > " + dir.file("out") + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(ReadFile(dir.file("out")),
            "vae-server: --auth_token_file: " + dir.file("token") + " is empty; expected a token\n");
}

}  // namespace
}  // namespace vae::testing
