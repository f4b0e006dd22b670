// VaeServer in-process on a free localhost port, called through a real channel: proto mapping, status codes,
// health and reflection.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "server/server.h"
#include "server/server_core.h"
#include "server/tensor_codec.h"
#include "server/vae_service_impl.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/server/grpc_probe.h"
#include "tests/server/server_test_util.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::RandomImages;
using ::vae::testing::SyntheticDataDir;
using ::vae::testing::TempDir;

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new TempDir();
    data_dir_ = new SyntheticDataDir();
    ServerOptions options;
    options.port = 0;
    options.model_dir = model_dir_->path();
    options.data_dir = data_dir_->path();
    options.device = "cpu";
    options.threads = 2;
    options.max_batch = 512;
    options.max_message_mb = 1;
    auto server = VaeServer::Create(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    auto port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(*port), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    delete server_;
    delete channel_;
    delete model_dir_;
    delete data_dir_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = v1::VaeService::NewStub(*channel_);
  }
  static v1::ImageBatch Batch(const at::Tensor& images) {
    v1::ImageBatch batch;
    TensorToProto(images, batch.mutable_tensor());
    return batch;
  }
  static at::Tensor FromProto(const v1::Tensor& t) { return *TensorFromProto(t, "response"); }

  static TempDir* model_dir_;
  static SyntheticDataDir* data_dir_;
  static VaeServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  std::unique_ptr<v1::VaeService::Stub> stub_;
};
TempDir* ServiceTest::model_dir_ = nullptr;
SyntheticDataDir* ServiceTest::data_dir_ = nullptr;
VaeServer* ServiceTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServiceTest::channel_ = nullptr;

TEST_F(ServiceTest, HealthIsServingAndReflectionListsTheServices) {
  EXPECT_EQ(vae::testing::HealthStatus(*channel_, ""), 1);  // SERVING
  EXPECT_EQ(vae::testing::HealthStatus(*channel_, "vae.v1.VaeService"), 1);
  grpc::Status status;
  EXPECT_EQ(vae::testing::HealthStatus(*channel_, "no.such.Service", &status), -1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string services = vae::testing::ReflectionListServices(*channel_);
  EXPECT_THAT(services, HasSubstr("vae.v1.VaeService"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
}

TEST_F(ServiceTest, GetModelInfoDescribesTheServedModel) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.preset(), "mnist");
  EXPECT_THAT(info.input_shape(), ::testing::ElementsAre(1, 28, 28));
  EXPECT_EQ(info.latent_dim(), 20);
  EXPECT_EQ(info.likelihood(), "bernoulli");
  EXPECT_EQ(info.architecture(), "mlp");
  EXPECT_EQ(info.parameter_count(), 652824);
  EXPECT_EQ(info.version().generation(), 1);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.max_batch(), 512);
  EXPECT_FALSE(info.training());
  EXPECT_THAT(info.presets(), ::testing::Contains("conv64"));
  EXPECT_EQ(*OptionsFromJson(info.options_json()).value().hidden.begin(), 400);
}

TEST_F(ServiceTest, EncodeOverTheWireEqualsTheCore) {
  const at::Tensor x = RandomImages(3, 4, *Preset("mnist"));
  v1::EncodeRequest request;
  *request.mutable_images() = Batch(x);
  v1::EncodeResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Encode(&context, request, &response).ok());
  auto expected = server_->core().inference().Encode(*server_->core().Current(), x, absl::InfiniteFuture());
  ASSERT_TRUE(expected.ok());
  EXPECT_TRUE(at::equal(FromProto(response.mu()), expected->mu));
  EXPECT_TRUE(at::equal(FromProto(response.sigma()), expected->sigma));
  EXPECT_THAT(response.mu().shape(), ::testing::ElementsAre(3, 20));
  EXPECT_EQ(response.version().generation(), 1);
}

