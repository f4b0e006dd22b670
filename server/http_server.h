// HttpServer: vae-server's HTTP/1.1 port (--http_port), beside gRPC. It serves the operations endpoints itself --
// GET /healthz (live), GET /readyz (ready to serve), GET /metrics (Prometheus text format) -- and whatever routes the
// rest of the server registers with Handle() (the HTTP/JSON API, the web page). No gRPC here: the server (server.cc)
// wires it to the model, the metrics registry and the token check.
//
// Built on Debian's cpp-httplib (libcpp-httplib-dev 0.11.4; README "HTTP port" says why and where it falls short):
// a fixed pool of `threads` workers, each connection held by one worker for its whole keep-alive life; a connection
// accepted while every worker is busy and `max_queued` connections already wait is answered 503 by the accepting
// thread at once and closed. Slow clients are cut off by read/write timeouts; bodies over max_body_bytes get 413
// before they are read. TLS with the gRPC port's certificate and key (and, with a client CA, client certificates).
//
// Authentication (`authorize` set): every request but the open paths (kOpenPaths: probes and metrics, which carry no
// secret and must work for Kubernetes and Prometheus without one; the web page, static HTML whose API calls carry the
// token typed into it) needs "Authorization: Bearer <token>"; without a valid one it gets 401 and a JSON error body,
// before its route runs. Those requests also get an X-Request-Id response header: the request's own (up to 128
// bytes) or a new one.
//
// Lifetime and threads: construct, Handle() routes, Start() (binds, serves on its own threads), StartDraining()
// (readyz 503, every route but the open ones 503), Stop() (waits for requests in flight, then closes). Handle and
// Start/Stop are for one controlling thread; handlers run on the worker threads, concurrently. Stop is idempotent and
// the destructor calls it.
#ifndef VAE_SERVER_HTTP_SERVER_H_
#define VAE_SERVER_HTTP_SERVER_H_

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vae::server {

namespace metrics {
class Registry;
}

class HttpServer {
 public:
  // Paths open without a token.
  static constexpr const char* kOpenPaths[] = {"/healthz", "/readyz", "/metrics", "/"};

  struct Options {
    std::string host = "127.0.0.1";
    int port = 0;  // 0: a free one (Start returns it)
    int threads = 8;
    int max_queued = 64;
    absl::Duration read_timeout = absl::Seconds(5);
    absl::Duration write_timeout = absl::Seconds(5);
    absl::Duration keep_alive = absl::Seconds(2);
    int64_t max_body_bytes = int64_t{16} << 20;
    // TLS (PEM files), as the gRPC port: all empty means plaintext.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
  };

  // OK, or UNAUTHENTICATED / PERMISSION_DENIED for the "Authorization" header's value (nullptr: none sent) on
  // `request` (its method and path tell what access it needs: POST /v1/train the full token).
  using Authorize =
      std::function<absl::Status(const absl::string_view* authorization, const httplib::Request& request)>;
  // True when the server is ready to serve (a model loaded and warmed up, not draining).
  using Ready = std::function<bool()>;
  // The /metrics body (Prometheus text format 0.0.4).
  using Exposition = std::function<std::string()>;

  // `authorize` null: no authentication. `metrics` null: /metrics answers 404 (--metrics=false).
  HttpServer(Options options, Authorize authorize, Ready ready, Exposition metrics);
  ~HttpServer();

  // Sees every request a registered route answered (not the open paths): the route's pattern, the request, the
  // response (its status), and the time the handler took. For metrics and the request log; any worker thread.
  using Observer = std::function<void(const std::string& pattern, const httplib::Request& req,
                                      const httplib::Response& res, absl::Duration latency)>;
  // Before Start().
  void SetObserver(Observer observer) { observer_ = std::move(observer); }

  // Registers a route (httplib pattern: a regex over the path; captures in req.matches). Before Start().
  enum class Method { kGet, kPost, kDelete };
  void Handle(Method method, const std::string& pattern, httplib::Server::Handler handler);
  // The underlying server, for what Handle does not cover (content readers, streaming). Before Start().
  httplib::Server& mux() { return *server_; }

  // Binds host:port and serves on a thread of its own. Returns the bound port; UNAVAILABLE when the address cannot
  // be bound, INVALID_ARGUMENT when the TLS files cannot be loaded.
  absl::StatusOr<int> Start();

  // From now on /readyz answers 503 and every route but the open paths 503 ("shutting down"). Irreversible.
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  // Waits until no request is in flight or `deadline` passes, then stops listening, closes every connection and joins
  // the threads.
  void Stop(absl::Time deadline);

  int port() const { return port_; }
  // Requests being handled now.
  int in_flight() const { return in_flight_.load(); }

  // Writes a JSON error body {"error": {"code": "...", "message": "..."}} with the HTTP status of `status`' code.
  static void SetError(const absl::Status& status, httplib::Response& res);
  // The HTTP status for an absl code (INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND
  // 404, FAILED_PRECONDITION 409, ... RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, else 500).
  static int HttpStatusOf(absl::StatusCode code);

 private:
  class BoundedQueue;
  httplib::Server::HandlerResponse Admit(const httplib::Request& req, httplib::Response& res);
  void Route(const std::string& pattern, const httplib::Request& req, httplib::Response& res,
             const httplib::Server::Handler& handler);

  const Options options_;
  const Authorize authorize_;
  const Ready ready_;
  const Exposition metrics_;
  Observer observer_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace vae::server

#endif  // VAE_SERVER_HTTP_SERVER_H_
