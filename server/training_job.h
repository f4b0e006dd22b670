// Training on request, one job at a time, while the server keeps serving.
//
// TrainingManager::Start validates a TrainSpec, builds the job's own model (fresh, or resumed from the newest
// checkpoint in model_dir), loads the dataset, and starts a vae::Trainer on a dedicated std::thread. Everything that
// can be wrong with a request is reported by Start itself, before any state changes. The job:
//   - streams TrainEvents (STARTED, STEP every log_every_steps steps, EPOCH_END, DONE) into a queue that one reader
//     (the Train RPC) drains with TrainingJob::Next. The queue is bounded however slowly it is read: a STEP pushed
//     behind a STEP the reader has not taken yet is merged into it (the mean over both windows), so it holds at most
//     STARTED, one STEP and one EPOCH_END per epoch (kMaxEpochs bounds those), and DONE; EPOCH_END and DONE are never
//     merged or dropped;
//   - after every epoch writes a checkpoint to model_dir (the Trainer does) and publishes a deep copy of its weights
//     to the ModelSlot; serving never touches the trainer's module; an epoch whose weights or test metrics are not
//     finite, or whose checkpoint cannot be written, is neither published nor kept, and ends the job with an error;
//   - stops before its next step when cancelled (the RPC's client went away, or server shutdown), writing a
//     checkpoint of the steps done since the last one; the last published snapshot keeps serving.
//
// Threads and locks: Start/Running/Shutdown from any thread (manager mutex, never held while training or loading);
// the training thread calls ModelSlot::Publish and the job's queue (job mutex). Ownership: the manager owns the
// training thread and joins it in Shutdown() or before the next job starts; a TrainingJob is shared by the manager,
// the training thread and the RPC handler, and outlives all three as needed.
#ifndef VAE_SERVER_TRAINING_JOB_H_
#define VAE_SERVER_TRAINING_JOB_H_

#include <c10/core/Device.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/train_defaults.h"
#include "model/trainer.h"
#include "server/dataset_registry.h"
#include "server/model_slot.h"

namespace vae::server {

// What to train; TrainRequest with its defaults applied (server/proto_mapping.h maps proto zeros to these defaults,
// common/train_defaults.h defines them and the bounds that ValidateTrainSpec checks).
struct TrainSpec {
  std::string dataset;                          // see DatasetRegistry
  int64_t epochs = kDefaultTrainEpochs;         // epochs to train in this job, 1 .. kMaxEpochs
  int64_t batch_size = kDefaultBatchSize;       // 1 .. kMaxBatchSize
  double learning_rate = kDefaultLearningRate;  // Adam step size, (0, kMaxLearningRate]
  uint64_t seed =
      kDefaultTrainSeed;     // epoch order, noise, and a fresh model's initial weights (resume: the checkpoint's)
  bool resume = false;       // continue the newest checkpoint in model_dir, else train a fresh model
  std::string preset;        // fresh model: a preset name
  std::string options_json;  // fresh model: explicit VaeOptions (wins over preset); both empty: served options
  int64_t log_every_steps = kDefaultLogEverySteps;  // a STEP event every N steps, >= 1
  int64_t max_train_images = 0;                     // use the first N training images; 0: all
  bool binarize = false;                            // dynamic binarisation (Bernoulli models only)
  int64_t iw_samples = kDefaultIwSamples;           // IWAE k, 1 .. kMaxIwSamples (1: the ELBO)
  double adam_eps = kDefaultAdamEps;                // (0, kMaxAdamEps]
  LrSchedule lr_schedule;                           // replaces learning_rate when not empty (common/lr_schedule.h)
};

// One event of a job: the trainer's Progress as it reported it, plus what the job adds.
//   progress.kind: kStarted (the job's first event, before any step), then the trainer's kStep/kEpochEnd/kDone.
//   progress.epoch: 1-based epoch of the model's life being trained (kStarted, kStep, and kDone of a cancelled job:
//     where it stopped) or just finished (kEpochEnd, kDone of a job that ran to its end); progress.epochs: the epoch
//     number this job trains up to. progress.train is unset (NaN) for kStarted.
struct TrainEvent {
  using Kind = Progress::Kind;
  std::string job_id;
  std::string dataset;
  Progress progress;
  int64_t mean_steps = 0;  // kStep: the optimizer steps progress.train is the mean of
  double eta_sec = 0;      // estimated seconds to the end of the job
  ModelVersion version;    // kEpochEnd/kDone: the version served after this event
};

class TrainingManager;

// One training job. Thread-safe.
class TrainingJob {
 public:
  enum class Poll { kEvent, kTimeout, kEnd };
  enum class CancelReason { kClient, kShutdown };

