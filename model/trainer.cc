#include "model/trainer.h"

#include <c10/core/GradMode.h>
#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/fused_adam.h"
#include "model/loss.h"
#include "model/mlp_step.h"

namespace vae {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Running sums of per-image metrics over some steps.
struct Accumulator {
  double loss = 0, recon = 0, kl = 0;
  int64_t images = 0;
  Clock::time_point start = Clock::now();
  void Add(const StepLoss& l, int64_t n) {
    loss += l.total * n;
    recon += l.recon * n;
    kl += l.kl * n;
    images += n;
  }
  Metrics Mean() const {
    if (images == 0) return {};
    return {loss / images, recon / images, kl / images};
  }
  double ImagesPerSec() const {
    const double s = Seconds(start);
    return s > 0 ? images / s : 0.0;
  }
};

nlohmann::json MetricsJson(const Metrics& m) { return {{"loss", m.loss}, {"recon", m.recon}, {"kl", m.kl}}; }

absl::Status CheckDataset(const Dataset& data, const VaeOptions& o, const char* which) {
  if (data.size() == 0) return absl::InvalidArgumentError(absl::StrCat(which, " dataset is empty"));
  const auto s = data.images.sizes();
  if (s.size() != 4 || s[1] != o.channels || s[2] != o.height || s[3] != o.width) {
    return absl::InvalidArgumentError(absl::StrCat(which, " images have shape ", c10::str(s),
                                                   ", the model expects [N, ", o.channels, ", ", o.height, ", ",
                                                   o.width, "]"));
  }
  return absl::OkStatus();
}

bool IsFinite(const Metrics& m) { return std::isfinite(m.loss) && std::isfinite(m.recon) && std::isfinite(m.kl); }

// The name of the first parameter of `model` with a NaN or infinite value, or "" when all are finite. A piece of
// each parameter at a time: isfinite() of a whole tensor builds its abs() and three boolean masks the tensor's size,
// 0.95 GB at once for the seed preset's largest layer (BENCHMARKS.md §14).
std::string FirstNonFiniteParameter(Vae& model) {
  c10::NoGradGuard no_grad;
  constexpr int64_t kPiece = int64_t{1} << 20;
  for (const auto& item : model->named_parameters()) {
    const auto flat = item.value().reshape({-1});
    for (int64_t begin = 0; begin < flat.numel(); begin += kPiece) {
      if (!flat.slice(0, begin, std::min(flat.numel(), begin + kPiece)).isfinite().all().item<bool>()) {
        return item.key();
      }
    }
  }
  return "";
}

}  // namespace

std::string ToJson(const TrainOptions& o) {
  nlohmann::json j = {{"epochs", o.epochs},
                      {"batch_size", o.batch_size},
                      {"learning_rate", o.learning_rate},
                      {"seed", o.seed},
                      {"binarize", o.binarize},
                      {"init_output_bias", o.init_output_bias},
                      {"ema_decay", o.ema_decay},
                      {"adam_eps", o.adam_eps},
                      {"iw_samples", o.iw_samples},
                      {"lr_schedule", FormatLrSchedule(o.lr_schedule)}};
  return j.dump();
}

Trainer::Trainer(Vae model, TrainOptions options, torch::Device device)
    : model_(std::move(model)),
      options_(std::move(options)),
      device_(device),
      generator_(MakeGenerator(options_.seed)) {
  model_->to(device_);
  model_->train();
  if (options_.ema_decay > 0) ema_ = CloneVae(model_, device_);
  optimizer_ = std::make_unique<torch::optim::Adam>(
      model_->parameters(), torch::optim::AdamOptions(options_.learning_rate).eps(options_.adam_eps));
  state_.seed = options_.seed;
  state_.train_json = ToJson(options_);
}

absl::Status Trainer::Resume(const Checkpoint& checkpoint) {
  if (ToJson(checkpoint.options) != ToJson(model_->options())) {
    return absl::InvalidArgumentError(absl::StrCat("resume: checkpoint options ", ToJson(checkpoint.options),
                                                   " differ from the model's ", ToJson(model_->options())));
  }
  try {
    // The average first: the Trainer's model is usually checkpoint.model itself, overwritten just below.
    if (options_.ema_decay > 0) ema_ = CloneVae(checkpoint.model, device_);
    if (checkpoint.train_model) {
      torch::NoGradGuard no_grad;
      auto src = checkpoint.train_model->parameters();
      auto dst = model_->parameters();
      for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
    }
    if (checkpoint.optimizer) {
      optimizer_->load(*checkpoint.optimizer);
      // The learning rate and eps are this run's choice, not the checkpoint's (Run sets the rate of each epoch).
      for (auto& group : optimizer_->param_groups()) {
        static_cast<torch::optim::AdamOptions&>(group.options()).lr(options_.learning_rate).eps(options_.adam_eps);
      }
    }
    if (checkpoint.state.rng_state.defined()) generator_.set_state(checkpoint.state.rng_state);
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat("resume from ", checkpoint.path, ": ", e.what_without_backtrace()));
  }
  state_ = checkpoint.state;
  state_.train_json = ToJson(options_);
  options_.seed = state_.seed;
  return absl::OkStatus();
}

