#include "server/server_metrics.h"

#include <dirent.h>
#include <torch/version.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/batcher.h"
#include "server/server_core.h"

#ifndef VAE_VERSION
#define VAE_VERSION "unknown"
#endif
#ifndef VAE_GIT_COMMIT
#define VAE_GIT_COMMIT "unknown"
#endif

namespace vae::server {
namespace {

// Batch size buckets: at most 1, 2, 4, ... rows (Batcher::Stats::batches_by_rows).
std::vector<double> BatchRowBounds() { return metrics::ExponentialBuckets(1, 2, Batcher::Stats::kRowBuckets); }

// What /proc/self says about the process.
struct ProcessStats {
  double cpu_seconds = 0;
  double rss_bytes = 0;
  double virtual_bytes = 0;
  double threads = 0;
  double open_fds = 0;
  double start_time_seconds = 0;  // since the epoch
};

ProcessStats ReadProcessStats() {
  ProcessStats stats;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces; it ends at the last ')'): field 3 is the state.
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;
    for (std::string v; fields >> v;) f.push_back(v);
    // f[0] is field 3; utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24 (pages).
    auto field = [&](int n) { return n - 3 < static_cast<int>(f.size()) ? std::stod(f[n - 3]) : 0.0; };
    stats.cpu_seconds = (field(14) + field(15)) / ticks;
    stats.threads = field(20);
    stats.virtual_bytes = field(23);
    stats.rss_bytes = field(24) * page;
    // starttime is in ticks since boot; boot time is btime in /proc/stat.
    std::ifstream proc_stat("/proc/stat");
    for (std::string line; std::getline(proc_stat, line);) {
      if (absl::StartsWith(line, "btime ")) {
        stats.start_time_seconds = std::stod(line.substr(6)) + field(22) / ticks;
        break;
      }
    }
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    int n = 0;
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++n;
    }
    closedir(dir);
    stats.open_fds = n - 1;  // less the directory's own descriptor
  }
  return stats;
}

}  // namespace

ServerMetrics::ServerMetrics(ServerCore* core, Options options)
    : core_(core),
      options_(std::move(options)),
      requests_(registry_.AddCounter("vae_grpc_requests_total",
                                     "vae.v1.VaeService calls finished, by method and gRPC status code",
                                     {"method", "code"})),
      latency_(registry_.AddHistogram("vae_grpc_request_duration_seconds",
                                      "Server-side time of vae.v1.VaeService calls, from arrival to status", {"method"},
                                      LatencyBuckets())),
      in_flight_(
          registry_.AddGauge("vae_grpc_requests_in_flight", "vae.v1.VaeService calls being served now").WithLabels({})),
      model_requests_(registry_.AddCounter("vae_model_requests_total", "Calls answered OK by a model version",
                                           {"model", "version"})),
      http_requests_(registry_.AddCounter("vae_http_requests_total",
                                          "Requests answered by the HTTP API's routes (not the probes or /metrics), "
                                          "by route pattern and HTTP status",
                                          {"route", "method", "code"})),
      http_latency_(registry_.AddHistogram("vae_http_request_duration_seconds",
                                           "Server-side time of the HTTP API's requests, in their handler", {"route"},
                                           LatencyBuckets())),
      batch_size_(registry_.AddHistogram("vae_batch_size", "Rows (images or codes) per batched model call", {},
                                         BatchRowBounds())),
      queue_depth_(registry_.AddGauge("vae_batch_queue_depth", "Requests waiting for a batch").WithLabels({})),
      queue_refused_(registry_
                         .AddCounter("vae_batch_queue_refused_total",
                                     "Requests answered RESOURCE_EXHAUSTED because the batch queue was full")
                         .WithLabels({})),
      batched_requests_(
          registry_.AddCounter("vae_batch_requests_total", "Requests that ran in a batch").WithLabels({})),
      model_loaded_(
          registry_.AddGauge("vae_model_loaded", "1 for each model version loaded and served", {"model", "version"})),
      model_parameters_(
          registry_.AddGauge("vae_model_parameters", "Parameters of a loaded model version", {"model", "version"})),
      train_running_(registry_.AddGauge("vae_training_job_running", "1 while a training job runs").WithLabels({})),
      train_epoch_(
          registry_.AddGauge("vae_training_epoch", "Epoch of the model's life the last job reported").WithLabels({})),
      train_step_(
          registry_.AddGauge("vae_training_step", "Optimizer steps behind the last job's weights").WithLabels({})),
      train_loss_(registry_.AddGauge("vae_training_loss",
                                     "Last reported loss per image (negative ELBO at beta 1), nats", {"split"})),
      train_images_per_second_(
          registry_.AddGauge("vae_training_images_per_second", "Training throughput of the last report")
              .WithLabels({})),
      checkpoints_written_(
          registry_.AddCounter("vae_training_checkpoints_written_total", "Checkpoints training wrote").WithLabels({})),
      checkpoints_failed_(registry_
                              .AddCounter("vae_training_checkpoints_failed_total",
                                          "Training jobs ended because a checkpoint could not be written")
                              .WithLabels({})),
      jobs_finished_ok_(
          registry_.AddCounter("vae_training_jobs_completed_total", "Training jobs that ended OK").WithLabels({})),
      jobs_failed_(registry_.AddCounter("vae_training_jobs_failed_total", "Training jobs that ended with an error")
                       .WithLabels({})),
      rss_(registry_.AddGauge("process_resident_memory_bytes", "Resident memory size in bytes").WithLabels({})),
      virtual_memory_(
          registry_.AddGauge("process_virtual_memory_bytes", "Virtual memory size in bytes").WithLabels({})),
      cpu_seconds_(registry_.AddCounter("process_cpu_seconds_total", "User and system CPU time spent in seconds")
                       .WithLabels({})),
      threads_(registry_.AddGauge("process_threads", "Threads of the process").WithLabels({})),
      open_fds_(registry_.AddGauge("process_open_fds", "Open file descriptors").WithLabels({})),
      start_time_(registry_.AddGauge("process_start_time_seconds", "Start time of the process since the Unix epoch")
                      .WithLabels({})) {
  registry_
      .AddGauge("vae_build_info", "vae-server's version, git commit, and the LibTorch and gRPC it was built with",
                {"version", "git_commit", "torch_version", "grpc_version"})
      .WithLabels({VAE_VERSION, VAE_GIT_COMMIT, TORCH_VERSION, options_.grpc_version})
      .Set(1);
  for (const std::string& method : options_.methods) methods_.emplace(method, std::make_unique<MethodSeries>());
  registry_.AddCollector([this] { Collect(); });
}

