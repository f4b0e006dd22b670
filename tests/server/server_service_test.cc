// VaeServer in-process on a free localhost port, called through a real channel: proto mapping, status codes,
// health and reflection.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "server/proto_mapping.h"
#include "server/server.h"
#include "server/server_core.h"
#include "server/tensor_codec.h"
#include "server/vae_service_impl.h"
#include "tests/common/test_util.h"
#include "tests/server/grpc_probe.h"
#include "tests/server/in_process_server.h"
#include "tests/server/server_test_util.h"
#include "tests/server/zero_png.h"
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
    env_ = vae::testing::InProcessServer::Start([](ServerOptions& options) {
             options.max_batch = 512;
             options.max_message_mb = 1;
           }).release();
    ASSERT_NE(env_, nullptr);
    model_dir_ = &env_->model_dir;
    server_ = env_->server.get();
    channel_ = &env_->channel;
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
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

  static vae::testing::InProcessServer* env_;
  static TempDir* model_dir_;
  static VaeServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  std::unique_ptr<v1::VaeService::Stub> stub_;
};
vae::testing::InProcessServer* ServiceTest::env_ = nullptr;
TempDir* ServiceTest::model_dir_ = nullptr;
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
  // The fresh model: version 0 of the default model, named by "latest" until a version is trained.
  EXPECT_EQ(info.version().model(), "default");
  EXPECT_EQ(info.version().version(), 0);
  EXPECT_EQ(info.version().generation(), 0);
  EXPECT_THAT(info.labels(), ::testing::ElementsAre("latest"));
  EXPECT_EQ(info.default_label(), "latest");
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
  auto expected = server_->core().inference().Encode(*server_->core().Resolve({}).value(), x, absl::InfiniteFuture());
  ASSERT_TRUE(expected.ok());
  EXPECT_TRUE(at::equal(FromProto(response.mu()), expected->mu));
  EXPECT_TRUE(at::equal(FromProto(response.sigma()), expected->sigma));
  EXPECT_THAT(response.mu().shape(), ::testing::ElementsAre(3, 20));
  EXPECT_EQ(response.version().model(), "default");
  EXPECT_EQ(response.version().version(), 0);
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
}

TEST_F(ServiceTest, AnswersOverTheMessageLimitAreRefusedBeforeTheWorkNamingTheFlag) {
  // The limit is 1 MiB = 1048576 bytes. A sampled image is 784 float32 (3136 bytes) and its z 20 (80 bytes): 330 are
  // 1034880 bytes of images, under the limit, and 1061280 bytes with their z. (Without the check the server computed
  // them and gRPC failed the send with RESOURCE_EXHAUSTED, naming no limit.)
  v1::SampleRequest sample;
  sample.set_count(330);
  sample.set_seed(1);
  v1::SampleResponse sampled;
  grpc::ClientContext c1;
  const grpc::Status s = stub_->Sample(&c1, sample, &sampled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "sample: the response (330 x 3216 bytes) would be at least 1061280 bytes, over the message limit of "
            "1048576 bytes (1 MiB, the server's --max_message_mb); ask for fewer, or raise --max_message_mb (and the "
            "client's receive limit)");

  // Reconstruct: 340 uint8 images (266560 bytes in) would answer 340 x (3136 + 4 + 4) bytes.
  v1::ReconstructRequest reconstruct;
  const at::Tensor bytes = RandomImages(340, 2, *Preset("mnist")).mul(255).to(at::kByte);
  TensorToProto(bytes, reconstruct.mutable_images()->mutable_tensor());
  v1::ReconstructResponse reconstructed;
  grpc::ClientContext c2;
  const grpc::Status r = stub_->Reconstruct(&c2, reconstruct, &reconstructed);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.error_message(), HasSubstr("reconstruct: the response (340 x 3144 bytes) would be at least 1068960 "
                                           "bytes, over the message limit of 1048576 bytes"));
  // As PNGs only (a few hundred bytes each) the same request is answered.
  reconstruct.set_format(v1::IMAGE_FORMAT_PNG);
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->Reconstruct(&c3, reconstruct, &reconstructed).ok());
  EXPECT_EQ(reconstructed.png_size(), 340);

  // PNG sizes are known once encoded: 330 decoded images fit as a tensor, not with their PNGs as well, and the
  // serialised response is refused naming the same flag.
  v1::DecodeRequest decode;
  TensorToProto(at::randn({330, 20}, MakeGenerator(3)), decode.mutable_z());
  decode.set_format(v1::IMAGE_FORMAT_TENSOR_AND_PNG);
  v1::DecodeResponse decoded;
  grpc::ClientContext c4;
  const grpc::Status d = stub_->Decode(&c4, decode, &decoded);
  EXPECT_EQ(d.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(d.error_message(), HasSubstr("vae.v1.DecodeResponse is "));
  EXPECT_THAT(d.error_message(), HasSubstr("bytes, over the message limit of 1048576 bytes (1 MiB, the server's "
                                           "--max_message_mb)"));
  decode.set_format(v1::IMAGE_FORMAT_TENSOR);
  grpc::ClientContext c5;
  ASSERT_TRUE(stub_->Decode(&c5, decode, &decoded).ok());
  EXPECT_THAT(decoded.images().shape(), ::testing::ElementsAre(330, 1, 28, 28));
}

