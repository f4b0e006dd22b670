// vae::Client on gMock stubs (Client::FromStubs, client/client_stub.h): the library's error mapping, deadlines,
// authorization metadata and response decoding, without a server. Hermetic: no network, no data. The Client has no
// retries: every failing call reaches the stub exactly once (the Times(1) expectations below).
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/test/client_context_test_peer.h>
#include <grpcpp/test/mock_stream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/client_stub.h"
#include "client/grpc_status.h"
#include "grpc/health/v1/health_mock.grpc.pb.h"
#include "vae/v1/vae_service_mock.grpc.pb.h"

namespace vae::client {
namespace {

using ::testing::_;
using ::testing::DoAll;
using ::testing::Invoke;
using ::testing::Return;
using ::testing::SaveArg;
using ::testing::SetArgPointee;
using ::testing::StrictMock;

constexpr char kTarget[] = "vae.example:50051";

// A Client on mocks that the test keeps pointers to (the Client owns them).
struct Fixture {
  v1::MockVaeServiceStub* vae = nullptr;
  grpc::health::v1::MockHealthStub* health = nullptr;
  std::unique_ptr<Client> client;
};

Fixture MakeClient(ClientOptions options = {}, std::shared_ptr<grpc::Channel> channel = nullptr) {
  Fixture f;
  Client::Stubs stubs;
  auto vae = std::make_unique<StrictMock<v1::MockVaeServiceStub>>();
  auto health = std::make_unique<StrictMock<grpc::health::v1::MockHealthStub>>();
  f.vae = vae.get();
  f.health = health.get();
  stubs.vae = std::move(vae);
  stubs.health = std::move(health);
  stubs.channel = std::move(channel);
  auto client = Client::FromStubs(kTarget, std::move(options), std::move(stubs));
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) f.client = *std::move(client);
  return f;
}

// A float32 vae.v1.Tensor of `shape` holding `values`.
v1::Tensor FloatTensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(v1::DATA_TYPE_FLOAT32);
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return t;
}

std::vector<float> Values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(ClientStubTest, ServerStatusesKeepTheirCodeAndMessage) {
  const std::vector<grpc::StatusCode> codes = {grpc::StatusCode::CANCELLED,
                                               grpc::StatusCode::UNKNOWN,
                                               grpc::StatusCode::INVALID_ARGUMENT,
                                               grpc::StatusCode::DEADLINE_EXCEEDED,
                                               grpc::StatusCode::NOT_FOUND,
                                               grpc::StatusCode::ALREADY_EXISTS,
                                               grpc::StatusCode::PERMISSION_DENIED,
                                               grpc::StatusCode::RESOURCE_EXHAUSTED,
                                               grpc::StatusCode::FAILED_PRECONDITION,
                                               grpc::StatusCode::ABORTED,
                                               grpc::StatusCode::OUT_OF_RANGE,
                                               grpc::StatusCode::UNIMPLEMENTED,
                                               grpc::StatusCode::INTERNAL,
                                               grpc::StatusCode::UNAVAILABLE,
                                               grpc::StatusCode::DATA_LOSS,
                                               grpc::StatusCode::UNAUTHENTICATED};
  for (grpc::StatusCode code : codes) {
    SCOPED_TRACE(static_cast<int>(code));
    Fixture f = MakeClient();
    // UNAVAILABLE without gRPC's transport words is a server's own answer (draining), kept as it is.
    const std::string message = "count: 0; expected 1 .. 256 (server says so)";
    EXPECT_CALL(*f.vae, GetModelInfo(_, _, _)).Times(1).WillOnce(Return(grpc::Status(code, message)));
    absl::StatusOr<ModelInfo> info = f.client->GetModelInfo();
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(static_cast<int>(info.status().code()), static_cast<int>(code));
    EXPECT_EQ(info.status().message(), message);
  }
}

TEST(ClientStubTest, ConnectionFailureBecomesOneLineCannotReachMessage) {
  Fixture f = MakeClient();
  EXPECT_CALL(*f.vae, Encode(_, _, _))
      .Times(1)
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                                    "Failed to connect to remote host: Connection refused")));
  absl::StatusOr<EncodeResult> r = f.client->Encode(ImageInput::FromTensor(torch::zeros({1, 1, 2, 2})));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), absl::StrCat(kCannotReachPrefix, kTarget, ": connection refused"));
}

