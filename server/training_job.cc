#include "server/training_job.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"
#include "model/runtime.h"

namespace vae::server {

// ---------------------------------------------------------------------------------------------------------------------
// TrainingJob

namespace {

// Merges `earlier`, a STEP the reader has not taken, into `later`, the STEP after it: `later` keeps its position and
// times; its `train` becomes the mean over both windows (weighted by their steps, which hold equal batches) and its
// images_per_sec the rate over both (total steps / total seconds, seconds = steps / rate).
void MergeEarlierStep(const TrainEvent& earlier, TrainEvent* later) {
  const double a = static_cast<double>(earlier.mean_steps), b = static_cast<double>(later->mean_steps);
  if (a + b <= 0) return;
  auto mean = [&](double x, double y) { return (a * x + b * y) / (a + b); };
  const Progress& e = earlier.progress;
  Progress& l = later->progress;
  l.train.loss = mean(e.train.loss, l.train.loss);
  l.train.recon = mean(e.train.recon, l.train.recon);
  l.train.kl = mean(e.train.kl, l.train.kl);
  if (e.images_per_sec > 0 && l.images_per_sec > 0) {
    l.images_per_sec = (a + b) / (a / e.images_per_sec + b / l.images_per_sec);
  }
  later->mean_steps = earlier.mean_steps + later->mean_steps;
}

}  // namespace

TrainingJob::Poll TrainingJob::Next(TrainEvent* event, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !events_.empty() || finished_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (!events_.empty()) {
    *event = std::move(events_.front());
    events_.pop_front();
    return Poll::kEvent;
  }
  return finished_ ? Poll::kEnd : Poll::kTimeout;
}

void TrainingJob::Cancel(CancelReason reason) {
  int none = -1;
  cancel_reason_.compare_exchange_strong(none, static_cast<int>(reason));
  cancel_.store(true);  // after the reason, so that whoever sees the trainer stop also sees why
}

absl::Status TrainingJob::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

std::string TrainingJob::Position() const {
  absl::MutexLock lock(&mu_);
  return position_;
}

TrainingJob::View TrainingJob::Observe() const {
  absl::MutexLock lock(&mu_);
  return View{{history_.begin(), history_.end()}, finished_, status_};
}

void TrainingJob::Push(TrainEvent event) {
  if (observer_) observer_(*this, &event, absl::OkStatus());
  absl::MutexLock lock(&mu_);
  history_.push_back(event);
  if (history_.size() > kHistory) history_.pop_front();
  const Progress& p = event.progress;
  position_ = absl::StrCat("epoch ", p.epoch, "/", p.epochs, ", step ", p.step_in_epoch, "/", p.steps_per_epoch);
  if (p.kind == Progress::Kind::kStep && !events_.empty() && events_.back().progress.kind == Progress::Kind::kStep) {
    MergeEarlierStep(events_.back(), &event);  // the reader is behind: the queue keeps one STEP, not every one
    events_.back() = std::move(event);
    return;
  }
  events_.push_back(std::move(event));
}

void TrainingJob::Finish(absl::Status status, const TrainEvent* done) {
  absl::MutexLock lock(&mu_);
  // Only a job that stopped before its last step has something to resume: a shutdown that came after it (while the
  // last epoch was evaluated and checkpointed) changes nothing.
  const bool stopped_early = done != nullptr && done->progress.cancelled;
  if (status.ok() && stopped_early && cancel_reason_.load() == static_cast<int>(CancelReason::kShutdown)) {
    status = absl::UnavailableError(
        done->progress.checkpoint_path.empty()
            ? absl::StrCat("train: job ", id_,
                           " was stopped before its first step because the server is shutting "
                           "down; nothing was trained")
            : absl::StrCat("train: job ", id_, " was stopped at epoch ", done->progress.epoch, "/",
                           done->progress.epochs, ", step ", done->progress.step_in_epoch, "/",
                           done->progress.steps_per_epoch, " because the server is shutting down; its checkpoint ",
                           done->progress.checkpoint_path, " was written: resume it after the restart"));
  }
  if (observer_) observer_(*this, nullptr, status);
  status_ = std::move(status);
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------------------------------
// Validation helpers

absl::Status ValidateTrainSpec(const TrainSpec& s) {
  if (!IsValidEpochs(s.epochs)) {
    return absl::InvalidArgumentError(absl::StrCat("train: epochs is ", s.epochs, ", expected 1 to ", kMaxEpochs));
  }
  if (!IsValidBatchSize(s.batch_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: batch_size is ", s.batch_size, ", expected 1 to ", kMaxBatchSize));
  }
  if (!IsValidLearningRate(s.learning_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: learning_rate is ", s.learning_rate, ", expected a value in (0, ", kMaxLearningRate, "]"));
  }
  if (!IsValidLogEverySteps(s.log_every_steps)) {
    return absl::InvalidArgumentError(absl::StrCat("train: log_every_steps is ", s.log_every_steps, ", expected >= 1"));
  }
  if (s.max_train_images < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: max_train_images is ", s.max_train_images, ", expected >= 0 (0: all)"));
  }
  if (!IsValidIwSamples(s.iw_samples)) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: iw_samples is ", s.iw_samples, ", expected 1 to ", kMaxIwSamples));
  }
  if (!IsValidAdamEps(s.adam_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: adam_eps is ", s.adam_eps, ", expected a value in (0, ", kMaxAdamEps, "]"));
  }
  VAE_RETURN_IF_ERROR(ValidateLrSchedule(s.lr_schedule, "train: lr_schedule"));
  if (s.resume && (!s.preset.empty() || !s.options_json.empty())) {
    return absl::InvalidArgumentError(
        "train: preset and options_json only apply to a fresh model (resume = false); a resumed model keeps the "
        "options of its checkpoint");
  }
  if (!s.model.empty()) VAE_RETURN_IF_ERROR(ValidateName(s.model, "train: model"));
  if (!s.promote_label.empty()) {
    VAE_RETURN_IF_ERROR(ValidateName(s.promote_label, "train: promote_label"));
    if (s.promote_label == kLatestLabel) {
      return absl::InvalidArgumentError(
          "train: promote_label cannot be 'latest', which always names the newest version");
    }
  }
  return absl::OkStatus();
}

int64_t CountParameters(const VaeOptions& o) {
  const int64_t j = o.latent_dim;
  const int64_t out_c = o.likelihood == Likelihood::kGaussianLearned ? 2 * o.channels : o.channels;
  auto linear = [](int64_t in, int64_t out) { return in * out + out; };
  int64_t count = 0;
  if (o.architecture == Architecture::kMlp) {
    int64_t in = o.input_dim();
    for (int64_t h : o.hidden) count += linear(in, h), in = h;
    count += linear(in, 2 * j);
    in = j;
    for (auto it = o.hidden.rbegin(); it != o.hidden.rend(); ++it) count += linear(in, *it), in = *it;
    count += linear(in, out_c * o.height * o.width);
  } else {
    // 4x4 stride-2 convolutions down, a linear layer each way, 4x4 stride-2 transposed convolutions up.
    auto conv = [](int64_t in, int64_t out) { return 16 * in * out + out; };
    int64_t in = o.channels, h = o.height, w = o.width;
    for (int64_t c : o.hidden) count += conv(in, c), in = c, h /= 2, w /= 2;
    const int64_t flat = in * h * w;
    count += linear(flat, 2 * j) + linear(j, flat);
    for (size_t i = o.hidden.size(); i-- > 0;) count += conv(o.hidden[i], i == 0 ? out_c : o.hidden[i - 1]);
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------------------------
// TrainingManager

struct TrainingManager::Prepared {
  std::string model;  // the repository model the job trains
  std::string promote_label;
  std::unique_ptr<Trainer> trainer;
  std::shared_ptr<const TrainTestSplit> data;
  int64_t steps_per_epoch = 0;
};

TrainingManager::TrainingManager(ModelRepository* repository, DatasetRegistry* datasets, c10::Device device)
    : repository_(repository), datasets_(datasets), device_(device) {}

TrainingManager::~TrainingManager() { Shutdown(); }

std::shared_ptr<TrainingJob> TrainingManager::Running() const {
  absl::MutexLock lock(&mu_);
  return job_;
}

std::shared_ptr<TrainingJob> TrainingManager::Latest() const {
  absl::MutexLock lock(&mu_);
  return job_ != nullptr ? job_ : latest_;
}

absl::StatusOr<std::shared_ptr<TrainingJob>> TrainingManager::Start(const TrainSpec& spec) {
  std::shared_ptr<TrainingJob> job;
  std::thread previous;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("train: the server is shutting down");
    if (reserved_) {
      return absl::FailedPreconditionError(
          absl::StrCat("train: training job ", job_->id(), " on dataset '", job_->dataset(), "' is already running (",
                       job_->Position(), "); one job at a time: cancel its Train call or wait for it to finish"));
    }
    reserved_ = true;
    const std::string id = absl::StrCat("train-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()),
                                        "-", ++jobs_started_);
    job.reset(new TrainingJob(id, spec.dataset));
    job->observer_ = observer_;
    job_ = job;
    previous = std::move(thread_);
  }
  if (previous.joinable()) previous.join();  // the last job's thread, done but for its final lines

  auto prepared = Prepare(spec);
  absl::MutexLock lock(&mu_);
  if (!prepared.ok() || shutting_down_) {
    reserved_ = false;
    job_.reset();
    if (!prepared.ok()) return prepared.status();
    return absl::UnavailableError("train: the server is shutting down");
  }
  const TrainState& state = (*prepared)->trainer->state();
  TrainEvent started;
  started.job_id = job->id();
  started.dataset = job->dataset();
  Progress& p = started.progress;
  p.kind = Progress::Kind::kStarted;
  p.epoch = state.epochs_done + 1;
  p.epochs = (*prepared)->trainer->options().epochs;
  p.step_in_epoch = state.step_in_epoch;
  p.steps_per_epoch = (*prepared)->steps_per_epoch;
  p.global_step = state.global_step;
  started.version = repository_->LatestVersion((*prepared)->model).value_or(ModelVersion{(*prepared)->model});
  job->Push(std::move(started));
  latest_ = job;
  LOG(INFO) << "training job " << job->id() << " started: dataset '" << spec.dataset << "', "
            << (*prepared)->data->train.size() << " training images, up to epoch "
            << (*prepared)->trainer->options().epochs << " of model '" << (*prepared)->model << "'"
            << (spec.resume ? " (resumed)" : " (fresh weights)");
  repository_->SetTraining((*prepared)->model);
  thread_ = std::thread(&TrainingManager::Run, this, job, std::move(*prepared));
  return job;
}

absl::StatusOr<std::unique_ptr<TrainingManager::Prepared>> TrainingManager::Prepare(const TrainSpec& spec) {
  VAE_RETURN_IF_ERROR(ValidateTrainSpec(spec));
  VAE_RETURN_IF_ERROR(datasets_->Resolve(spec.dataset).status());

  const std::string model = spec.model.empty() ? repository_->default_model() : spec.model;
  // The options the request asks for, if any (options_json wins over preset).
  std::optional<VaeOptions> requested;
  if (!spec.options_json.empty()) {
    auto parsed = OptionsFromJson(spec.options_json);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("train: options_json: ", parsed.status().message()));
    }
    requested = *parsed;
  } else if (!spec.preset.empty()) {
    auto preset = Preset(spec.preset);
    if (!preset.ok()) return absl::InvalidArgumentError(absl::StrCat("train: ", preset.status().message()));
    requested = *preset;
  }
  // A model exists once it has a version; until then (a fresh server's default model, a job that failed before its
  // first epoch) any options may start it.
  const std::optional<ModelVersion> latest = repository_->LatestVersion(model);
  absl::StatusOr<VaeOptions> existing = absl::NotFoundError("no version");
  if (latest.has_value() && latest->version > 0) {
    existing = repository_->OptionsOf(model);
    if (!existing.ok()) return existing.status();
  }
  // An existing model keeps its options: a request for others is a different model. The preset name is only a
  // label of the options, so it does not take part in the comparison.
  auto comparable = [](VaeOptions o) {
    o.preset = "";
    return ToJson(o);
  };
  if (existing.ok() && requested && comparable(*requested) != comparable(*existing)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "train: model '", model, "' exists with options ", ToJson(*existing), ", and the request's ",
        spec.options_json.empty() ? absl::StrCat("preset '", spec.preset, "'") : std::string("options_json"), " gives ",
        ToJson(*requested), "; an existing model keeps its options: train a new model name instead"));
  }
  VaeOptions options;
  std::optional<Checkpoint> checkpoint;
  if (spec.resume) {
    auto path = repository_->NewestCheckpoint(model);
    auto loaded = path.ok() ? LoadCheckpoint(*path, device_) : absl::StatusOr<Checkpoint>(path.status());
    if (!loaded.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("train: resume = true but model '", model,
                                                        "' has no loadable version (", loaded.status().message(),
                                                        "); train with resume = false first"));
    }
    checkpoint = std::move(*loaded);
    options = checkpoint->options;
  } else if (existing.ok()) {
    options = *existing;
  } else if (requested) {
    options = *requested;
  } else {
    // A new model without options: the default model's.
    auto defaults = repository_->OptionsOf(repository_->default_model());
    if (!defaults.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("train: model '", model,
                                                        "' is new and the request names no preset or options_json, "
                                                        "and the default model has none to copy: ",
                                                        defaults.status().message()));
    }
    options = *defaults;
  }
  if (!spec.resume && CountParameters(options) > kMaxParameters) {
    return absl::InvalidArgumentError(absl::StrCat("train: the model would have ", CountParameters(options),
                                                   " parameters, over the limit of ", kMaxParameters));
  }
  if (spec.binarize && options.likelihood != Likelihood::kBernoulli) {
    return absl::InvalidArgumentError(
        absl::StrCat("train: binarize needs a bernoulli likelihood, the model's is ", ToString(options.likelihood)));
  }
  if (spec.iw_samples > 1 && (options.mc_samples > 1 || options.beta != 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("train: iw_samples is ", spec.iw_samples,
                                                   ": the IWAE objective needs a model with mc_samples 1 and beta 1, "
                                                   "this one has mc_samples ",
                                                   options.mc_samples, " and beta ", options.beta));
  }
  // The decoder's output holds batch_size x mc_samples (or x iw_samples) images: bound it (1 GiB of float32) so that
  // a request cannot make the training thread allocate without limit.
  constexpr int64_t kMaxBatchElements = int64_t{1} << 28;
  const int64_t samples = std::max(options.mc_samples, spec.iw_samples);
  if (spec.batch_size * samples * options.input_dim() > kMaxBatchElements) {
    return absl::InvalidArgumentError(absl::StrCat("train: batch_size ", spec.batch_size,
                                                   samples == options.mc_samples ? " x mc_samples " : " x iw_samples ",
                                                   samples, " x ", options.input_dim(), " pixels is over the limit of ",
                                                   kMaxBatchElements, " values per batch; lower batch_size"));
  }

  auto prepared = std::make_unique<Prepared>();
  prepared->model = model;
  prepared->promote_label = spec.promote_label;
  VAE_ASSIGN_OR_RETURN(prepared->data, datasets_->Load(spec.dataset, options, spec.max_train_images));
  prepared->steps_per_epoch = (prepared->data->train.size() + spec.batch_size - 1) / spec.batch_size;

  TrainOptions train;
  train.epochs = (checkpoint ? checkpoint->state.epochs_done : 0) + spec.epochs;
  train.batch_size = spec.batch_size;
  train.learning_rate = spec.learning_rate;
  train.seed = spec.seed;
  train.log_every_steps = spec.log_every_steps;
  train.binarize = spec.binarize;
  train.iw_samples = spec.iw_samples;
  train.adam_eps = spec.adam_eps;
  train.lr_schedule = spec.lr_schedule;
  train.checkpoint_dir = repository_->ModelDir(model);
  // The repository numbers versions (never reusing one) and prunes by its own policy.
  train.checkpoint_path = [repository = repository_, model, options] {
    return repository->ReserveVersionPath(model, options);
  };
  // This process is the repository's only trainer and no job runs: every checkpoint temp file in the model's folder
  // was left by a process killed mid-write (kill -9, OOM, power loss) and would hold its disk space forever.
  const int removed = RemoveStaleTempFiles(train.checkpoint_dir);
  if (removed > 0)
    LOG(WARNING) << "removed " << removed << " stale checkpoint temp file(s) from " << train.checkpoint_dir;
  try {
    if (checkpoint) {
      // A copy, so that Resume's writes into the trainer's module cannot alias the checkpoint's own weights.
      prepared->trainer = std::make_unique<Trainer>(CloneVae(checkpoint->model, device_), train, device_);
      VAE_RETURN_IF_ERROR(prepared->trainer->Resume(*checkpoint));
    } else {
      prepared->trainer = std::make_unique<Trainer>(NewSeededVae(options, spec.seed), train, device_);
    }
  } catch (const std::exception& e) {  // c10::Error, std::bad_alloc
    return absl::ResourceExhaustedError(absl::StrCat("train: cannot build the model: ", e.what()));
  }
  return prepared;
}

