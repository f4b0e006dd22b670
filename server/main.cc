// vae-server: serves (and trains, on request) one VAE over gRPC. Parses flags into ServerOptions, starts VaeServer,
// prints "vae-server listening on HOST:PORT" once it serves, and shuts down gracefully on SIGINT/SIGTERM, exiting 0.
#include <glog/logging.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/server.h"
#include "server/server_options.h"

namespace {
const vae::server::ServerOptions kDefaults;

// SIGINT and SIGTERM, the signals that shut the server down.
sigset_t ShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// Blocks the shutdown signals before any shared library's initialiser runs: LibTorch's, gRPC's and OpenCV's take
// ~0.5 s before main(), and a SIGTERM then would kill the process (default action) instead of a clean exit. The
// executable's .preinit_array runs first (after the dynamic loader's relocations, ~25 ms); threads inherit the
// mask, and main() takes the signals with sigwait.
void BlockShutdownSignals(int, char**, char**) {
  const sigset_t signals = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}
__attribute__((section(".preinit_array"), used)) void (*block_shutdown_signals)(int, char**,
                                                                                char**) = &BlockShutdownSignals;

// True when a shutdown signal has arrived (it stays pending while blocked).
bool ShutdownRequested() {
  sigset_t pending;
  sigpending(&pending);
  return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
}
}  // namespace

ABSL_FLAG(std::string, host, kDefaults.host, "address to listen on (0.0.0.0 or :: for all interfaces)");
ABSL_FLAG(int32_t, port, kDefaults.port, "TCP port; 0 picks a free one (printed on stdout)");
ABSL_FLAG(std::string, model_dir, kDefaults.model_dir,
          "the model repository: one folder per model (<name>/model.json and its versions ckpt-<N>.vae); training "
          "writes here (one training server per repository)");
ABSL_FLAG(std::string, data_dir, kDefaults.data_dir, "root of the datasets a Train call may name");
ABSL_FLAG(std::string, preset, kDefaults.preset, "the default model's fresh weights while it has no version");
ABSL_FLAG(uint64_t, seed, kDefaults.seed, "initial weights of that fresh model");
ABSL_FLAG(std::string, device, kDefaults.device, "auto, cpu, cuda or cuda:N");
ABSL_FLAG(int32_t, threads, kDefaults.threads, "torch intra-op threads of training; 0: one per core");
ABSL_FLAG(int32_t, inference_threads, kDefaults.inference_threads,
          "torch intra-op threads of each inference call (concurrent calls each get their own)");
ABSL_FLAG(int32_t, max_message_mb, kDefaults.max_message_mb, "largest gRPC message received or sent, MiB");
ABSL_FLAG(int32_t, max_batch, kDefaults.max_batch, "most images or codes per request (and Sample's largest count)");
ABSL_FLAG(int64_t, max_image_pixels, kDefaults.max_image_pixels,
          "largest encoded image a request may carry, as width x height declared in its header; 0: 16x the model's "
          "H x W, at least 1048576 (1024x1024)");
ABSL_FLAG(std::string, default_model, kDefaults.default_model,
          "the model requests without a model name use (a flat model_dir's checkpoints become its versions)");
ABSL_FLAG(int32_t, keep_versions, kDefaults.keep_versions,
          "versions kept per model on publication: the newest N, plus every labelled one");
ABSL_FLAG(int64_t, max_loaded_mb, kDefaults.max_loaded_mb,
          "MiB of model versions kept in memory (least recently used dropped, reloaded on demand); 0: no limit");
ABSL_FLAG(double, poll_interval_s, kDefaults.poll_interval_s,
          "seconds between rescans of model_dir for versions written or deleted by another process; 0: off");
ABSL_FLAG(bool, enable_batching, kDefaults.enable_batching,
          "coalesce concurrent Encode/Decode/Reconstruct calls into one model call");
ABSL_FLAG(int64_t, batch_timeout_us, kDefaults.batch_timeout_us,
          "longest a batch waits for requests already on their way (a lone request never waits)");