TEST(ClientStubTest, DeadlineWhileNotConnectedIsCannotReach) {
  // A channel that was never asked to connect (lazy; nothing is dialled): not READY, so the deadline is the
  // connection's fault.
  Fixture f = MakeClient({}, grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  EXPECT_CALL(*f.vae, GetModelInfo(_, _, _))
      .Times(1)
      .WillOnce(Return(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded")));
  absl::StatusOr<ModelInfo> info = f.client->GetModelInfo();
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(info.status().message(), absl::StrCat(kCannotReachPrefix, kTarget, ": timed out while connecting"));
}

// What a GetModelInfo call carried to the stub under `options`, read inside the mock (the context dies with the call).
struct SentContext {
  std::chrono::system_clock::time_point deadline;
  std::multimap<std::string, std::string> metadata;
};

SentContext CallGetModelInfo(ClientOptions options) {
  Fixture f = MakeClient(std::move(options));
  SentContext sent;
  EXPECT_CALL(*f.vae, GetModelInfo(_, _, _)).WillOnce(Invoke([&](grpc::ClientContext* context, auto&&, auto*) {
    sent.deadline = context->deadline();
    sent.metadata = grpc::testing::ClientContextTestPeer(context).GetSendInitialMetadata();
    return grpc::Status::OK;
  }));
  EXPECT_TRUE(f.client->GetModelInfo().ok());
  return sent;
}

TEST(ClientStubTest, DeadlineComesFromClientOptionsTimeout) {
  ClientOptions options;
  options.timeout = absl::Seconds(7);
  const absl::Time before = absl::Now();
  const SentContext sent = CallGetModelInfo(options);
  const absl::Time after = absl::Now();
  EXPECT_GE(absl::FromChrono(sent.deadline), before + absl::Seconds(7));
  EXPECT_LE(absl::FromChrono(sent.deadline), after + absl::Seconds(7));
}

TEST(ClientStubTest, InfiniteTimeoutSetsNoDeadline) {
  ClientOptions options;
  options.timeout = absl::InfiniteDuration();
  EXPECT_EQ(CallGetModelInfo(options).deadline, std::chrono::system_clock::time_point::max());
}

TEST(ClientStubTest, TokenIsSentAsBearerAuthorization) {
  ClientOptions options;
  options.token = "s3cret-token";
  const SentContext sent = CallGetModelInfo(options);
  ASSERT_EQ(sent.metadata.count("authorization"), 1u);
  EXPECT_EQ(sent.metadata.find("authorization")->second, "Bearer s3cret-token");
}

TEST(ClientStubTest, NoTokenSendsNoAuthorization) {
  EXPECT_EQ(CallGetModelInfo({}).metadata.count("authorization"), 0u);
}

TEST(ClientStubTest, FromStubsValidatesLikeCreate) {
  ClientOptions bad_token;
  bad_token.token = "two words";
  Client::Stubs stubs;
  stubs.vae = std::make_unique<v1::MockVaeServiceStub>();
  stubs.health = std::make_unique<grpc::health::v1::MockHealthStub>();
  absl::StatusOr<std::unique_ptr<Client>> c = Client::FromStubs(kTarget, bad_token, std::move(stubs));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("token"));

  Client::Stubs no_vae;
  no_vae.health = std::make_unique<grpc::health::v1::MockHealthStub>();
  c = Client::FromStubs(kTarget, {}, std::move(no_vae));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("stubs.vae"));

  Client::Stubs no_health;
  no_health.vae = std::make_unique<v1::MockVaeServiceStub>();
  c = Client::FromStubs(kTarget, {}, std::move(no_health));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("stubs.health"));
}