void ServerMetrics::CallStarted() {
  if (options_.count_calls) in_flight_.Increment();
}

metrics::Counter& ServerMetrics::RequestsFor(MethodSeries* series, absl::string_view method, int code) {
  const std::string code_name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  if (series == nullptr) return requests_.WithLabels({std::string(method), code_name});
  metrics::Counter* counter = series->by_code[code].load(std::memory_order_acquire);
  if (counter == nullptr) {
    counter = &requests_.WithLabels({std::string(method), code_name});
    series->by_code[code].store(counter, std::memory_order_release);
  }
  return *counter;
}

metrics::Histogram& ServerMetrics::LatencyFor(MethodSeries* series, absl::string_view method) {
  if (series == nullptr) return latency_.WithLabels({std::string(method)});
  metrics::Histogram* histogram = series->latency.load(std::memory_order_acquire);
  if (histogram == nullptr) {
    histogram = &latency_.WithLabels({std::string(method)});
    series->latency.store(histogram, std::memory_order_release);
  }
  return *histogram;
}

void ServerMetrics::CallFinished(const Call& call) {
  const absl::string_view model = call.model.empty() ? absl::string_view(options_.default_model) : call.model;
  if (options_.count_calls) {
    in_flight_.Decrement();
    auto it = methods_.find(call.method);
    MethodSeries* series = it != methods_.end() ? it->second.get() : nullptr;
    const int code = static_cast<int>(call.code);
    RequestsFor(series, call.method, code >= 0 && code < kCodes ? code : 2).Increment();
    const double seconds = absl::ToDoubleSeconds(call.latency);
    LatencyFor(series, call.method).Observe(seconds);
    if (call.code == absl::StatusCode::kOk && call.version >= 0) {
      model_requests_.WithLabels({std::string(model), absl::StrCat(call.version)}).Increment();
    }
  }
  if (options_.log) {
    options_.log->Write(absl::Now(), "request",
                        {{"method", call.method},
                         {"model", model},
                         {"version", call.version},
                         {"images", call.images},
                         {"status", absl::StatusCodeToString(call.code)},
                         {"latency_ms", absl::ToDoubleMilliseconds(call.latency)},
                         {"peer", call.peer},
                         {"request_id", call.request_id}});
  }
}

