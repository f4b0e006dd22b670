// ServerMetrics: vae-server's Prometheus series (README "Metrics" lists them) and its request log, on a
// metrics::Registry. No gRPC: the service reports each finished call (CallFinished), the training manager each job
// event (OnTrainEvent, a TrainObserver), and everything else -- batching, the served model, the training job's
// gauges, the process -- is read at scrape time by collectors, so it costs nothing between scrapes.
//
// Cost per call (CallStarted + CallFinished): a handful of relaxed atomic adds on series looked up once per method
// and code, one map lookup under a mutex for the model/version counter, and with the request log one formatted
// write(2). --metrics=false: the service holds no ServerMetrics for counting, and none of this runs.
//
// Ownership and threads: does not own `core`, which must outlive it. Every method may be called from any thread.
#ifndef VAE_SERVER_SERVER_METRICS_H_
#define VAE_SERVER_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/request_log.h"
#include "server/training_job.h"

namespace vae::server {

class ServerCore;

class ServerMetrics {
 public:
  struct Options {
    std::vector<std::string> methods;       // the RPC names, as the calls report them
    std::string default_model = "default";  // the model label of calls that name none
    std::string grpc_version;               // build info
    bool count_calls = true;                // false (--metrics=false): CallStarted/CallFinished only log
    std::optional<RequestLog> log;          // the request log; none: no lines
  };
  // One finished call, as the log and the counters see it.
  struct Call {
    absl::string_view method;
    absl::StatusCode code = absl::StatusCode::kOk;
    absl::Duration latency;
    absl::string_view model;  // "" : the default model
    int64_t version = -1;     // the version that answered (0: a fresh, unstored model); -1: none (an error)
    int64_t images = 0;       // images or codes in the request (Sample: count)
    absl::string_view peer;
    absl::string_view request_id;
  };

  ServerMetrics(ServerCore* core, Options options);

  // Latency histogram bounds, seconds: 50 us to ~6.6 s by factors of 2 (Encode b=1 takes ~0.1-0.2 ms here; a Train
  // call lasts its job and lands in +Inf).
  static std::vector<double> LatencyBuckets() { return metrics::ExponentialBuckets(50e-6, 2, 18); }

  void CallStarted();
  void CallFinished(const Call& call);
  // One request an HTTP route answered (HttpServer::Observer): counted by route pattern and HTTP status, logged as an
  // "http_request" line.
  void HttpRequestFinished(const std::string& route, const std::string& method, int status, absl::Duration latency,
                           const std::string& peer, const std::string& request_id);
  // A TrainObserver (TrainingManager::SetObserver): job gauges, checkpoint counters, and a log line per epoch.
  void OnTrainEvent(const TrainingJob& job, const TrainEvent* event, const absl::Status& outcome);

  bool counting() const { return options_.count_calls; }
  // True when calls are logged: only then do they need a request id, a peer and the echo.
  bool logging() const { return options_.log.has_value(); }
  // The /metrics body.
  std::string Exposition() const { return registry_.Exposition(); }
  metrics::Registry& registry() { return registry_; }

 private:
  static constexpr int kCodes = 17;  // absl/gRPC status codes 0..16
  struct MethodSeries {
    // Created on first use, so that /metrics lists only what was called.
    std::array<std::atomic<metrics::Counter*>, kCodes> by_code{};
    std::atomic<metrics::Histogram*> latency{nullptr};
  };
  void Collect();
  metrics::Counter& RequestsFor(MethodSeries* series, absl::string_view method, int code);
  metrics::Histogram& LatencyFor(MethodSeries* series, absl::string_view method);

  ServerCore* const core_;
  const Options options_;
  metrics::Registry registry_;
  // Per call.
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Histogram>& latency_;
  metrics::Gauge& in_flight_;
  metrics::Family<metrics::Counter>& model_requests_;
  metrics::Family<metrics::Counter>& http_requests_;
  metrics::Family<metrics::Histogram>& http_latency_;
  std::map<std::string, std::unique_ptr<MethodSeries>, std::less<>> methods_;  // fixed after construction
  // Read at scrape time.
  metrics::Family<metrics::Histogram>& batch_size_;
  metrics::Gauge& queue_depth_;
  metrics::Counter& queue_refused_;
  metrics::Counter& batched_requests_;
  metrics::Family<metrics::Gauge>& model_loaded_;
  metrics::Family<metrics::Gauge>& model_parameters_;
  metrics::Gauge& train_running_;
  metrics::Gauge& train_epoch_;
  metrics::Gauge& train_step_;
  metrics::Family<metrics::Gauge>& train_loss_;
  metrics::Gauge& train_images_per_second_;
  metrics::Counter& checkpoints_written_;
  metrics::Counter& checkpoints_failed_;
  metrics::Counter& jobs_finished_ok_;
  metrics::Counter& jobs_failed_;
  metrics::Gauge& rss_;
  metrics::Gauge& virtual_memory_;
  metrics::Counter& cpu_seconds_;
  metrics::Gauge& threads_;
  metrics::Gauge& open_fds_;
  metrics::Gauge& start_time_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_SERVER_METRICS_H_