TEST(ClientStubTest, EncodeSendsTheTensorAndDecodesMuSigmaAndVersion) {
  Fixture f = MakeClient();
  v1::EncodeRequest sent;
  v1::EncodeResponse response;
  *response.mutable_mu() = FloatTensor({2, 3}, {1, 2, 3, 4, 5, 6});
  *response.mutable_sigma() = FloatTensor({2, 3}, {0.5f, 0.25f, 1, 2, 3, 4});
  response.mutable_version()->set_generation(4);
  response.mutable_version()->set_epochs_trained(3);
  response.mutable_version()->set_global_step(1200);
  EXPECT_CALL(*f.vae, Encode(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  const at::Tensor images = torch::arange(8, torch::kUInt8).reshape({2, 1, 2, 2});
  absl::StatusOr<EncodeResult> r = f.client->Encode(ImageInput::FromTensor(images));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.images().tensor().dtype(), v1::DATA_TYPE_UINT8);
  EXPECT_THAT(sent.images().tensor().shape(), ::testing::ElementsAre(2, 1, 2, 2));
  EXPECT_EQ(sent.images().tensor().data(), std::string("\x00\x01\x02\x03\x04\x05\x06\x07", 8));
  EXPECT_EQ(r->mu.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ(r->mu.scalar_type(), at::kFloat);
  EXPECT_THAT(Values(r->mu), ::testing::ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(Values(r->sigma), ::testing::ElementsAre(0.5f, 0.25f, 1, 2, 3, 4));
  EXPECT_EQ(r->version.generation, 4);
  EXPECT_EQ(r->version.epochs_trained, 3);
  EXPECT_EQ(r->version.global_step, 1200);
}

TEST(ClientStubTest, SampleSendsOptionsAndDecodesImagesCodesAndSeed) {
  Fixture f = MakeClient();
  v1::SampleRequest sent;
  v1::SampleResponse response;
  *response.mutable_images() = FloatTensor({1, 1, 2, 2}, {0, 0.25f, 0.5f, 1});
  *response.mutable_z() = FloatTensor({1, 2}, {-1.5f, 2});
  response.set_seed(99);
  EXPECT_CALL(*f.vae, Sample(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  SampleOptions options;
  options.count = 1;
  options.seed = 99;
  options.temperature = 0.5f;
  absl::StatusOr<SampleResult> r = f.client->Sample(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.count(), 1);
  EXPECT_EQ(sent.seed(), 99u);
  EXPECT_EQ(sent.temperature(), 0.5f);
  EXPECT_EQ(sent.format(), v1::IMAGE_FORMAT_TENSOR);
  EXPECT_EQ(r->images.sizes(), at::IntArrayRef({1, 1, 2, 2}));
  EXPECT_THAT(Values(r->images), ::testing::ElementsAre(0, 0.25f, 0.5f, 1));
  EXPECT_THAT(Values(r->z), ::testing::ElementsAre(-1.5f, 2));
  EXPECT_EQ(r->seed, 99u);
}

TEST(ClientStubTest, ReconstructDecodesImagesAndPerImageTerms) {
  Fixture f = MakeClient();
  v1::ReconstructResponse response;
  *response.mutable_images() = FloatTensor({2, 1, 1, 1}, {0.125f, 0.75f});
  response.add_recon_nll(10.5f);
  response.add_recon_nll(11.5f);
  response.add_kl(3);
  response.add_kl(4);
  EXPECT_CALL(*f.vae, Reconstruct(_, _, _)).WillOnce(DoAll(SetArgPointee<2>(response), Return(grpc::Status::OK)));
  absl::StatusOr<ReconstructResult> r = f.client->Reconstruct(ImageInput::FromTensor(torch::zeros({2, 1, 1, 1})));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Values(r->images), ::testing::ElementsAre(0.125f, 0.75f));
  EXPECT_THAT(r->recon_nll, ::testing::ElementsAre(10.5f, 11.5f));
  EXPECT_THAT(r->kl, ::testing::ElementsAre(3, 4));
}

// A response the server should never send becomes INTERNAL naming the field, not a crash or a tensor reading past the
// bytes.
TEST(ClientStubTest, MalformedResponseTensorsAreInternalErrors) {
  struct Case {
    v1::Tensor mu;
    std::string expected;
  };
  v1::Tensor short_data = FloatTensor({2, 3}, {1, 2, 3});  // 12 bytes for 24
  v1::Tensor negative = FloatTensor({-1, 3}, {});
  v1::Tensor no_dtype = FloatTensor({1}, {1});
  no_dtype.set_dtype(v1::DATA_TYPE_UNSPECIFIED);
  v1::Tensor too_big = FloatTensor({int64_t{1} << 30, int64_t{1} << 30, 4}, {});
  const std::vector<Case> cases = {
      {short_data, "response mu.data is 12 bytes; expected 24"},
      {negative, "response mu.shape [-1,3] has a negative dimension"},
      {no_dtype, "response mu.dtype"},
      {too_big, "response mu.shape"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    Fixture f = MakeClient();
    v1::EncodeResponse response;
    *response.mutable_mu() = c.mu;
    *response.mutable_sigma() = FloatTensor({1}, {1});
    EXPECT_CALL(*f.vae, Encode(_, _, _)).WillOnce(DoAll(SetArgPointee<2>(response), Return(grpc::Status::OK)));
    absl::StatusOr<EncodeResult> r = f.client->Encode(ImageInput::FromTensor(torch::zeros({1, 1, 1, 1})));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(std::string(r.status().message()), ::testing::StartsWith(c.expected));
  }
}

TEST(ClientStubTest, BadRequestNeverReachesTheStub) {
  Fixture f = MakeClient();  // StrictMock: any call to Decode fails the test
  absl::StatusOr<DecodeResult> r = f.client->Decode(torch::zeros({1, 2}, torch::kUInt8));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("z"));
}

v1::TrainProgress Progress(v1::TrainProgress::Kind kind, int64_t epoch) {
  v1::TrainProgress p;
  p.set_kind(kind);
  p.set_epoch(epoch);
  p.set_job_id("job-1");
  return p;
}

TEST(ClientStubTest, TrainStreamsProgressUsesTrainTimeoutAndEndsWithDone) {
  Fixture f = MakeClient();
  auto* reader = new grpc::testing::MockClientReader<v1::TrainProgress>();  // owned by the Client's call
  EXPECT_CALL(*reader, Read(_))
      .WillOnce(DoAll(SetArgPointee<0>(Progress(v1::TrainProgress::STARTED, 1)), Return(true)))
      .WillOnce(DoAll(SetArgPointee<0>(Progress(v1::TrainProgress::EPOCH_END, 1)), Return(true)))
      .WillOnce(DoAll(SetArgPointee<0>(Progress(v1::TrainProgress::DONE, 1)), Return(true)))
      .WillOnce(Return(false));
  EXPECT_CALL(*reader, Finish()).WillOnce(Return(grpc::Status::OK));
  std::chrono::system_clock::time_point deadline;
  v1::TrainRequest sent;
  EXPECT_CALL(*f.vae, TrainRaw(_, _)).WillOnce(Invoke([&](grpc::ClientContext* context, const v1::TrainRequest& r) {
    deadline = context->deadline();
    sent = r;
    return reader;
  }));
  TrainOptions options;
  options.dataset = "mnist";
  options.epochs = 1;
  std::vector<TrainProgress::Kind> kinds;
  absl::StatusOr<TrainResult> r = f.client->Train(options, [&](const TrainProgress& p) { kinds.push_back(p.kind); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.dataset(), "mnist");
  EXPECT_EQ(sent.epochs(), 1);
  // ClientOptions::timeout (30 s) does not apply to Train; TrainOptions::timeout is infinite by default.
  EXPECT_EQ(deadline, std::chrono::system_clock::time_point::max());
  EXPECT_THAT(kinds, ::testing::ElementsAre(TrainProgress::Kind::kStarted, TrainProgress::Kind::kEpochEnd,
                                            TrainProgress::Kind::kDone));
  EXPECT_EQ(r->last.kind, TrainProgress::Kind::kDone);
  EXPECT_EQ(r->last.job_id, "job-1");
  EXPECT_FALSE(r->cancelled);
}

TEST(ClientStubTest, TrainErrorFromFinishKeepsCodeAndMessage) {
  Fixture f = MakeClient();
  auto* reader = new grpc::testing::MockClientReader<v1::TrainProgress>();
  EXPECT_CALL(*reader, Read(_)).WillOnce(Return(false));
  EXPECT_CALL(*reader, Finish())
      .WillOnce(Return(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "a training job is already running")));
  EXPECT_CALL(*f.vae, TrainRaw(_, _)).Times(1).WillOnce(Return(reader));
  absl::StatusOr<TrainResult> r = f.client->Train(TrainOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "a training job is already running");
}

TEST(ClientStubTest, HealthMapsServingStatusAndErrors) {
  Fixture f = MakeClient();
  grpc::health::v1::HealthCheckRequest sent;
  grpc::health::v1::HealthCheckResponse serving;
  serving.set_status(grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_CALL(*f.health, Check(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(serving), Return(grpc::Status::OK)))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service")));
  absl::StatusOr<ServingStatus> s = f.client->Health("vae.v1.VaeService");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, ServingStatus::kNotServing);
  EXPECT_EQ(sent.service(), "vae.v1.VaeService");
  s = f.client->Health("nope");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.status().message(), "unknown service");
}

// --- The model repository (#13): ModelSpec on every inference call, versions in every answer, the admin calls.

v1::ModelVersion Version(const std::string& model, int64_t version) {
  v1::ModelVersion v;
  v.set_model(model);
  v.set_version(version);
  v.set_generation(version);
  v.set_epochs_trained(2 * version);
  v.set_global_step(100 * version);
  return v;
}

// `status` is the error the stub answered, passed through: its code and message unchanged.
void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& message) {
  EXPECT_EQ(status.code(), code);
  EXPECT_EQ(status.message(), message);
}

void ExpectSpec(const v1::ModelSpec& sent, const std::string& name, int64_t version, const std::string& label) {
  EXPECT_EQ(sent.name(), name);
  EXPECT_EQ(sent.version(), version);
  EXPECT_EQ(sent.label(), label);
}

TEST(ClientStubTest, EveryInferenceCallSendsItsModelSpecAndReadsTheAnsweringVersion) {
  Fixture f = MakeClient();
  const ModelSpec pinned = ModelSpec::Pinned("fashion", 7);
  const ModelSpec labelled = ModelSpec::Labelled("mnist", "stable");

  v1::GetModelInfoRequest info_sent;
  v1::ModelInfo info;
  *info.mutable_version() = Version("fashion", 7);
  info.add_labels("latest");
  info.add_labels("stable");
  info.set_default_label("stable");
  EXPECT_CALL(*f.vae, GetModelInfo(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&info_sent), SetArgPointee<2>(info), Return(grpc::Status::OK)));
  absl::StatusOr<ModelInfo> i = f.client->GetModelInfo(pinned);
  ASSERT_TRUE(i.ok()) << i.status();
  ExpectSpec(info_sent.model_spec(), "fashion", 7, "");
  EXPECT_EQ(i->version.model, "fashion");
  EXPECT_EQ(i->version.version, 7);
  EXPECT_EQ(i->version.generation, 7);
  EXPECT_THAT(i->labels, ::testing::ElementsAre("latest", "stable"));
  EXPECT_EQ(i->default_label, "stable");

  v1::EncodeRequest encode_sent;
  v1::EncodeResponse encoded;
  *encoded.mutable_mu() = FloatTensor({1, 1}, {1});
  *encoded.mutable_sigma() = FloatTensor({1, 1}, {2});
  *encoded.mutable_version() = Version("mnist", 3);
  EXPECT_CALL(*f.vae, Encode(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&encode_sent), SetArgPointee<2>(encoded), Return(grpc::Status::OK)));
  absl::StatusOr<EncodeResult> e = f.client->Encode(ImageInput::FromTensor(torch::zeros({1, 1, 1, 1})), labelled);
  ASSERT_TRUE(e.ok()) << e.status();
  ExpectSpec(encode_sent.model_spec(), "mnist", 0, "stable");
  EXPECT_EQ(e->version.model, "mnist");
  EXPECT_EQ(e->version.version, 3);
  EXPECT_EQ(e->version.epochs_trained, 6);
  EXPECT_EQ(e->version.global_step, 300);

  v1::DecodeRequest decode_sent;
  v1::DecodeResponse decoded;
  *decoded.mutable_images() = FloatTensor({1, 1, 1, 1}, {0.5f});
  *decoded.mutable_version() = Version("fashion", 7);
  EXPECT_CALL(*f.vae, Decode(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&decode_sent), SetArgPointee<2>(decoded), Return(grpc::Status::OK)));
  absl::StatusOr<DecodeResult> d = f.client->Decode(torch::zeros({1, 1}), pinned);
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectSpec(decode_sent.model_spec(), "fashion", 7, "");
  EXPECT_EQ(d->version.model, "fashion");
  EXPECT_EQ(d->version.version, 7);

  v1::SampleRequest sample_sent;
  v1::SampleResponse sampled;
  *sampled.mutable_images() = FloatTensor({1, 1, 1, 1}, {0.5f});
  *sampled.mutable_z() = FloatTensor({1, 1}, {0});
  *sampled.mutable_version() = Version("fashion", 7);
  EXPECT_CALL(*f.vae, Sample(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sample_sent), SetArgPointee<2>(sampled), Return(grpc::Status::OK)));
  absl::StatusOr<SampleResult> sr = f.client->Sample(SampleOptions{}, pinned);
  ASSERT_TRUE(sr.ok()) << sr.status();
  ExpectSpec(sample_sent.model_spec(), "fashion", 7, "");
  EXPECT_EQ(sr->version.version, 7);

  v1::ReconstructRequest reconstruct_sent;
  v1::ReconstructResponse reconstructed;
  *reconstructed.mutable_images() = FloatTensor({1, 1, 1, 1}, {0.5f});
  *reconstructed.mutable_version() = Version("mnist", 3);
  EXPECT_CALL(*f.vae, Reconstruct(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&reconstruct_sent), SetArgPointee<2>(reconstructed), Return(grpc::Status::OK)));
  absl::StatusOr<ReconstructResult> rr =
      f.client->Reconstruct(ImageInput::FromTensor(torch::zeros({1, 1, 1, 1})), ReconstructOptions{}, labelled);
  ASSERT_TRUE(rr.ok()) << rr.status();
  ExpectSpec(reconstruct_sent.model_spec(), "mnist", 0, "stable");
  EXPECT_EQ(rr->version.model, "mnist");
}

