#include "server/http_server.h"

#include <glog/logging.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/request_log.h"

namespace vae::server {
namespace {

// True on the thread answering connections that found the server full (BoundedQueue).
thread_local bool shedding = false;

bool IsOpenPath(const std::string& path) {
  for (const char* open : HttpServer::kOpenPaths) {
    if (path == open) return true;
  }
  return false;
}

std::chrono::microseconds ToMicros(absl::Duration d) { return absl::ToChronoMicroseconds(d); }

}  // namespace

// httplib's own ThreadPool queues accepted connections without bound. This one runs them on `threads` workers with at
// most `max_queued` waiting; a connection beyond that goes to one shedding thread, which answers its request 503 at
// once (the `shedding` flag, read by Admit) instead of letting it wait behind the others.
class HttpServer::BoundedQueue final : public httplib::TaskQueue {
 public:
  BoundedQueue(int threads, int max_queued) : max_queued_(max_queued) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(&jobs_, false); });
    workers_.emplace_back([this] { Work(&shed_jobs_, true); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(jobs_.size()) < max_queued_ + idle_) {
        jobs_.push_back(std::move(fn));
      } else {
        shed_jobs_.push_back(std::move(fn));
      }
    }
    cv_.notify_all();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void Work(std::deque<std::function<void()>>* queue, bool shed) {
    shedding = shed;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!shed) ++idle_;
        cv_.wait(lock, [&] { return !queue->empty() || shutdown_; });
        if (!shed) --idle_;
        if (queue->empty()) return;  // shut down, and nothing left to answer
        fn = std::move(queue->front());
        queue->pop_front();
      }
      fn();
    }
  }

  const int max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;       // guarded by mu_
  std::deque<std::function<void()>> shed_jobs_;  // guarded by mu_
  int idle_ = 0;                                 // workers waiting for a job; guarded by mu_
  bool shutdown_ = false;                        // guarded by mu_
  std::vector<std::thread> workers_;
};

