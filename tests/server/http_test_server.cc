// vae-http-test-server: a ServerCore with its HTTP API (server/http_api.h) on a plain httplib::Server, on a free
// 127.0.0.1 port, for the Python tests of tests/server/http_api_test.py until the HTTP server of vae-server itself
// serves them. Serves a fresh mnist model, with the synthetic MNIST (tests/common/synthetic_mnist.h) as its
// --data_dir so that Train works without the real data (or DATA_DIR, e.g. for docs/web-page.png on the real MNIST).
// Prints "listening on 127.0.0.1:PORT" once it serves; runs until stdin closes (the test's end), then shuts down.
//
// Usage: vae-http-test-server [MAX_MESSAGE_MB [DATA_DIR]]
#include <httplib.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "server/http_api.h"
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
  httplib::Server http;
  vae::server::HttpApi api(core->get(), int64_t{options.max_message_mb} << 20);
  api.Mount(&http);
  const int port = http.bind_to_any_port("127.0.0.1");
  if (port <= 0) {
    std::cerr << "vae-http-test-server: cannot bind 127.0.0.1\n";
    return 1;
  }
  std::thread serve([&http] { http.listen_after_bind(); });
  std::cout << "listening on 127.0.0.1:" << port << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  http.stop();
  serve.join();
  (*core)->Shutdown();
  return 0;
}
