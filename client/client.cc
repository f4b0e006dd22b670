#include "client/client.h"

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
#include "client/client_stub.h"
#include "client/grpc_status.h"
#include "client/proto_mapping.h"
#include "common/file_util.h"
#include "common/status_macros.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "vae.v1.Tensor carries little-endian bytes; this client copies them as they are");

namespace vae::client {

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

namespace {

// The checks Create and FromStubs share.
absl::Status ValidateOptions(const std::string& target, const ClientOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("target: empty; expected host:port");
  if (options.max_message_mb < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_mb: ", options.max_message_mb, "; expected >= 1"));
  }
  if (!options.token.empty() && !IsValidToken(options.token)) {
    return absl::InvalidArgumentError(
        "token: holds characters a token cannot have (spaces, control or non-ASCII characters, or several lines)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const std::string& target, ClientOptions options) {
  VAE_RETURN_IF_ERROR(ValidateOptions(target, options));
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
  auto stubs = std::make_unique<Stubs>();
  stubs->channel = grpc::CreateCustomChannel(target, credentials, args);
  stubs->vae = v1::VaeService::NewStub(stubs->channel);
  stubs->health = grpc::health::v1::Health::NewStub(stubs->channel);
  return std::unique_ptr<Client>(new Client(target, std::move(options), std::move(stubs)));
}

absl::StatusOr<std::unique_ptr<Client>> Client::FromStubs(std::string target, ClientOptions options, Stubs stubs) {
  VAE_RETURN_IF_ERROR(ValidateOptions(target, options));
  if (stubs.vae == nullptr) return absl::InvalidArgumentError("stubs.vae: null; expected a vae.v1.VaeService stub");
  if (stubs.health == nullptr) {
    return absl::InvalidArgumentError("stubs.health: null; expected a grpc.health.v1.Health stub");
  }
  return std::unique_ptr<Client>(
      new Client(std::move(target), std::move(options), std::make_unique<Stubs>(std::move(stubs))));
}

Client::Client(std::string target, ClientOptions options, std::unique_ptr<Stubs> stubs)
    : target_(std::move(target)), options_(std::move(options)), stubs_(std::move(stubs)) {}

Client::~Client() = default;

void Client::PrepareContext(grpc::ClientContext* context, absl::Duration timeout) const {
  if (timeout != absl::InfiniteDuration()) context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // Per call rather than a MetadataCredentialsPlugin: gRPC only applies call credentials on secure channels.
  if (!options_.token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
}

namespace {

// The one place a call's grpc::Status becomes an absl::Status (see client/grpc_status.h).
// Without a channel (FromStubs), the server counts as reached.
absl::Status Convert(const grpc::Status& status, const std::string& target, grpc::Channel* channel) {
  if (status.ok()) return absl::OkStatus();
  return FromGrpcStatus(status, target,
                        channel == nullptr || channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY);
}

}  // namespace

template <typename Rpc>
absl::Status Client::Unary(Rpc rpc) const {
  grpc::ClientContext context;
  PrepareContext(&context, options_.timeout);
  return Convert(rpc(&context), target_, stubs_->channel.get());
}

absl::StatusOr<ServingStatus> Client::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->health->Check(context, request, &response); }));
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

absl::StatusOr<ModelInfo> Client::GetModelInfo(const ModelSpec& model) {
  v1::GetModelInfoRequest request;
  SetModelSpec(model, &request);
  v1::ModelInfo r;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->GetModelInfo(context, request, &r); }));
  return FromProto(r);
}