Vae Trainer::TakeServingModel() {
  if (!ema_) return CloneVae(model_, device_);
  given_away_ = ema_;
  return ema_;
}

absl::Status Trainer::CheckFinite(const Metrics* test) {
  std::string why;
  if (test != nullptr && !IsFinite(*test)) {
    why = absl::StrCat("the test loss is ", test->loss, " (recon ", test->recon, ", KL ", test->kl, ")");
  }
  for (Vae* model : {&serving_model(), &model_}) {
    if (!why.empty()) break;
    const std::string name = FirstNonFiniteParameter(*model);
    if (!name.empty()) {
      why = absl::StrCat("parameter ", name, model == &model_ && ema_ ? " of the optimizer's weights" : "",
                         " has NaN or infinite values");
    }
  }
  if (why.empty()) return absl::OkStatus();
  return Diverged(why);
}

absl::Status Trainer::Diverged(const std::string& why) const {
  return absl::AbortedError(absl::StrCat(
      "training diverged at step ", state_.global_step,
      state_.step_in_epoch == 0 ? absl::StrCat(" (end of epoch ", state_.epochs_done, ")")
                                : absl::StrCat(" (epoch ", state_.epochs_done + 1, ")"),
      ": ", why,
      "; nothing of this epoch was published or checkpointed, the last good weights stay served and on disk; "
      "retry with a lower learning_rate than ",
      LearningRateAt(options_.lr_schedule, state_.epochs_done, options_.learning_rate)));
}

double Trainer::ApplyLearningRate() {
  const double lr = LearningRateAt(options_.lr_schedule, state_.epochs_done, options_.learning_rate);
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  return lr;
}

absl::StatusOr<std::string> Trainer::WriteCheckpoint(const Metrics& train, const Metrics* test) {
  if (options_.checkpoint_dir.empty()) return std::string();
  VAE_RETURN_IF_ERROR(CheckFinite(test));
  std::error_code ec;
  std::filesystem::create_directories(options_.checkpoint_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create checkpoint dir ", options_.checkpoint_dir, ": ", ec.message()));
  }
  nlohmann::json metrics = {{"train", MetricsJson(train)}};
  if (test != nullptr) metrics["test"] = MetricsJson(*test);
  state_.metrics_json = metrics.dump();
  // Where the run is in its schedule, for whoever reads the checkpoint (resume derives it from epochs_done).
  nlohmann::json train_json = nlohmann::json::parse(ToJson(options_));
  train_json["lr_stage"] = LrStageAt(options_.lr_schedule, state_.epochs_done);
  train_json["current_learning_rate"] =
      LearningRateAt(options_.lr_schedule, state_.epochs_done, options_.learning_rate);
  state_.train_json = train_json.dump();
  state_.rng_state = generator_.get_state();
  std::string path;
  if (options_.checkpoint_path) {
    VAE_ASSIGN_OR_RETURN(path, options_.checkpoint_path());
  } else {
    path = NextCheckpointPath(options_.checkpoint_dir);
  }
  const absl::Status saved = SaveCheckpoint(path, serving_model(), optimizer_.get(), state_, ema_ ? &model_ : nullptr);
  if (!saved.ok()) {
    return absl::Status(saved.code(), absl::StrCat("checkpoint at step ", state_.global_step,
                                                   " failed, so its weights "
                                                   "were not published (the last checkpoint stays served): ",
                                                   saved.message()));
  }
  if (!options_.checkpoint_path) PruneCheckpoints(options_.checkpoint_dir, options_.keep_checkpoints);
  return path;
}

