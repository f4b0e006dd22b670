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
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/tool_flags.h"
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

// OpenMP threads that wait for work sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE) unless the environment says
// otherwise. libgomp reads the variable once, in its initialiser, before main() and before anything main() could
// set (a .preinit_array setenv is undone when libc sets up environ), so without it in the environment the server
// sets it and re-executes itself (same PID; the blocked and pending signals carry over execve). Measured on the
// 2-core VM with other processes busy (load ~12; BENCHMARKS.md §10): a Train of the mnist preset ran at 300-500
// images/s with libgomp's default spinning (its 2-thread team spun on cores the other processes held) and at
// 21-29k images/s with PASSIVE (1 training thread: 7-8k).
void ReexecWithPassiveOpenMp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1);
  execv("/proc/self/exe", argv);
  // execv failed (no /proc?): carry on with libgomp's default.
}

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
          "file holding a second, read-only token: every call but Train, SetLabel, DeleteVersion and DeleteModel "
          "(default: $VAE_AUTH_READONLY_TOKEN)");
ABSL_FLAG(int32_t, http_port, kDefaults.http_port,
          "HTTP port on --host: /healthz, /readyz, /metrics, the HTTP/JSON API and the web page; 0: none. Same TLS "
          "and tokens as gRPC; /healthz, /readyz and /metrics need no token");
ABSL_FLAG(int32_t, http_threads, kDefaults.http_threads,
          "HTTP worker threads (each serves one connection at a time, for its keep-alive life)");
ABSL_FLAG(int32_t, http_max_queued, kDefaults.http_max_queued,
          "HTTP connections waiting for a worker; more are answered 503 at once");
ABSL_FLAG(int32_t, http_timeout_s, kDefaults.http_timeout_s,
          "seconds one read or write on an HTTP connection may block before the connection is closed");
ABSL_FLAG(int32_t, http_keep_alive_s, kDefaults.http_keep_alive_s,
          "seconds an idle HTTP keep-alive connection is kept");
ABSL_FLAG(int32_t, http_max_body_mb, kDefaults.http_max_body_mb, "largest HTTP request body, MiB (more: 413)");
ABSL_FLAG(bool, metrics, kDefaults.metrics,
          "serve GET /metrics and count every call for it (--metrics=false: no per-call metrics work at all)");
ABSL_FLAG(std::string, log_format, kDefaults.log_format,
          "request log lines on stderr: text (key=value) or json (one object per line)");
ABSL_FLAG(bool, log_requests, kDefaults.log_requests, "log one line per call");

int main(int argc, char** argv) {
  ReexecWithPassiveOpenMp(argv);
  // glibc gives each of the many gRPC handler threads its own malloc arena; two bound the peak RSS under load
  // (64 clients x 256 images on 2 cores: 652 MB -> 481 MB) at no measurable cost. MALLOC_ARENA_MAX overrides.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  // Debian's abseil is built without NDEBUG, so every absl::Mutex acquisition also updates a global lock-order graph
  // for deadlock detection (GraphCycles showed in the server's profile). That is a debugging aid: off in the server.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  vae::ParseToolFlags(argc, argv,
                      {"vae-server",
                       "serves a Variational Autoencoder over gRPC (vae.v1.VaeService)\n"
                       "  vae-server --model_dir=models --data_dir=data [--port=50051] [--preset=mnist]",
                       "server/main.cc"});

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
  options.http_port = absl::GetFlag(FLAGS_http_port);
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.http_max_queued = absl::GetFlag(FLAGS_http_max_queued);
  options.http_timeout_s = absl::GetFlag(FLAGS_http_timeout_s);
  options.http_keep_alive_s = absl::GetFlag(FLAGS_http_keep_alive_s);
  options.http_max_body_mb = absl::GetFlag(FLAGS_http_max_body_mb);
  options.metrics = absl::GetFlag(FLAGS_metrics);
  options.log_format = absl::GetFlag(FLAGS_log_format);
  options.log_requests = absl::GetFlag(FLAGS_log_requests);
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
