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

ServerCore::ServerCore(ServerOptions options, c10::Device device)
    : options_(std::move(options)),
      device_(device),
      inference_(
          InputRules::FromOptions(options_), options_.inference_threads,
          BatchingOptions{options_.enable_batching, absl::Microseconds(options_.batch_timeout_us), options_.max_queue,
                          // One batch runs at a time, so it may use every core (--threads, 0 = all).
                          ResolveThreadCount(options_.threads)}),
      datasets_(options_.data_dir) {
  training_ =
      std::make_unique<TrainingManager>(&slot_, &datasets_, options_.model_dir, device_, options_.keep_checkpoints);
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
  if (options.model_dir.empty()) return absl::InvalidArgumentError("model_dir is empty; expected a folder");
  ConfigureThreads(options.threads);
  // Every thread that has not chosen otherwise gets 1 torch thread, and so does torch's shared pthreadpool: with
  // many gRPC handler threads each running small ops, idle 2-thread teams spin on the cores the busy handlers need
  // (measured on 2 cores, Encode b=1 from 8 clients: 772 calls/s before, 5625 after). The training thread and large
  // batches set their own count (SetCallingThreadTorchThreads).
  at::set_num_threads(1);
  VAE_ASSIGN_OR_RETURN(const c10::Device device, ResolveDevice(options.device));
  std::error_code ec;
  std::filesystem::create_directories(options.model_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_dir ", options.model_dir, " cannot be created: ", ec.message()));
  }

  std::shared_ptr<Snapshot> snapshot;
  auto checkpoint = LoadNewestCheckpoint(options.model_dir, device);
  if (checkpoint.ok()) {
    LOG(INFO) << "loaded checkpoint " << checkpoint->path << " (epoch " << checkpoint->state.epochs_done << ", step "
              << checkpoint->state.global_step << ")";
    snapshot = SnapshotOfCheckpoint(std::move(*checkpoint), device);
  } else {
    auto preset = Preset(options.preset);
    if (!preset.ok()) return preset.status();
    LOG(INFO) << "no valid checkpoint in " << options.model_dir << ": serving a fresh '" << options.preset
              << "' model (seed " << options.seed << ")";
    snapshot = SnapshotTakingModel(NewSeededVae(*preset, options.seed), device);
  }

  std::unique_ptr<ServerCore> core(new ServerCore(options, device));
  // Warm-up: one pass through encoder and decoder, so the first request does not pay for lazy initialisation.
  const auto& o = snapshot->options;
  const auto warm = core->inference_.Reconstruct(*snapshot, at::zeros({1, o.channels, o.height, o.width}),
                                                 /*sample_z=*/false, 0, absl::InfiniteFuture());
  if (!warm.ok()) return absl::InternalError(absl::StrCat("warm-up failed: ", warm.status().message()));
  const ModelVersion version = core->slot_.Publish(std::move(snapshot));
  LOG(INFO) << "serving generation " << version.generation << " on " << device.str();
  return core;
}

}  // namespace vae::server
