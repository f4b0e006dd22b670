// InProcessServer: a VaeServer in this process on a free 127.0.0.1 port, with a plaintext channel to it, for the
// tests/server suites that call the service through a real channel (one per suite, in SetUpTestSuite). It owns its
// --model_dir (a TempDir), its --data_dir (the synthetic MNIST of tests/common/synthetic_mnist.h), the server (shut
// down with 5 s of grace when destroyed) and the channel.
#ifndef VAE_TESTS_SERVER_IN_PROCESS_SERVER_H_
#define VAE_TESTS_SERVER_IN_PROCESS_SERVER_H_

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "server/server.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"

namespace vae::testing {

struct InProcessServer {
  // Options: port 0, a fresh model_dir, the synthetic data_dir, device cpu, 2 threads; then `customize` (may be
  // empty) sets the rest. Null, after a test failure naming the cause, when the server cannot start.
  static std::unique_ptr<InProcessServer> Start(const std::function<void(server::ServerOptions&)>& customize) {
    auto env = std::make_unique<InProcessServer>();
    server::ServerOptions options;
    options.port = 0;
    options.model_dir = env->model_dir.path();
    options.data_dir = env->data_dir.path();
    options.device = "cpu";
    options.threads = 2;
    if (customize) customize(options);
    auto server = server::VaeServer::Create(options);
    if (!server.ok()) {
      ADD_FAILURE() << server.status();
      return nullptr;
    }
    env->server = *std::move(server);
    auto port = env->server->Start();
    if (!port.ok()) {
      ADD_FAILURE() << port.status();
      return nullptr;
    }
    env->channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(*port), grpc::InsecureChannelCredentials());
    return env;
  }

  ~InProcessServer() {
    if (server != nullptr) server->Shutdown(absl::Seconds(5));
  }

  TempDir model_dir;
  SyntheticDataDir data_dir;
  std::unique_ptr<server::VaeServer> server;
  std::shared_ptr<grpc::Channel> channel;
};

}  // namespace vae::testing

#endif  // VAE_TESTS_SERVER_IN_PROCESS_SERVER_H_
