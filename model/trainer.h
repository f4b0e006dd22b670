// Training loop and evaluation. Free of gRPC: the server's training job wraps a Trainer.
//
// Ownership and threads: a Trainer owns its model and Adam optimizer and is used from one thread. Another thread may
// set the `cancel` flag passed to Run(); the loop checks it before every step, writes a checkpoint and returns.
#ifndef VAE_MODEL_TRAINER_H_
#define VAE_MODEL_TRAINER_H_

#include <torch/optim/adam.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lr_schedule.h"
#include "common/train_defaults.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/vae.h"

namespace vae {

struct TrainOptions {
  int64_t epochs = kDefaultTrainEpochs;         // total epochs of the run; a resumed run continues up to this
  int64_t batch_size = kDefaultBatchSize;       // images per optimizer step, 1 .. kMaxBatchSize
  double learning_rate = kDefaultLearningRate;  // Adam step size, (0, kMaxLearningRate]
  // Piecewise-constant learning rate over the model's epochs (epoch e trains at LearningRateAt(lr_schedule, e)); it
  // replaces learning_rate when not empty. The position in it is the checkpoint's epochs_done, so a resumed run
  // continues the schedule where the checkpoint left it.
  LrSchedule lr_schedule;
  double adam_eps = kDefaultAdamEps;  // Adam's epsilon, (0, kMaxAdamEps]
  // k of the IWAE objective (Burda et al. 2015): k samples z_i ~ q(z|x) per image and the loss
  // -log((1/k) sum_i p(x, z_i) / q(z_i|x)). 1 is the VAE's ELBO with the closed-form KL (model/loss.h, TrainingLoss).
  int64_t iw_samples = kDefaultIwSamples;
  uint64_t seed = kDefaultTrainSeed;                // epoch order, noise eps and binarisation all derive from it
  int64_t log_every_steps = kDefaultLogEverySteps;  // a kStep progress report every N steps (0: only at epoch ends)
  bool binarize = false;                            // dynamic binarisation of every training batch (Bernoulli models)
  bool init_output_bias = true;  // a fresh model (step 0) starts with the decoder bias at logit(mean image)
  // The weights that are evaluated, published and served are an exponential moving average of the optimizer's
  // weights (Polyak averaging), with decay min(ema_decay, (1 + t) / (10 + t)) at step t. 0 serves the raw weights.
  double ema_decay = 0.998;
  int64_t eval_batch_size = 1000;      // batch size of the test-set evaluation
  std::string checkpoint_dir;          // where checkpoints go; empty: none are written
  int64_t checkpoint_every_steps = 0;  // also checkpoint every N steps inside an epoch (0: at epoch ends only)
  int keep_checkpoints = 3;            // older checkpoints in checkpoint_dir are deleted
  // Where each checkpoint goes. Unset: NextCheckpointPath(checkpoint_dir), then all but the newest keep_checkpoints
  // are deleted. Set (the server's model repository, which numbers versions and keeps its own policy): the path it
  // returns, and nothing is pruned; an error fails the checkpoint like a write error.
  std::function<absl::StatusOr<std::string>()> checkpoint_path;
  int64_t max_steps = -1;  // stop (like a cancel, with a checkpoint) after N steps of this run
  // Train MLP + Bernoulli models on the CPU with the hand-written step (model/mlp_step.h) instead of autograd:
  // the same gradients (up to float rounding), ~1.3x faster for the mnist preset. Other models always use autograd.
  bool fast_mlp_step = true;
};

// Per-image means, nats.
struct Metrics {
  // recon + beta * KL; training with iw_samples k > 1: the IWAE loss -log mean_i w_i (then loss < recon + KL)
  double loss = std::nan("");
  double recon = std::nan("");  // -log p(x|z)
  double kl = std::nan("");     // KL(q(z|x) || p(z))
};

// One progress report. The server's training job carries it unchanged in its events (server/training_job.h).
struct Progress {
  // kStarted is never reported by Trainer::Run: the server's job reports it before the first step.
  enum class Kind { kStarted, kStep, kEpochEnd, kDone };
  Kind kind = Kind::kStep;
  int64_t epoch = 0;          // 1-based epoch being trained (kStep) or just finished (kEpochEnd)
  int64_t epochs = 0;         // total epochs of the run
  int64_t step_in_epoch = 0;  // batches done in this epoch
  int64_t steps_per_epoch = 0;
  int64_t global_step = 0;
  Metrics train;          // mean over the steps since the previous report (kStep) or over the epoch
  bool has_test = false;  // kEpochEnd/kDone when a test set was given
  Metrics test;
  double images_per_sec = 0;    // training throughput over the same steps as `train`
  double elapsed_sec = 0;       // since Run() started
  bool cancelled = false;       // kDone: stopped by cancel or max_steps before the last epoch
  std::string checkpoint_path;  // kEpochEnd/kDone: the checkpoint just written, if any
};

// Called on the training thread. `model` holds the current weights to serve (the average when ema_decay > 0);
// clone it to keep a snapshot. At kEpochEnd they are fit to publish: every parameter and the test metrics are finite
// and, when checkpoint_dir is set, they are on disk (checkpoint_path).
using ProgressCallback = std::function<void(const Progress& progress, const Vae& model)>;

struct TrainResult {
  TrainState state;
  bool cancelled = false;
  Metrics last_train;
  Metrics last_test;
  std::vector<double> epoch_images_per_sec;  // one per epoch completed in this run
  std::vector<Metrics> epoch_test;           // test metrics after each epoch completed in this run
  std::string checkpoint_path;               // the last checkpoint written
};

class Trainer {
 public:
  // Takes `model` (moved to `device`) for training. INVALID_ARGUMENT-worthy options are checked by Run().
  Trainer(Vae model, TrainOptions options, torch::Device device);

