// The real vae-server binary and its shutdown signals: a SIGTERM during start-up, and the calls that arrive while a
// SIGTERM drains the server. Each test starts its own server on a fresh --model_dir.
#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::DataDir;
using ::vae::testing::ServerProcess;
using ::vae::testing::TempDir;

// Regression: a SIGTERM before main() -- while LibTorch's, gRPC's and OpenCV's initialisers run, ~0.5 s -- killed the
// process with signal 15. The shutdown signals are now blocked first thing (.preinit_array), so such a SIGTERM waits
// until main() sees it: start-up stops after loading the model, before binding the port, and the process exits 0.
TEST(ShutdownSignalTest, SigtermBeforeMainExitsZero) {
  TempDir model_dir;
  // The library raises SIGTERM from its initialiser; the environment is read once, at exec.
  ASSERT_EQ(setenv("LD_PRELOAD", VAE_SIGTERM_IN_INIT_LIBRARY, /*overwrite=*/1), 0);
  auto server = ServerProcess::Spawn(VAE_SERVER_BINARY, {"--model_dir=" + model_dir.path(), "--data_dir=" + DataDir()});
  unsetenv("LD_PRELOAD");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->Wait(std::chrono::seconds(60)), 0) << server->log();
  EXPECT_THAT(server->log(), HasSubstr("shutdown signal received during start-up: exiting"));
  EXPECT_THAT(server->log(), ::testing::Not(HasSubstr("listening on")));
}

// Regression: calls that arrived while a SIGTERM drained the server got CANCELLED (gRPC's answer to calls on a server
// whose Shutdown has begun). The server now refuses them itself, with UNAVAILABLE, from the moment the drain starts:
// a client calling in a loop sees OK until then, and UNAVAILABLE "shutting down" first.
TEST(ShutdownSignalTest, CallsDuringTheDrainGetUnavailable) {
  TempDir model_dir;
  auto server = ServerProcess::Start(
      VAE_SERVER_BINARY, {"--model_dir=" + model_dir.path(), "--data_dir=" + DataDir(), "--shutdown_grace_s=30"});
  ASSERT_NE(server, nullptr);
  auto stub = server->NewStub();
  // A running job: the drain stops it, waits for its checkpoint, and lets its Train call stream DONE.
  grpc::ClientContext train_context;
  v1::TrainRequest request;
  request.set_dataset("mnist");
  request.set_epochs(1000);
  request.set_max_train_images(20000);
  request.set_log_every_steps(5);
  auto reader = stub->Train(&train_context, request);
  v1::TrainProgress progress;
  ASSERT_TRUE(reader->Read(&progress));
  ASSERT_TRUE(reader->Read(&progress));
  ASSERT_EQ(progress.kind(), v1::TrainProgress::STEP);
  std::thread train_reader([&] {
    v1::TrainProgress p;
    while (reader->Read(&p)) progress = p;
  });

  ASSERT_EQ(kill(server->pid(), SIGTERM), 0);
  grpc::Status refused;
  int answered = 0;
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ModelInfo info;
    refused = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!refused.ok()) break;
    ++answered;  // before the drain began
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message() << "\n" << server->log();
  EXPECT_THAT(refused.error_message(), HasSubstr("vae-server is shutting down and takes no new calls"));

  train_reader.join();
  const grpc::Status train_status = reader->Finish();
  EXPECT_EQ(progress.kind(), v1::TrainProgress::DONE);
  EXPECT_TRUE(progress.cancelled());
  EXPECT_EQ(train_status.error_code(), grpc::StatusCode::UNAVAILABLE) << train_status.error_message();
  EXPECT_THAT(train_status.error_message(), HasSubstr("resume it after the restart"));
  EXPECT_EQ(server->Wait(std::chrono::seconds(60)), 0) << server->log();
  SUCCEED() << answered << " calls answered before the drain";
}

}  // namespace
}  // namespace vae