void ServerMetrics::HttpRequestFinished(const std::string& route, const std::string& method, int status,
                                        absl::Duration latency, const std::string& peer,
                                        const std::string& request_id) {
  if (options_.count_calls) {
    http_requests_.WithLabels({route, method, absl::StrCat(status)}).Increment();
    http_latency_.WithLabels({route}).Observe(absl::ToDoubleSeconds(latency));
  }
  if (options_.log) {
    options_.log->Write(absl::Now(), "http_request",
                        {{"method", method},
                         {"route", route},
                         {"status", status},
                         {"latency_ms", absl::ToDoubleMilliseconds(latency)},
                         {"peer", peer},
                         {"request_id", request_id}});
  }
}

void ServerMetrics::OnTrainEvent(const TrainingJob& job, const TrainEvent* event, const absl::Status& outcome) {
  if (event == nullptr) {
    (outcome.ok() ? jobs_finished_ok_ : jobs_failed_).Increment();
    // The trainer's checkpoint failures read "checkpoint at step N: ..." (model/trainer.cc WriteCheckpoint).
    if (!outcome.ok() && absl::StrContains(outcome.message(), "checkpoint at step")) checkpoints_failed_.Increment();
    return;
  }
  const Progress& p = event->progress;
  train_epoch_.Set(static_cast<double>(p.epoch));
  train_step_.Set(static_cast<double>(p.global_step));
  if (!std::isnan(p.train.loss) && p.kind != Progress::Kind::kStarted)
    train_loss_.WithLabels({"train"}).Set(p.train.loss);
  if (p.has_test) train_loss_.WithLabels({"test"}).Set(p.test.loss);
  if (p.images_per_sec > 0) train_images_per_second_.Set(p.images_per_sec);
  // A checkpoint after every epoch, and one more when a job is stopped between epochs.
  const bool wrote = !p.checkpoint_path.empty() &&
                     (p.kind == Progress::Kind::kEpochEnd || (p.kind == Progress::Kind::kDone && p.cancelled));
  if (wrote) checkpoints_written_.Increment();
  if (p.kind == Progress::Kind::kEpochEnd && options_.log) {
    options_.log->Write(absl::Now(), "train_epoch",
                        {{"job", job.id()},
                         {"dataset", job.dataset()},
                         {"epoch", p.epoch},
                         {"epochs", p.epochs},
                         {"step", p.global_step},
                         {"train_loss", p.train.loss},
                         {"test_loss", p.has_test ? p.test.loss : std::nan("")},
                         {"images_per_sec", p.images_per_sec},
                         {"model", event->version.model},
                         {"version", event->version.version},
                         {"checkpoint", p.checkpoint_path}});
  }
}

void ServerMetrics::Collect() {
  const Batcher::Stats batches = core_->inference().batch_stats();
  std::vector<int64_t> counts(batches.batches_by_rows.begin(), batches.batches_by_rows.end());
  batch_size_.WithLabels({}).Mirror(counts, static_cast<double>(batches.rows));
  queue_depth_.Set(core_->inference().queued());
  queue_refused_.Set(static_cast<double>(batches.refused));
  batched_requests_.Set(static_cast<double>(batches.requests));

  model_loaded_.Clear();
  model_parameters_.Clear();
  if (const auto listings = core_->repository().List(""); listings.ok()) {
    for (const ModelListing& model : *listings) {
      const double parameters = model.options ? static_cast<double>(CountParameters(*model.options)) : 0;
      for (const VersionListing& v : model.versions) {
        if (!v.loaded) continue;
        const std::string version = absl::StrCat(v.version);
        model_loaded_.WithLabels({model.name, version}).Set(1);
        model_parameters_.WithLabels({model.name, version}).Set(parameters);
      }
    }
  }
  train_running_.Set(core_->training().Running() != nullptr ? 1 : 0);

  const ProcessStats process = ReadProcessStats();
  rss_.Set(process.rss_bytes);
  virtual_memory_.Set(process.virtual_bytes);
  cpu_seconds_.Set(process.cpu_seconds);
  threads_.Set(process.threads);
  open_fds_.Set(process.open_fds);
  start_time_.Set(process.start_time_seconds);
}

}  // namespace vae::server
