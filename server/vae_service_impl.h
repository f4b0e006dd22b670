// VaeServiceImpl: the vae.v1.VaeService gRPC service as a thin, stateless mapping onto ServerCore. Each handler first
// checks the call's bearer token when the server has one (server/auth.h), then reads the deadline, resolves the
// request's model spec to one snapshot (ModelRepository::Resolve), turns the request's bytes into tensors (tensor_codec.h), calls the core,
// writes the result (proto_mapping.h maps the core's other types), and converts the absl::Status once (grpc_status.h).
//
// Every method receives its request as raw bytes and parses it itself, so that bytes that are not a valid
// vae.v1.XRequest get INVALID_ARGUMENT saying so (grpc++'s generated handlers answer UNIMPLEMENTED or INTERNAL with an
// empty message, which reads as "no such method"). Responses are serialised here too, and one that would exceed the
// server's message limit is answered INVALID_ARGUMENT naming --max_message_mb instead of failing to send. The input
// rules it applies (the format field, the response size) are the engine's InputRules (inference.h), not its own.
//
// Ownership and threads: does not own `core`, which must outlive it. The only state of its own is an atomic count of
// the calls in progress. Encode, Decode, Sample, Reconstruct and GetModelInfo are callback-API methods that do their
// work inline on the gRPC thread that received the request: no hand-off to a sync-server thread per call, and the
// number of requests being worked on at once is bounded by gRPC's thread pool instead of one thread per request in
// flight (peak memory; see BENCHMARKS.md). Each call's parsed request and response belong to its reactor, which gRPC
// deletes once the call is done. With --enable_batching, an Encode/Decode/Reconstruct that arrives while a batch runs
// is queued and the handler returns at once; the thread running batches finishes it with the next one. A Train call
// is synchronous (a split-streaming handler: it reads its one request, then writes) and stays in its handler for the
// whole job, polling for the client's cancellation or deadline every kTrainPollInterval.
//
// Draining (VaeServer::Shutdown): after StartDraining() every new call is answered UNAVAILABLE at once, while the calls
// already admitted run on (active_calls() counts only those), and EndStalledTrainStreams() ends the Train streams
// whose client stopped reading. Train streams are registered under a mutex for that; nothing else is locked.
#ifndef VAE_SERVER_VAE_SERVICE_IMPL_H_
#define VAE_SERVER_VAE_SERVICE_IMPL_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/sync_stream.h>

#include <atomic>
#include <functional>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/server_core.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::server {

// The unary methods use gRPC's callback API on raw bytes; Train is made synchronous split-streaming on raw bytes by the
// constructor (it blocks for a whole job).
using VaeServiceBase = v1::VaeService::WithRawCallbackMethod_Encode<v1::VaeService::WithRawCallbackMethod_Decode<
    v1::VaeService::WithRawCallbackMethod_Sample<v1::VaeService::WithRawCallbackMethod_Reconstruct<
        v1::VaeService::WithRawCallbackMethod_GetModelInfo<v1::VaeService::WithRawCallbackMethod_ListModels<
            v1::VaeService::WithRawCallbackMethod_SetLabel<v1::VaeService::WithRawCallbackMethod_DeleteVersion<
                v1::VaeService::WithRawCallbackMethod_DeleteModel<v1::VaeService::Service>>>>>>>>>;

class VaeServiceImpl final : public VaeServiceBase {
 public:
  static constexpr absl::Duration kTrainPollInterval = absl::Milliseconds(50);
  // While draining, a Train stream whose pending write has waited this long for its client (HTTP/2 flow control: the
  // client is not reading) is ended rather than left to hold the shutdown up to its grace period.
  static constexpr absl::Duration kStalledStreamLimit = absl::Seconds(1);

  // Calls are authenticated with core->options()' auth tokens (server/auth.h; none: every call is admitted).
  explicit VaeServiceImpl(ServerCore* core);

  // Calls admitted and not finished yet (VaeServer's shutdown waits for 0). Refused calls do not count.
  int active_calls() const { return active_calls_.load(); }

