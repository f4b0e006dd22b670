// vae::Client: the C++ client library of vae-server (vae.v1.VaeService and grpc.health.v1.Health).
//
// Everything lives in namespace vae::client (plain data in client/types.h); vae::Client is an alias of
// vae::client::Client. The public API speaks at::Tensor (the same type as torch::Tensor) and plain structs; no
// generated proto type appears here. Tensors that come back are CPU tensors that own their memory (copied out of the
// response, never aliasing it). Every method returns absl::Status / absl::StatusOr; nothing throws. Error codes are the
// server's, with its message unchanged; a call that could not reach the server fails with UNAVAILABLE (or
// DEADLINE_EXCEEDED) and the one-line message "cannot reach vae-server at HOST:PORT: CAUSE" (see client/grpc_status.h).
//
// Thread-safety: a Client is safe to share between threads; every method may be called concurrently (gRPC channels
// and stubs are thread-safe, and the Client holds no other mutable state). Lifetime: one channel, created by Create
// and reused by every call, lives as long as the Client; the Client must outlive the calls made on it. The
// connection is made lazily on the first call and re-established by gRPC after failures.
//
// Images as cv::Mat (to tensors and back, grids, PNG): client/images.h.
//
// Example:
//   VAE_ASSIGN_OR_RETURN(std::unique_ptr<vae::Client> client, vae::Client::Create("127.0.0.1:50051"));
//   VAE_ASSIGN_OR_RETURN(vae::client::EncodeResult z, client->Encode(vae::client::ImageInput::FromTensor(images)));
#ifndef VAE_CLIENT_CLIENT_H_
#define VAE_CLIENT_CLIENT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/types.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace vae::client {

// Images for Encode and Reconstruct: exactly one of `tensor` and `encoded`.
struct ImageInput {
  // [N, C, H, W] with the model's C, H, W: float32 in [0, 1], or uint8 in [0, 255]. Sent as raw bytes.
  at::Tensor tensor;
  // PNG or JPEG files, one image each; the server converts them to the model's channels.
  std::vector<std::string> encoded;
  // Encoded files of another size are resized by the server (area interpolation) when true, rejected when false.
  bool resize = false;

  static ImageInput FromTensor(at::Tensor images);
  static ImageInput FromEncoded(std::vector<std::string> files, bool resize);
};

// Every result names the model and version that answered (ModelVersion::model, ::version): store them with any
// latent code you keep.

struct EncodeResult {
  at::Tensor mu;     // float32 [N, J]
  at::Tensor sigma;  // float32 [N, J], the posterior standard deviation
  ModelVersion version;
};

struct DecodeResult {
  at::Tensor images;  // float32 [N, C, H, W] in [0, 1]
  ModelVersion version;
};

struct SampleResult {
  at::Tensor images;  // float32 [count, C, H, W] in [0, 1]
  at::Tensor z;       // float32 [count, J], the codes decoded
  uint64_t seed = 0;  // the seed used: the same seed gives bitwise the same images (same model version)
  ModelVersion version;
};

struct ReconstructResult {
  at::Tensor images;             // float32 [N, C, H, W] in [0, 1]
  std::vector<float> recon_nll;  // per image, nats
  std::vector<float> kl;         // per image, nats
  ModelVersion version;
};

// Called by Train on the calling thread for every message, in order. Must not call Train on the same Client
// recursively; other calls are fine.
using TrainProgressCallback = std::function<void(const TrainProgress&)>;

// Cancels a Train call from another thread. Share one between the thread that calls Train and the one that cancels;
// it must outlive the Train call. Cancel may come before Train starts (Train then returns at once, cancelled), while
// it runs, or after it returned (no effect). Thread-safe; locks its own mutex only.
class TrainCancellation {
 public:
  TrainCancellation() = default;
  TrainCancellation(const TrainCancellation&) = delete;
  TrainCancellation& operator=(const TrainCancellation&) = delete;

  void Cancel();
  bool cancelled() const;

