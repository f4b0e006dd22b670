// HttpServer on a free 127.0.0.1 port, driven by httplib::Client and raw sockets: open paths, token check, draining,
// the body limit, the bounded connection queue, slow clients.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;

HttpServer::Authorize TokenCheck(std::string token) {
  return [token](const absl::string_view* header, const httplib::Request&) {
    if (header == nullptr) return absl::UnauthenticatedError("no authorization header");
    if (*header != "Bearer " + token) return absl::UnauthenticatedError("wrong token");
    return absl::OkStatus();
  };
}

HttpServer::Options Options() {
  HttpServer::Options options;
  options.port = 0;
  options.threads = 2;
  options.read_timeout = options.write_timeout = absl::Seconds(1);
  options.keep_alive = absl::Seconds(1);
  options.max_body_bytes = 1024;
  return options;
}

// A raw connection to 127.0.0.1:port.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Everything the peer sends until it closes (or 10 s pass).
std::string ReadAll(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  return out;
}

// GET /slow: notifies `entered`, waits for `release`, answers "done".
void HandleSlow(HttpServer* server, absl::Notification* entered, absl::Notification* release) {
  server->Handle(HttpServer::Method::kGet, "/slow",
                 [entered, release](const httplib::Request&, httplib::Response& res) {
                   entered->Notify();
                   release->WaitForNotification();
                   res.set_content("done", "text/plain");
                 });
}

TEST(HttpServerTest, ProbesAndMetricsAreOpenOtherPathsNeedTheToken) {
  std::atomic<bool> ready{true};
  HttpServer server(
      Options(), TokenCheck("s3cret"), [&] { return ready.load(); }, [] { return "m 1\n"; });
  server.Handle(HttpServer::Method::kGet, "/v1/models",
                [](const httplib::Request&, httplib::Response& res) { res.set_content("{}", "application/json"); });
  auto port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_EQ(client.Get("/readyz")->body, "ready\n");
  ready = false;
  EXPECT_EQ(client.Get("/readyz")->status, 503);
  auto metrics = client.Get("/metrics");
  EXPECT_EQ(metrics->body, "m 1\n");
  EXPECT_EQ(metrics->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");

  auto refused = client.Get("/v1/models");
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_THAT(refused->body, HasSubstr("\"code\":\"UNAUTHENTICATED\""));
  EXPECT_EQ(client.Get("/v1/models", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(client.Get("/v1/models", {{"Authorization", "Bearer s3cret"}})->status, 200);
  server.Stop(absl::Now() + absl::Seconds(5));
}

TEST(HttpServerTest, DrainingRefusesRoutesButNotProbesAndStopWaitsForRequestsInFlight) {
  absl::Notification entered, release;
  HttpServer server(
      Options(), nullptr, [] { return true; }, nullptr);
  HandleSlow(&server, &entered, &release);
  auto port = server.Start();
  ASSERT_TRUE(port.ok());
  auto slow = std::async(std::launch::async, [&] { return httplib::Client("127.0.0.1", *port).Get("/slow"); });
  entered.WaitForNotification();
  server.StartDraining();
  httplib::Client client("127.0.0.1", *port);
  EXPECT_EQ(client.Get("/readyz")->body, "draining\n");
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_EQ(client.Get("/metrics")->status, 404);  // no exposition: --metrics=false
  EXPECT_EQ(client.Get("/slow")->status, 503);
  EXPECT_EQ(server.in_flight(), 1);
  auto stopped = std::async(std::launch::async, [&] { server.Stop(absl::Now() + absl::Seconds(30)); });
  EXPECT_EQ(stopped.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);  // waits for /slow
  release.Notify();
  auto result = slow.get();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->body, "done");  // the request in flight finished
  stopped.get();
}

TEST(HttpServerTest, ObserverSeesRoutedRequestsWithTheirRequestId) {
  struct Seen {
    std::string pattern, path, id;
    int status;
  };
  absl::Mutex mu;
  std::vector<Seen> seen;
  HttpServer server(
      Options(), nullptr, [] { return true; }, [] { return ""; });
  server.SetObserver([&](const std::string& pattern, const httplib::Request& req, const httplib::Response& res,
                         absl::Duration latency) {
    EXPECT_GE(latency, absl::ZeroDuration());
    absl::MutexLock lock(&mu);
    seen.push_back({pattern, req.path, res.get_header_value("X-Request-Id"), res.status});
  });
  server.Handle(HttpServer::Method::kGet, R"(/v1/models/([a-z]+))",
                [](const httplib::Request&, httplib::Response& res) { res.status = 404; });
  auto port = server.Start();
  ASSERT_TRUE(port.ok());
  httplib::Client client("127.0.0.1", *port);
  auto mine = client.Get("/v1/models/abc", {{"X-Request-Id", "rid-42"}});
  EXPECT_EQ(mine->get_header_value("X-Request-Id"), "rid-42");
  auto made_up = client.Get("/v1/models/xyz");
  EXPECT_EQ(made_up->get_header_value("X-Request-Id").size(), 16u);
  client.Get("/metrics");  // open paths are not observed
  server.Stop(absl::Now() + absl::Seconds(5));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].pattern, "/v1/models/([a-z]+)");
  EXPECT_EQ(seen[0].path, "/v1/models/abc");
  EXPECT_EQ(seen[0].id, "rid-42");
  EXPECT_EQ(seen[0].status, 404);
  EXPECT_EQ(seen[1].id, made_up->get_header_value("X-Request-Id"));
}

