#include "server/server_core.h"

#include <ATen/ATen.h>
#include <glog/logging.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "model/checkpoint.h"
#include "model/runtime.h"

namespace vae::server {

ServerCore::ServerCore(ServerOptions options, c10::Device device, std::unique_ptr<ModelRepository> repository)
    : options_(std::move(options)),
      device_(device),
      repository_(std::move(repository)),
      inference_(
          InputRules::FromOptions(options_), options_.inference_threads,
          BatchingOptions{options_.enable_batching, absl::Microseconds(options_.batch_timeout_us), options_.max_queue,
                          // One batch runs at a time, so it may use every core (--threads, 0 = all).
                          ResolveThreadCount(options_.threads)}),
      datasets_(options_.data_dir) {
  training_ = std::make_unique<TrainingManager>(repository_.get(), &datasets_, device_);
}

ServerCore::~ServerCore() { Shutdown(); }

void ServerCore::Shutdown() { training_->Shutdown(); }

absl::StatusOr<std::unique_ptr<ServerCore>> ServerCore::Create(const ServerOptions& options) {
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch is ", options.max_batch, ", expected >= 1"));
  }
  if (options.inference_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference_threads is ", options.inference_threads, ", expected >= 1"));
  }
  if (options.enable_batching && (options.batch_timeout_us < 0 || options.max_queue < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("batching: batch_timeout_us is ", options.batch_timeout_us,
                                                   " and max_queue ", options.max_queue, ", expected >= 0 and >= 1"));
  }
  ConfigureThreads(options.threads);
  // Every thread that has not chosen otherwise gets 1 torch thread, and so does torch's shared pthreadpool: with
  // many gRPC handler threads each running small ops, idle 2-thread teams spin on the cores the busy handlers need
  // (measured on 2 cores, Encode b=1 from 8 clients: 772 calls/s before, 5625 after). The training thread and large
  // batches set their own count (SetCallingThreadTorchThreads).
  at::set_num_threads(1);
  VAE_ASSIGN_OR_RETURN(const c10::Device device, ResolveDevice(options.device));
  if (options.poll_interval_s < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("poll_interval_s is ", options.poll_interval_s, ", expected >= 0 (0: no rescans)"));
  }
  RepositoryOptions repository_options;
  repository_options.root = options.model_dir;
  repository_options.default_model = options.default_model;
  repository_options.keep_versions = options.keep_versions;
  repository_options.max_loaded_bytes = options.max_loaded_mb << 20;
  repository_options.poll_interval = absl::Seconds(options.poll_interval_s);
  VAE_ASSIGN_OR_RETURN(auto repository, ModelRepository::Open(repository_options, device));

  // The default model's default version, or fresh weights as its version 0 while it has none. Start-up does not fail
  // on a version that does not load (a file whose CRC passed but whose weights do not match its options): requests
  // for it get the error, and the fresh weights warm the engine up.
  std::shared_ptr<const Snapshot> snapshot;
  if (auto resolved = repository->Resolve(ModelRef{}); resolved.ok()) {
    snapshot = *std::move(resolved);
  } else {
    if (resolved.status().code() != absl::StatusCode::kNotFound) {
      LOG(ERROR) << "model '" << options.default_model << "': " << resolved.status();
    }
    auto preset = Preset(options.preset);
    if (!preset.ok()) return preset.status();
    LOG(INFO) << "model '" << options.default_model << "' has no version in " << options.model_dir
              << ": serving a fresh '" << options.preset << "' model (seed " << options.seed << ") as its version 0";
    std::shared_ptr<Snapshot> fresh = SnapshotTakingModel(NewSeededVae(*preset, options.seed), device);
    repository->SetPlaceholder(options.default_model, fresh);
    snapshot = std::move(fresh);
  }

  std::unique_ptr<ServerCore> core(new ServerCore(options, device, std::move(repository)));
  // Warm-up: one pass through encoder and decoder, so the first request does not pay for lazy initialisation.
  const auto& o = snapshot->options;
  const auto warm = core->inference_.Reconstruct(*snapshot, at::zeros({1, o.channels, o.height, o.width}),
                                                 /*sample_z=*/false, 0, absl::InfiniteFuture());
  if (!warm.ok()) return absl::InternalError(absl::StrCat("warm-up failed: ", warm.status().message()));
  LOG(INFO) << "serving model '" << snapshot->version.model << "' version " << snapshot->version.version << " on "
            << device.str();
  return core;
}

}  // namespace vae::server