TEST_F(ServiceTest, ErrorsKeepTheirCodeAndMessage) {
  v1::EncodeRequest request;
  request.mutable_images()->mutable_tensor()->add_shape(1);
  request.mutable_images()->mutable_tensor()->add_shape(784);
  request.mutable_images()->mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
  request.mutable_images()->mutable_tensor()->set_data(std::string(100, '\0'));
  v1::EncodeResponse response;
  grpc::ClientContext context;
  const grpc::Status s = stub_->Encode(&context, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "images.tensor.data is 100 bytes; expected 3136 (shape [1,784] x 4 bytes of DATA_TYPE_FLOAT32)");

  v1::DecodeRequest decode;
  TensorToProto(at::zeros({2, 20}), decode.mutable_z());
  decode.set_format(static_cast<v1::ImageFormat>(9));
  v1::DecodeResponse decoded;
  grpc::ClientContext context2;
  const grpc::Status f = stub_->Decode(&context2, decode, &decoded);
  EXPECT_EQ(f.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(f.error_message(), HasSubstr("format: unknown value 9"));

  v1::TrainRequest train;
  train.set_dataset("../../etc");
  grpc::ClientContext context3;
  auto reader = stub_->Train(&context3, train);
  v1::TrainProgress progress;
  EXPECT_FALSE(reader->Read(&progress));
  const grpc::Status t = reader->Finish();
  EXPECT_EQ(t.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(t.error_message(), HasSubstr("contains '..'"));
}

TEST_F(ServiceTest, DecodeAndSampleReturnTheRequestedFormats) {
  v1::DecodeRequest request;
  TensorToProto(at::zeros({2, 20}), request.mutable_z());
  request.set_format(v1::IMAGE_FORMAT_PNG);
  v1::DecodeResponse png_only;
  grpc::ClientContext c1;
  ASSERT_TRUE(stub_->Decode(&c1, request, &png_only).ok());
  EXPECT_EQ(png_only.png_size(), 2);
  EXPECT_FALSE(png_only.has_images());
  EXPECT_EQ(png_only.png(0).substr(1, 3), "PNG");

  request.set_format(v1::IMAGE_FORMAT_TENSOR_AND_PNG);
  v1::DecodeResponse both;
  grpc::ClientContext c2;
  ASSERT_TRUE(stub_->Decode(&c2, request, &both).ok());
  EXPECT_EQ(both.png_size(), 2);
  EXPECT_THAT(both.images().shape(), ::testing::ElementsAre(2, 1, 28, 28));

  v1::SampleRequest sample;
  sample.set_count(3);
  sample.set_seed(5);
  v1::SampleResponse a, b;
  grpc::ClientContext c3, c4;
  ASSERT_TRUE(stub_->Sample(&c3, sample, &a).ok());
  ASSERT_TRUE(stub_->Sample(&c4, sample, &b).ok());
  EXPECT_EQ(a.images().data(), b.images().data());  // bitwise
  EXPECT_EQ(a.seed(), 5u);
  EXPECT_THAT(a.z().shape(), ::testing::ElementsAre(3, 20));

  sample.set_count(513);
  v1::SampleResponse over;
  grpc::ClientContext c5;
  const grpc::Status s = stub_->Sample(&c5, sample, &over);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "sample: count is 513, expected 1 to 512 (--max_batch)");

  // 400 images of 784 float32 values are 1.2 MiB: an answer the 1 MiB message limit could not carry.
  sample.set_count(400);
  grpc::ClientContext c6;
  const grpc::Status big = stub_->Sample(&c6, sample, &over);
  EXPECT_EQ(big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(big.error_message(), HasSubstr("400 images of 784 float32 values would be 1 MiB, over the message "
                                             "limit of 1 MiB (--max_message_mb)"));
}

TEST_F(ServiceTest, ReconstructReturnsPerImageTerms) {
  v1::ReconstructRequest request;
  *request.mutable_images() = Batch(RandomImages(4, 9, *Preset("mnist")));
  v1::ReconstructResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Reconstruct(&context, request, &response).ok());
  EXPECT_EQ(response.recon_nll_size(), 4);
  EXPECT_EQ(response.kl_size(), 4);
  EXPECT_THAT(response.images().shape(), ::testing::ElementsAre(4, 1, 28, 28));
  for (float kl : response.kl()) EXPECT_GE(kl, 0.0f);  // a KL divergence
}

TEST_F(ServiceTest, TrainStreamsAndAClientCancelStopsTheJob) {
  v1::TrainRequest request;
  request.set_dataset("mnist");
  request.set_epochs(50);
  request.set_max_train_images(1000);
  request.set_batch_size(100);
  request.set_log_every_steps(2);
  grpc::ClientContext context;
  auto reader = stub_->Train(&context, request);
  v1::TrainProgress progress;
  ASSERT_TRUE(reader->Read(&progress));
  EXPECT_EQ(progress.kind(), v1::TrainProgress::STARTED);
  EXPECT_EQ(progress.steps_per_epoch(), 10);
  EXPECT_EQ(progress.epochs(), 50);
  ASSERT_TRUE(reader->Read(&progress));
  EXPECT_EQ(progress.kind(), v1::TrainProgress::STEP);
  EXPECT_EQ(progress.global_step(), 2);
  EXPECT_TRUE(server_->core().training().Running() != nullptr);

  context.TryCancel();
  while (reader->Read(&progress)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The handler notices within its poll interval, the trainer before its next step.
  const absl::Time limit = absl::Now() + absl::Seconds(10);
  while (server_->core().training().Running() != nullptr && absl::Now() < limit) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(server_->core().training().Running(), nullptr);
  EXPECT_FALSE(ListCheckpoints(model_dir_->path()).empty());
}

TEST(TrainSpecFromProtoTest, ZerosBecomeTheDocumentedDefaults) {
  const TrainSpec spec = TrainSpecFromProto(v1::TrainRequest());
  EXPECT_EQ(spec.epochs, 1);
  EXPECT_EQ(spec.batch_size, 128);
  EXPECT_DOUBLE_EQ(spec.learning_rate, 1e-3);
  EXPECT_EQ(spec.seed, 1u);
  EXPECT_EQ(spec.log_every_steps, 100);
  EXPECT_EQ(spec.max_train_images, 0);
  v1::TrainRequest negative;
  negative.set_epochs(-2);
  EXPECT_EQ(TrainSpecFromProto(negative).epochs, -2);  // left for the core to reject
}

TEST(JoinHostPortTest, BracketsIpv6) {
  EXPECT_EQ(JoinHostPort("127.0.0.1", 5), "127.0.0.1:5");
  EXPECT_EQ(JoinHostPort("::1", 5), "[::1]:5");
  EXPECT_EQ(JoinHostPort("[::]", 5), "[::]:5");
}

}  // namespace
}  // namespace vae::server