  // From now on every new call gets UNAVAILABLE ("shutting down"); calls already admitted go on. Irreversible.
  void StartDraining() { draining_.store(true); }

  // Ends with UNAVAILABLE each Train stream whose pending write has waited longer than `limit`; its handler then
  // returns. The status reaches the client in HTTP/2 trailers, which flow control does not hold back. Returns how
  // many were ended. Any thread.
  int EndStalledTrainStreams(absl::Duration limit);

  // `request` is a serialised vae.v1.XRequest, `response` gets the serialised vae.v1.XResponse.
  grpc::ServerUnaryReactor* Encode(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Decode(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Sample(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Reconstruct(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  // The repository (ModelRepository); SetLabel and the Deletes need the read-write token, like Train.
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SetLabel(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteVersion(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  using TrainWriter = grpc::ServerSplitStreamer<grpc::ByteBuffer, v1::TrainProgress>;
  using FinishFn = std::function<void(const absl::Status&)>;
  template <typename Request, typename Response>
  class UnaryCall;
  // A Train call in its handler, registered for EndStalledTrainStreams.
  struct TrainStream {
    grpc::ServerContext* context = nullptr;
    absl::Time write_since = absl::InfiniteFuture();  // start of the pending Write; InfiniteFuture when none
    bool ended = false;                               // EndStalledTrainStreams ended it
  };

  // Counts a call in active_calls(), or returns false (counting nothing) once draining. The count is raised before
  // draining_ is read and StartDraining sets draining_ before the drain reads the count (both sequentially
  // consistent), so every call is either refused or seen by the drain.
  bool TryAdmit();
  // Train: admits, authenticates and parses the one request, then runs DoTrain registered as a TrainStream.
  grpc::Status StreamTrain(grpc::ServerContext* context, TrainWriter* writer);
  absl::Status DoTrain(grpc::ServerContext* context, const v1::TrainRequest& request, TrainWriter* writer,
                       TrainStream* stream);
  // Admits the call (UNAVAILABLE once draining), authenticates `method` for `access` and parses `raw` into a new UnaryCall and
  // hands it to `start` (request, response, finish), or finishes the call with UNAUTHENTICATED / PERMISSION_DENIED
  // (server/auth.h), or with INVALID_ARGUMENT when `raw` does not parse. `finish` must be called exactly once, from
  // any thread: it serialises the response into `out` (refusing one over the message limit) and finishes the call,
  // which counts in active_calls() until then.
  template <typename Request, typename Response, typename Start>
  grpc::ServerUnaryReactor* Unary(const grpc::CallbackServerContext* context, const char* method,
                                  const grpc::ByteBuffer* raw, grpc::ByteBuffer* out, Start start,
                                  Authenticator::Access access = Authenticator::Access::kRead);
  // Encode, Decode and Reconstruct go through the engine's async calls: with batching on, a request queued behind a
  // running batch is finished by the thread that runs its batch and holds no thread meanwhile.
  void StartEncode(const grpc::ServerContextBase& context, const v1::EncodeRequest& request,
                   v1::EncodeResponse* response, FinishFn finish);
  void StartDecode(const grpc::ServerContextBase& context, const v1::DecodeRequest& request,
                   v1::DecodeResponse* response, FinishFn finish);
  void StartReconstruct(const grpc::ServerContextBase& context, const v1::ReconstructRequest& request,
                        v1::ReconstructResponse* response, FinishFn finish);
  absl::Status DoSample(const grpc::ServerContextBase& context, const v1::SampleRequest& request,
                        v1::SampleResponse* response);
  absl::Status DoGetModelInfo(const v1::GetModelInfoRequest& request, v1::ModelInfo* response);
  absl::Status DoListModels(const v1::ListModelsRequest& request, v1::ListModelsResponse* response);

  ServerCore* const core_;
  const Authenticator auth_;
  std::atomic<int> active_calls_{0};
  std::atomic<bool> draining_{false};
  absl::Mutex streams_mu_;
  std::set<TrainStream*> train_streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace vae::server

#endif  // VAE_SERVER_VAE_SERVICE_IMPL_H_
