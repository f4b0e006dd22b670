#include "server/vae_service_impl.h"

#include <ATen/ATen.h>
#include <grpc/grpc.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "model/status_macros.h"
#include "server/grpc_status.h"
#include "server/tensor_codec.h"

namespace vae::server {
namespace {

absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// A queued inference request gives up once its caller has gone (client cancel, disconnect, deadline).
CallContext CallOf(const grpc::ServerContextBase& context, Batcher::PendingCall* pending) {
  CallContext call;
  call.cancelled = [&context] { return context.IsCancelled(); };
  call.pending = pending;
  return call;
}

void SetVersion(const ModelVersion& version, v1::ModelVersion* out) {
  out->set_generation(version.generation);
  out->set_epochs_trained(version.epochs_trained);
  out->set_global_step(version.global_step);
}

void SetMetrics(const Metrics& metrics, v1::Metrics* out) {
  out->set_loss(metrics.loss);
  out->set_recon(metrics.recon);
  out->set_kl(metrics.kl);
}

bool WantsTensor(v1::ImageFormat f) { return f != v1::IMAGE_FORMAT_PNG; }
bool WantsPng(v1::ImageFormat f) { return f == v1::IMAGE_FORMAT_PNG || f == v1::IMAGE_FORMAT_TENSOR_AND_PNG; }

// Rejects unknown formats, and answers that could not be sent: `n` images of the model's shape as float32 must fit
// in --max_message_mb. (n = 0 skips the size check.)
absl::Status CheckOutput(int format, int64_t n, const Snapshot& model, const ServerOptions& options) {
  if (!v1::ImageFormat_IsValid(format)) {
    return absl::InvalidArgumentError(absl::StrCat("format: unknown value ", format,
                                                   "; expected IMAGE_FORMAT_TENSOR, IMAGE_FORMAT_PNG or "
                                                   "IMAGE_FORMAT_TENSOR_AND_PNG"));
  }
  const int64_t bytes = n * model.options.input_dim() * 4;
  const int64_t limit = int64_t{options.max_message_mb} << 20;
  if (n > 0 && bytes > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " images of ", model.options.input_dim(), " float32 values would be ", bytes >> 20,
        " MiB, over the message limit of ", options.max_message_mb, " MiB (--max_message_mb); ask for fewer"));
  }
  return absl::OkStatus();
}

// Sets `response`'s images and/or png fields, as `format` asks (and only those: an unset field stays unset).
template <typename Response>
absl::Status WriteImages(const at::Tensor& images, v1::ImageFormat format, Response* response) {
  if (WantsTensor(format)) TensorToProto(images, response->mutable_images());
  if (WantsPng(format)) {
    VAE_ASSIGN_OR_RETURN(std::vector<std::string> files, EncodePngs(images));
    for (auto& file : files) response->add_png(std::move(file));
  }
  return absl::OkStatus();
}

void ToProto(const TrainEvent& e, v1::TrainProgress* out) {
  switch (e.kind) {
    case TrainEvent::Kind::kStarted:
      out->set_kind(v1::TrainProgress::STARTED);
      break;
    case TrainEvent::Kind::kStep:
      out->set_kind(v1::TrainProgress::STEP);
      break;
    case TrainEvent::Kind::kEpochEnd:
      out->set_kind(v1::TrainProgress::EPOCH_END);
      break;
    case TrainEvent::Kind::kDone:
      out->set_kind(v1::TrainProgress::DONE);
      break;
  }
  out->set_job_id(e.job_id);
  out->set_dataset(e.dataset);
  out->set_epoch(e.epoch);
  out->set_epochs(e.epochs);
  out->set_step_in_epoch(e.step_in_epoch);
  out->set_steps_per_epoch(e.steps_per_epoch);
  out->set_global_step(e.global_step);
  if (e.kind != TrainEvent::Kind::kStarted) SetMetrics(e.train, out->mutable_train());
  out->set_has_test_metrics(e.has_test);
  if (e.has_test) SetMetrics(e.test, out->mutable_test());
  out->set_images_per_sec(e.images_per_sec);
  out->set_elapsed_sec(e.elapsed_sec);
  out->set_eta_sec(e.eta_sec);
  out->set_cancelled(e.cancelled);
  out->set_checkpoint_path(e.checkpoint_path);
  SetVersion(e.version, out->mutable_version());
}

