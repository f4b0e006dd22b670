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

// Every input rule is InputRules' (server/inference.h), the format field's too: its values are the enum's.
static_assert(v1::ImageFormat_MIN == 0 && v1::ImageFormat_MAX == kMaxImageFormat);
static_assert(v1::IMAGE_FORMAT_TENSOR == kImageFormatTensor && v1::IMAGE_FORMAT_PNG == kImageFormatPng &&
              v1::IMAGE_FORMAT_TENSOR_AND_PNG == kImageFormatTensorAndPng);

// The rows of a request's tensor (0 for a scalar: the engine refuses it).
int64_t Rows(const at::Tensor& t) { return t.dim() > 0 ? t.size(0) : 0; }

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
  if (InputRules::WantsTensor(format)) TensorToProto(images, response->mutable_images());
  if (InputRules::WantsPng(format)) {
    VAE_ASSIGN_OR_RETURN(std::vector<std::string> files, EncodePngs(images));
    for (auto& file : files) response->add_png(std::move(file));
  }
  return absl::OkStatus();
}

// What the request log says of a request: its model and its images (or codes, or Sample's count).
template <typename T, typename = void>
struct HasModelSpec : std::false_type {};
template <typename T>
struct HasModelSpec<T, std::void_t<decltype(std::declval<const T&>().model_spec().name())>> : std::true_type {};
template <typename T, typename = void>
struct HasVersion : std::false_type {};
template <typename T>
struct HasVersion<T, std::void_t<decltype(std::declval<const T&>().version().generation())>> : std::true_type {};

int64_t ImagesIn(const v1::ImageBatch& batch) {
  return batch.encoded_size() > 0 ? batch.encoded_size()
                                  : (batch.tensor().shape_size() > 0 ? batch.tensor().shape(0) : 0);
}
int64_t ImagesOf(const v1::EncodeRequest& r) { return ImagesIn(r.images()); }
int64_t ImagesOf(const v1::ReconstructRequest& r) { return ImagesIn(r.images()); }
int64_t ImagesOf(const v1::DecodeRequest& r) { return r.z().shape_size() > 0 ? r.z().shape(0) : 0; }
int64_t ImagesOf(const v1::SampleRequest& r) { return r.count(); }
template <typename Request>
int64_t ImagesOf(const Request&) {
  return 0;
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
VaeServiceImpl::VaeServiceImpl(ServerCore* core, ServerMetrics* metrics)
    : core_(core), metrics_(metrics), auth_(core->options().auth_token, core->options().auth_readonly_token) {
  MarkMethodStreamed(
      0, new grpc::internal::SplitServerStreamingHandler<grpc::ByteBuffer, v1::TrainProgress>(
             [this](grpc::ServerContext* context, TrainWriter* writer) { return StreamTrain(context, writer); }));
}

template <typename Request, typename Response, typename Start>
grpc::ServerUnaryReactor* VaeServiceImpl::Unary(grpc::CallbackServerContext* context, const char* method,
                                                const grpc::ByteBuffer* raw, grpc::ByteBuffer* out, Start start,
                                                Authenticator::Access access) {
  const absl::Time arrived = metrics_ != nullptr ? absl::Now() : absl::InfinitePast();
  if (metrics_ != nullptr) metrics_->CallStarted();
  auto* call = new UnaryCall<Request, Response>(out);
  if (!TryAdmit()) {
    const grpc::Status refused = ToGrpcStatus(ShuttingDown());
    Report<Request, Response>(context, method, arrived, refused.error_code(), nullptr, nullptr);
    call->Finish(refused);
    return call;
  }
  FinishFn finish = [this, call, context, method, arrived](const absl::Status& status) {
    const grpc::Status result =
        status.ok() ? SerializeResponse(call->response, call->out, core_->inference().rules()) : ToGrpcStatus(status);
    Report(context, method, arrived, result.error_code(), &call->request, &call->response);
    call->Finish(result);
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

template <typename Request, typename Response>
void VaeServiceImpl::Report(grpc::ServerContextBase* context, const char* method, absl::Time start,
                            grpc::StatusCode code, const Request* request, const Response* response) {
  if (metrics_ == nullptr) return;
  ServerMetrics::Call call;
  call.method = method;
  call.code = static_cast<absl::StatusCode>(code);  // gRPC and absl codes have the same numbers
  call.latency = absl::Now() - start;
  if (request != nullptr) {
    call.images = ImagesOf(*request);
    if constexpr (HasModelSpec<Request>::value) call.model = request->model_spec().name();
  }
  if constexpr (HasVersion<Response>::value) {
    if (response != nullptr && code == grpc::StatusCode::OK) {
      if (!response->version().model().empty()) call.model = response->version().model();
      call.version = response->version().version();
    }
  }
  if (!metrics_->logging()) return metrics_->CallFinished(call);
  // The caller's request id, or a new one; either way echoed in the response's initial metadata.
  std::string request_id;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("x-request-id");
      it != metadata.end() && !it->second.empty() && it->second.size() <= 128) {
    request_id.assign(it->second.data(), it->second.size());
  } else {
    request_id = RequestLog::NewRequestId();
  }
  // A Train stream sent its initial metadata with its first message: its id is in the log only.
  if constexpr (!std::is_same_v<Response, v1::TrainProgress>) context->AddInitialMetadata("x-request-id", request_id);
  const std::string peer = context->peer();
  call.peer = peer;
  call.request_id = request_id;
  metrics_->CallFinished(call);
}

bool VaeServiceImpl::TryAdmit() {
  active_calls_.fetch_add(1);
  if (!draining_.load()) return true;
  active_calls_.fetch_sub(1);
  return false;
}

grpc::Status VaeServiceImpl::StreamTrain(grpc::ServerContext* context, TrainWriter* writer) {
  const absl::Time arrived = metrics_ != nullptr ? absl::Now() : absl::InfinitePast();
  if (metrics_ != nullptr) metrics_->CallStarted();
  if (!TryAdmit()) {
    const grpc::Status refused = ToGrpcStatus(ShuttingDown());
    Report<v1::TrainRequest, v1::TrainProgress>(context, "Train", arrived, refused.error_code(), nullptr, nullptr);
    return refused;
  }
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
  const grpc::Status result = ToGrpcStatus(status);
  Report<v1::TrainRequest, v1::TrainProgress>(context, "Train", arrived, result.error_code(), &request, nullptr);
  active_calls_.fetch_sub(1);
  return result;
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
  // mu and sigma: 2 x J float32 per image, no image.
  if (auto status = core_->inference().rules().CheckOutputSize("encode", model->options, Rows(*images), kImageFormatPng,
                                                               8 * model->options.latent_dim);
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
  if (auto status = core_->inference().rules().CheckOutputSize("decode", model->options, Rows(*z), format, 0);
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
  VAE_RETURN_IF_ERROR(core_->inference().rules().CheckOutputSize("sample", model->options, request.count(),
                                                                 request.format(), 4 * model->options.latent_dim));
  std::optional<uint64_t> seed;
  if (request.has_seed()) seed = request.seed();
  const double temperature = InputRules::TemperatureOrDefault(request.temperature());
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
  if (auto status = core_->inference().rules().CheckOutputSize("reconstruct", model->options, Rows(*images), format, 8);
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
  ToProto(*core_, *model, response);
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
