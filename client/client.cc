#include "client/client.h"

#include <c10/util/Exception.h>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/grpc_status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "proto/tensor_proto.h"
#include "vae/v1/vae_service.grpc.pb.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "vae.v1.Tensor carries little-endian bytes; this client copies them as they are");

namespace vae::client {
namespace {

ModelVersion FromProto(const v1::ModelVersion& v) {
  return ModelVersion{v.generation(), v.epochs_trained(), v.global_step()};
}

Metrics FromProto(const v1::Metrics& m) { return Metrics{m.loss(), m.recon(), m.kl()}; }

// The tensor as a vae.v1.Tensor (TensorToProto: uint8 stays uint8, everything else becomes float32).
absl::Status ToProto(const at::Tensor& tensor, const char* field, v1::Tensor* proto) {
  if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat(field, ": the tensor is undefined"));
  try {
    TensorToProto(tensor, proto);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": cannot convert the tensor: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

// A CPU tensor holding a copy of `proto`'s bytes. INTERNAL when the server sent something inconsistent (the codec's
// INVALID_ARGUMENT is about a request; here the fault is the server's).
absl::StatusOr<at::Tensor> FromProto(const v1::Tensor& proto, const char* field) {
  auto tensor = TensorFromProto(proto, field);
  if (!tensor.ok()) return absl::InternalError(absl::StrCat("response ", tensor.status().message()));
  return tensor;
}

absl::Status ToProto(const ImageInput& images, v1::ImageBatch* proto) {
  const bool has_tensor = images.tensor.defined();
  if (has_tensor == !images.encoded.empty()) {
    return absl::InvalidArgumentError("images: set exactly one of tensor and encoded");
  }
  if (has_tensor) return ToProto(images.tensor, "images.tensor", proto->mutable_tensor());
  for (const std::string& file : images.encoded) proto->add_encoded(file);
  proto->set_resize(images.resize);
  return absl::OkStatus();
}

TrainProgress FromProto(const v1::TrainProgress& p) {
  TrainProgress out;
  switch (p.kind()) {
    case v1::TrainProgress::STARTED:
      out.kind = TrainProgress::Kind::kStarted;
      break;
    case v1::TrainProgress::STEP:
      out.kind = TrainProgress::Kind::kStep;
      break;
    case v1::TrainProgress::EPOCH_END:
      out.kind = TrainProgress::Kind::kEpochEnd;
      break;
    case v1::TrainProgress::DONE:
      out.kind = TrainProgress::Kind::kDone;
      break;
    default:
      out.kind = TrainProgress::Kind::kUnspecified;
  }
  out.job_id = p.job_id();
  out.dataset = p.dataset();
  out.epoch = p.epoch();
  out.epochs = p.epochs();
  out.step_in_epoch = p.step_in_epoch();
  out.steps_per_epoch = p.steps_per_epoch();
  out.global_step = p.global_step();
  out.train = FromProto(p.train());
  if (p.has_test_metrics()) out.test = FromProto(p.test());
  out.images_per_sec = p.images_per_sec();
  out.elapsed_sec = p.elapsed_sec();
  out.eta_sec = p.eta_sec();
  out.cancelled = p.cancelled();
  out.checkpoint_path = p.checkpoint_path();
  out.version = FromProto(p.version());
  return out;
}

}  // namespace

const char* ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

ImageInput ImageInput::FromTensor(at::Tensor images) {
  ImageInput input;
  input.tensor = std::move(images);
  return input;
}

ImageInput ImageInput::FromEncoded(std::vector<std::string> files, bool resize) {
  ImageInput input;
  input.encoded = std::move(files);
  input.resize = resize;
  return input;
}

void TrainCancellation::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool TrainCancellation::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool TrainCancellation::Attach(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  context_ = context;
  return true;
}

void TrainCancellation::Detach() {
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
}

absl::StatusOr<ClientOptions::Tls> LoadTlsFiles(const std::string& ca_file, const std::string& cert_file,
                                                const std::string& key_file) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("tls: a client certificate and its private key go together");
  }
  auto read = [](const std::string& path, std::string* pem) -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("tls: cannot read ", path));
    pem->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (pem->find("-----BEGIN ") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tls: ", path, " is not a PEM file"));
    }
    return absl::OkStatus();
  };
  ClientOptions::Tls tls;
  if (auto s = read(ca_file, &tls.root_certs_pem); !s.ok()) return s;
  if (auto s = read(cert_file, &tls.cert_chain_pem); !s.ok()) return s;
  if (auto s = read(key_file, &tls.private_key_pem); !s.ok()) return s;
  return tls;
}