absl::Status ShuttingDown() {
  return absl::UnavailableError(
      "vae-server is shutting down and takes no new calls; retry on another instance or after the restart");
}

}  // namespace

TrainSpec TrainSpecFromProto(const v1::TrainRequest& r) {
  TrainSpec spec;
  spec.dataset = r.dataset();
  if (r.epochs() != 0) spec.epochs = r.epochs();
  if (r.batch_size() != 0) spec.batch_size = r.batch_size();
  if (r.learning_rate() != 0.0) spec.learning_rate = r.learning_rate();
  if (r.seed() != 0) spec.seed = r.seed();
  spec.resume = r.resume();
  spec.preset = r.preset();
  spec.options_json = r.options_json();
  if (r.log_every_steps() != 0) spec.log_every_steps = r.log_every_steps();
  spec.max_train_images = r.max_train_images();
  spec.binarize = r.binarize();
  return spec;
}

bool VaeServiceImpl::TryAdmit() {
  active_calls_.fetch_add(1);
  if (!draining_.load()) return true;
  active_calls_.fetch_sub(1);
  return false;
}

grpc::Status VaeServiceImpl::Train(grpc::ServerContext* context, const v1::TrainRequest* request,
                                   grpc::ServerWriter<v1::TrainProgress>* writer) {
  if (!TryAdmit()) return ToGrpcStatus(ShuttingDown());
  TrainStream stream;
  stream.context = context;
  {
    absl::MutexLock lock(&streams_mu_);
    train_streams_.insert(&stream);
  }
  const absl::Status status = DoTrain(context, *request, writer, &stream);
  {
    absl::MutexLock lock(&streams_mu_);
    train_streams_.erase(&stream);
  }
  active_calls_.fetch_sub(1);
  return ToGrpcStatus(status);
}

int VaeServiceImpl::EndStalledTrainStreams(absl::Duration limit) {
  const absl::Time now = absl::Now();
  int ended = 0;
  absl::MutexLock lock(&streams_mu_);
  for (TrainStream* stream : train_streams_) {
    if (stream->ended || now - stream->write_since < limit) continue;
    // Registered streams are inside their handler, so the call is alive. Cancelling with a status makes gRPC send
    // that status in trailers (not flow-controlled) and fail the blocked Write.
    grpc_call_cancel_with_status(
        stream->context->c_call(), GRPC_STATUS_UNAVAILABLE,
        "train: vae-server is shutting down and this stream's client stopped reading; the stream is ended and the "
        "job stopped with a checkpoint: resume it after the restart",
        nullptr);
    stream->ended = true;
    ++ended;
  }
  return ended;
}

grpc::ServerUnaryReactor* VaeServiceImpl::Encode(grpc::CallbackServerContext* context,
                                                 const v1::EncodeRequest* request, v1::EncodeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (FinishFn finish = Admit(reactor)) StartEncode(*context, *request, response, std::move(finish));
  return reactor;
}

grpc::ServerUnaryReactor* VaeServiceImpl::Decode(grpc::CallbackServerContext* context,
                                                 const v1::DecodeRequest* request, v1::DecodeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (FinishFn finish = Admit(reactor)) StartDecode(*context, *request, response, std::move(finish));
  return reactor;
}

grpc::ServerUnaryReactor* VaeServiceImpl::Sample(grpc::CallbackServerContext* context,
                                                 const v1::SampleRequest* request, v1::SampleResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (FinishFn finish = Admit(reactor)) finish(DoSample(*context, *request, response));
  return reactor;
}

grpc::ServerUnaryReactor* VaeServiceImpl::Reconstruct(grpc::CallbackServerContext* context,
                                                      const v1::ReconstructRequest* request,
                                                      v1::ReconstructResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (FinishFn finish = Admit(reactor)) StartReconstruct(*context, *request, response, std::move(finish));
  return reactor;
}