  const std::string& id() const { return id_; }
  const std::string& dataset() const { return dataset_; }

  // Waits up to `timeout` for the next event. kEnd once the job has finished and every event was taken.
  Poll Next(TrainEvent* event, absl::Duration timeout);

  // Asks the trainer to stop before its next step. Idempotent; the first reason sticks.
  void Cancel(CancelReason reason);
  bool cancelled() const { return cancel_.load(); }

  // The job's outcome, once Next returned kEnd: OK when it ran to its end (even if a cancel came after its last
  // step) or was stopped by its client, UNAVAILABLE when server shutdown stopped it before its last step, the
  // trainer's error otherwise ("train: job <id> failed: ..."): ABORTED when training diverged, RESOURCE_EXHAUSTED
  // when a checkpoint did not fit on the disk. After an error the last published generation keeps serving and the
  // newest checkpoint on disk is the last good one.
  absl::Status status() const;

  // Where the job stands (for FAILED_PRECONDITION messages and GetModelInfo), e.g. "epoch 2/5, step 10/40".
  std::string Position() const;

 private:
  friend class TrainingManager;
  TrainingJob(std::string id, std::string dataset) : id_(std::move(id)), dataset_(std::move(dataset)) {}
  void Push(TrainEvent event);
  // `done`: the job's DONE event, null when the trainer failed before reporting one.
  void Finish(absl::Status status, const TrainEvent* done);

  const std::string id_;
  const std::string dataset_;
  std::atomic<bool> cancel_{false};     // read by the trainer before every step
  std::atomic<int> cancel_reason_{-1};  // a CancelReason once cancelled, set before cancel_
  mutable absl::Mutex mu_;
  std::deque<TrainEvent> events_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::string position_ ABSL_GUARDED_BY(mu_);
};

class TrainingManager {
 public:
  // A fresh model may not exceed this many parameters (the largest preset, "seed", has ~271M).
  static constexpr int64_t kMaxParameters = 300'000'000;

  // `slot` and `datasets` are not owned and must outlive the manager. Checkpoints go to `model_dir`, of which
  // training keeps the newest `keep_checkpoints` valid ones. The manager must be model_dir's only writer: it deletes
  // the checkpoint temp files that a killed process left there.
  TrainingManager(ModelSlot* slot, DatasetRegistry* datasets, std::string model_dir, c10::Device device,
                  int keep_checkpoints);
  ~TrainingManager();  // Shutdown()

  // Starts a job, or returns why not: FAILED_PRECONDITION while another job runs (naming it) or for resume without a
  // checkpoint; INVALID_ARGUMENT / PERMISSION_DENIED / NOT_FOUND for the spec; UNAVAILABLE after Shutdown(). The
  // first event in the returned job's queue is kStarted.
  absl::StatusOr<std::shared_ptr<TrainingJob>> Start(const TrainSpec& spec);

  // The running job, or null.
  std::shared_ptr<TrainingJob> Running() const;

  // Cancels the running job (it writes its checkpoint), waits for its thread, and refuses later Starts. Idempotent.
  void Shutdown();

 private:
  struct Prepared;
  absl::StatusOr<std::unique_ptr<Prepared>> Prepare(const TrainSpec& spec);
  void Run(std::shared_ptr<TrainingJob> job, std::unique_ptr<Prepared> prepared);

  ModelSlot* const slot_;
  DatasetRegistry* const datasets_;
  const std::string model_dir_;
  const c10::Device device_;
  const int keep_checkpoints_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool reserved_ ABSL_GUARDED_BY(mu_) = false;  // a Start is preparing or a job is running
  std::shared_ptr<TrainingJob> job_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  int64_t jobs_started_ ABSL_GUARDED_BY(mu_) = 0;
};

// Validates a spec's numbers against common/train_defaults.h's bounds (not the dataset or the model).
// INVALID_ARGUMENT naming the field.
absl::Status ValidateTrainSpec(const TrainSpec& spec);

// The number of parameters a Vae with `options` will have, computed without building it.
int64_t CountParameters(const VaeOptions& options);

}  // namespace vae::server

#endif  // VAE_SERVER_TRAINING_JOB_H_
