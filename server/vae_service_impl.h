// VaeServiceImpl: the vae.v1.VaeService gRPC service as a thin, stateless mapping onto ServerCore. Each handler reads
// the deadline, takes one model snapshot, turns the request's bytes into tensors (tensor_codec.h), calls the core,
// writes the result, and converts the absl::Status once (grpc_status.h).
//
// Ownership and threads: does not own `core`, which must outlive it. Handlers run concurrently on gRPC's sync-server
// threads; the only state of its own is an atomic count of the calls in progress. A Train call stays in its handler for
// the whole job, polling for the client's cancellation or deadline every kTrainPollInterval.
#ifndef VAE_SERVER_VAE_SERVICE_IMPL_H_
#define VAE_SERVER_VAE_SERVICE_IMPL_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/sync_stream.h>

#include <atomic>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/server_core.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::server {

class VaeServiceImpl final : public v1::VaeService::Service {
 public:
  static constexpr absl::Duration kTrainPollInterval = absl::Milliseconds(50);

  explicit VaeServiceImpl(ServerCore* core) : core_(core) {}

  // Calls inside one of this service's handlers right now (VaeServer's shutdown waits for 0).
  int active_calls() const { return active_calls_.load(); }

  grpc::Status Train(grpc::ServerContext* context, const v1::TrainRequest* request,
                     grpc::ServerWriter<v1::TrainProgress>* writer) override;
  grpc::Status Encode(grpc::ServerContext* context, const v1::EncodeRequest* request,
                      v1::EncodeResponse* response) override;
  grpc::Status Decode(grpc::ServerContext* context, const v1::DecodeRequest* request,
                      v1::DecodeResponse* response) override;
  grpc::Status Sample(grpc::ServerContext* context, const v1::SampleRequest* request,
                      v1::SampleResponse* response) override;
  grpc::Status Reconstruct(grpc::ServerContext* context, const v1::ReconstructRequest* request,
                           v1::ReconstructResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

 private:
  absl::Status DoTrain(grpc::ServerContext* context, const v1::TrainRequest& request,
                       grpc::ServerWriter<v1::TrainProgress>* writer);
  absl::Status DoEncode(const grpc::ServerContext& context, const v1::EncodeRequest& request,
                        v1::EncodeResponse* response);
  absl::Status DoDecode(const grpc::ServerContext& context, const v1::DecodeRequest& request,
                        v1::DecodeResponse* response);
  absl::Status DoSample(const grpc::ServerContext& context, const v1::SampleRequest& request,
                        v1::SampleResponse* response);
  absl::Status DoReconstruct(const grpc::ServerContext& context, const v1::ReconstructRequest& request,
                             v1::ReconstructResponse* response);
  void DoGetModelInfo(v1::ModelInfo* response);

  ServerCore* const core_;
  std::atomic<int> active_calls_{0};
};

// TrainRequest -> TrainSpec: proto zeros become the documented defaults (epochs 1, batch_size 128, learning_rate
// 1e-3, seed 1, log_every_steps 100); everything else is copied for the core to validate.
TrainSpec TrainSpecFromProto(const v1::TrainRequest& request);

}  // namespace vae::server

#endif  // VAE_SERVER_VAE_SERVICE_IMPL_H_
