#include "server/vae_service_impl.h"

#include <ATen/ATen.h>
#include <grpc/grpc.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "server/proto_mapping.h"
#include "server/tensor_codec.h"

namespace vae::server {
namespace {

absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Marks an inference request as arriving; once queued it gives up when its caller has gone (client cancel,
// disconnect, deadline).
CallContext Arrive(const grpc::ServerContextBase& context, const ServerCore& core) {
  return core.inference().Arrive([&context] { return context.IsCancelled(); });
}

bool WantsTensor(v1::ImageFormat f) { return f != v1::IMAGE_FORMAT_PNG; }
bool WantsPng(v1::ImageFormat f) { return f == v1::IMAGE_FORMAT_PNG || f == v1::IMAGE_FORMAT_TENSOR_AND_PNG; }

// Every input rule is InputRules' (server/inference.h), the format field's too: its range is the enum's.
static_assert(v1::ImageFormat_MIN == 0 && v1::ImageFormat_MAX == kMaxImageFormat);

// Float32 bytes of one output image of `model` in `format` (0 when only PNGs are asked for).
int64_t TensorImageBytes(v1::ImageFormat format, const Snapshot& model) {
  return WantsTensor(format) ? model.options.input_dim() * 4 : 0;
}

// Rows of a request worth checking the response size for: sizes the engine rejects anyway are left to its clearer
// message.
int64_t RowsToCheck(int64_t n, const ServerCore& core) { return n > 0 && n <= core.inference().max_batch() ? n : 0; }

// The request's images for `model` (tensor_codec.h), under the engine's input rules (batch and image-size limits).
absl::StatusOr<at::Tensor> RequestImages(const v1::ImageBatch& batch, const Snapshot& model, const ServerCore& core) {
  return ImagesFromProto(batch, model.options, core.inference().rules());
}

// Bytes -> request; INVALID_ARGUMENT when they are not a serialised Request. The bytes are released once parsed
// (Deserialize clears the buffer), as grpc's typed handlers do, so that a large request is not held twice while it
// is served: hence the const_cast of gRPC's request buffer, which gRPC does not read again.
template <typename Request>
absl::Status ParseRequest(const grpc::ByteBuffer& raw, Request* request) {
  const size_t bytes = raw.Valid() ? raw.Length() : 0;
  if (!raw.Valid() ||
      !grpc::SerializationTraits<Request>::Deserialize(const_cast<grpc::ByteBuffer*>(&raw), request).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request (", bytes, " bytes) could not be parsed as ", Request::descriptor()->full_name()));
  }
  return absl::OkStatus();
}

// Response -> bytes, refusing a message the server could not send (grpc would answer RESOURCE_EXHAUSTED without
// saying which limit).
template <typename Response>
grpc::Status SerializeResponse(const Response& response, grpc::ByteBuffer* out, const InputRules& rules) {
  bool own_buffer = false;
  grpc::Status status = grpc::SerializationTraits<Response>::Serialize(response, out, &own_buffer);
  if (!status.ok()) return status;
  absl::Status fits = rules.CheckResponseBytes(absl::StrCat(Response::descriptor()->full_name(), " is"),
                                               static_cast<int64_t>(out->Length()));
  if (!fits.ok()) out->Clear();
  return ToGrpcStatus(fits);
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

absl::Status ShuttingDown() {
  return absl::UnavailableError(
      "vae-server is shutting down and takes no new calls; retry on another instance or after the restart");
}

}  // namespace

// One unary call: its parsed request, the response being built, and where the serialised response goes. gRPC calls
// OnDone once the call is over (finished, and its handler returned), so a request queued for a batch keeps its bytes.
template <typename Request, typename Response>
class VaeServiceImpl::UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(grpc::ByteBuffer* out) : out(out) {}
  void OnDone() override { delete this; }

  Request request;
  Response response;
  grpc::ByteBuffer* const out;
};

// Train is method 0 of vae.v1.VaeService. A split-streaming handler reads its one request itself, as bytes.
VaeServiceImpl::VaeServiceImpl(ServerCore* core)
    : core_(core), auth_(core->options().auth_token, core->options().auth_readonly_token) {
  MarkMethodStreamed(
      0, new grpc::internal::SplitServerStreamingHandler<grpc::ByteBuffer, v1::TrainProgress>(
             [this](grpc::ServerContext* context, TrainWriter* writer) { return StreamTrain(context, writer); }));
}

template <typename Request, typename Response, typename Start>
grpc::ServerUnaryReactor* VaeServiceImpl::Unary(const grpc::CallbackServerContext* context, const char* method,
                                                const grpc::ByteBuffer* raw, grpc::ByteBuffer* out, Start start,
                                                Authenticator::Access access) {
  auto* call = new UnaryCall<Request, Response>(out);
  if (!TryAdmit()) {
    call->Finish(ToGrpcStatus(ShuttingDown()));
    return call;
  }
  FinishFn finish = [this, call](const absl::Status& status) {
    call->Finish(status.ok() ? SerializeResponse(call->response, call->out, core_->inference().rules())
                             : ToGrpcStatus(status));
    active_calls_.fetch_sub(1);
  };
  // Authenticated before anything of the request is read: a caller without the token learns nothing about it.
  if (absl::Status admitted = auth_.Check(*context, method, access); !admitted.ok()) {
    finish(admitted);
  } else if (absl::Status parsed = ParseRequest(*raw, &call->request); !parsed.ok()) {
    finish(parsed);
  } else {
    start(call->request, &call->response, std::move(finish));
  }
  return call;
}

bool VaeServiceImpl::TryAdmit() {
  active_calls_.fetch_add(1);
  if (!draining_.load()) return true;
  active_calls_.fetch_sub(1);
  return false;
}

grpc::Status VaeServiceImpl::StreamTrain(grpc::ServerContext* context, TrainWriter* writer) {
  if (!TryAdmit()) return ToGrpcStatus(ShuttingDown());
  absl::Status status = auth_.Check(*context, "Train", Authenticator::Access::kTrain);
  grpc::ByteBuffer raw;
  v1::TrainRequest request;
  if (status.ok()) {
    status = writer->Read(&raw) ? ParseRequest(raw, &request)
                                : absl::InvalidArgumentError("train: the call carried no request message");
  }
  if (status.ok()) {
    TrainStream stream;
    stream.context = context;
    {
      absl::MutexLock lock(&streams_mu_);
      train_streams_.insert(&stream);
    }
    status = DoTrain(context, request, writer, &stream);
    {
      absl::MutexLock lock(&streams_mu_);
      train_streams_.erase(&stream);
    }
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

grpc::ServerUnaryReactor* VaeServiceImpl::Encode(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return Unary<v1::EncodeRequest, v1::EncodeResponse>(context, "Encode", request, response,
                                                      [this, context](const auto& req, auto* resp, FinishFn finish) {
                                                        StartEncode(*context, req, resp, std::move(finish));
                                                      });
}

grpc::ServerUnaryReactor* VaeServiceImpl::Decode(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return Unary<v1::DecodeRequest, v1::DecodeResponse>(context, "Decode", request, response,
                                                      [this, context](const auto& req, auto* resp, FinishFn finish) {
                                                        StartDecode(*context, req, resp, std::move(finish));
                                                      });
}

grpc::ServerUnaryReactor* VaeServiceImpl::Sample(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return Unary<v1::SampleRequest, v1::SampleResponse>(
      context, "Sample", request, response,
      [this, context](const auto& req, auto* resp, FinishFn finish) { finish(DoSample(*context, req, resp)); });
}

grpc::ServerUnaryReactor* VaeServiceImpl::Reconstruct(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::ReconstructRequest, v1::ReconstructResponse>(
      context, "Reconstruct", request, response, [this, context](const auto& req, auto* resp, FinishFn finish) {
        StartReconstruct(*context, req, resp, std::move(finish));
      });
}

grpc::ServerUnaryReactor* VaeServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::GetModelInfoRequest, v1::ModelInfo>(
      context, "GetModelInfo", request, response,
      [this](const auto& req, auto* resp, FinishFn finish) { finish(DoGetModelInfo(req, resp)); });
}

grpc::ServerUnaryReactor* VaeServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::ListModelsRequest, v1::ListModelsResponse>(
      context, "ListModels", request, response,
      [this](const auto& req, auto* resp, FinishFn finish) { finish(DoListModels(req, resp)); });
}

grpc::ServerUnaryReactor* VaeServiceImpl::SetLabel(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::SetLabelRequest, v1::SetLabelResponse>(
      context, "SetLabel", request, response,
      [this](const auto& req, auto* resp, FinishFn finish) {
        auto previous = core_->repository().SetLabel(req.model(), req.label(), req.version(), req.make_default());
        if (previous.ok()) resp->set_previous_version(*previous);
        finish(previous.status());
      },
      Authenticator::Access::kTrain);
}

grpc::ServerUnaryReactor* VaeServiceImpl::DeleteVersion(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::DeleteVersionRequest, v1::DeleteVersionResponse>(
      context, "DeleteVersion", request, response,
      [this](const auto& req, auto* resp, FinishFn finish) {
        auto removed = core_->repository().DeleteVersion(req.model(), req.version(), req.force());
        if (removed.ok()) {
          for (const auto& label : *removed) resp->add_removed_labels(label);
        }
        finish(removed.status());
      },
      Authenticator::Access::kTrain);
}

grpc::ServerUnaryReactor* VaeServiceImpl::DeleteModel(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<v1::DeleteModelRequest, v1::DeleteModelResponse>(
      context, "DeleteModel", request, response,
      [this](const auto& req, auto* resp, FinishFn finish) {
        auto deleted = core_->repository().DeleteModel(req.model(), req.force());
        if (deleted.ok()) resp->set_versions_deleted(*deleted);
        finish(deleted.status());
      },
      Authenticator::Access::kTrain);
}

absl::Status VaeServiceImpl::DoTrain(grpc::ServerContext* context, const v1::TrainRequest& request, TrainWriter* writer,
                                     TrainStream* stream) {
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

void VaeServiceImpl::StartEncode(const grpc::ServerContextBase& context, const v1::EncodeRequest& request,
                                 v1::EncodeResponse* response, FinishFn finish) {
  CallContext call = Arrive(context, *core_);
  auto resolved = core_->Resolve(ModelRefFromProto(request.model_spec()));
  if (!resolved.ok()) return finish(resolved.status());
  std::shared_ptr<const Snapshot> model = *std::move(resolved);
  auto images = RequestImages(request.images(), *model, *core_);
  if (!images.ok()) return finish(images.status());
  const int64_t n = RowsToCheck(images->dim() > 0 ? images->size(0) : 0, *core_);
  // mu and sigma: 2 x J float32 per image.
  if (auto status = core_->inference().rules().CheckResponseSize("encode", n, 8 * model->options.latent_dim);
      !status.ok()) {
    return finish(status);
  }
  core_->inference().EncodeAsync(model, *images, DeadlineOf(context), std::move(call),
                                 [finish = std::move(finish), model, response](absl::StatusOr<EncodeResult> result) {
                                   if (!result.ok()) return finish(result.status());
                                   TensorToProto(result->mu, response->mutable_mu());
                                   TensorToProto(result->sigma, response->mutable_sigma());
                                   ToProto(model->version, response->mutable_version());
                                   finish(absl::OkStatus());
                                 });
}

void VaeServiceImpl::StartDecode(const grpc::ServerContextBase& context, const v1::DecodeRequest& request,
                                 v1::DecodeResponse* response, FinishFn finish) {
  CallContext call = Arrive(context, *core_);
  auto resolved = core_->Resolve(ModelRefFromProto(request.model_spec()));
  if (!resolved.ok()) return finish(resolved.status());
  std::shared_ptr<const Snapshot> model = *std::move(resolved);
  auto z = TensorFromProto(request.z(), "z");
  if (!z.ok()) return finish(z.status());
  if (auto status = InputRules::CheckImageFormat(request.format()); !status.ok()) return finish(status);
  const v1::ImageFormat format = request.format();
  const int64_t n = RowsToCheck(z->dim() > 0 ? z->size(0) : 0, *core_);
  if (auto status = core_->inference().rules().CheckResponseSize("decode", n, TensorImageBytes(format, *model));
      !status.ok()) {
    return finish(status);
  }
  core_->inference().DecodeAsync(
      model, *z, DeadlineOf(context), std::move(call),
      [finish = std::move(finish), model, response, format](absl::StatusOr<DecodeResult> result) {
        if (!result.ok()) return finish(result.status());
        if (auto status = WriteImages(result->images, format, response); !status.ok()) return finish(status);
        ToProto(model->version, response->mutable_version());
        finish(absl::OkStatus());
      });
}

absl::Status VaeServiceImpl::DoSample(const grpc::ServerContextBase& context, const v1::SampleRequest& request,
                                      v1::SampleResponse* response) {
  VAE_ASSIGN_OR_RETURN(const std::shared_ptr<const Snapshot> model,
                       core_->Resolve(ModelRefFromProto(request.model_spec())));
  VAE_RETURN_IF_ERROR(InputRules::CheckImageFormat(request.format()));
  // The images as asked, and the J float32 values of each z.
  VAE_RETURN_IF_ERROR(core_->inference().rules().CheckResponseSize(
      "sample", RowsToCheck(request.count(), *core_),
      TensorImageBytes(request.format(), *model) + 4 * model->options.latent_dim));
  std::optional<uint64_t> seed;
  if (request.has_seed()) seed = request.seed();
  const double temperature = request.temperature() == 0.0f ? 1.0 : request.temperature();
  VAE_ASSIGN_OR_RETURN(SampleResult result,
                       core_->inference().Sample(*model, request.count(), seed, temperature, DeadlineOf(context)));
  VAE_RETURN_IF_ERROR(WriteImages(result.images, request.format(), response));
  TensorToProto(result.z, response->mutable_z());
  response->set_seed(result.seed);
  ToProto(model->version, response->mutable_version());
  return absl::OkStatus();
}

void VaeServiceImpl::StartReconstruct(const grpc::ServerContextBase& context, const v1::ReconstructRequest& request,
                                      v1::ReconstructResponse* response, FinishFn finish) {
  CallContext call = Arrive(context, *core_);
  auto resolved = core_->Resolve(ModelRefFromProto(request.model_spec()));
  if (!resolved.ok()) return finish(resolved.status());
  std::shared_ptr<const Snapshot> model = *std::move(resolved);
  if (auto status = InputRules::CheckImageFormat(request.format()); !status.ok()) return finish(status);
  const v1::ImageFormat format = request.format();
  auto images = RequestImages(request.images(), *model, *core_);
  if (!images.ok()) return finish(images.status());
  // The images as asked, and each image's recon_nll and kl (float32).
  const int64_t n = RowsToCheck(images->dim() > 0 ? images->size(0) : 0, *core_);
  if (auto status =
          core_->inference().rules().CheckResponseSize("reconstruct", n, TensorImageBytes(format, *model) + 8);
      !status.ok()) {
    return finish(status);
  }
  core_->inference().ReconstructAsync(
      model, *images, request.sample_z(), request.seed(), DeadlineOf(context), std::move(call),
      [finish = std::move(finish), model, response, format](absl::StatusOr<ReconstructResult> result) {
        if (!result.ok()) return finish(result.status());
        if (auto status = WriteImages(result->images, format, response); !status.ok()) return finish(status);
        const at::Tensor recon = result->recon_nll.contiguous(), kl = result->kl.contiguous();
        response->mutable_recon_nll()->Add(recon.data_ptr<float>(), recon.data_ptr<float>() + recon.numel());
        response->mutable_kl()->Add(kl.data_ptr<float>(), kl.data_ptr<float>() + kl.numel());
        ToProto(model->version, response->mutable_version());
        finish(absl::OkStatus());
      });
}

absl::Status VaeServiceImpl::DoGetModelInfo(const v1::GetModelInfoRequest& request, v1::ModelInfo* response) {
  VAE_ASSIGN_OR_RETURN(const std::shared_ptr<const Snapshot> model,
                       core_->Resolve(ModelRefFromProto(request.model_spec())));
  ToProto(*model, response);
  const auto [labels, default_label] = core_->repository().LabelsOf(model->version.model, model->version.version);
  for (const auto& label : labels) response->add_labels(label);
  response->set_default_label(default_label);
  if (const auto job = core_->training().Running()) {
    response->set_training(true);
    response->set_training_job_id(job->id());
  }
  for (const auto& name : PresetNames()) response->add_presets(name);
  response->set_max_batch(static_cast<int32_t>(core_->inference().max_batch()));
  return absl::OkStatus();
}

absl::Status VaeServiceImpl::DoListModels(const v1::ListModelsRequest& request, v1::ListModelsResponse* response) {
  if (!request.name().empty()) VAE_RETURN_IF_ERROR(ValidateName(request.name(), "name"));
  VAE_ASSIGN_OR_RETURN(const std::vector<ModelListing> listings, core_->repository().List(request.name()));
  for (const auto& listing : listings) ToProto(listing, response->add_models());
  response->set_default_model(core_->repository().default_model());
  return absl::OkStatus();
}

}  // namespace vae::server