struct Client::Stubs {
  std::unique_ptr<v1::VaeService::Stub> vae;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const std::string& target, ClientOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("target: empty; expected host:port");
  if (options.max_message_mb < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_mb: ", options.max_message_mb, "; expected >= 1"));
  }
  if (!options.token.empty() && !IsValidToken(options.token)) {
    return absl::InvalidArgumentError(
        "token: holds characters a token cannot have (spaces, control or non-ASCII characters, or several lines)");
  }
  grpc::ChannelArguments args;
  const int max_bytes = options.max_message_mb >= 2047 ? INT32_MAX : options.max_message_mb << 20;
  args.SetMaxReceiveMessageSize(max_bytes);
  args.SetMaxSendMessageSize(max_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls.has_value()) {
    if (options.tls->cert_chain_pem.empty() != options.tls->private_key_pem.empty()) {
      return absl::InvalidArgumentError("tls: a client certificate and its private key go together");
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls->root_certs_pem;
    ssl.pem_cert_chain = options.tls->cert_chain_pem;
    ssl.pem_private_key = options.tls->private_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateCustomChannel(target, credentials, args);
  return std::unique_ptr<Client>(new Client(target, options, std::move(channel)));
}

Client::Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      stubs_(new Stubs{v1::VaeService::NewStub(channel_), grpc::health::v1::Health::NewStub(channel_)}) {}

Client::~Client() = default;

void Client::PrepareContext(grpc::ClientContext* context, absl::Duration timeout) const {
  if (timeout != absl::InfiniteDuration()) context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // Per call rather than a MetadataCredentialsPlugin: gRPC only applies call credentials on secure channels.
  if (!options_.token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
}

namespace {

// The one place a call's grpc::Status becomes an absl::Status (see client/grpc_status.h).
absl::Status Convert(const grpc::Status& status, const std::string& target, grpc::Channel& channel) {
  if (status.ok()) return absl::OkStatus();
  return FromGrpcStatus(status, target, channel.GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY);
}

}  // namespace

absl::StatusOr<ServingStatus> Client::Health(const std::string& service) {
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  VAE_RETURN_IF_ERROR(Convert(stubs_->health->Check(&context, request, &response), target_, *channel_));
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

absl::StatusOr<ModelInfo> Client::GetModelInfo() {
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  v1::ModelInfo r;
  VAE_RETURN_IF_ERROR(Convert(stubs_->vae->GetModelInfo(&context, v1::GetModelInfoRequest(), &r), target_, *channel_));
  ModelInfo info;
  info.preset = r.preset();
  info.options_json = r.options_json();
  info.input_shape.assign(r.input_shape().begin(), r.input_shape().end());
  info.latent_dim = r.latent_dim();
  info.likelihood = r.likelihood();
  info.architecture = r.architecture();
  info.parameter_count = r.parameter_count();
  info.version = FromProto(r.version());
  if (r.has_train_metrics()) info.last_train = FromProto(r.last_train());
  if (r.has_test_metrics()) info.last_test = FromProto(r.last_test());
  info.device = r.device();
  info.checkpoint_path = r.checkpoint_path();
  info.training = r.training();
  info.training_job_id = r.training_job_id();
  info.presets.assign(r.presets().begin(), r.presets().end());
  info.train_json = r.train_json();
  info.max_batch = r.max_batch();
  return info;
}

absl::StatusOr<EncodeResult> Client::Encode(const ImageInput& images) {
  v1::EncodeRequest request;
  VAE_RETURN_IF_ERROR(ToProto(images, request.mutable_images()));
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  v1::EncodeResponse response;
  VAE_RETURN_IF_ERROR(Convert(stubs_->vae->Encode(&context, request, &response), target_, *channel_));
  EncodeResult result;
  VAE_ASSIGN_OR_RETURN(result.mu, FromProto(response.mu(), "mu"));
  VAE_ASSIGN_OR_RETURN(result.sigma, FromProto(response.sigma(), "sigma"));
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<DecodeResult> Client::Decode(const at::Tensor& z) {
  v1::DecodeRequest request;
  // ToProto sends anything that is not uint8 as float32; codes are never uint8.
  VAE_RETURN_IF_ERROR(ToProto(z, "z", request.mutable_z()));
  if (request.z().dtype() != v1::DATA_TYPE_FLOAT32) {
    return absl::InvalidArgumentError("z: expected a float tensor, got uint8");
  }
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  v1::DecodeResponse response;
  VAE_RETURN_IF_ERROR(Convert(stubs_->vae->Decode(&context, request, &response), target_, *channel_));
  DecodeResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<SampleResult> Client::Sample(const SampleOptions& options) {
  v1::SampleRequest request;
  request.set_count(options.count);
  if (options.seed.has_value()) request.set_seed(*options.seed);
  request.set_temperature(options.temperature);
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  v1::SampleResponse response;
  VAE_RETURN_IF_ERROR(Convert(stubs_->vae->Sample(&context, request, &response), target_, *channel_));
  SampleResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  VAE_ASSIGN_OR_RETURN(result.z, FromProto(response.z(), "z"));
  result.seed = response.seed();
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<ReconstructResult> Client::Reconstruct(const ImageInput& images, const ReconstructOptions& options) {
  v1::ReconstructRequest request;
  VAE_RETURN_IF_ERROR(ToProto(images, request.mutable_images()));
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  request.set_sample_z(options.sample_z);
  request.set_seed(options.seed);
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  v1::ReconstructResponse response;
  VAE_RETURN_IF_ERROR(Convert(stubs_->vae->Reconstruct(&context, request, &response), target_, *channel_));
  ReconstructResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  result.recon_nll.assign(response.recon_nll().begin(), response.recon_nll().end());
  result.kl.assign(response.kl().begin(), response.kl().end());
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<TrainResult> Client::Train(const TrainOptions& options, const TrainProgressCallback& on_progress,
                                          TrainCancellation* cancellation) {
  v1::TrainRequest request;
  request.set_dataset(options.dataset);
  request.set_epochs(options.epochs);
  request.set_batch_size(options.batch_size);
  request.set_learning_rate(options.learning_rate);
  request.set_seed(options.seed);
  request.set_resume(options.resume);
  request.set_preset(options.preset);
  request.set_options_json(options.options_json);
  request.set_log_every_steps(options.log_every_steps);
  request.set_max_train_images(options.max_train_images);
  request.set_binarize(options.binarize);

  TrainResult result;
  grpc::ClientContext context;
  PrepareContext(&context, options.timeout);
  if (cancellation != nullptr && !cancellation->Attach(&context)) {
    result.cancelled = true;
    return result;
  }
  std::unique_ptr<grpc::ClientReader<v1::TrainProgress>> reader = stubs_->vae->Train(&context, request);
  v1::TrainProgress message;
  while (reader->Read(&message)) {
    result.last = FromProto(message);
    if (result.last.kind == TrainProgress::Kind::kDone) result.cancelled = result.last.cancelled;
    if (on_progress) on_progress(result.last);
  }
  const grpc::Status status = reader->Finish();
  if (cancellation != nullptr) {
    cancellation->Detach();
    // Our own TryCancel ends the call with CANCELLED: that is the outcome the caller asked for, not an error.
    if (cancellation->cancelled() && status.error_code() == grpc::StatusCode::CANCELLED) {
      result.cancelled = true;
      return result;
    }
  }
  VAE_RETURN_IF_ERROR(Convert(status, target_, *channel_));
  return result;
}

}  // namespace vae::client
