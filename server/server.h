// VaeServer: vae-server's gRPC front. It owns a ServerCore and a grpc::Server exposing vae.v1.VaeService, the
// standard grpc.health.v1.Health service (SERVING once the model is loaded and warmed up, NOT_SERVING while
// draining) and server reflection, so generic gRPC tools and probes work. Plaintext, TLS or mutual TLS
// (ServerOptions::tls_*); optionally a bearer token on every VaeService call (ServerOptions::auth_*, server/auth.h).
// With ServerOptions::http_port it also owns the HTTP port (server/http_server.h): /healthz, /readyz (answered from
// the same serving state as the gRPC health service), /metrics, and the routes others register on http().
//
// Lifetime: Create (loads the model) -> Start (binds, serves) -> Shutdown (graceful) -> destroy. Start and Shutdown
// are called by one controlling thread (main, or a test); Shutdown is idempotent, and the destructor calls it.
// Torch-free header: the core is only forward-declared.
#ifndef VAE_SERVER_SERVER_H_
#define VAE_SERVER_SERVER_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/http_server.h"
#include "server/server_options.h"

namespace vae::server {

class ServerCore;
class ServerMetrics;
class VaeServiceImpl;

class VaeServer {
 public:
  static constexpr char kServiceName[] = "vae.v1.VaeService";

  // Builds the core (ServerCore::Create: loads the newest checkpoint or a fresh preset model, warms it up).
  // INVALID_ARGUMENT for bad options (ports, sizes, TLS flags that do not go together, tokens: ValidateTokens).
  static absl::StatusOr<std::unique_ptr<VaeServer>> Create(const ServerOptions& options);
  ~VaeServer();

  // Listens on options.host:options.port (port 0: a free one) and starts serving; health becomes SERVING. Then opens
  // the HTTP port, when there is one. Returns the bound gRPC port. UNAVAILABLE when the address cannot be bound;
  // NOT_FOUND / INVALID_ARGUMENT naming the flag when a TLS file is missing or not PEM.
  absl::StatusOr<int> Start();

  // Graceful shutdown, in this order: health goes NOT_SERVING (and /readyz 503); every new call gets UNAVAILABLE (on
  // HTTP: 503, but for the probes and /metrics); a running training
  // job is stopped (it writes a checkpoint, its Train call streams DONE and ends with UNAVAILABLE); in-flight calls
  // get until `grace` to finish (a Train stream whose client stopped reading is ended with UNAVAILABLE once its
  // write has waited VaeServiceImpl::kStalledStreamLimit); then gRPC stops listening, cancels what is left and
  // closes the connections, and the server's threads are joined; the HTTP port's requests in flight get what is left
  // of `grace`, then it closes. Returns once all of that is done.
  void Shutdown(absl::Duration grace);

  int port() const { return port_; }
  // The HTTP port: null when options.http_port is 0. Routes may be added (HttpServer::Handle) until Start().
  HttpServer* http() { return http_.get(); }
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  // True while the server is SERVING: started, and not draining. The gRPC health service and /readyz both say this.
  bool serving() const { return serving_.load(); }
  std::string address() const;  // host:port as bound
  ServerCore& core() { return *core_; }
  // The Prometheus series and the request log (server/server_metrics.h).
  ServerMetrics& metrics() { return *metrics_; }

 private:
  VaeServer(ServerOptions options, std::unique_ptr<ServerCore> core);
  // Plaintext, or TLS from options_' PEM files.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() const;
  // Sets the one serving state both health answers come from.
  void SetServing(bool serving);
  // /readyz: serving, with a model loaded and warmed up.
  bool Ready() const;

  const ServerOptions options_;
  std::unique_ptr<ServerCore> core_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<VaeServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<bool> serving_{false};
  int port_ = 0;
  bool shut_down_ = false;
};

// "host:port", with IPv6 literals bracketed ("[::1]:50051").
std::string JoinHostPort(const std::string& host, int port);

}  // namespace vae::server

#endif  // VAE_SERVER_SERVER_H_