TEST_F(ServiceTest, UnparseableRequestsAreInvalidArgumentNamingTheType) {
  // Bytes no protobuf parser accepts: field 1 claims 5 bytes and 2 follow. grpc++'s generated handlers answered
  // UNIMPLEMENTED (unary methods) or INTERNAL (Train), with an empty message.
  const std::string garbage(
      "\x0a\x05"
      "ab",
      4);
  const std::vector<std::pair<std::string, std::string>> methods = {{"Encode", "EncodeRequest"},
                                                                    {"Decode", "DecodeRequest"},
                                                                    {"Sample", "SampleRequest"},
                                                                    {"Reconstruct", "ReconstructRequest"},
                                                                    {"GetModelInfo", "GetModelInfoRequest"},
                                                                    {"Train", "TrainRequest"}};
  for (const auto& [method, type] : methods) {
    SCOPED_TRACE(method);
    std::string response;
    const grpc::Status s = vae::testing::CallRaw(*channel_, "/vae.v1.VaeService/" + method, garbage, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "the request (4 bytes) could not be parsed as vae.v1." + type);
    EXPECT_TRUE(response.empty());
  }
  // The server keeps serving, through the same raw path.
  std::string info;
  ASSERT_TRUE(vae::testing::CallRaw(*channel_, "/vae.v1.VaeService/GetModelInfo", "", &info).ok());
  v1::ModelInfo parsed;
  ASSERT_TRUE(parsed.ParseFromString(info));
  EXPECT_EQ(parsed.latent_dim(), 20);
}

TEST_F(ServiceTest, EncodedImagesOverThePixelLimitOrInOtherFormatsAreRefused) {
  // The served model is 28 x 28 and max_image_pixels is 0: the limit is 1024 x 1024 = 1048576 pixels, inclusive.
  v1::EncodeRequest request;
  request.mutable_images()->set_resize(true);
  request.mutable_images()->add_encoded(vae::testing::ZeroPng(1024, 1024));
  v1::EncodeResponse response;
  grpc::ClientContext c1;
  ASSERT_TRUE(stub_->Encode(&c1, request, &response).ok());
  EXPECT_THAT(response.mu().shape(), ::testing::ElementsAre(1, 20));

  request.mutable_images()->set_encoded(0, vae::testing::ZeroPng(1025, 1024));
  grpc::ClientContext c2;
  const grpc::Status over = stub_->Encode(&c2, request, &response);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(over.error_message(),
            "images.encoded[0] declares 1025x1024 (WxH) = 1049600 pixels, over the limit of "
            "1048576 (--max_image_pixels); send a smaller image");

  // A BMP (which OpenCV would decode) through Reconstruct, the other method taking images.
  std::vector<uchar> bmp;
  ASSERT_TRUE(cv::imencode(".bmp", cv::Mat(28, 28, CV_8UC1, cv::Scalar(0)), bmp));
  v1::ReconstructRequest reconstruct;
  reconstruct.mutable_images()->add_encoded(std::string(bmp.begin(), bmp.end()));
  v1::ReconstructResponse reconstructed;
  grpc::ClientContext c3;
  const grpc::Status other = stub_->Reconstruct(&c3, reconstruct, &reconstructed);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(other.error_message(), HasSubstr("images.encoded[0] is not a PNG or JPEG file"));
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
  EXPECT_FALSE(ListCheckpoints(model_dir_->file("default")).empty());
}

TEST(TrainSpecFromProtoTest, ZerosBecomeTheDocumentedDefaults) {
  const TrainSpec spec = TrainSpecFromProto(v1::TrainRequest());
  EXPECT_EQ(spec.epochs, 1);
  EXPECT_EQ(spec.batch_size, 128);
  EXPECT_DOUBLE_EQ(spec.learning_rate, 1e-3);
  EXPECT_EQ(spec.seed, 1u);
  EXPECT_EQ(spec.log_every_steps, 100);
  EXPECT_EQ(spec.max_train_images, 0);
  EXPECT_EQ(spec.iw_samples, 1);
  EXPECT_DOUBLE_EQ(spec.adam_eps, 1e-8);
  EXPECT_TRUE(spec.lr_schedule.empty());
  v1::TrainRequest negative;
  negative.set_epochs(-2);
  EXPECT_EQ(TrainSpecFromProto(negative).epochs, -2);  // left for the core to reject
}

