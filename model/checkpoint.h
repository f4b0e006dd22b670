// Checkpoints: a model's options and weights, the optimizer's state and the training position, in one file that is
// written atomically and carries a CRC-32, so a torn or corrupted file is detected and skipped, never half-loaded.
//
// File layout: "VAECKPT1" | torch archive (zip) | payload length (u64 LE) | CRC-32 of the archive (u32 LE) | "VEND".
// Names are ckpt-<sequence, 12 digits>.vae: each new checkpoint in a folder takes the next sequence number, so the
// newest sorts last, also across training runs that restart the step count.
#ifndef VAE_MODEL_CHECKPOINT_H_
#define VAE_MODEL_CHECKPOINT_H_

#include <torch/optim/adam.h>
#include <torch/serialize/input-archive.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/vae.h"

namespace vae {

// Where a training run stands; enough to continue it exactly.
struct TrainState {
  int64_t epochs_done = 0;    // completed epochs
  int64_t step_in_epoch = 0;  // batches of the next epoch already trained (0 at an epoch boundary)
  int64_t global_step = 0;    // optimizer steps since the model was created
  uint64_t seed = 0;          // the run's seed: epoch order is EpochPermutation(n, seed, epoch)
  torch::Tensor rng_state;    // the trainer's noise generator (eps, binarisation); undefined before any training
  std::string train_json = "{}";    // hyperparameters of the run that wrote the checkpoint
  std::string metrics_json = "{}";  // the latest train/test metrics
};

struct Checkpoint {
  std::string path;
  VaeOptions options;
  Vae model{nullptr};  // the weights to serve, on the device given to LoadCheckpoint
  // The optimizer's own weights, when training keeps an average (EMA) in `model`; null otherwise (then `model` is
  // also what training continues from).
  Vae train_model{nullptr};
  TrainState state;
  // The Adam state as a nested archive (pass to Trainer::Resume); null when the file has none.
  std::shared_ptr<torch::serialize::InputArchive> optimizer;
};

// Writes `model` (the weights to serve), `train_model` and `optimizer` (each when not null) and `state` to `path`
// atomically. INTERNAL on I/O or torch errors.
absl::Status SaveCheckpoint(const std::string& path, Vae& model, torch::optim::Adam* optimizer,
                            const TrainState& state, Vae* train_model = nullptr);

// Loads and verifies a checkpoint. NOT_FOUND when missing; DATA_LOSS when torn, corrupt (CRC, magic) or its
// weights do not match its options, with the reason in the message.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const torch::Device& device);

std::string CheckpointFileName(int64_t sequence);
// dir/ckpt-<one more than the highest sequence in dir>.vae
std::string NextCheckpointPath(const std::string& dir);
// Paths of ckpt-*.vae files in `dir`, newest (highest sequence) first. Empty when the folder is missing.
std::vector<std::string> ListCheckpoints(const std::string& dir);
// The newest checkpoint in `dir` that loads; torn or corrupt ones are skipped with a warning in the log.
// NOT_FOUND when there is none.
absl::StatusOr<Checkpoint> LoadNewestCheckpoint(const std::string& dir, const torch::Device& device);
// Deletes all but the newest `keep` checkpoints in `dir`.
void PruneCheckpoints(const std::string& dir, int keep);

}  // namespace vae

#endif  // VAE_MODEL_CHECKPOINT_H_