TEST(HttpServerTest, OversizeBodyGets413) {
  HttpServer server(
      Options(), nullptr, [] { return true; }, nullptr);
  server.Handle(HttpServer::Method::kPost, "/echo",
                [](const httplib::Request& req, httplib::Response& res) { res.set_content(req.body, "text/plain"); });
  auto port = server.Start();
  ASSERT_TRUE(port.ok());
  httplib::Client client("127.0.0.1", *port);
  EXPECT_EQ(client.Post("/echo", std::string(1024, 'a'), "text/plain")->status, 200);
  EXPECT_EQ(client.Post("/echo", std::string(1025, 'a'), "text/plain")->status, 413);
}

TEST(HttpServerTest, ConnectionsBeyondWorkersAndQueueGet503AtOnce) {
  HttpServer::Options options = Options();
  options.threads = 1;
  options.max_queued = 0;
  absl::Notification entered, release;
  HttpServer server(
      options, nullptr, [] { return true; }, nullptr);
  HandleSlow(&server, &entered, &release);
  auto port = server.Start();
  ASSERT_TRUE(port.ok());
  auto slow = std::async(std::launch::async, [&] { return httplib::Client("127.0.0.1", *port).Get("/slow"); });
  entered.WaitForNotification();  // the one worker is busy
  auto shed = httplib::Client("127.0.0.1", *port).Get("/healthz");
  ASSERT_TRUE(shed);
  EXPECT_EQ(shed->status, 503);
  EXPECT_EQ(shed->get_header_value("Retry-After"), "1");
  EXPECT_THAT(shed->body, HasSubstr("HTTP threads is busy"));
  release.Notify();
  EXPECT_EQ(slow.get()->body, "done");
}

TEST(HttpServerTest, ASlowClientIsCutOffAfterTheReadTimeout) {
  HttpServer server(
      Options(), nullptr, [] { return true; }, nullptr);  // 1 s read timeout
  auto port = server.Start();
  ASSERT_TRUE(port.ok());
  const int fd = Connect(*port);
  const std::string partial = "GET /healthz HTTP/1.1\r\nHost: x\r\n";  // the headers never end
  ASSERT_EQ(write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  // The server gives up on the request and closes the connection (answering 400 or nothing), freeing its worker.
  const std::string answer = ReadAll(fd);
  EXPECT_TRUE(answer.empty() || answer.rfind("HTTP/1.1 400", 0) == 0) << answer;
  close(fd);
  EXPECT_EQ(httplib::Client("127.0.0.1", *port).Get("/healthz")->status, 200);
}

TEST(HttpServerTest, StartFailsOnAPortInUseAndOnMissingTlsFiles) {
  HttpServer first(
      Options(), nullptr, [] { return true; }, nullptr);
  auto port = first.Start();
  ASSERT_TRUE(port.ok());
  HttpServer::Options options = Options();
  options.port = *port;
  HttpServer second(
      options, nullptr, [] { return true; }, nullptr);
  EXPECT_EQ(second.Start().status().code(), absl::StatusCode::kUnavailable);
  HttpServer::Options tls = Options();
  tls.tls_cert_file = "/nonexistent/cert.pem";
  tls.tls_key_file = "/nonexistent/key.pem";
  HttpServer third(
      tls, nullptr, [] { return true; }, nullptr);
  auto status = third.Start().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("/nonexistent/cert.pem"));
}

}  // namespace
}  // namespace vae::server