HttpServer::HttpServer(Options options, Authorize authorize, Ready ready, Exposition metrics)
    : options_(std::move(options)),
      authorize_(std::move(authorize)),
      ready_(std::move(ready)),
      metrics_(std::move(metrics)) {
  if (options_.tls_cert_file.empty()) {
    server_ = std::make_unique<httplib::Server>();
  } else {
    server_ = std::make_unique<httplib::SSLServer>(
        options_.tls_cert_file.c_str(), options_.tls_key_file.c_str(),
        options_.tls_client_ca_file.empty() ? nullptr : options_.tls_client_ca_file.c_str());
  }
  const int threads = options_.threads, max_queued = options_.max_queued;
  server_->new_task_queue = [threads, max_queued] { return new BoundedQueue(threads, max_queued); };
  server_->set_read_timeout(ToMicros(options_.read_timeout));
  server_->set_write_timeout(ToMicros(options_.write_timeout));
  server_->set_keep_alive_timeout(std::max<time_t>(1, absl::ToInt64Seconds(options_.keep_alive)));
  server_->set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
  // httplib's default also sets SO_REUSEPORT, with which a second server binds the same port without an error and the
  // kernel splits the connections between the two. SO_REUSEADDR only: a port in use is an error, as for gRPC.
  server_->set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return Admit(req, res); });
  server_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    SetError(absl::InternalError(absl::StrCat("http: ", what)), res);
  });

  Handle(Method::kGet, "/healthz",
         [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain; charset=utf-8"); });
  Handle(Method::kGet, "/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (!draining() && ready_ && ready_()) {
      res.set_content("ready\n", "text/plain; charset=utf-8");
    } else {
      res.status = 503;
      res.set_content(draining() ? "draining\n" : "not ready\n", "text/plain; charset=utf-8");
    }
  });
  if (metrics_) {
    Handle(Method::kGet, "/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
}

HttpServer::~HttpServer() { Stop(absl::Now()); }

void HttpServer::Handle(Method method, const std::string& pattern, httplib::Server::Handler handler) {
  auto routed = [this, pattern, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    Route(pattern, req, res, handler);
  };
  switch (method) {
    case Method::kGet:
      server_->Get(pattern, std::move(routed));
      break;
    case Method::kPost:
      server_->Post(pattern, std::move(routed));
      break;
    case Method::kDelete:
      server_->Delete(pattern, std::move(routed));
      break;
  }
}

void HttpServer::Route(const std::string& pattern, const httplib::Request& req, httplib::Response& res,
                       const httplib::Server::Handler& handler) {
  in_flight_.fetch_add(1);
  struct Done {
    std::atomic<int>* n;
    ~Done() { n->fetch_sub(1); }
  } done{&in_flight_};
  const absl::Time start = absl::Now();
  handler(req, res);
  if (observer_ && !IsOpenPath(req.path)) observer_(pattern, req, res, absl::Now() - start);
}

httplib::Server::HandlerResponse HttpServer::Admit(const httplib::Request& req, httplib::Response& res) {
  using HandlerResponse = httplib::Server::HandlerResponse;
  if (shedding) {
    res.set_header("Retry-After", "1");
    SetError(absl::UnavailableError(absl::StrCat("http: every one of the server's ", options_.threads,
                                                 " HTTP threads is busy and ", options_.max_queued,
                                                 " connections wait; retry")),
             res);
    return HandlerResponse::Handled;
  }
  if (IsOpenPath(req.path)) return HandlerResponse::Unhandled;
  // The caller's X-Request-Id (up to 128 bytes), or a new one; echoed back, and in the request log.
  const std::string& id = req.get_header_value("X-Request-Id");
  res.set_header("X-Request-Id", !id.empty() && id.size() <= 128 ? id : RequestLog::NewRequestId());
  if (draining()) {
    SetError(absl::UnavailableError(
                 "vae-server is shutting down and takes no new calls; retry on another instance or after the restart"),
             res);
    return HandlerResponse::Handled;
  }
  if (authorize_) {
    const bool has = req.has_header("Authorization");
    const std::string value = has ? req.get_header_value("Authorization") : std::string();
    const absl::string_view view(value);
    if (absl::Status status = authorize_(has ? &view : nullptr, req); !status.ok()) {
      if (status.code() == absl::StatusCode::kUnauthenticated) res.set_header("WWW-Authenticate", "Bearer");
      SetError(status, res);
      return HandlerResponse::Handled;
    }
  }
  return HandlerResponse::Unhandled;
}

absl::StatusOr<int> HttpServer::Start() {
  if (listener_.joinable() || stopped_) return absl::FailedPreconditionError("http: server already started");
  if (!server_->is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "http: cannot load the TLS certificate ", options_.tls_cert_file, " and key ", options_.tls_key_file,
        options_.tls_client_ca_file.empty() ? "" : " and client CA ", options_.tls_client_ca_file));
  }
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
  } else {
    port_ = server_->bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    port_ = 0;
    return absl::UnavailableError(
        absl::StrCat("http: cannot listen on ", options_.host, ":", options_.port, " (in use, not a local address?)"));
  }
  listener_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() before the listener runs would be lost (httplib ignores it until is_running()).
  while (!server_->is_running()) absl::SleepFor(absl::Milliseconds(1));
  return port_;
}

void HttpServer::Stop(absl::Time deadline) {
  if (stopped_) return;
  stopped_ = true;
  StartDraining();
  if (!listener_.joinable()) return;
  while (in_flight_.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  // Closes the listening socket; idle keep-alive connections end within Options::keep_alive, then the workers join.
  server_->stop();
  listener_.join();
}

int HttpServer::HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

void HttpServer::SetError(const absl::Status& status, httplib::Response& res) {
  res.status = HttpStatusOf(status.code());
  nlohmann::json body = {
      {"error", {{"code", absl::StatusCodeToString(status.code())}, {"message", std::string(status.message())}}}};
  // A message may quote a cut-off piece of the request: invalid UTF-8 is replaced, never thrown over.
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", "application/json");
}

}  // namespace vae::server