TEST(ClientStubTest, TheDefaultSpecSendsNoModelSpecAtAll) {
  // What a client written before model versions sent: no model_spec field, so the server's default answers.
  Fixture f = MakeClient();
  v1::EncodeRequest encode_sent;
  v1::EncodeResponse encoded;
  *encoded.mutable_mu() = FloatTensor({1, 1}, {1});
  *encoded.mutable_sigma() = FloatTensor({1, 1}, {2});
  EXPECT_CALL(*f.vae, Encode(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&encode_sent), SetArgPointee<2>(encoded), Return(grpc::Status::OK)));
  v1::GetModelInfoRequest info_sent;
  EXPECT_CALL(*f.vae, GetModelInfo(_, _, _)).WillOnce(DoAll(SaveArg<1>(&info_sent), Return(grpc::Status::OK)));
  ASSERT_TRUE(f.client->Encode(ImageInput::FromTensor(torch::zeros({1, 1, 1, 1}))).ok());
  ASSERT_TRUE(f.client->GetModelInfo().ok());
  EXPECT_FALSE(encode_sent.has_model_spec());
  EXPECT_FALSE(info_sent.has_model_spec());
}

TEST(ClientStubTest, UnknownVersionIsNotFoundWithTheServersMessage) {
  Fixture f = MakeClient();
  const std::string message = "model \"mnist\" has no version 9; versions: 1, 2, 3";
  EXPECT_CALL(*f.vae, Decode(_, _, _)).Times(1).WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, message)));
  ExpectError(f.client->Decode(torch::zeros({1, 2}), ModelSpec::Pinned("mnist", 9)).status(),
              absl::StatusCode::kNotFound, message);
}