  // Continues from `checkpoint`: restores the optimizer's weights (checkpoint.train_model, else checkpoint.model),
  // the averaged weights, Adam's moments, the noise generator and the epoch/step position. The checkpoint's seed
  // wins. The Trainer's model must have the checkpoint's options (construct it from checkpoint.model).
  absl::Status Resume(const Checkpoint& checkpoint);

  // Trains until options.epochs are done, `cancel` becomes true, or max_steps. `test` may be null.
  // Errors: ABORTED when training diverges (a non-finite loss, parameter or test metric; nothing of the failing epoch
  // is reported as kEpochEnd or checkpointed); a checkpoint's write error (RESOURCE_EXHAUSTED when the disk is full);
  // INVALID_ARGUMENT for the datasets and options; INTERNAL for torch errors.
  absl::StatusOr<TrainResult> Run(const Dataset& train, const Dataset* test,
                                  const ProgressCallback& on_progress = nullptr,
                                  const std::atomic<bool>* cancel = nullptr);

  // The weights the optimizer updates.
  Vae& model() { return model_; }
  // The weights that are evaluated, checkpointed as `model` and published: the average, or model() when
  // ema_decay is 0.
  Vae& serving_model() { return ema_ ? ema_ : model_; }
  // The weights to publish, as a module that the caller owns from now on and this trainer never writes again; for
  // the progress callback at kEpochEnd. With an average (ema_decay > 0) it is the average itself, not a copy: the
  // trainer copies it back into a new average of its own before its next step, i.e. after the caller has published
  // it and let go of the snapshot it replaces, so a publication never holds the average, the new snapshot and the
  // old one at once (BENCHMARKS.md §14). With ema_decay == 0, a deep copy of model().
  Vae TakeServingModel();
  const TrainState& state() const { return state_; }
  const TrainOptions& options() const { return options_; }

 private:
  absl::StatusOr<std::string> WriteCheckpoint(const Metrics& train, const Metrics* test);
  // ABORTED (Diverged) unless every parameter of both models and `test` (when not null) are finite.
  absl::Status CheckFinite(const Metrics* test);
  absl::Status Diverged(const std::string& why) const;
  // The learning rate of the epoch state_ is in, set on every parameter group.
  double ApplyLearningRate();

  Vae model_;
  Vae ema_{nullptr};  // the moving average; null when ema_decay == 0
  // ema_ as TakeServingModel handed it out, until the next step replaces ema_ by a copy.
  Vae given_away_{nullptr};
  TrainOptions options_;
  torch::Device device_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  at::Generator generator_;
  TrainState state_;
};

// -ELBO per image over `data` with sampled z (one sample per image, from a generator seeded with `seed`), no
// gradients. Deterministic for a given seed and thread count.
absl::StatusOr<Metrics> Evaluate(Vae& model, const Dataset& data, int64_t batch_size, uint64_t seed,
                                 const torch::Device& device);

// The importance-weighted NLL (Burda et al. 2015) of every image of `data`: -log p(x) estimated with `k` samples
// z ~ q(z|x) as -(logsumexp_i log w_i - log k) (ImportanceWeightedLogLikelihood, model/loss.h), in nats, [N] float64.
// Images go `images_per_batch` at a time, each batch with its own generator seeded from `seed` and its first index
// (so the result does not depend on what else is evaluated), samples `chunk` at a time. No gradients.
absl::StatusOr<torch::Tensor> EvaluateIwNll(Vae& model, const Dataset& data, int64_t k, uint64_t seed,
                                            const torch::Device& device, int64_t images_per_batch = 100,
                                            int64_t chunk = 100);

// TrainOptions as JSON (stored in checkpoints).
std::string ToJson(const TrainOptions& options);

}  // namespace vae

#endif  // VAE_MODEL_TRAINER_H_
