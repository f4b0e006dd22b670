// A served model version: an immutable Snapshot of published weights, and how snapshots are made.
//
// The model repository (server/model_repository.h) hands them out. A request resolves its model spec once and uses
// that snapshot from start to finish, so it never sees half-updated weights and a training job may publish while it
// runs; a snapshot is freed when its last reader (and the repository's cache) lets go.
#ifndef VAE_SERVER_SNAPSHOT_H_
#define VAE_SERVER_SNAPSHOT_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "model/checkpoint.h"
#include "model/mlp_inference.h"
#include "model/options.h"
#include "model/trainer.h"
#include "model/vae.h"

namespace vae::server {

// Which weights answered: a model of the repository and one of its immutable versions (the number of its checkpoint
// file, ckpt-<version>.vae). Version 0 is the fresh, untrained model a server without any version serves (never
// stored, so never pinnable).
struct ModelVersion {
  std::string model;           // the model's name
  int64_t version = 0;         // the version number within that model
  int64_t epochs_trained = 0;  // completed epochs behind these weights
  int64_t global_step = 0;     // optimizer steps behind these weights
};

// Published weights and what is known about them. Once handed to the repository a Snapshot is shared read-only
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

// A new model with random weights drawn from torch's default generator seeded with `seed`: the same options and seed
// give the same weights. Serialised by a process-wide mutex because the default generator is global. Runs on the CPU;
// the caller moves the model.
Vae NewSeededVae(const VaeOptions& options, uint64_t seed);

// A snapshot holding a deep copy of `model`'s weights on `device`, in eval mode. `model` may be a trainer's module:
// the copy shares nothing with it. `version.model`/`version.version` are left for the repository to assign.
std::shared_ptr<Snapshot> SnapshotOfModel(const Vae& model, const c10::Device& device);

// A snapshot that takes `model` over without copying it (moved to `device`, eval mode): nobody may modify `model`
// afterwards, e.g. a fresh model, or Trainer::TakeServingModel()'s. `version.generation` is left for Publish.
std::shared_ptr<Snapshot> SnapshotTakingModel(Vae model, const c10::Device& device);

// A snapshot that takes over a loaded checkpoint's model (moved to eval mode), version and metrics.
std::shared_ptr<Snapshot> SnapshotOfCheckpoint(Checkpoint checkpoint, const c10::Device& device);

// Parses a checkpoint's metrics_json ({"train": {loss, recon, kl}, "test": {...}}); missing or NaN parts stay unset.
void ParseMetricsJson(const std::string& json, std::optional<Metrics>* train, std::optional<Metrics>* test);

}  // namespace vae::server

#endif  // VAE_SERVER_SNAPSHOT_H_
