// vae-grpc-floor: how fast can an empty unary call over loopback be with this gRPC, on this machine, and does the
// server's threading model change it? A GetModelInfo-only VaeService (no model, no torch) served two ways, and a
// sequential client. BENCHMARKS.md §6; bench/grpc-floor.sh runs both servers in interleaved rounds.
//
//   vae-grpc-floor serve --api=callback   # the callback API, as vae-server serves its unary methods
//   vae-grpc-floor serve --api=async      # the async API with one thread polling one completion queue
//       prints "listening on 127.0.0.1:PORT", serves until stdin closes, then prints its threads' context
//       switches and CPU time per call served.
//   vae-grpc-floor call --server=127.0.0.1:PORT --calls=10000
//       sequential GetModelInfo calls; prints one JSON line with p50/p90/p99 (us) and this client's CPU per call.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/process_stats.h"
#include "common/tool_flags.h"
#include "vae/v1/vae_service.grpc.pb.h"

ABSL_FLAG(std::string, api, "callback", "serve: callback or async (one thread, one completion queue)");
ABSL_FLAG(std::string, server, "", "call: HOST:PORT of a `vae-grpc-floor serve`");
ABSL_FLAG(int64_t, calls, 10000, "call: sequential calls (after 500 warm-up calls)");

namespace {

using Clock = std::chrono::steady_clock;

class CallbackService final : public vae::v1::VaeService::CallbackService {
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const vae::v1::GetModelInfoRequest*,
                                         vae::v1::ModelInfo* response) override {
    response->set_options_json("{}");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// One GetModelInfo call of the async API: requested, then answered, then deleted.
class AsyncCall {
 public:
  AsyncCall(vae::v1::VaeService::AsyncService* service, grpc::ServerCompletionQueue* cq) : service_(service), cq_(cq) {
    service_->RequestGetModelInfo(&context_, &request_, &writer_, cq_, cq_, this);
  }
  // The call's tag came back from the queue with `ok`.
  void Proceed(bool ok) {
    if (!ok || answered_) {
      delete this;
      return;
    }
    new AsyncCall(service_, cq_);  // keep one request outstanding
    response_.set_options_json("{}");
    answered_ = true;
    writer_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  vae::v1::VaeService::AsyncService* service_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext context_;
  vae::v1::GetModelInfoRequest request_;
  vae::v1::ModelInfo response_;
  grpc::ServerAsyncResponseWriter<vae::v1::ModelInfo> writer_{&context_};
  bool answered_ = false;
};

int Serve() {
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "callback" && api != "async") {
    std::cerr << "vae-grpc-floor: --api is callback or async\n";
    return 2;
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  CallbackService callback_service;
  vae::v1::VaeService::AsyncService async_service;
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  if (api == "callback") {
    builder.RegisterService(&callback_service);
  } else {
    builder.RegisterService(&async_service);
    cq = builder.AddCompletionQueue();
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "vae-grpc-floor: cannot listen on 127.0.0.1\n";
    return 1;
  }
  std::thread poller;
  if (cq != nullptr) {
    new AsyncCall(&async_service, cq.get());
    poller = std::thread([&] {
      void* tag = nullptr;
      bool ok = false;
      while (cq->Next(&tag, &ok)) static_cast<AsyncCall*>(tag)->Proceed(ok);
    });
  }
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  const int64_t switches0 = vae::bench::ProcessContextSwitches(getpid());
  const double cpu0 = vae::bench::SelfCpuSeconds();
  std::string line;
  int64_t calls = 0;
  // The driver writes the number of calls it made, then closes stdin.
  while (std::getline(std::cin, line)) calls = std::atoll(line.c_str());
  const int64_t switches1 = vae::bench::ProcessContextSwitches(getpid());
  const double cpu1 = vae::bench::SelfCpuSeconds();
  if (calls > 0) {
    std::printf("{\"api\":\"%s\",\"server_switches_per_call\":%.2f,\"server_cpu_us_per_call\":%.1f}\n", api.c_str(),
                static_cast<double>(switches1 - switches0) / calls, (cpu1 - cpu0) / calls * 1e6);
  }
  server->Shutdown();
  if (cq != nullptr) {
    cq->Shutdown();
    poller.join();
  }
  return 0;
}

int Call() {
  auto stub = vae::v1::VaeService::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials()));
  const int64_t n = std::max<int64_t>(absl::GetFlag(FLAGS_calls), 100);
  std::vector<double> us;
  us.reserve(n);
  double cpu0 = 0;
  for (int64_t i = 0; i < n + 500; ++i) {
    if (i == 500) cpu0 = vae::bench::SelfCpuSeconds();
    grpc::ClientContext context;
    vae::v1::ModelInfo response;
    const auto t = Clock::now();
    const grpc::Status status = stub->GetModelInfo(&context, vae::v1::GetModelInfoRequest(), &response);
    if (!status.ok()) {
      std::cerr << "vae-grpc-floor: call failed: " << status.error_message() << "\n";
      return 1;
    }
    if (i >= 500) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  const double cpu_us = (vae::bench::SelfCpuSeconds() - cpu0) / n * 1e6;
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[static_cast<size_t>(q * (us.size() - 1))]; };
  std::printf("{\"calls\":%lld,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"client_cpu_us_per_call\":%.1f}\n",
              static_cast<long long>(n), at(0.5), at(0.9), at(0.99), cpu_us);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = vae::ParseToolFlags(
      argc, argv,
      {"vae-grpc-floor", "vae-grpc-floor serve --api=callback|async | call --server=HOST:PORT", "bench/grpc_floor.cc"});
  const std::string mode = args.size() > 1 ? args[1] : "";
  if (mode == "serve") return Serve();
  if (mode == "call") return Call();
  std::cerr << "usage: vae-grpc-floor serve --api=callback|async  |  vae-grpc-floor call --server=HOST:PORT\n";
  return 2;
}