grpc::ServerUnaryReactor* VaeServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest*, v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (FinishFn finish = Admit(reactor)) {
    DoGetModelInfo(response);
    finish(absl::OkStatus());
  }
  return reactor;
}

absl::Status VaeServiceImpl::DoTrain(grpc::ServerContext* context, const v1::TrainRequest& request,
                                     grpc::ServerWriter<v1::TrainProgress>* writer, TrainStream* stream) {
  VAE_ASSIGN_OR_RETURN(std::shared_ptr<TrainingJob> job, core_->training().Start(TrainSpecFromProto(request)));
  bool client_gone = false;
  for (;;) {
    // Client cancel, disconnect and an expired deadline all show up as a cancelled context.
    if (!client_gone && context->IsCancelled()) {
      client_gone = true;
      job->Cancel(TrainingJob::CancelReason::kClient);
    }
    TrainEvent event;
    const TrainingJob::Poll poll = job->Next(&event, kTrainPollInterval);
    if (poll == TrainingJob::Poll::kEnd) break;
    if (poll == TrainingJob::Poll::kTimeout || client_gone) continue;
    v1::TrainProgress progress;
    ToProto(event, &progress);
    {
      absl::MutexLock lock(&streams_mu_);
      stream->write_since = absl::Now();
    }
    const bool written = writer->Write(progress);  // blocks while the client's flow-control window is full
    {
      absl::MutexLock lock(&streams_mu_);
      stream->write_since = absl::InfiniteFuture();
    }
    if (!written) {
      client_gone = true;
      job->Cancel(TrainingJob::CancelReason::kClient);
    }
  }
  if (client_gone) {
    // Nobody reads this status; it goes to the server's logs and interceptors.
    if (absl::Now() >= DeadlineOf(*context)) {
      return absl::DeadlineExceededError(absl::StrCat("train: deadline passed; job ", job->id(), " stopped"));
    }
    return absl::CancelledError(absl::StrCat("train: the client went away; job ", job->id(), " stopped"));
  }
  return job->status();
}

VaeServiceImpl::FinishFn VaeServiceImpl::Admit(grpc::ServerUnaryReactor* reactor) {
  if (!TryAdmit()) {
    reactor->Finish(ToGrpcStatus(ShuttingDown()));
    return nullptr;
  }
  return [this, reactor](const absl::Status& status) {
    reactor->Finish(ToGrpcStatus(status));
    active_calls_.fetch_sub(1);
  };
}

void VaeServiceImpl::StartEncode(const grpc::ServerContextBase& context, const v1::EncodeRequest& request,
                                 v1::EncodeResponse* response, FinishFn finish) {
  Batcher::PendingCall pending(core_->inference().batcher());
  auto model = core_->Current();
  auto images = ImagesFromProto(request.images(), model->options, core_->inference().max_batch());
  if (!images.ok()) return finish(images.status());
  core_->inference().EncodeAsync(
      model, *images, DeadlineOf(context), CallOf(context, &pending),
      [finish = std::move(finish), model, response](absl::StatusOr<EncodeResult> result) {
        if (!result.ok()) return finish(result.status());
        TensorToProto(result->mu, response->mutable_mu());
        TensorToProto(result->sigma, response->mutable_sigma());
        SetVersion(model->version, response->mutable_version());
        finish(absl::OkStatus());
      });
}

void VaeServiceImpl::StartDecode(const grpc::ServerContextBase& context, const v1::DecodeRequest& request,
                                 v1::DecodeResponse* response, FinishFn finish) {
  Batcher::PendingCall pending(core_->inference().batcher());
  auto model = core_->Current();
  auto z = TensorFromProto(request.z(), "z");
  if (!z.ok()) return finish(z.status());
  // Sizes the engine rejects anyway are left to its clearer message.
  const int64_t n = z->dim() > 0 && z->size(0) <= core_->inference().max_batch() ? z->size(0) : 0;
  if (auto status = CheckOutput(request.format(), n, *model, core_->options()); !status.ok()) return finish(status);
  const v1::ImageFormat format = request.format();
  core_->inference().DecodeAsync(
      model, *z, DeadlineOf(context), CallOf(context, &pending),
      [finish = std::move(finish), model, response, format](absl::StatusOr<DecodeResult> result) {
        if (!result.ok()) return finish(result.status());
        if (auto status = WriteImages(result->images, format, response); !status.ok()) return finish(status);
        SetVersion(model->version, response->mutable_version());
        finish(absl::OkStatus());
      });
}