ABSL_FLAG(int32_t, max_queue, kDefaults.max_queue,
          "inference requests queued for batching; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, shutdown_grace_s, 10, "on SIGINT/SIGTERM, seconds in-flight calls get to finish");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate (chain) of the server: with --tls_key, serve TLS only");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s): require every client to present a certificate they signed (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding the bearer token every VaeService call must present (default: $VAE_AUTH_TOKEN; unset: no "
          "authentication). Health and reflection stay open. Without TLS the token is readable on the network");
ABSL_FLAG(std::string, auth_readonly_token_file, "",
          "file holding a second, read-only token: every call but Train (default: $VAE_AUTH_READONLY_TOKEN)");

int main(int argc, char** argv) {
  // glibc gives each of the many gRPC handler threads its own malloc arena; two bound the peak RSS under load
  // (64 clients x 256 images on 2 cores: 652 MB -> 481 MB) at no measurable cost. MALLOC_ARENA_MAX overrides.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  // Debian's abseil is built without NDEBUG, so every absl::Mutex acquisition also updates a global lock-order graph
  // for deadlock detection (GraphCycles showed in the server's profile). That is a debugging aid: off in the server.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "serves a Variational Autoencoder over gRPC (vae.v1.VaeService)\n"
      "  vae-server --model_dir=models --data_dir=data [--port=50051] [--preset=mnist]");
  absl::FlagsUsageConfig usage;
  usage.version_string = [] { return std::string("vae-server 0.1.0\n"); };
  // --help lists the flags defined here (absl's default matches files named like the program: "vae-server").
  usage.contains_help_flags = [](absl::string_view path) { return absl::EndsWith(path, "server/main.cc"); };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);

  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // Already blocked before main (BlockShutdownSignals); blocking again keeps main() correct on its own.
  const sigset_t signals = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  vae::server::ServerOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.preset = absl::GetFlag(FLAGS_preset);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.device = absl::GetFlag(FLAGS_device);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.inference_threads = absl::GetFlag(FLAGS_inference_threads);
  options.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  options.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  options.default_model = absl::GetFlag(FLAGS_default_model);
  options.keep_versions = absl::GetFlag(FLAGS_keep_versions);
  options.max_loaded_mb = absl::GetFlag(FLAGS_max_loaded_mb);
  options.poll_interval_s = absl::GetFlag(FLAGS_poll_interval_s);
  options.enable_batching = absl::GetFlag(FLAGS_enable_batching);
  options.batch_timeout_us = absl::GetFlag(FLAGS_batch_timeout_us);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  // Tokens: a file named by the flag, else the environment variable. Errors are one line naming the flag.
  const auto token =
      vae::server::LoadToken(absl::GetFlag(FLAGS_auth_token_file), "--auth_token_file", vae::server::kAuthTokenEnv);
  const auto readonly_token = vae::server::LoadToken(absl::GetFlag(FLAGS_auth_readonly_token_file),
                                                     "--auth_readonly_token_file", vae::server::kAuthReadonlyTokenEnv);
  for (const auto* loaded : {&token, &readonly_token}) {
    if (!loaded->ok()) {
      std::cerr << "vae-server: " << loaded->status().message() << std::endl;
      return 1;
    }
  }
  options.auth_token = *token;
  options.auth_readonly_token = *readonly_token;
  const absl::Duration grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));

  auto server = vae::server::VaeServer::Create(options);
  if (!server.ok()) {
    std::cerr << "vae-server: " << server.status() << std::endl;
    return 1;
  }
  // Loading and warming up the model is the slow part of start-up: a signal that came meanwhile stops here, before
  // the port is bound. Nothing has been written yet.
  if (ShutdownRequested()) {
    LOG(INFO) << "shutdown signal received during start-up: exiting";
    return 0;
  }
  auto port = (*server)->Start();
  if (!port.ok()) {
    std::cerr << "vae-server: " << port.status() << std::endl;
    return 1;
  }
  std::cout << "vae-server listening on " << (*server)->address() << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LOG(INFO) << "received " << strsignal(signal_number) << ": shutting down (grace " << grace << ")";
  // A bound on the whole shutdown: should draining hang, or a second signal arrive, exit anyway.
  std::atomic<bool> done{false};
  std::thread watchdog([&] {
    const absl::Time limit = absl::Now() + grace + absl::Seconds(20);
    timespec poll{0, 100 * 1000 * 1000};
    while (!done.load() && absl::Now() < limit) {
      if (sigtimedwait(&signals, nullptr, &poll) > 0) {
        LOG(ERROR) << "second signal: exiting without waiting for the shutdown to finish";
        std::fflush(nullptr);
        _exit(1);
      }
    }
    if (!done.load()) {
      LOG(ERROR) << "shutdown did not finish in time: exiting";
      std::fflush(nullptr);
      _exit(1);
    }
  });
  (*server)->Shutdown(grace);
  done.store(true);
  watchdog.join();
  server->reset();
  LOG(INFO) << "vae-server exited cleanly";
  return 0;
}
