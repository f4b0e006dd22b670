#include "server/server.h"

#include <glog/logging.h>
#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "server/auth.h"
#include "server/http_api.h"
#include "server/request_log.h"
#include "server/server_core.h"
#include "server/server_metrics.h"
#include "server/vae_service_impl.h"

namespace vae::server {

std::string JoinHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

namespace {

HttpServer::Options HttpOptions(const ServerOptions& options) {
  HttpServer::Options http;
  http.host = options.host;
  http.port = options.http_port;
  http.threads = options.http_threads;
  http.max_queued = options.http_max_queued;
  http.read_timeout = http.write_timeout = absl::Seconds(options.http_timeout_s);
  http.keep_alive = absl::Seconds(options.http_keep_alive_s);
  http.max_body_bytes = int64_t{options.http_max_body_mb} << 20;
  http.tls_cert_file = options.tls_cert_file;
  http.tls_key_file = options.tls_key_file;
  http.tls_client_ca_file = options.tls_client_ca_file;
  return http;
}

// INVALID_ARGUMENT naming the flag of the first HTTP option out of range.
absl::Status ValidateHttpOptions(const ServerOptions& options) {
  struct Bound {
    const char* flag;
    int value, min, max;
  };
  for (const Bound& b :
       {Bound{"http_port", options.http_port, 0, 65535}, Bound{"http_threads", options.http_threads, 1, 256},
        Bound{"http_max_queued", options.http_max_queued, 0, 65536},
        Bound{"http_timeout_s", options.http_timeout_s, 1, 3600},
        Bound{"http_keep_alive_s", options.http_keep_alive_s, 1, 3600},
        Bound{"http_max_body_mb", options.http_max_body_mb, 1, 2047}}) {
    if (b.value < b.min || b.value > b.max) {
      return absl::InvalidArgumentError(absl::StrCat(b.flag, " is ", b.value, ", expected ", b.min, " to ", b.max));
    }
  }
  if (options.http_port != 0 && options.http_port == options.port) {
    return absl::InvalidArgumentError(absl::StrCat("http_port is ", options.http_port, ", the same as port"));
  }
  return absl::OkStatus();
}

// The service's methods as the calls report them, and the request log --log_format asks for.
ServerMetrics::Options MetricsOptions(const ServerOptions& options) {
  ServerMetrics::Options out;
  const auto* service = v1::TrainRequest::descriptor()->file()->FindServiceByName("VaeService");
  for (int i = 0; service != nullptr && i < service->method_count(); ++i)
    out.methods.push_back(service->method(i)->name());
  out.default_model = options.default_model;
  out.grpc_version = grpc::Version();
  out.count_calls = options.metrics;
  if (options.log_requests) out.log.emplace(*RequestLog::ParseFormat(options.log_format));
  return out;
}

}  // namespace

VaeServer::VaeServer(ServerOptions options, std::unique_ptr<ServerCore> core)
    : options_(std::move(options)),
      core_(std::move(core)),
      metrics_(std::make_unique<ServerMetrics>(core_.get(), MetricsOptions(options_))),
      // With neither metrics nor the request log the service reports nothing: no per-call cost at all.
      service_(std::make_unique<VaeServiceImpl>(core_.get(),
                                                options_.metrics || options_.log_requests ? metrics_.get() : nullptr)) {
  core_->training().SetObserver(
      [metrics = metrics_.get()](const TrainingJob& job, const TrainEvent* event, const absl::Status& outcome) {
        metrics->OnTrainEvent(job, event, outcome);
      });
  if (options_.http_port > 0) {
    // The same tokens as gRPC; any valid one (full or read-only) may use the HTTP routes, but starting a training
    // job (POST /v1/train) needs the full one, as Train does.
    HttpServer::Authorize authorize;
    if (!options_.auth_token.empty()) {
      authorize = [auth = Authenticator(options_.auth_token, options_.auth_readonly_token)](
                      const absl::string_view* header, const httplib::Request& request) {
        return auth.CheckHeader(header, "HTTP",
                                StartsTraining(request.method, request.path) ? Authenticator::Access::kTrain
                                                                             : Authenticator::Access::kRead);
      };
    }
    HttpServer::Exposition exposition;
    if (options_.metrics) exposition = [metrics = metrics_.get()] { return metrics->Exposition(); };
    http_ = std::make_unique<HttpServer>(
        HttpOptions(options_), std::move(authorize), [this] { return Ready(); }, std::move(exposition));
    if (options_.metrics || options_.log_requests) {
      http_->SetObserver([metrics = metrics_.get()](const std::string& route, const httplib::Request& req,
                                                    const httplib::Response& res, absl::Duration latency) {
        metrics->HttpRequestFinished(route, req.method, res.status, latency,
                                     absl::StrCat(req.remote_addr, ":", req.remote_port),
                                     res.get_header_value("X-Request-Id"));
      });
    }
    // The HTTP/JSON API and the web page (its handlers hold the core, which outlives the HTTP port).
    HttpApi(core_.get(), int64_t{options_.http_max_body_mb} << 20, "--http_max_body_mb").Mount(http_.get());
  }
}

VaeServer::~VaeServer() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<VaeServer>> VaeServer::Create(const ServerOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port is ", options.port, ", expected 0 to 65535"));
  }
  if (options.max_message_mb < 1 || options.max_message_mb > 2047) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_mb is ", options.max_message_mb, ", expected 1 to 2047"));
  }
  if (options.max_image_pixels < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_image_pixels is ", options.max_image_pixels, ", expected >= 0 (0: derived from the model)"));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls: --tls_cert and --tls_key go together (the certificate and its key)");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("tls: --tls_client_ca needs --tls_cert and --tls_key (mutual TLS is TLS)");
  }
  if (auto tokens = ValidateTokens(options.auth_token, options.auth_readonly_token); !tokens.ok()) return tokens;
  if (auto http = ValidateHttpOptions(options); !http.ok()) return http;
  if (auto format = RequestLog::ParseFormat(options.log_format); !format.ok()) return format.status();
  auto core = ServerCore::Create(options);
  if (!core.ok()) return core.status();
  return std::unique_ptr<VaeServer>(new VaeServer(options, std::move(*core)));
}

