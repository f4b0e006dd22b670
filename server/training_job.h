// Training on request, one job at a time, while the server keeps serving.
//
// TrainingManager::Start validates a TrainSpec, builds the job's own model (fresh, or resumed from the newest
// version of the model it trains), loads the dataset, and starts a vae::Trainer on a dedicated std::thread. Everything
// that can be wrong with a request is reported by Start itself, before any state changes. The job:
//   - streams TrainEvents (STARTED, STEP every log_every_steps steps, EPOCH_END, DONE) into a queue that one reader
//     (the Train RPC) drains with TrainingJob::Next. The queue is bounded however slowly it is read: a STEP pushed
//     behind a STEP the reader has not taken yet is merged into it (the mean over both windows), so it holds at most
//     STARTED, one STEP and one EPOCH_END per epoch (kMaxEpochs bounds those), and DONE; EPOCH_END and DONE are never
//     merged or dropped;
//   - after every epoch writes a checkpoint into the model's folder of the repository, under a version number the
//     repository reserved (the Trainer writes it), and publishes a deep copy of its weights as that version (the
//     model's new "latest"); serving never touches the trainer's module; an epoch whose weights or test metrics are not
//     finite, or whose checkpoint cannot be written, is neither published nor kept, and ends the job with an error;
//   - stops before its next step when cancelled (the RPC's client went away, or server shutdown), writing a
//     checkpoint of the steps done since the last one, which is published as a version too;
//   - at the end of a job that ran to its end, moves promote_label to the final version if its test loss beats the
//     labelled version's (ModelRepository::Promote).
//
// Threads and locks: Start/Running/Shutdown from any thread (manager mutex, never held while training or loading);
// the training thread calls ModelRepository::ReserveVersionPath/Publish and the job's queue (job mutex). Ownership: the
// manager owns the training thread and joins it in Shutdown() or before the next job starts; a TrainingJob is shared by
// the manager, the training thread and the RPC handler, and outlives all three as needed.
#ifndef VAE_SERVER_TRAINING_JOB_H_
#define VAE_SERVER_TRAINING_JOB_H_

#include <c10/core/Device.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/train_defaults.h"
#include "model/trainer.h"
#include "server/dataset_registry.h"
#include "server/model_repository.h"
#include "server/snapshot.h"

namespace vae::server {

// What to train; TrainRequest with its defaults applied (server/proto_mapping.h maps proto zeros to these defaults,
// common/train_defaults.h defines them and the bounds that ValidateTrainSpec checks).
struct TrainSpec {
  std::string dataset;                          // see DatasetRegistry
  int64_t epochs = kDefaultTrainEpochs;         // epochs to train in this job, 1 .. kMaxEpochs
  int64_t batch_size = kDefaultBatchSize;       // 1 .. kMaxBatchSize
  double learning_rate = kDefaultLearningRate;  // Adam step size, (0, kMaxLearningRate]
  uint64_t seed =
      kDefaultTrainSeed;      // epoch order, noise, and a fresh model's initial weights (resume: the checkpoint's)
  bool resume = false;        // continue the model's newest version, else train fresh weights
  std::string preset;         // a new model (or a check of an existing one's): a preset name
  std::string options_json;   // likewise, explicit VaeOptions (wins over preset); both empty: the model's options
  std::string model;          // the model to train; empty: the repository's default model
  std::string promote_label;  // moved to the final version on improvement (ModelRepository::Promote); empty: none
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
  int64_t mean_steps = 0;    // kStep: the optimizer steps progress.train is the mean of
  double eta_sec = 0;        // estimated seconds to the end of the job
  ModelVersion version;      // kEpochEnd/kDone: the model's newest version after this event
  bool label_moved = false;  // kDone: promote_label was moved to the final version
};

class TrainingJob;
// Sees every event a job pushes, on the thread that pushes it, and then (event null) the job's outcome. For metrics
// and logs (server/server_metrics.h): must be quick, and must not call into the job or its manager.
using TrainObserver = std::function<void(const TrainingJob& job, const TrainEvent* event, const absl::Status& outcome)>;

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

  // For observers other than the reader (the HTTP API's training view): the job's recent events as pushed, before
  // any merging for a slow reader, at most kHistory (the oldest dropped), and whether it has finished (and how).
  // Reading this takes nothing from the reader's queue.
  static constexpr size_t kHistory = 1000;
  struct View {
    std::vector<TrainEvent> history;  // oldest first; the last one is where the job stands
    bool finished = false;
    absl::Status status;  // once finished: status()
  };
  View Observe() const;

 private:
  friend class TrainingManager;
  TrainingJob(std::string id, std::string dataset) : id_(std::move(id)), dataset_(std::move(dataset)) {}
  void Push(TrainEvent event);
  // `done`: the job's DONE event, null when the trainer failed before reporting one.
  void Finish(absl::Status status, const TrainEvent* done);

  const std::string id_;
  const std::string dataset_;
  TrainObserver observer_;              // set by the manager before the first Push
  std::atomic<bool> cancel_{false};     // read by the trainer before every step
  std::atomic<int> cancel_reason_{-1};  // a CancelReason once cancelled, set before cancel_
  mutable absl::Mutex mu_;
  std::deque<TrainEvent> events_ ABSL_GUARDED_BY(mu_);
  std::deque<TrainEvent> history_ ABSL_GUARDED_BY(mu_);  // Observe()'s, independent of events_
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::string position_ ABSL_GUARDED_BY(mu_);
};

class TrainingManager {
 public:
  // A fresh model may not exceed this many parameters (the largest preset, "seed", has ~271M).
  static constexpr int64_t kMaxParameters = 300'000'000;

  // `repository` and `datasets` are not owned and must outlive the manager. Checkpoints go into the repository as
  // versions of the job's model (its keep policy prunes them). The process must be the repository's only trainer: a
  // job deletes the checkpoint temp files that a killed process left in its model's folder.
  TrainingManager(ModelRepository* repository, DatasetRegistry* datasets, c10::Device device);
  ~TrainingManager();  // Shutdown()

  // Starts a job, or returns why not: FAILED_PRECONDITION while another job runs (naming it), for resume without a
  // version, or for an existing model whose options differ from the spec's preset/options_json; INVALID_ARGUMENT /
  // PERMISSION_DENIED / NOT_FOUND for the spec; UNAVAILABLE after Shutdown(). The first event in the returned job's
  // queue is kStarted.
  absl::StatusOr<std::shared_ptr<TrainingJob>> Start(const TrainSpec& spec);

  // The running job, or null.
  std::shared_ptr<TrainingJob> Running() const;
  // The running job, else the last one that started (finished, kept for its history), else null.
  std::shared_ptr<TrainingJob> Latest() const;

  // Every job started afterwards reports to `observer`. Set before the first Start.
  void SetObserver(TrainObserver observer) { observer_ = std::move(observer); }

  // Cancels the running job (it writes its checkpoint), waits for its thread, and refuses later Starts. Idempotent.
  void Shutdown();

 private:
  struct Prepared;
  absl::StatusOr<std::unique_ptr<Prepared>> Prepare(const TrainSpec& spec);
  void Run(std::shared_ptr<TrainingJob> job, std::unique_ptr<Prepared> prepared);

  ModelRepository* const repository_;
  DatasetRegistry* const datasets_;
  const c10::Device device_;
  TrainObserver observer_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool reserved_ ABSL_GUARDED_BY(mu_) = false;  // a Start is preparing or a job is running
  std::shared_ptr<TrainingJob> job_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<TrainingJob> latest_ ABSL_GUARDED_BY(mu_);  // Latest()
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