TEST(ClientStubTest, ListModelsMapsEveryField) {
  Fixture f = MakeClient();
  v1::ListModelsRequest sent;
  v1::ListModelsResponse response;
  response.set_default_model("mnist");
  v1::ModelEntry* m = response.add_models();
  m->set_name("mnist");
  m->set_preset("mnist");
  m->set_options_json("{\"latent_dim\":20}");
  m->set_parameter_count(652824);
  m->set_default_label("stable");
  (*m->mutable_labels())["latest"] = 2;
  (*m->mutable_labels())["stable"] = 1;
  m->set_training(true);
  v1::VersionInfo* v1_ = m->add_versions();
  v1_->set_version(1);
  v1_->set_epochs_trained(1);
  v1_->set_global_step(469);
  v1_->set_has_test_metrics(true);
  v1_->mutable_test()->set_loss(104.5);
  v1_->mutable_test()->set_recon(80.25);
  v1_->mutable_test()->set_kl(24.25);
  v1_->set_create_time_unix_ms(1764572400123);  // 2025-12-01 07:00:00.123 UTC
  v1_->add_labels("stable");
  v1_->set_loaded(false);
  v1_->set_size_bytes(7834567);
  v1::VersionInfo* v2 = m->add_versions();
  v2->set_version(2);
  v2->set_has_train_metrics(true);
  v2->mutable_train()->set_loss(99);
  v2->add_labels("latest");
  v2->set_loaded(true);
  response.add_models()->set_name("fashion");
  EXPECT_CALL(*f.vae, ListModels(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  absl::StatusOr<ModelList> list = f.client->ListModels("mnist");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(sent.name(), "mnist");
  EXPECT_EQ(list->default_model, "mnist");
  ASSERT_EQ(list->models.size(), 2u);
  const ModelEntry& e = list->models[0];
  EXPECT_EQ(e.name, "mnist");
  EXPECT_EQ(e.preset, "mnist");
  EXPECT_EQ(e.options_json, "{\"latent_dim\":20}");
  EXPECT_EQ(e.parameter_count, 652824);
  EXPECT_EQ(e.default_label, "stable");
  EXPECT_THAT(e.labels, ::testing::ElementsAre(::testing::Pair("latest", 2), ::testing::Pair("stable", 1)));
  EXPECT_TRUE(e.training);
  ASSERT_EQ(e.versions.size(), 2u);
  const VersionInfo& first = e.versions[0];
  EXPECT_EQ(first.version, 1);
  EXPECT_EQ(first.epochs_trained, 1);
  EXPECT_EQ(first.global_step, 469);
  EXPECT_FALSE(first.train.has_value());
  ASSERT_TRUE(first.test.has_value());
  EXPECT_EQ(first.test->loss, 104.5);
  EXPECT_EQ(first.test->recon, 80.25);
  EXPECT_EQ(first.test->kl, 24.25);
  EXPECT_EQ(absl::ToUnixMillis(first.created), 1764572400123);
  EXPECT_THAT(first.labels, ::testing::ElementsAre("stable"));
  EXPECT_FALSE(first.loaded);
  EXPECT_EQ(first.size_bytes, 7834567);
  const VersionInfo& second = e.versions[1];
  EXPECT_EQ(second.version, 2);
  ASSERT_TRUE(second.train.has_value());
  EXPECT_EQ(second.train->loss, 99);
  EXPECT_FALSE(second.test.has_value());
  EXPECT_TRUE(second.loaded);
  EXPECT_EQ(list->models[1].name, "fashion");
  EXPECT_TRUE(list->models[1].versions.empty());
}

TEST(ClientStubTest, ListModelsOfAMissingModelIsNotFound) {
  Fixture f = MakeClient();
  EXPECT_CALL(*f.vae, ListModels(_, _, _))
      .Times(1)
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "no model \"nope\"; models: mnist")));
  ExpectError(f.client->ListModels("nope").status(), absl::StatusCode::kNotFound, "no model \"nope\"; models: mnist");
}

