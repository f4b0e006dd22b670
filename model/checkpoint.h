// Checkpoints: a model's options and weights, the optimizer's state and the training position, in one file that is
// written atomically and carries a CRC-32, so a torn or corrupted file is detected and skipped, never half-loaded.
//
// File layout: "VAECKPT1" | torch archive (zip) | payload length (u64 LE) | CRC-32 of the archive (u32 LE) | "VEND".
// Names are ckpt-<sequence>.vae, the sequence zero-padded to 12 digits (more once it needs them): each new checkpoint
// in a folder takes the next sequence number, so the newest has the highest, also across training runs that restart
// the step count. A process killed mid-write leaves only a temp file ckpt-*.tmp.* (see WriteFileAtomically), never a
// torn ckpt-*.vae; RemoveStaleTempFiles deletes those at start-up.
#ifndef VAE_MODEL_CHECKPOINT_H_
#define VAE_MODEL_CHECKPOINT_H_

#include <torch/optim/adam.h>
#include <torch/serialize/input-archive.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/vae.h"

namespace vae {

// Where a training run stands; enough to continue it exactly.
struct TrainState {
  int64_t epochs_done = 0;          // completed epochs
  int64_t step_in_epoch = 0;        // batches of the next epoch already trained (0 at an epoch boundary)
  int64_t global_step = 0;          // optimizer steps since the model was created
  uint64_t seed = 0;                // the run's seed: epoch order is EpochPermutation(n, seed, epoch)
  torch::Tensor rng_state;          // the trainer's noise generator (eps, binarisation); undefined before any training
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
// atomically: on any failure `path` is untouched and no temp file is left. RESOURCE_EXHAUSTED when the disk is full
// (naming the path and the bytes free there); INTERNAL on other I/O or torch errors. Never throws, never aborts.
absl::Status SaveCheckpoint(const std::string& path, Vae& model, torch::optim::Adam* optimizer, const TrainState& state,
                            Vae* train_model = nullptr);

// Loads and verifies a checkpoint. NOT_FOUND when missing; DATA_LOSS when torn, corrupt (CRC, magic) or its
// weights do not match its options, with the reason in the message.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const torch::Device& device);

std::string CheckpointFileName(int64_t sequence);
// The sequence number of a checkpoint file name ("ckpt-000000000042.vae" -> 42); nullopt for any other name (temp
// files "ckpt-*.vae.tmp.*" included).
std::optional<int64_t> CheckpointSequence(absl::string_view file_name);
// dir/ckpt-<one more than the highest sequence in dir>.vae
std::string NextCheckpointPath(const std::string& dir);
// Paths of ckpt-<digits>.vae files in `dir` (any number of digits that fits an int64), newest (highest sequence)
// first. Empty when the folder is missing.
std::vector<std::string> ListCheckpoints(const std::string& dir);
// Checks a checkpoint file's framing and CRC-32 without parsing the archive: what a torn, truncated or corrupted file
// fails. NOT_FOUND when missing, DATA_LOSS when broken, INTERNAL when unreadable.
absl::Status VerifyCheckpointFile(const std::string& path);
// The newest checkpoint in `dir` that loads; torn or corrupt ones are skipped with a warning in the log.
// NOT_FOUND when there is none.
absl::StatusOr<Checkpoint> LoadNewestCheckpoint(const std::string& dir, const torch::Device& device);
// Keeps the newest `keep` valid checkpoints in `dir` (VerifyCheckpointFile) and deletes the older ones, and every
// broken (DATA_LOSS) one on the way: broken files never count towards `keep`. A file that cannot be read now is left
// alone.
void PruneCheckpoints(const std::string& dir, int keep);
// Deletes the checkpoint temp files (ckpt-*.tmp.*) in `dir`, which only a killed writer leaves. Call it only while no
// checkpoint is being written to `dir` (the server does at start-up; one server per folder). Returns how many.
int RemoveStaleTempFiles(const std::string& dir);

}  // namespace vae

#endif  // VAE_MODEL_CHECKPOINT_H_