absl::StatusOr<TrainResult> Trainer::Run(const Dataset& train, const Dataset* test, const ProgressCallback& on_progress,
                                         const std::atomic<bool>* cancel) {
  const auto& mo = model_->options();
  VAE_RETURN_IF_ERROR(CheckDataset(train, mo, "training"));
  if (test != nullptr) VAE_RETURN_IF_ERROR(CheckDataset(*test, mo, "test"));
  if (!IsValidBatchSize(options_.batch_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size is ", options_.batch_size, ", expected 1 to ", kMaxBatchSize));
  }
  // epochs counts the model's whole life (a resumed run continues up to it), so only one job's epochs are bounded.
  if (options_.epochs < 1)
    return absl::InvalidArgumentError(absl::StrCat("epochs is ", options_.epochs, ", expected >= 1"));
  if (!IsValidLearningRate(options_.learning_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning_rate is ", options_.learning_rate, ", expected a value in (0, ", kMaxLearningRate, "]"));
  }
  VAE_RETURN_IF_ERROR(ValidateLrSchedule(options_.lr_schedule));
  if (!IsValidAdamEps(options_.adam_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("adam_eps is ", options_.adam_eps, ", expected a value in (0, ", kMaxAdamEps, "]"));
  }
  if (!IsValidIwSamples(options_.iw_samples)) {
    return absl::InvalidArgumentError(
        absl::StrCat("iw_samples is ", options_.iw_samples, ", expected 1 to ", kMaxIwSamples));
  }
  if (options_.iw_samples > 1 && (mo.mc_samples > 1 || mo.beta != 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("iw_samples is ", options_.iw_samples,
                                                   ", the model's mc_samples is ", mo.mc_samples, " and beta ", mo.beta,
                                                   ": the IWAE objective (iw_samples > 1) needs mc_samples 1, beta 1"));
  }

  const int64_t n = train.size();
  const int64_t bs = options_.batch_size;
  const int64_t steps_per_epoch = (n + bs - 1) / bs;
  const auto run_start = Clock::now();
  TrainResult result;
  Metrics last_test;
  int64_t run_steps = 0;
  bool stopped = false;

  auto report = [&](Progress::Kind kind, const Metrics& m, double ips) {
    if (!on_progress) return;
    Progress p;
    p.kind = kind;
    p.epoch = state_.epochs_done + (kind == Progress::Kind::kStep ? 1 : 0);
    p.epochs = options_.epochs;
    p.step_in_epoch = kind == Progress::Kind::kStep ? state_.step_in_epoch : steps_per_epoch;
    p.steps_per_epoch = steps_per_epoch;
    p.global_step = state_.global_step;
    p.train = m;
    p.images_per_sec = ips;
    p.elapsed_sec = Seconds(run_start);
    p.has_test = kind != Progress::Kind::kStep && test != nullptr && !std::isnan(last_test.loss);
    p.test = last_test;
    p.cancelled = stopped;
    p.checkpoint_path = result.checkpoint_path;
    on_progress(p, serving_model());
  };

  try {
    if (options_.init_output_bias && state_.global_step == 0) {
      model_->init_output_bias(train.images.mean(0));
      if (ema_) ema_->init_output_bias(train.images.mean(0));
    }
    model_->train();
    std::vector<torch::Tensor> ema_params;
    if (ema_) ema_params = ema_->parameters();
    optimizer_->zero_grad();  // gradients left by a caller; FusedAdamStep zeroes them from here on
    // The hand-written step where it applies (same gradients as autograd; see model/mlp_step.h).
    std::unique_ptr<MlpTrainStep> fast_step;
    if (options_.fast_mlp_step && MlpTrainStep::Supports(mo, device_))
      fast_step = std::make_unique<MlpTrainStep>(model_, optimizer_.get(),
                                                 options_.iw_samples);  // Adam fused into its backward
    while (state_.epochs_done < options_.epochs && !stopped) {
      const int64_t epoch = state_.epochs_done;
      ApplyLearningRate();
      auto perm = EpochPermutation(n, state_.seed, epoch);
      Accumulator epoch_acc, window;
      while (state_.step_in_epoch < steps_per_epoch) {
        if ((cancel != nullptr && cancel->load()) || (options_.max_steps >= 0 && run_steps >= options_.max_steps)) {
          stopped = true;
          break;
        }
        if (given_away_) {  // published: continue the average in a copy of our own (see TakeServingModel)
          ema_ = CloneVae(given_away_, device_);
          given_away_ = nullptr;
          ema_params = ema_->parameters();
        }
        const int64_t begin = state_.step_in_epoch * bs;
        auto idx = perm.slice(0, begin, std::min(n, begin + bs));
        auto x = train.images.index_select(0, idx).to(device_);
        if (options_.binarize) x = Binarize(x, generator_);
        const double decay = std::min(options_.ema_decay, (1.0 + state_.global_step) / (10.0 + state_.global_step));
        StepLoss loss;
        if (fast_step) {
          loss = fast_step->Run(x, generator_, {&ema_params, decay});  // and Adam + moving average, layer by layer
        } else {
          auto l = TrainingLoss(model_, x, options_.iw_samples, generator_);
          l.total.backward();
          loss = {l.total.item<double>(), l.recon.item<double>(), l.kl.item<double>()};
          // Adam + moving average + zeroing the gradients, in one pass per parameter.
          FusedAdamStep(*optimizer_, ema_ ? ema_params : std::vector<torch::Tensor>(), decay);
        }
        ++state_.step_in_epoch;
        ++state_.global_step;
        ++run_steps;
        epoch_acc.Add(loss, x.size(0));
        window.Add(loss, x.size(0));
        if (!std::isfinite(epoch_acc.loss)) {
          return Diverged(absl::StrCat("the training loss of this step is ", loss.total));
        }
        if (options_.log_every_steps > 0 && state_.global_step % options_.log_every_steps == 0) {
          report(Progress::Kind::kStep, window.Mean(), window.ImagesPerSec());
          window = Accumulator();
        }
        if (options_.checkpoint_every_steps > 0 && state_.global_step % options_.checkpoint_every_steps == 0 &&
            state_.step_in_epoch < steps_per_epoch) {
          VAE_ASSIGN_OR_RETURN(result.checkpoint_path, WriteCheckpoint(epoch_acc.Mean(), nullptr));
        }
      }
      result.last_train = epoch_acc.Mean();
      if (stopped) break;
      const double ips = epoch_acc.ImagesPerSec();
      state_.epochs_done = epoch + 1;
      state_.step_in_epoch = 0;
      if (test != nullptr) {
        VAE_ASSIGN_OR_RETURN(last_test,
                             Evaluate(serving_model(), *test, options_.eval_batch_size, state_.seed, device_));
        model_->train();
      }
      // A loss that is finite before every step does not make the weights after the last step finite (one step of
      // lr = 10 takes them to inf): check them and the test metrics before anything is checkpointed or published.
      VAE_RETURN_IF_ERROR(CheckFinite(test != nullptr ? &last_test : nullptr));
      VAE_ASSIGN_OR_RETURN(result.checkpoint_path,
                           WriteCheckpoint(result.last_train, test != nullptr ? &last_test : nullptr));
      result.epoch_images_per_sec.push_back(ips);
      result.epoch_test.push_back(last_test);
      report(Progress::Kind::kEpochEnd, result.last_train, ips);
    }
    if (stopped && run_steps > 0) {
      VAE_ASSIGN_OR_RETURN(result.checkpoint_path, WriteCheckpoint(result.last_train, nullptr));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("training failed at step ", state_.global_step, ": ", e.what_without_backtrace()));
  }
  result.cancelled = stopped;
  result.last_test = last_test;
  result.state = state_;
  report(Progress::Kind::kDone, result.last_train, 0.0);
  return result;
}

absl::StatusOr<Metrics> Evaluate(Vae& model, const Dataset& data, int64_t batch_size, uint64_t seed,
                                 const torch::Device& device) {
  if (data.size() == 0) return absl::InvalidArgumentError("evaluate: empty dataset");
  if (batch_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("evaluate: batch_size must be >= 1, got ", batch_size));
  try {
    c10::NoGradGuard no_grad;
    model->eval();
    auto generator = MakeGenerator(seed);
    double loss = 0, recon = 0, kl = 0;
    const int64_t n = data.size();
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      auto x = data.images.slice(0, begin, std::min(n, begin + batch_size)).to(device);
      auto l = ComputeLoss(model->options(), model->forward(x, generator), x);
      loss += l.total_per_image.sum().item<double>();
      recon += l.recon_per_image.sum().item<double>();
      kl += l.kl_per_image.sum().item<double>();
    }
    return Metrics{loss / n, recon / n, kl / n};
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("evaluate: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<torch::Tensor> EvaluateIwNll(Vae& model, const Dataset& data, int64_t k, uint64_t seed,
                                            const torch::Device& device, int64_t images_per_batch, int64_t chunk) {
  if (data.size() == 0) return absl::InvalidArgumentError("iw-nll: empty dataset");
  if (k < 1 || images_per_batch < 1 || chunk < 1) {
    return absl::InvalidArgumentError(absl::StrCat("iw-nll: k (", k, "), images_per_batch (", images_per_batch,
                                                   ") and chunk (", chunk, ") must be >= 1"));
  }
  try {
    c10::NoGradGuard no_grad;
    model->eval();
    const int64_t n = data.size();
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < n; begin += images_per_batch) {
      auto x = data.images.slice(0, begin, std::min(n, begin + images_per_batch)).to(device);
      parts.push_back(
          -ImportanceWeightedLogLikelihood(model, x, k, MakeGenerator(seed + static_cast<uint64_t>(begin)), chunk)
               .cpu());
    }
    return torch::cat(parts);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("iw-nll: ", e.what_without_backtrace()));
  }
}

}  // namespace vae