void TrainingManager::Run(std::shared_ptr<TrainingJob> job, std::unique_ptr<Prepared> prepared) {
  SetCallingThreadTorchThreads(ConfiguredThreads());  // training gets --threads (the process default is 1)
  Trainer& trainer = *prepared->trainer;
  const int64_t first_step = trainer.state().global_step;
  const int64_t steps_per_epoch = prepared->steps_per_epoch;
  std::optional<TrainEvent> done;             // held back until the job slot is free (see below)
  int64_t previous_report_step = first_step;  // global step of the previous event

  std::string published_path;  // the checkpoint of the last version this job published
  int64_t final_version = 0;   // and its number
  // Publishes the serving weights as the version p.checkpoint_path holds: weights the trainer never writes again (its
  // average itself, which it replaces by a copy of its own before the next step, once the old snapshot is gone).
  auto publish = [&](const Progress& p) {
    auto snapshot = SnapshotTakingModel(trainer.TakeServingModel(), device_);
    snapshot->version.epochs_trained = p.epoch;
    snapshot->version.global_step = p.global_step;
    if (!std::isnan(p.train.loss)) snapshot->last_train = p.train;
    if (p.has_test) snapshot->last_test = p.test;
    snapshot->checkpoint_path = p.checkpoint_path;
    snapshot->train_json = trainer.state().train_json;
    published_path = p.checkpoint_path;
    const ModelVersion version = repository_->Publish(prepared->model, std::move(snapshot));
    final_version = version.version;
    return version;
  };

  auto on_progress = [&](const Progress& p, const Vae& /*serving*/) {
    TrainEvent e;
    e.job_id = job->id();
    e.dataset = job->dataset();
    e.progress = p;
    const int64_t run_steps = p.global_step - first_step;
    const int64_t total_steps = p.epochs * steps_per_epoch;
    const int64_t done_steps = (p.epoch - (p.kind == Progress::Kind::kStep ? 1 : 0)) * steps_per_epoch +
                               (p.kind == Progress::Kind::kStep ? p.step_in_epoch : 0);
    if (run_steps > 0 && p.kind != Progress::Kind::kDone) {
      e.eta_sec = std::max<int64_t>(0, total_steps - done_steps) * p.elapsed_sec / static_cast<double>(run_steps);
    }
    // The trainer's window restarts at every report and every epoch start.
    const int64_t window_start = std::max(previous_report_step, p.global_step - p.step_in_epoch);
    previous_report_step = p.global_step;
    switch (p.kind) {
      case Progress::Kind::kStep:
        e.mean_steps = p.global_step - window_start;
        job->Push(std::move(e));
        break;
      case Progress::Kind::kEpochEnd:
        // The Trainer reports kEpochEnd only for finite weights and test metrics that are already checkpointed (see
        // ProgressCallback): a diverged epoch or a failed checkpoint ends the job with an error instead, and the
        // previous version stays the newest.
        e.version = publish(p);
        LOG(INFO) << "training job " << job->id() << ": epoch " << p.epoch << "/" << p.epochs << " train loss "
                  << p.train.loss << ", test loss " << p.test.loss << "; published model '" << e.version.model
                  << "' version " << e.version.version;
        job->Push(std::move(e));
        break;
      case Progress::Kind::kDone:
        if (p.cancelled) {
          // The trainer reports DONE at its last finished epoch with a full epoch of steps; a stopped job reports
          // where it stopped: the epoch it was in and the steps done there.
          e.progress.epoch = trainer.state().epochs_done + 1;
          e.progress.step_in_epoch = trainer.state().step_in_epoch;
          // The checkpoint of the steps since the last epoch is a version too (its weights are checked finite
          // before they are written).
          if (!p.checkpoint_path.empty() && p.checkpoint_path != published_path) {
            Progress partial = p;
            partial.epoch = trainer.state().epochs_done;
            partial.has_test = false;
            publish(partial);
          }
        } else if (!prepared->promote_label.empty() && final_version > 0) {
          auto moved = repository_->Promote(prepared->model, prepared->promote_label, final_version);
          if (!moved.ok()) LOG(ERROR) << "training job " << job->id() << ": promote_label: " << moved.status();
          e.label_moved = moved.value_or(false);
        }
        done = std::move(e);
        break;
      case Progress::Kind::kStarted:  // the Trainer never reports it; Start pushed the job's own
        break;
    }
  };

  absl::Status status;
  try {
    auto result = trainer.Run(prepared->data->train, &prepared->data->test, on_progress, &job->cancel_);
    status = result.status();
  } catch (const std::exception& e) {
    status = absl::InternalError(e.what());
  }
  if (!status.ok()) {
    // Same code (ABORTED for divergence, RESOURCE_EXHAUSTED for a full disk, ...), with the job named for the client.
    status = absl::Status(status.code(), absl::StrCat("train: job ", job->id(), " failed: ", status.message()));
    LOG(ERROR) << status;
  }
  const std::string model = prepared->model;
  prepared.reset();  // free the trainer's model, optimizer state and data reference before the next job
  repository_->SetTraining("");

  // Free the job slot before the reader sees DONE, so that a client may start its next job as soon as it has read
  // DONE. The thread itself is joined by the next Start or by Shutdown.
  {
    absl::MutexLock lock(&mu_);
    reserved_ = false;
    job_.reset();
  }
  if (done.has_value()) {
    done->version = repository_->LatestVersion(model).value_or(ModelVersion{model});
    LOG(INFO) << "training job " << job->id() << " done at step " << done->progress.global_step
              << (done->progress.cancelled ? " (cancelled)" : "") << ", checkpoint " << done->progress.checkpoint_path;
    job->Push(*done);
  }
  job->Finish(status, done.has_value() ? &*done : nullptr);
}

void TrainingManager::Shutdown() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    if (job_ != nullptr) job_->Cancel(TrainingJob::CancelReason::kShutdown);
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

}  // namespace vae::server
