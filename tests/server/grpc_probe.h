// Generic gRPC probes for the standard services vae-server exposes (grpc.health.v1.Health and server reflection),
// without their generated code (Debian ships neither .proto): the messages are tiny and hand-encoded below.
// Used by tests/server and tests/integration. Torch-free.
#ifndef VAE_TESTS_SERVER_GRPC_PROBE_H_
#define VAE_TESTS_SERVER_GRPC_PROBE_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace vae::testing {

// Sends `request` (serialised protobuf) to `method` as one message, half-closes, and reads one response message.
inline grpc::Status CallRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                            const std::string& request, std::string* response) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, method, &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t id) { return cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == id && ok; };
  call->StartCall(reinterpret_cast<void*>(1));
  bool sent = step(1);
  if (sent) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    sent = step(2);
  }
  if (sent) {
    call->WritesDone(reinterpret_cast<void*>(3));
    step(3);
  }
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(4));
  const bool got = step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  response->clear();
  if (got) {
    std::vector<grpc::Slice> slices;
    reply.Dump(&slices).ok();
    for (const auto& s : slices) response->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

// grpc.health.v1.Health/Check for `service` ("" = the whole server). Returns the HealthCheckResponse.status enum:
// 1 SERVING, 2 NOT_SERVING (0 UNKNOWN); -1 when the call failed (`status` says why).
inline int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                        grpc::Status* status = nullptr) {
  // HealthCheckRequest { string service = 1; }: tag 0x0a, one-byte length (names are short), bytes.
  std::string request;
  if (!service.empty()) request = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  std::string response;
  const grpc::Status s = CallRaw(channel, "/grpc.health.v1.Health/Check", request, &response);
  if (status != nullptr) *status = s;
  if (!s.ok()) return -1;
  // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, varint; absent when 0.
  if (response.empty()) return 0;
  if (response.size() == 2 && response[0] == 0x08) return response[1];
  return -1;
}

// grpc.health.v1.Health/Watch on a background thread: records every status the server streams (1 SERVING,
// 2 NOT_SERVING) until the stream ends or the watcher is destroyed.
class HealthWatcher {
 public:
  HealthWatcher(const std::shared_ptr<grpc::Channel>& channel, const std::string& service)
      : stub_(channel), thread_([this, service] { Run(service); }) {}
  ~HealthWatcher() {
    context_.TryCancel();
    thread_.join();
  }
  HealthWatcher(const HealthWatcher&) = delete;
  HealthWatcher& operator=(const HealthWatcher&) = delete;

  // Waits up to `timeout` for at least `n` statuses; returns those seen so far.
  std::vector<int> WaitFor(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return statuses_.size() >= n || ended_; });
    return statuses_;
  }
  // Waits up to `timeout` for the stream to end; returns every status seen.
  std::vector<int> WaitForEnd(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return ended_; });
    return statuses_;
  }

 private:
  void Run(const std::string& service) {
    grpc::CompletionQueue cq;
    auto call = stub_.PrepareCall(&context_, "/grpc.health.v1.Health/Watch", &cq);
    void* tag = nullptr;
    bool ok = false;
    auto step = [&] { return cq.Next(&tag, &ok) && ok; };
    call->StartCall(nullptr);
    bool alive = step();
    if (alive) {
      std::string request;
      if (!service.empty()) request = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
      grpc::Slice slice(request);
      grpc::ByteBuffer buffer(&slice, 1);
      call->Write(buffer, nullptr);
      alive = step();
    }
    if (alive) {
      call->WritesDone(nullptr);
      alive = step();
    }
    while (alive) {
      grpc::ByteBuffer reply;
      call->Read(&reply, nullptr);
      if (!step()) break;
      std::vector<grpc::Slice> slices;
      reply.Dump(&slices).ok();
      std::string bytes;
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      std::lock_guard<std::mutex> lock(mu_);
      statuses_.push_back(bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0);
      cv_.notify_all();
    }
    grpc::Status status;
    call->Finish(&status, nullptr);
    cq.Next(&tag, &ok);
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }

  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> statuses_;
  bool ended_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

// The raw ServerReflectionResponse to list_services: it names every service the server registers.
inline std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  // ServerReflectionRequest { string list_services = 7; } with an empty string: tag 0x3a, length 0.
  const std::string request("\x3a\x00", 2);
  std::string response;
  CallRaw(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", request, &response);
  return response;
}

}  // namespace vae::testing

#endif  // VAE_TESTS_SERVER_GRPC_PROBE_H_
