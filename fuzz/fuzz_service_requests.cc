// Fuzz target: whole serialized requests -> VaeServiceImpl's handlers through
// an in-process gRPC server and channel (no network:
// grpc::Server::InProcessChannel), against a fresh 'mnist' model (1x28x28, J =
// 20) in a ServerCore, as the server runs them. (The handlers parse their
// request bytes themselves and finish through their own reactors, which need a
// real call: hence a real in-process server rather than calling the handlers
// directly.) Input: byte 0 picks the method (Encode, Decode, Sample,
// Reconstruct); the rest is that method's request message. Per-input work is
// bounded by --max_batch = 8 (images, codes and Sample's count) and 1 torch
// thread; batching is off, so each call finishes inside its handler.
// Properties: every call completes; bad input is answered with a client error
// (INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION, RESOURCE_EXHAUSTED),
// never INTERNAL or UNKNOWN; an OK answer has outputs of the request's batch
// size and the model's shapes.
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz/fuzz_util.h"
#include "server/server_core.h"
#include "server/vae_service_impl.h"

namespace {

using vae::server::ServerCore;
using vae::server::VaeServiceImpl;
namespace v1 = vae::v1;

constexpr int kMaxBatch = 8;
constexpr int kLatent = 20;  // the mnist preset's J

struct Service {
  std::string model_dir;
  std::unique_ptr<ServerCore> core;
  std::unique_ptr<VaeServiceImpl> impl;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::VaeService::Stub> stub;

  Service() {
    std::string pattern = (std::filesystem::temp_directory_path() / "vae-fuzz-models-XXXXXX").string();
    FUZZ_CHECK(::mkdtemp(pattern.data()) != nullptr);
    model_dir = pattern;
    vae::server::ServerOptions options;
    options.model_dir = model_dir;
    options.data_dir = model_dir;
    options.preset = "mnist";
    options.device = "cpu";
    options.threads = 1;
    options.max_batch = kMaxBatch;
    options.max_message_mb = 1;
    options.enable_batching = false;
    auto created = ServerCore::Create(options);
    FUZZ_CHECK(created.ok());
    core = std::move(*created);
    impl = std::make_unique<VaeServiceImpl>(core.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(impl.get());
    server = builder.BuildAndStart();
    FUZZ_CHECK(server != nullptr);
    stub = v1::VaeService::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }
  ~Service() {
    stub.reset();
    server->Shutdown();
    server.reset();
    impl.reset();
    core.reset();
    std::error_code ec;
    std::filesystem::remove_all(model_dir, ec);
  }
};

// One service for the whole run: a ServerCore costs a model and a warm-up pass.
v1::VaeService::Stub& TheStub() {
  static Service service;
  return *service.stub;
}

// Runs one call through the in-process channel and returns its status.
template <typename Request, typename Response, typename Method>
grpc::Status Call(Method method, const Request& request, Response* response) {
  grpc::ClientContext context;
  const grpc::Status status = (TheStub().*method)(&context, request, response);
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      break;
    default:
      std::fprintf(stderr, "unexpected status %d: %s\n", status.error_code(), status.error_message().c_str());
      std::abort();
  }
  return status;
}

// Rows of the images a request carried (it was accepted, so exactly one of
// tensor and encoded is set).
int64_t Rows(const v1::ImageBatch& images) {
  return images.has_tensor() ? images.tensor().shape(0) : images.encoded_size();
}

bool WantsTensor(v1::ImageFormat f) { return f != v1::IMAGE_FORMAT_PNG; }
bool WantsPng(v1::ImageFormat f) { return f == v1::IMAGE_FORMAT_PNG || f == v1::IMAGE_FORMAT_TENSOR_AND_PNG; }

template <typename Response>
void CheckImages(const Response& response, v1::ImageFormat format, int64_t n) {
  if (WantsTensor(format)) {
    FUZZ_CHECK(response.images().shape_size() == 4 && response.images().shape(0) == n);
  } else {
    FUZZ_CHECK(!response.has_images());
  }
  FUZZ_CHECK(response.png_size() == (WantsPng(format) ? n : 0));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: {
      v1::EncodeRequest request;
      v1::EncodeResponse response;
      if (!request.ParseFromString(bytes)) return 0;
      if (Call(&v1::VaeService::Stub::Encode, request, &response).ok()) {
        const int64_t n = Rows(request.images());
        FUZZ_CHECK(n >= 1 && n <= kMaxBatch);
        for (const v1::Tensor* t : {&response.mu(), &response.sigma()}) {
          FUZZ_CHECK(t->shape_size() == 2 && t->shape(0) == n && t->shape(1) == kLatent);
        }
      }
      break;
    }
    case 1: {
      v1::DecodeRequest request;
      v1::DecodeResponse response;
      if (!request.ParseFromString(bytes)) return 0;
      if (Call(&v1::VaeService::Stub::Decode, request, &response).ok()) {
        CheckImages(response, request.format(), request.z().shape(0));
      }
      break;
    }
    case 2: {
      v1::SampleRequest request;
      v1::SampleResponse response;
      if (!request.ParseFromString(bytes)) return 0;
      if (Call(&v1::VaeService::Stub::Sample, request, &response).ok()) {
        FUZZ_CHECK(request.count() >= 1 && request.count() <= kMaxBatch);
        CheckImages(response, request.format(), request.count());
        FUZZ_CHECK(response.z().shape_size() == 2 && response.z().shape(0) == request.count());
        if (request.has_seed()) FUZZ_CHECK(response.seed() == request.seed());
      }
      break;
    }
    default: {
      v1::ReconstructRequest request;
      v1::ReconstructResponse response;
      if (!request.ParseFromString(bytes)) return 0;
      if (Call(&v1::VaeService::Stub::Reconstruct, request, &response).ok()) {
        const int64_t n = Rows(request.images());
        CheckImages(response, request.format(), n);
        FUZZ_CHECK(response.recon_nll_size() == n && response.kl_size() == n);
      }
      break;
    }
  }
  return 0;
}