 private:
  friend class Client;
  // Train registers its call context while the call runs, so that Cancel can TryCancel it.
  bool Attach(grpc::ClientContext* context);  // false when already cancelled
  void Detach();

  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Reads PEM files into ClientOptions::Tls: the CA to verify the server with (empty path: the system's roots), and
// an optional client certificate and key (both or neither). NOT_FOUND naming a missing file, INVALID_ARGUMENT for a
// file that is not PEM or a certificate without its key.
absl::StatusOr<ClientOptions::Tls> LoadTlsFiles(const std::string& ca_file, const std::string& cert_file = "",
                                                const std::string& key_file = "");

class Client {
 public:
  // Creates the channel to `target` ("host:port", or any gRPC target URI); no connection is made yet.
  // INVALID_ARGUMENT for an empty target, max_message_mb < 1, or a token that cannot be sent (not visible ASCII).
  static absl::StatusOr<std::unique_ptr<Client>> Create(const std::string& target, ClientOptions options = {});

  // The stubs a Client calls through, defined in client/client_stub.h (which brings in the generated gRPC code).
  struct Stubs;
  // A Client on stubs the caller supplies instead of a channel of its own: a gMock vae::v1::MockVaeServiceStub in
  // unit tests of the error mapping, or stubs on a channel made elsewhere. Validates `options` as Create does (the
  // token is sent as metadata; max_message_mb and tls belong to a channel and are not used). `target` only names the
  // server in messages. INVALID_ARGUMENT for a missing stub.
  static absl::StatusOr<std::unique_ptr<Client>> FromStubs(std::string target, ClientOptions options, Stubs stubs);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& target() const { return target_; }
  const ClientOptions& options() const { return options_; }

  // grpc.health.v1.Health/Check of `service` ("" = the server as a whole; vae-server also answers for
  // "vae.v1.VaeService"). NOT_FOUND when the server does not know `service`.
  absl::StatusOr<ServingStatus> Health(const std::string& service = "");

  // Every inference call takes a ModelSpec (client/types.h) as its last parameter: which model and version answers.
  // The default is the server's default model at its default label. The result's ModelVersion names the model and
  // version that answered. An unknown model, version or label is NOT_FOUND naming what exists; version and label
  // together are INVALID_ARGUMENT.

  // What a model version is, and how it was trained.
  absl::StatusOr<ModelInfo> GetModelInfo(const ModelSpec& model = {});

  // Images -> q(z|x) = N(mu, diag(sigma^2)).
  absl::StatusOr<EncodeResult> Encode(const ImageInput& images, const ModelSpec& model = {});

  // Codes z, float [N, J] (sent as float32; a uint8 tensor is INVALID_ARGUMENT) -> the decoder's mean images. Decode
  // codes with the version that encoded them (EncodeResult::version): other versions have other latent spaces.
  absl::StatusOr<DecodeResult> Decode(const at::Tensor& z, const ModelSpec& model = {});

  absl::StatusOr<SampleResult> Sample(const SampleOptions& options, const ModelSpec& model = {});

  absl::StatusOr<ReconstructResult> Reconstruct(const ImageInput& images, const ReconstructOptions& options = {},
                                                const ModelSpec& model = {});

  // The model repository: every model (`name` empty) or one (NOT_FOUND when missing), each with its versions
  // (oldest first; metrics, creation time, labels, whether loaded, checkpoint size), its labels and default label.
  absl::StatusOr<ModelList> ListModels(const std::string& name = "");

  // Points `label` of `model` ("" = the default model) at `version`, moving it if it exists; with `make_default`
  // it also becomes the label requests without a version use. NOT_FOUND for a missing model or version,
  // INVALID_ARGUMENT for "latest" or a malformed label. Needs the read-write token.
  absl::StatusOr<SetLabelResult> SetLabel(const std::string& model, const std::string& label, int64_t version,
                                          bool make_default = false);

  // Deletes one version from the server's memory and disk. FAILED_PRECONDITION when a label other than "latest"
  // names it (unless `force`, which also drops those labels) or it is the newest version of a model in training.
  absl::StatusOr<DeleteVersionResult> DeleteVersion(const std::string& model, int64_t version, bool force = false);

  // Deletes a model with all its versions and labels. FAILED_PRECONDITION while it trains, and (unless `force`)
  // while a label other than "latest" names one of its versions.
  absl::StatusOr<DeleteModelResult> DeleteModel(const std::string& model, bool force = false);

  // Runs a training job on the server and blocks until its stream ends, calling `on_progress` (may be empty) for each
  // message. TrainOptions::model names the model (new versions of it; other models are untouched) and
  // promote_label the label to move on improvement (the kDone message's label_moved). `cancellation` (may be null)
  // stops it from another thread; a cancelled job returns OK with TrainResult::cancelled set. Errors: the server's
  // (FAILED_PRECONDITION when a job is already running, INVALID_ARGUMENT, NOT_FOUND / PERMISSION_DENIED for datasets),
  // or unreachable.
  absl::StatusOr<TrainResult> Train(const TrainOptions& options, const TrainProgressCallback& on_progress = nullptr,
                                    TrainCancellation* cancellation = nullptr);

 private:
  Client(std::string target, ClientOptions options, std::unique_ptr<Stubs> stubs);

  // Sets the call's deadline (`timeout` from now; infinite: none) and, with ClientOptions::token, its
  // authorization metadata on `context`.
  void PrepareContext(grpc::ClientContext* context, absl::Duration timeout) const;

  // One unary call: `rpc(context)` on a context prepared with ClientOptions::timeout, its status converted once.
  template <typename Rpc>
  absl::Status Unary(Rpc rpc) const;

  const std::string target_;
  const ClientOptions options_;
  const std::unique_ptr<Stubs> stubs_;
};

}  // namespace vae::client

namespace vae {
// The library's entry point under its short name.
using Client = client::Client;
}  // namespace vae

#endif  // VAE_CLIENT_CLIENT_H_