TEST(ClientStubTest, SetLabelSendsEveryFieldAndReturnsThePreviousVersion) {
  Fixture f = MakeClient();
  v1::SetLabelRequest sent;
  v1::SetLabelResponse response;
  response.set_previous_version(4);
  EXPECT_CALL(*f.vae, SetLabel(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "model \"mnist\" has no version 99")));
  absl::StatusOr<SetLabelResult> r = f.client->SetLabel("mnist", "stable", 6, /*make_default=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.model(), "mnist");
  EXPECT_EQ(sent.label(), "stable");
  EXPECT_EQ(sent.version(), 6);
  EXPECT_TRUE(sent.make_default());
  EXPECT_EQ(r->previous_version, 4);
  ExpectError(f.client->SetLabel("mnist", "stable", 99).status(), absl::StatusCode::kNotFound,
              "model \"mnist\" has no version 99");
}

TEST(ClientStubTest, DeleteVersionSendsForceAndReturnsTheRemovedLabels) {
  Fixture f = MakeClient();
  v1::DeleteVersionRequest sent;
  v1::DeleteVersionResponse response;
  response.add_removed_labels("canary");
  response.add_removed_labels("stable");
  EXPECT_CALL(*f.vae, DeleteVersion(_, _, _))
      .WillOnce(Return(
          grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "version 3 of \"mnist\" is labelled canary, stable")))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  ExpectError(f.client->DeleteVersion("mnist", 3).status(), absl::StatusCode::kFailedPrecondition,
              "version 3 of \"mnist\" is labelled canary, stable");
  absl::StatusOr<DeleteVersionResult> r = f.client->DeleteVersion("mnist", 3, /*force=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.model(), "mnist");
  EXPECT_EQ(sent.version(), 3);
  EXPECT_TRUE(sent.force());
  EXPECT_THAT(r->removed_labels, ::testing::ElementsAre("canary", "stable"));
}

TEST(ClientStubTest, DeleteModelSendsForceAndReturnsTheCount) {
  Fixture f = MakeClient();
  v1::DeleteModelRequest sent;
  v1::DeleteModelResponse response;
  response.set_versions_deleted(5);
  EXPECT_CALL(*f.vae, DeleteModel(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "model \"fashion\" is training")));
  absl::StatusOr<DeleteModelResult> r = f.client->DeleteModel("old", /*force=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.model(), "old");
  EXPECT_TRUE(sent.force());
  EXPECT_EQ(r->versions_deleted, 5);
  ExpectError(f.client->DeleteModel("fashion").status(), absl::StatusCode::kFailedPrecondition,
              "model \"fashion\" is training");
}

TEST(ClientStubTest, TrainSendsModelAndPromoteLabelAndReportsLabelMoved) {
  Fixture f = MakeClient();
  auto* reader = new grpc::testing::MockClientReader<v1::TrainProgress>();
  v1::TrainProgress done = Progress(v1::TrainProgress::DONE, 3);
  done.set_label_moved(true);
  *done.mutable_version() = Version("fashion", 3);
  EXPECT_CALL(*reader, Read(_)).WillOnce(DoAll(SetArgPointee<0>(done), Return(true))).WillOnce(Return(false));
  EXPECT_CALL(*reader, Finish()).WillOnce(Return(grpc::Status::OK));
  v1::TrainRequest sent;
  EXPECT_CALL(*f.vae, TrainRaw(_, _)).WillOnce(Invoke([&](grpc::ClientContext*, const v1::TrainRequest& r) {
    sent = r;
    return reader;
  }));
  TrainOptions options;
  options.dataset = "fashion-mnist";
  options.model = "fashion";
  options.preset = "fashion";
  options.promote_label = "stable";
  absl::StatusOr<TrainResult> r = f.client->Train(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sent.model(), "fashion");
  EXPECT_EQ(sent.promote_label(), "stable");
  EXPECT_EQ(sent.preset(), "fashion");
  EXPECT_TRUE(r->last.label_moved);
  EXPECT_EQ(r->last.version.model, "fashion");
  EXPECT_EQ(r->last.version.version, 3);
}

}  // namespace
}  // namespace vae::client
