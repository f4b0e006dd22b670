// HttpApi: the HTTP/JSON face of vae-server (TF Serving's REST shape) and its web page, mounted on the HttpServer
// that the caller owns and runs (server/http_server.h: vae-server's --http_port, with its tokens, TLS, limits). No gRPC
// types: a request's JSON becomes tensors here, then the same ServerCore calls the gRPC service makes (the
// InferenceEngine with its InputRules, the tensor codec for PNG/JPEG bytes), and every absl::Status becomes an HTTP
// status with a JSON error body.
//
//   POST /v1/models/{name}[/versions/{v} | /labels/{l}]:encode | :decode | :sample | :reconstruct
//   GET  /v1/models                      the models, their versions and labels
//   GET  /v1/models/{name}[/versions/{v} | /labels/{l}]   one model's ModelInfo (proto3 JSON) and its version status
//   GET  /v1/train                       the latest training job: position, losses, images/s, recent history
//   POST /v1/train                       starts a training job (the same TrainSpec and rules as gRPC's Train)
//   GET  /                               the web page (server/web/index.html, embedded at build time)
//
// Errors: {"error": {"code": "INVALID_ARGUMENT", "message": "... names the field ..."}} with the HTTP status of the
// code (HttpServer::HttpStatusOf: 400, 401, 403, 404, 409, 429, 503, ...);
// a body that is not JSON 400, a POST without `Content-Type: application/json` 415, a body over the limit 413
// (RESOURCE_EXHAUSTED, as gRPC answers an oversize message), no such route 404, a route without that method 405.
//
// Ownership and threads: does not own `core`, which must outlive the server's handlers. Stateless: httplib calls
// the handlers from its worker threads, any number at once; each request pins one model snapshot.
#ifndef VAE_SERVER_HTTP_API_H_
#define VAE_SERVER_HTTP_API_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "absl/strings/string_view.h"

namespace vae::server {

class HttpServer;
class ServerCore;
struct Snapshot;
struct ModelRef;

// The one place that turns a ModelRef (/v1/models/{name}, optionally /versions/{version} or /labels/{label}) into
// the weights to answer with: the model repository's Resolve, as for gRPC.
absl::StatusOr<std::shared_ptr<const Snapshot>> ResolveModel(ServerCore* core, const ModelRef& ref);

// True for the request that starts a training job (POST /v1/train): it needs the full token, as gRPC's Train does;
// every other route takes the read-only one too.
bool StartsTraining(absl::string_view method, absl::string_view path);

class HttpApi {
 public:
  // `max_body_bytes`, set by `body_limit_flag`: the HTTP server's body limit, named in its 413 answers.
  HttpApi(ServerCore* core, int64_t max_body_bytes, std::string body_limit_flag);

  // Registers every route above on `server` (through HttpServer::Handle, so they count as in flight, and the token
  // and draining checks apply) and its error handler, which gives httplib's own 4xx answers (no route, body too large,
  // unparseable request) the JSON error body. The handlers hold `core`, not this object. Before server->Start().
  void Mount(HttpServer* server) const;

 private:
  ServerCore* const core_;
  const int64_t max_body_bytes_;
  const std::string body_limit_flag_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_HTTP_API_H_