absl::Status VaeServiceImpl::DoSample(const grpc::ServerContextBase& context, const v1::SampleRequest& request,
                                      v1::SampleResponse* response) {
  const auto model = core_->Current();
  const int64_t n = request.count() <= core_->inference().max_batch() ? request.count() : 0;
  VAE_RETURN_IF_ERROR(CheckOutput(request.format(), n, *model, core_->options()));
  std::optional<uint64_t> seed;
  if (request.has_seed()) seed = request.seed();
  const double temperature = request.temperature() == 0.0f ? 1.0 : request.temperature();
  VAE_ASSIGN_OR_RETURN(SampleResult result,
                       core_->inference().Sample(*model, request.count(), seed, temperature, DeadlineOf(context)));
  VAE_RETURN_IF_ERROR(WriteImages(result.images, request.format(), response));
  TensorToProto(result.z, response->mutable_z());
  response->set_seed(result.seed);
  SetVersion(model->version, response->mutable_version());
  return absl::OkStatus();
}

void VaeServiceImpl::StartReconstruct(const grpc::ServerContextBase& context, const v1::ReconstructRequest& request,
                                      v1::ReconstructResponse* response, FinishFn finish) {
  Batcher::PendingCall pending(core_->inference().batcher());
  auto model = core_->Current();
  if (auto status = CheckOutput(request.format(), 0, *model, core_->options()); !status.ok()) return finish(status);
  auto images = ImagesFromProto(request.images(), model->options, core_->inference().max_batch());
  if (!images.ok()) return finish(images.status());
  const v1::ImageFormat format = request.format();
  core_->inference().ReconstructAsync(
      model, *images, request.sample_z(), request.seed(), DeadlineOf(context), CallOf(context, &pending),
      [finish = std::move(finish), model, response, format](absl::StatusOr<ReconstructResult> result) {
        if (!result.ok()) return finish(result.status());
        if (auto status = WriteImages(result->images, format, response); !status.ok()) return finish(status);
        const at::Tensor recon = result->recon_nll.contiguous(), kl = result->kl.contiguous();
        response->mutable_recon_nll()->Add(recon.data_ptr<float>(), recon.data_ptr<float>() + recon.numel());
        response->mutable_kl()->Add(kl.data_ptr<float>(), kl.data_ptr<float>() + kl.numel());
        SetVersion(model->version, response->mutable_version());
        finish(absl::OkStatus());
      });
}

void VaeServiceImpl::DoGetModelInfo(v1::ModelInfo* response) {
  const auto model = core_->Current();
  const VaeOptions& o = model->options;
  response->set_preset(o.preset);
  response->set_options_json(ToJson(o));
  for (int64_t d : o.input_shape()) response->add_input_shape(d);
  response->set_latent_dim(o.latent_dim);
  response->set_likelihood(ToString(o.likelihood));
  response->set_architecture(ToString(o.architecture));
  response->set_parameter_count(model->model->parameter_count());
  SetVersion(model->version, response->mutable_version());
  response->set_has_train_metrics(model->last_train.has_value());
  if (model->last_train) SetMetrics(*model->last_train, response->mutable_last_train());
  response->set_has_test_metrics(model->last_test.has_value());
  if (model->last_test) SetMetrics(*model->last_test, response->mutable_last_test());
  response->set_device(model->device.str());
  response->set_checkpoint_path(model->checkpoint_path);
  if (const auto job = core_->training().Running()) {
    response->set_training(true);
    response->set_training_job_id(job->id());
  }
  for (const auto& name : PresetNames()) response->add_presets(name);
  response->set_train_json(model->train_json);
  response->set_max_batch(static_cast<int32_t>(core_->inference().max_batch()));
}

}  // namespace vae::server
