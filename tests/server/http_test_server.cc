// vae-http-test-server: a ServerCore with its HTTP API (server/http_api.h) on vae-server's HttpServer (no token, no
// gRPC), on a free 127.0.0.1 port, for tests/server/http_api_test.py and browser_test.py: what vae-server's HTTP port
// serves, on a core whose data_dir the test controls. Serves a fresh mnist model, with the synthetic MNIST
// (tests/common/synthetic_mnist.h) as its
// --data_dir so that Train works without the real data (or DATA_DIR, e.g. for docs/web-page.png on the real MNIST).
// Prints "listening on 127.0.0.1:PORT" once it serves; runs until stdin closes (the test's end), then shuts down.
//
// Usage: vae-http-test-server [MAX_MESSAGE_MB [DATA_DIR]]
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/time/clock.h"
#include "server/http_api.h"
#include "server/http_server.h"
#include "server/server_core.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"

int main(int argc, char** argv) {
  vae::testing::TempDir model_dir;
  vae::testing::SyntheticDataDir data_dir;
  vae::server::ServerOptions options;
  options.model_dir = model_dir.path();
  options.data_dir = data_dir.path();
  options.device = "cpu";
  options.threads = 2;
  if (argc > 1) options.max_message_mb = std::atoi(argv[1]);
  if (argc > 2) options.data_dir = argv[2];
  auto core = vae::server::ServerCore::Create(options);
  if (!core.ok()) {
    std::cerr << "vae-http-test-server: " << core.status() << "\n";
    return 1;
  }
  vae::server::HttpServer::Options http_options;
  http_options.max_body_bytes = int64_t{options.max_message_mb} << 20;
  vae::server::HttpServer http(
      http_options, nullptr, [] { return true; }, nullptr);
  vae::server::HttpApi(core->get(), http_options.max_body_bytes, "the server's limit").Mount(&http);
  const auto port = http.Start();
  if (!port.ok()) {
    std::cerr << "vae-http-test-server: " << port.status() << "\n";
    return 1;
  }
  std::cout << "listening on 127.0.0.1:" << *port << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  http.Stop(absl::Now() + absl::Seconds(5));
  (*core)->Shutdown();
  return 0;
}
