// The served model: an immutable Snapshot of published weights, and the ModelSlot that holds the current one.
//
// Publication is a pointer swap. A request calls ModelSlot::Current() once and uses that snapshot from start to
// finish, so it never sees half-updated weights and a training job may publish while it runs; the old snapshot is
// freed when its last reader lets go.
#ifndef VAE_SERVER_MODEL_SLOT_H_
#define VAE_SERVER_MODEL_SLOT_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "model/checkpoint.h"
#include "model/mlp_inference.h"
#include "model/options.h"
#include "model/trainer.h"
#include "model/vae.h"

namespace vae::server {

// Which weights answered. `generation` is assigned by ModelSlot::Publish: 1 for the model loaded at start-up, +1 for
// every publication after it.
struct ModelVersion {
  int64_t generation = 0;
  int64_t epochs_trained = 0;  // completed epochs behind these weights
  int64_t global_step = 0;     // optimizer steps behind these weights
};

// Published weights and what is known about them. Once handed to ModelSlot::Publish a Snapshot is shared read-only
// by any number of request threads: `model` is in eval mode and nobody calls a mutating method on it (Vae is a
// handle, so C++ const alone cannot say this: it is the contract). Inference on it runs under c10::InferenceMode.
struct Snapshot {
  Vae model{nullptr};  // on `device`, eval mode
  // The same weights run straight through BLAS for small batches (model/mlp_inference.h); null unless `model` is an
  // MLP on the CPU. Set by SnapshotOfModel / SnapshotOfCheckpoint.
  std::shared_ptr<const MlpInference> mlp;
  int64_t parameter_count = 0;  // of `model`; sizes the thread team of a batch (InferenceEngine::ThreadsFor)
  VaeOptions options;
  c10::Device device = c10::Device(c10::kCPU);
  ModelVersion version;
  std::optional<Metrics> last_train;  // the training metrics of the run behind these weights, when known
  std::optional<Metrics> last_test;
  std::string checkpoint_path;    // the checkpoint holding exactly these weights; "" for a fresh model
  std::string train_json = "{}";  // hyperparameters of that run (TrainOptions as JSON)
};

// Holds the served snapshot. Thread-safe: Current() from any request thread, Publish() from start-up and the training
// thread. Locks its own mutex for the pointer copy only (nanoseconds), never while a model runs.
class ModelSlot {
 public:
  // The snapshot being served; null before the first Publish.
  std::shared_ptr<const Snapshot> Current() const;

  // Sets next->version.generation to one more than the last publication's, then makes `next` the served snapshot.
  // Takes shared ownership; the caller must not modify *next afterwards. Returns the assigned version.
  ModelVersion Publish(std::shared_ptr<Snapshot> next);

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// A new model with random weights drawn from torch's default generator seeded with `seed`: the same options and seed
// give the same weights. Serialised by a process-wide mutex because the default generator is global. Runs on the CPU;
// the caller moves the model.
Vae NewSeededVae(const VaeOptions& options, uint64_t seed);

// A snapshot holding a deep copy of `model`'s weights on `device`, in eval mode. `model` may be a trainer's module:
// the copy shares nothing with it. `version.generation` is left for Publish to assign.
std::shared_ptr<Snapshot> SnapshotOfModel(const Vae& model, const c10::Device& device);

// A snapshot that takes `model` over without copying it (moved to `device`, eval mode): nobody may modify `model`
// afterwards, e.g. a fresh model, or Trainer::TakeServingModel()'s. `version.generation` is left for Publish.
std::shared_ptr<Snapshot> SnapshotTakingModel(Vae model, const c10::Device& device);

// A snapshot that takes over a loaded checkpoint's model (moved to eval mode), version and metrics.
std::shared_ptr<Snapshot> SnapshotOfCheckpoint(Checkpoint checkpoint, const c10::Device& device);

// Parses a checkpoint's metrics_json ({"train": {loss, recon, kl}, "test": {...}}); missing or NaN parts stay unset.
void ParseMetricsJson(const std::string& json, std::optional<Metrics>* train, std::optional<Metrics>* test);

}  // namespace vae::server

#endif  // VAE_SERVER_MODEL_SLOT_H_