absl::StatusOr<EncodeResult> Client::Encode(const ImageInput& images, const ModelSpec& model) {
  v1::EncodeRequest request;
  VAE_RETURN_IF_ERROR(ToProto(images, request.mutable_images()));
  SetModelSpec(model, &request);
  v1::EncodeResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->Encode(context, request, &response); }));
  EncodeResult result;
  VAE_ASSIGN_OR_RETURN(result.mu, FromProto(response.mu(), "mu"));
  VAE_ASSIGN_OR_RETURN(result.sigma, FromProto(response.sigma(), "sigma"));
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<DecodeResult> Client::Decode(const at::Tensor& z, const ModelSpec& model) {
  v1::DecodeRequest request;
  // ToProto sends anything that is not uint8 as float32; codes are never uint8.
  VAE_RETURN_IF_ERROR(ToProto(z, "z", request.mutable_z()));
  if (request.z().dtype() != v1::DATA_TYPE_FLOAT32) {
    return absl::InvalidArgumentError("z: expected a float tensor, got uint8");
  }
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  SetModelSpec(model, &request);
  v1::DecodeResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->Decode(context, request, &response); }));
  DecodeResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<SampleResult> Client::Sample(const SampleOptions& options, const ModelSpec& model) {
  v1::SampleRequest request;
  request.set_count(options.count);
  if (options.seed.has_value()) request.set_seed(*options.seed);
  request.set_temperature(options.temperature);
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  SetModelSpec(model, &request);
  v1::SampleResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->Sample(context, request, &response); }));
  SampleResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  VAE_ASSIGN_OR_RETURN(result.z, FromProto(response.z(), "z"));
  result.seed = response.seed();
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<ReconstructResult> Client::Reconstruct(const ImageInput& images, const ReconstructOptions& options,
                                                      const ModelSpec& model) {
  v1::ReconstructRequest request;
  VAE_RETURN_IF_ERROR(ToProto(images, request.mutable_images()));
  request.set_format(v1::IMAGE_FORMAT_TENSOR);
  request.set_sample_z(options.sample_z);
  request.set_seed(options.seed);
  SetModelSpec(model, &request);
  v1::ReconstructResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->Reconstruct(context, request, &response); }));
  ReconstructResult result;
  VAE_ASSIGN_OR_RETURN(result.images, FromProto(response.images(), "images"));
  result.recon_nll.assign(response.recon_nll().begin(), response.recon_nll().end());
  result.kl.assign(response.kl().begin(), response.kl().end());
  result.version = FromProto(response.version());
  return result;
}

absl::StatusOr<ModelList> Client::ListModels(const std::string& name) {
  v1::ListModelsRequest request;
  request.set_name(name);
  v1::ListModelsResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->ListModels(context, request, &response); }));
  return FromProto(response);
}

absl::StatusOr<SetLabelResult> Client::SetLabel(const std::string& model, const std::string& label, int64_t version,
                                                bool make_default) {
  v1::SetLabelRequest request;
  request.set_model(model);
  request.set_label(label);
  request.set_version(version);
  request.set_make_default(make_default);
  v1::SetLabelResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->SetLabel(context, request, &response); }));
  return SetLabelResult{response.previous_version()};
}

absl::StatusOr<DeleteVersionResult> Client::DeleteVersion(const std::string& model, int64_t version, bool force) {
  v1::DeleteVersionRequest request;
  request.set_model(model);
  request.set_version(version);
  request.set_force(force);
  v1::DeleteVersionResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->DeleteVersion(context, request, &response); }));
  DeleteVersionResult result;
  result.removed_labels.assign(response.removed_labels().begin(), response.removed_labels().end());
  return result;
}

absl::StatusOr<DeleteModelResult> Client::DeleteModel(const std::string& model, bool force) {
  v1::DeleteModelRequest request;
  request.set_model(model);
  request.set_force(force);
  v1::DeleteModelResponse response;
  VAE_RETURN_IF_ERROR(
      Unary([&](grpc::ClientContext* context) { return stubs_->vae->DeleteModel(context, request, &response); }));
  return DeleteModelResult{response.versions_deleted()};
}

absl::StatusOr<TrainResult> Client::Train(const TrainOptions& options, const TrainProgressCallback& on_progress,
                                          TrainCancellation* cancellation) {
  v1::TrainRequest request;
  ToProto(options, &request);

  TrainResult result;
  grpc::ClientContext context;
  PrepareContext(&context, options.timeout);
  if (cancellation != nullptr && !cancellation->Attach(&context)) {
    result.cancelled = true;
    return result;
  }
  std::unique_ptr<grpc::ClientReaderInterface<v1::TrainProgress>> reader = stubs_->vae->Train(&context, request);
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
  VAE_RETURN_IF_ERROR(Convert(status, target_, stubs_->channel.get()));
  return result;
}

}  // namespace vae::client