std::string VaeServer::address() const { return JoinHostPort(options_.host, port_); }

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> VaeServer::Credentials() const {
  if (options_.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
    auto pem = ReadFileToString(path, int64_t{1} << 20);
    if (!pem.ok()) return absl::Status(pem.status().code(), absl::StrCat("tls: ", flag, ": ", pem.status().message()));
    if (pem->find("-----BEGIN ") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tls: ", flag, "=", path, " is not a PEM file"));
    }
    return pem;
  };
  auto cert = read(options_.tls_cert_file, "--tls_cert");
  if (!cert.ok()) return cert.status();
  auto key = read(options_.tls_key_file, "--tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!options_.tls_client_ca_file.empty()) {
    auto ca = read(options_.tls_client_ca_file, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<int> VaeServer::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("server already started");
  auto credentials = Credentials();
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = JoinHostPort(options_.host, options_.port);
  builder.AddListeningPort(address, *credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_mb << 20);
  builder.SetMaxSendMessageSize(options_.max_message_mb << 20);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    const char* tls_hint = options_.tls_cert_file.empty() ? "" : ", or a TLS key that does not match its certificate";
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (in use, not a local address", tls_hint, "?)"));
  }
  SetServing(true);
  LOG(INFO) << "serving " << kServiceName << " on " << JoinHostPort(options_.host, port_)
            << (options_.tls_cert_file.empty()        ? " (plaintext)"
                : options_.tls_client_ca_file.empty() ? " (TLS)"
                                                      : " (mutual TLS: client certificates required)")
            << (options_.auth_token.empty()            ? ""
                : options_.auth_readonly_token.empty() ? ", bearer token required"
                                                       : ", bearer token required (full or read-only)");
  if (http_ != nullptr) {
    auto http_port = http_->Start();
    if (!http_port.ok()) return http_port.status();
    LOG(INFO) << "serving HTTP (/v1/models, /v1/train, the web page at /, /healthz /readyz /metrics) on "
              << JoinHostPort(options_.host, *http_port)
              << (options_.tls_cert_file.empty() ? " (plaintext)" : " (TLS)");
  }
  return port_;
}

void VaeServer::SetServing(bool serving) {
  serving_.store(serving);
  if (server_ != nullptr) {
    auto* health = server_->GetHealthCheckService();
    health->SetServingStatus("", serving);
    health->SetServingStatus(kServiceName, serving);
  }
}

// The core exists only once its default model is loaded and warmed up (ServerCore::Create).
bool VaeServer::Ready() const { return serving() && core_ != nullptr; }

void VaeServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  const absl::Time deadline = absl::Now() + grace;
  SetServing(false);
  if (http_ != nullptr) http_->StartDraining();
  // Refuse new calls ourselves, with UNAVAILABLE, while the gRPC server still accepts them: once
  // grpc::Server::Shutdown has begun, gRPC (1.51) kills each new call before any handler sees it, and the client
  // gets CANCELLED -- not what the API promises, and not a code clients retry on.
  service_->StartDraining();
  // Stop training: its Train call then streams DONE and returns instead of holding the drain up.
  core_->Shutdown();
  if (server_ != nullptr) {
    // In-flight calls get until the deadline. Once none is left, and none has been for kSettle (time for gRPC to
    // send their final statuses), the drain is over. A Train stream whose client stopped reading cannot deliver its
    // last messages: it is ended once its write has waited kStalledStreamLimit.
    constexpr absl::Duration kSettle = absl::Milliseconds(100);
    absl::Time idle_since = absl::InfiniteFuture();
    for (absl::Time now = absl::Now(); now < deadline; now = absl::Now()) {
      service_->EndStalledTrainStreams(VaeServiceImpl::kStalledStreamLimit);
      if (service_->active_calls() > 0) {
        idle_since = absl::InfiniteFuture();
      } else if (idle_since == absl::InfiniteFuture()) {
        idle_since = now;
      }
      if (now - idle_since >= kSettle) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    // Now gRPC stops listening and sends GOAWAY. With a deadline that has passed it also cancels whatever is left
    // (calls past the grace) and closes every connection at once, rather than waiting for idle clients to act on
    // the GOAWAY (which they may do only seconds later, when their backup poller runs).
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
  }
  if (http_ != nullptr) http_->Stop(deadline);
  LOG(INFO) << "server stopped";
}

}  // namespace vae::server
