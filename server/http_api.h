// HttpApi: the HTTP/JSON face of vae-server (TF Serving's REST shape) and its web page, mounted on an httplib::Server
// that the caller owns and runs (vae-server's HTTP server, --http_port). No gRPC types: a request's JSON becomes
// tensors here, then the same ServerCore calls the gRPC service makes (the InferenceEngine with its InputRules, the
// tensor codec for PNG/JPEG bytes), and every absl::Status becomes an HTTP status with a JSON error body.
//
//   POST /v1/models/{name}[/versions/{v} | /labels/{l}]:encode | :decode | :sample | :reconstruct
//   GET  /v1/models                      the models, their versions and labels
//   GET  /v1/models/{name}[/versions/{v} | /labels/{l}]   one model's ModelInfo (proto3 JSON) and its version status
//   GET  /v1/train                       the latest training job: position, losses, images/s, recent history
//   POST /v1/train                       starts a training job (the same TrainSpec and rules as gRPC's Train)
//   GET  /                               the web page (server/web/index.html, embedded at build time)
//
// Errors: {"error": {"code": "INVALID_ARGUMENT", "message": "... names the field ..."}} with HttpStatusOf(code);
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

namespace httplib {
class Server;
}  // namespace httplib

namespace vae::server {

class ServerCore;
struct Snapshot;

// The model a request names: /v1/models/{name}, optionally /versions/{version} or /labels/{label}.
struct ModelRef {
  std::string name;
  int64_t version = 0;  // 0: not pinned
  std::string label;    // "": the default label
};

// The name under which the server's one model is served today.
inline constexpr char kDefaultModelName[] = "default";

// The one place that turns a ModelRef into the weights to answer with (the model repository will plug in here).
// Today the server holds one model, named kDefaultModelName, and serves only its current version: `version` must be
// the current version number (ModelVersion.generation) and `label` "latest"; anything else is NOT_FOUND naming what
// exists.
absl::StatusOr<std::shared_ptr<const Snapshot>> ResolveModel(const ServerCore& core, const ModelRef& ref);

// The HTTP status for an absl/gRPC code: INVALID_ARGUMENT and OUT_OF_RANGE 400, UNAUTHENTICATED 401,
// PERMISSION_DENIED 403, NOT_FOUND 404, FAILED_PRECONDITION, ABORTED and ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429,
// CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, the rest 500.
int HttpStatusOf(absl::StatusCode code);

// {"error": {"code": "<absl code name>", "message": "<status message>"}}
std::string ErrorBody(const absl::Status& status);

class HttpApi {
 public:
  // Request bodies larger than this are refused with 413 (vae-server passes --max_message_mb, gRPC's limit).
  HttpApi(ServerCore* core, int64_t max_body_bytes);

  // Registers every route above on `server`, sets its payload limit to max_body_bytes and its error handler (which
  // gives the JSON error body to httplib's own 4xx answers: no route, body too large, unparseable request).
  void Mount(httplib::Server* server) const;

 private:
  ServerCore* const core_;
  const int64_t max_body_bytes_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_HTTP_API_H_
