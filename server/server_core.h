// ServerCore: everything vae-server is, minus gRPC. It owns the model repository (the served models and versions), the
// InferenceEngine, the datasets and the TrainingManager; the gRPC service (vae_service_impl.h) is a thin mapping onto these calls, and
// tests drive the core directly.
//
// Lifetime: Create() -> serve -> Shutdown() (or the destructor). Threads: every method may be called from any thread
// after Create returns; the members it hands out are thread-safe as their headers describe.
#ifndef VAE_SERVER_SERVER_CORE_H_
#define VAE_SERVER_SERVER_CORE_H_

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/dataset_registry.h"
#include "server/inference.h"
#include "server/model_repository.h"
#include "server/server_options.h"
#include "server/training_job.h"

namespace vae::server {

class ServerCore {
 public:
  // Configures torch's threads (once per process), resolves the device, opens the model repository in model_dir
  // (migrating a flat layout; torn or corrupt checkpoints are never versions), loads the default model's default
  // version or, when it has none, serves a fresh `preset` model seeded with `seed` as its version 0, and runs one
  // warm-up forward pass on it. INVALID_ARGUMENT for bad options, FAILED_PRECONDITION for an unavailable device,
  // INTERNAL when the model cannot run.
  static absl::StatusOr<std::unique_ptr<ServerCore>> Create(const ServerOptions& options);

  ~ServerCore();  // Shutdown()

  // The snapshot to answer one request with (ModelRepository::Resolve): call once per request and use it throughout.
  absl::StatusOr<std::shared_ptr<const Snapshot>> Resolve(const ModelRef& ref) { return repository_->Resolve(ref); }

  ModelRepository& repository() { return *repository_; }
  const InferenceEngine& inference() const { return inference_; }
  TrainingManager& training() { return *training_; }
  const ServerOptions& options() const { return options_; }
  const c10::Device& device() const { return device_; }

  // Stops a running training job (it writes a checkpoint) and waits for it; Train calls afterwards get UNAVAILABLE.
  // Inference keeps working on the last published snapshot. Idempotent.
  void Shutdown();

 private:
  ServerCore(ServerOptions options, c10::Device device, std::unique_ptr<ModelRepository> repository);

  const ServerOptions options_;
  const c10::Device device_;
  std::unique_ptr<ModelRepository> repository_;
  InferenceEngine inference_;
  DatasetRegistry datasets_;
  std::unique_ptr<TrainingManager> training_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_SERVER_CORE_H_
