// vae::Client::Stubs: what a Client calls through, for Client::FromStubs (client/client.h). Includes the generated
// gRPC code of vae.v1 and grpc.health.v1, so callers link vae::proto and vae_health_proto; client.h itself stays free
// of generated types. Unit tests pass gMock stubs here (vae/v1/vae_service_mock.grpc.pb.h,
// grpc/health/v1/health_mock.grpc.pb.h; see tests/client/client_stub_test.cc).
#ifndef VAE_CLIENT_CLIENT_STUB_H_
#define VAE_CLIENT_CLIENT_STUB_H_

#include <grpcpp/channel.h>

#include <memory>

#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::client {

struct Client::Stubs {
  std::unique_ptr<v1::VaeService::StubInterface> vae;               // required
  std::unique_ptr<grpc::health::v1::Health::StubInterface> health;  // required
  // The channel the stubs use, when there is one: a call that ends in DEADLINE_EXCEEDED while it is not connected
  // never reached the server (the kCannotReachPrefix message, client/grpc_status.h). Null: the server is taken as
  // reached, and DEADLINE_EXCEEDED keeps its message.
  std::shared_ptr<grpc::Channel> channel;
};

}  // namespace vae::client

#endif  // VAE_CLIENT_CLIENT_STUB_H_