TEST(TrainSpecFromProtoTest, CarriesTheIwaeOptionsAndTheSchedule) {
  v1::TrainRequest r;
  r.set_iw_samples(5);
  r.set_adam_eps(1e-4);
  for (const auto& [epochs, lr] : {std::pair{1, 1e-3}, std::pair{3, 7.2e-4}}) {
    auto* stage = r.add_lr_schedule();
    stage->set_epochs(epochs);
    stage->set_learning_rate(lr);
  }
  const TrainSpec spec = TrainSpecFromProto(r);
  EXPECT_EQ(spec.iw_samples, 5);
  EXPECT_DOUBLE_EQ(spec.adam_eps, 1e-4);
  ASSERT_EQ(spec.lr_schedule.size(), 2u);
  EXPECT_EQ(spec.lr_schedule[1].epochs, 3);
  EXPECT_DOUBLE_EQ(spec.lr_schedule[1].learning_rate, 7.2e-4);
}

// Every field of the trainer's Progress and of the job reaches the wire, each from its own value.
TEST(TrainEventToProtoTest, CarriesTheTrainersProgressAndTheJobsFields) {
  TrainEvent e;
  e.job_id = "train-1";
  e.dataset = "mnist";
  e.progress.kind = Progress::Kind::kEpochEnd;
  e.progress.epoch = 2;
  e.progress.epochs = 3;
  e.progress.step_in_epoch = 4;
  e.progress.steps_per_epoch = 5;
  e.progress.global_step = 6;
  e.progress.train = Metrics{7, 8, 9};
  e.progress.has_test = true;
  e.progress.test = Metrics{10, 11, 12};
  e.progress.images_per_sec = 13;
  e.progress.elapsed_sec = 14;
  e.progress.cancelled = true;
  e.progress.checkpoint_path = "/ckpt";
  e.eta_sec = 15;
  e.version = ModelVersion{"m", 16, 17, 18};
  e.label_moved = true;
  v1::TrainProgress p;
  ToProto(e, &p);
  EXPECT_EQ(p.kind(), v1::TrainProgress::EPOCH_END);
  EXPECT_EQ(p.job_id(), "train-1");
  EXPECT_EQ(p.dataset(), "mnist");
  EXPECT_EQ(p.epoch(), 2);
  EXPECT_EQ(p.epochs(), 3);
  EXPECT_EQ(p.step_in_epoch(), 4);
  EXPECT_EQ(p.steps_per_epoch(), 5);
  EXPECT_EQ(p.global_step(), 6);
  EXPECT_EQ(p.train().loss(), 7);
  EXPECT_EQ(p.train().recon(), 8);
  EXPECT_EQ(p.train().kl(), 9);
  EXPECT_TRUE(p.has_test_metrics());
  EXPECT_EQ(p.test().loss(), 10);
  EXPECT_EQ(p.test().recon(), 11);
  EXPECT_EQ(p.test().kl(), 12);
  EXPECT_EQ(p.images_per_sec(), 13);
  EXPECT_EQ(p.elapsed_sec(), 14);
  EXPECT_TRUE(p.cancelled());
  EXPECT_EQ(p.checkpoint_path(), "/ckpt");
  EXPECT_EQ(p.eta_sec(), 15);
  EXPECT_EQ(p.version().generation(), 16);
  EXPECT_EQ(p.version().model(), "m");
  EXPECT_EQ(p.version().version(), 16);
  EXPECT_TRUE(p.label_moved());
  EXPECT_EQ(p.version().epochs_trained(), 17);
  EXPECT_EQ(p.version().global_step(), 18);

  // STARTED comes before any step: no train metrics (the trainer's are NaN then), no test metrics.
  TrainEvent started;
  started.progress.kind = Progress::Kind::kStarted;
  v1::TrainProgress q;
  ToProto(started, &q);
  EXPECT_EQ(q.kind(), v1::TrainProgress::STARTED);
  EXPECT_FALSE(q.has_train());
  EXPECT_FALSE(q.has_test_metrics());
  EXPECT_FALSE(q.has_test());
}

TEST(JoinHostPortTest, BracketsIpv6) {
  EXPECT_EQ(JoinHostPort("127.0.0.1", 5), "127.0.0.1:5");
  EXPECT_EQ(JoinHostPort("::1", 5), "[::1]:5");
  EXPECT_EQ(JoinHostPort("[::]", 5), "[::]:5");
}

}  // namespace
}  // namespace vae::server
