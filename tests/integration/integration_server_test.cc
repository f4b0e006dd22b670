// The real vae-server binary on a free 127.0.0.1 port, driven over gRPC with the generated vae.v1 stub. Numbers are
// checked against an in-process model loaded from the same checkpoint file. Each test starts its own server (CTest
// runs every test in its own process) on a fresh --model_dir, and trains on small MNIST subsets.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>
#include <vector>

#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/loss.h"
#include "model/runtime.h"
#include "server/snapshot.h"
#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"
#include "tests/server/grpc_probe.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::DataDir;
using ::vae::testing::ServerProcess;
using ::vae::testing::TempDir;

constexpr int kServing = 1;  // grpc.health.v1.HealthCheckResponse.SERVING
constexpr int kNotServing = 2;

// --- wire helpers (written against the proto, independently of the server's codec) ---------------------------------

v1::Tensor FloatProto(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  v1::Tensor p;
  for (int64_t d : c.sizes()) p.add_shape(d);
  p.set_dtype(v1::DATA_TYPE_FLOAT32);
  p.set_data(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return p;
}

// MNIST pixels are k / 255: sent as the bytes k.
v1::ImageBatch Uint8Batch(const at::Tensor& images) {
  const at::Tensor bytes = images.mul(255.0).round().to(at::kByte).contiguous();
  v1::ImageBatch batch;
  for (int64_t d : bytes.sizes()) batch.mutable_tensor()->add_shape(d);
  batch.mutable_tensor()->set_dtype(v1::DATA_TYPE_UINT8);
  batch.mutable_tensor()->set_data(static_cast<const char*>(bytes.data_ptr()), bytes.nbytes());
  return batch;
}

v1::ImageBatch PngBatch(const at::Tensor& images) {
  const at::Tensor bytes = images.mul(255.0).round().to(at::kByte).contiguous();
  v1::ImageBatch batch;
  for (int64_t i = 0; i < bytes.size(0); ++i) {
    const cv::Mat image(28, 28, CV_8UC1, bytes[i].data_ptr());
    std::vector<uchar> png;
    cv::imencode(".png", image, png);
    batch.add_encoded(std::string(png.begin(), png.end()));
  }
  return batch;
}

at::Tensor FromProto(const v1::Tensor& p) {
  EXPECT_EQ(p.dtype(), v1::DATA_TYPE_FLOAT32);
  std::vector<int64_t> shape(p.shape().begin(), p.shape().end());
  at::Tensor t = at::empty(shape, at::kFloat);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), p.data().size());
  std::memcpy(t.data_ptr(), p.data().data(), std::min<size_t>(t.nbytes(), p.data().size()));
  return t;
}

std::unique_ptr<grpc::ClientContext> Context(int seconds = 30) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return c;
}

struct TrainRun {
  std::vector<v1::TrainProgress> messages;
  grpc::Status status;
  std::vector<v1::TrainProgress> Of(v1::TrainProgress::Kind kind) const {
    std::vector<v1::TrainProgress> out;
    for (const auto& m : messages) {
      if (m.kind() == kind) out.push_back(m);
    }
    return out;
  }
};

TrainRun Train(v1::VaeService::Stub& stub, const v1::TrainRequest& request, int deadline_seconds = 120) {
  TrainRun run;
  auto context = Context(deadline_seconds);
  auto reader = stub.Train(context.get(), request);
  v1::TrainProgress progress;
  while (reader->Read(&progress)) run.messages.push_back(progress);
  run.status = reader->Finish();
  return run;
}

v1::TrainRequest MnistRequest(int epochs, int images, int batch_size, int log_every) {
  v1::TrainRequest r;
  r.set_dataset("mnist");
  r.set_epochs(epochs);
  r.set_max_train_images(images);
  r.set_batch_size(batch_size);
  r.set_log_every_steps(log_every);
  return r;
}

// The first `n` MNIST test images, [n, 1, 28, 28] in [0, 1].
at::Tensor TestImages(int64_t n) {
  auto split = LoadNamedDataset(DataDir(), "mnist", 1, n);
  EXPECT_TRUE(split.ok()) << split.status();
  return split.ok() ? split->test.images : at::zeros({n, 1, 28, 28});
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

class IntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureThreads(2); }
  void TearDown() override {
    // The server's log on failure, or always with VAE_SHOW_SERVER_LOG=1.
    if (HasFailure() || std::getenv("VAE_SHOW_SERVER_LOG") != nullptr) {
      for (const auto& s : stopped_) std::cerr << "earlier server's log:\n" << s->log();
      if (server_ != nullptr) std::cerr << "server log:\n" << server_->log();
    }
  }
  // A server on this test's model_dir; extra flags appended.
  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--model_dir=" + model_dir_.path(), "--data_dir=" + data_dir_, "--device=cpu",
                                     "--max_batch=64"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (server_ != nullptr) stopped_.push_back(std::move(server_));
    server_ = ServerProcess::Start(VAE_SERVER_BINARY, args);
    ASSERT_NE(server_, nullptr);
    stub_ = server_->NewStub();
  }
  v1::ModelInfo Info() {
    v1::ModelInfo info;
    auto context = Context();
    EXPECT_TRUE(stub_->GetModelInfo(context.get(), v1::GetModelInfoRequest(), &info).ok());
    return info;
  }
  v1::EncodeResponse Encode(const v1::ImageBatch& images) {
    v1::EncodeRequest request;
    *request.mutable_images() = images;
    v1::EncodeResponse response;
    auto context = Context();
    const grpc::Status s = stub_->Encode(context.get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  }
  // Waits until GetModelInfo says no job runs.
  bool WaitUntilIdle(absl::Duration limit = absl::Seconds(15)) {
    const absl::Time end = absl::Now() + limit;
    while (absl::Now() < end) {
      if (!Info().training()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  // A checkpoint of a seeded untrained "mnist" model, as the server's own training would name it.
  std::string WriteCheckpoint(uint64_t seed, int64_t epochs, int64_t steps) {
    Vae model = server::NewSeededVae(*Preset("mnist"), seed);
    TrainState state;
    state.epochs_done = epochs;
    state.global_step = steps;
    const std::string path = NextCheckpointPath(model_dir_.path());
    EXPECT_TRUE(SaveCheckpoint(path, model, nullptr, state).ok());
    return path;
  }

  TempDir model_dir_;
  std::string data_dir_ = DataDir();
  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<ServerProcess>> stopped_;  // servers this test restarted, kept for their logs
  std::unique_ptr<v1::VaeService::Stub> stub_;
};

TEST_F(IntegrationTest, ModelInfoHealthAndReflection) {
  StartServer({"--seed=5"});
  const v1::ModelInfo info = Info();
  EXPECT_EQ(info.preset(), "mnist");
  EXPECT_THAT(info.input_shape(), ::testing::ElementsAre(1, 28, 28));
  EXPECT_EQ(info.latent_dim(), 20);
  EXPECT_EQ(info.likelihood(), "bernoulli");
  EXPECT_EQ(info.architecture(), "mlp");
  EXPECT_EQ(info.parameter_count(), 652824);  // 784-400-20 and back, with biases
  EXPECT_EQ(info.version().model(), "default");
  EXPECT_EQ(info.version().version(), 0);  // fresh weights: version 0, never stored
  EXPECT_EQ(info.version().generation(), 0);
  EXPECT_EQ(info.version().global_step(), 0);
  EXPECT_EQ(info.checkpoint_path(), "");
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.max_batch(), 64);
  EXPECT_FALSE(info.training());
  EXPECT_FALSE(info.has_train_metrics());
  EXPECT_THAT(info.presets(), ::testing::IsSupersetOf({"mnist", "conv", "fashion"}));

  EXPECT_EQ(vae::testing::HealthStatus(server_->channel(), ""), kServing);
  EXPECT_EQ(vae::testing::HealthStatus(server_->channel(), "vae.v1.VaeService"), kServing);
  const std::string services = vae::testing::ReflectionListServices(server_->channel());
  EXPECT_THAT(services, HasSubstr("vae.v1.VaeService"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
  EXPECT_THAT(services, HasSubstr("grpc.reflection.v1alpha.ServerReflection"));

  // A fresh server serves NewSeededVae(preset, --seed): the same weights as in-process.
  const at::Tensor x = TestImages(4);
  auto [mu, logvar] = server::NewSeededVae(*Preset("mnist"), 5)->encode(x);
  EXPECT_LT(MaxAbsDiff(FromProto(Encode(Uint8Batch(x)).mu()), mu), 1e-5);
}

TEST_F(IntegrationTest, EveryRpcMatchesTheCheckpointLoadedInProcess) {
  const std::string path = WriteCheckpoint(21, 3, 70);
  StartServer();
  const v1::ModelInfo info = Info();
  EXPECT_EQ(info.checkpoint_path(), path);
  EXPECT_EQ(info.version().epochs_trained(), 3);
  EXPECT_EQ(info.version().global_step(), 70);

  auto checkpoint = LoadCheckpoint(path, at::kCPU);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Vae model = checkpoint->model;
  model->eval();
  c10::InferenceMode inference;
  const at::Tensor x = TestImages(8);
  auto [mu, logvar] = model->encode(x);

  // Encode: uint8 tensor and PNG files carry the same pixels, so the same answer; mu and sigma match in-process.
  const v1::EncodeResponse encoded = Encode(Uint8Batch(x));
  EXPECT_THAT(encoded.mu().shape(), ::testing::ElementsAre(8, 20));
  EXPECT_LT(MaxAbsDiff(FromProto(encoded.mu()), mu), 1e-5);
  EXPECT_LT(MaxAbsDiff(FromProto(encoded.sigma()), at::exp(0.5 * logvar)), 1e-5);
  EXPECT_EQ(encoded.version().version(), 0);
  EXPECT_EQ(Encode(PngBatch(x)).mu().data(), encoded.mu().data());

  // Decode mu: the Bernoulli mean image sigmoid(logits).
  v1::DecodeRequest decode;
  *decode.mutable_z() = encoded.mu();
  decode.set_format(v1::IMAGE_FORMAT_TENSOR_AND_PNG);
  v1::DecodeResponse decoded;
  ASSERT_TRUE(stub_->Decode(Context().get(), decode, &decoded).ok());
  const at::Tensor expected_images = at::sigmoid(model->decode(FromProto(encoded.mu())).param);
  EXPECT_LT(MaxAbsDiff(FromProto(decoded.images()), expected_images), 1e-5);
  ASSERT_EQ(decoded.png_size(), 8);
  const cv::Mat png =
      cv::imdecode(std::vector<uchar>(decoded.png(0).begin(), decoded.png(0).end()), cv::IMREAD_UNCHANGED);
  EXPECT_EQ(png.rows, 28);
  EXPECT_EQ(png.type(), CV_8UC1);

  // Sample: one seed, bitwise the same images; z is N(0, I) from a CPU generator with that seed.
  v1::SampleRequest sample;
  sample.set_count(4);
  sample.set_seed(123);
  v1::SampleResponse a, b;
  ASSERT_TRUE(stub_->Sample(Context().get(), sample, &a).ok());
  ASSERT_TRUE(stub_->Sample(Context().get(), sample, &b).ok());
  EXPECT_EQ(a.images().data(), b.images().data());
  EXPECT_EQ(a.seed(), 123u);
  EXPECT_TRUE(at::equal(FromProto(a.z()), at::randn({4, 20}, MakeGenerator(123))));
  EXPECT_LT(MaxAbsDiff(FromProto(a.images()), at::sigmoid(model->decode(FromProto(a.z())).param)), 1e-5);
  sample.set_seed(124);
  v1::SampleResponse c;
  ASSERT_TRUE(stub_->Sample(Context().get(), sample, &c).ok());
  EXPECT_NE(c.images().data(), a.images().data());

  // Reconstruct with z = mu: per-image -log p(x|z) and KL as computed in-process.
  v1::ReconstructRequest reconstruct;
  *reconstruct.mutable_images() = Uint8Batch(x);
  v1::ReconstructResponse reconstructed;
  ASSERT_TRUE(stub_->Reconstruct(Context().get(), reconstruct, &reconstructed).ok());
  const DecoderOutput out = model->decode(mu);
  const at::Tensor recon = ReconstructionNll(checkpoint->options, out, x);
  const at::Tensor kl = KlDivergence(mu, logvar);
  ASSERT_EQ(reconstructed.recon_nll_size(), 8);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(reconstructed.recon_nll(i), recon[i].item<float>(), 1e-3);
    EXPECT_NEAR(reconstructed.kl(i), kl[i].item<float>(), 1e-4);
  }
  EXPECT_LT(MaxAbsDiff(FromProto(reconstructed.images()), at::sigmoid(out.param)), 1e-5);
}

TEST_F(IntegrationTest, TrainingStreamsProgressAndImprovesReconstruction) {
  StartServer();
  const at::Tensor x = TestImages(500);
  v1::ReconstructRequest reconstruct;
  *reconstruct.mutable_images() = Uint8Batch(x.slice(0, 0, 64));
  auto mean_recon = [&](int64_t* version) {
    v1::ReconstructResponse r;
    EXPECT_TRUE(stub_->Reconstruct(Context().get(), reconstruct, &r).ok());
    *version = r.version().version();
    double sum = 0;
    for (float v : r.recon_nll()) sum += v;
    return sum / std::max(1, r.recon_nll_size());
  };
  int64_t version = -1;
  const double untrained = mean_recon(&version);
  EXPECT_EQ(version, 0);
  // 784 pixels at p ~ 0.5 cost about ln 2 each: an untrained Bernoulli decoder scores ~543 nats.
  EXPECT_NEAR(untrained, 784 * std::log(2.0), 40.0);

  // 5000 images in batches of 100: 50 steps per epoch, STEP at 20, 40, 60, 80, 100.
  const TrainRun run = Train(*stub_, MnistRequest(2, 5000, 100, 20));
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_GE(run.messages.size(), 2u);
  const v1::TrainProgress& started = run.messages.front();
  EXPECT_EQ(started.kind(), v1::TrainProgress::STARTED);
  EXPECT_FALSE(started.job_id().empty());
  EXPECT_EQ(started.dataset(), "mnist");
  EXPECT_EQ(started.epochs(), 2);
  EXPECT_EQ(started.steps_per_epoch(), 50);
  const auto steps = run.Of(v1::TrainProgress::STEP);
  ASSERT_EQ(steps.size(), 5u);
  EXPECT_EQ(steps[0].global_step(), 20);
  EXPECT_EQ(steps[2].epoch(), 2);
  EXPECT_EQ(steps[2].step_in_epoch(), 10);
  EXPECT_GT(steps[0].images_per_sec(), 0.0);
  const auto ends = run.Of(v1::TrainProgress::EPOCH_END);
  ASSERT_EQ(ends.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(ends[i].epoch(), i + 1);
    EXPECT_EQ(ends[i].global_step(), 50 * (i + 1));
    EXPECT_TRUE(ends[i].has_test_metrics());
    EXPECT_EQ(ends[i].version().version(), 1 + i);
    EXPECT_EQ(ends[i].version().epochs_trained(), i + 1);
    EXPECT_TRUE(std::filesystem::exists(ends[i].checkpoint_path()));
  }
  EXPECT_LT(ends[0].test().loss(), 250.0);
  EXPECT_LT(ends[1].test().loss(), ends[0].test().loss());
  const v1::TrainProgress& done = run.messages.back();
  EXPECT_EQ(done.kind(), v1::TrainProgress::DONE);
  EXPECT_FALSE(done.cancelled());
  EXPECT_EQ(done.global_step(), 100);
  EXPECT_EQ(done.version().version(), 2);

  const double trained = mean_recon(&version);
  EXPECT_EQ(version, 2);
  // Two short epochs take the reconstruction term far below the untrained ~543 nats.
  EXPECT_LT(trained, untrained - 250.0) << "untrained " << untrained << ", trained " << trained;

  const v1::ModelInfo info = Info();
  EXPECT_EQ(info.version().epochs_trained(), 2);
  EXPECT_EQ(info.version().global_step(), 100);
  EXPECT_EQ(info.checkpoint_path(), ends[1].checkpoint_path());
  ASSERT_TRUE(info.has_test_metrics());
  EXPECT_DOUBLE_EQ(info.last_test().loss(), ends[1].test().loss());
  EXPECT_FALSE(info.training());
  EXPECT_THAT(info.train_json(), HasSubstr("\"batch_size\":100"));
}

struct BadCall {
  std::string name;
  std::function<grpc::Status(v1::VaeService::Stub&)> call;
  grpc::StatusCode code;
  std::string message;
};

TEST_F(IntegrationTest, BadInputNeverCrashesOrChangesState) {
  // A data_dir of our own: one image folder, a symlink out of it, no MNIST.
  TempDir root;
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(root.path()) / "data" / "faces");
  fs::create_directories(fs::path(root.path()) / "outside");
  cv::imwrite((fs::path(root.path()) / "outside" / "a.png").string(), cv::Mat(28, 28, CV_8UC1, cv::Scalar(9)));
  fs::create_directory_symlink(fs::path(root.path()) / "outside", fs::path(root.path()) / "data" / "escape");
  data_dir_ = (fs::path(root.path()) / "data").string();
  StartServer({"--max_batch=8"});
  const v1::ModelInfo before = Info();

  auto encode = [](v1::ImageBatch images) {
    return [images](v1::VaeService::Stub& stub) {
      v1::EncodeRequest r;
      *r.mutable_images() = images;
      v1::EncodeResponse out;
      return stub.Encode(Context().get(), r, &out);
    };
  };
  auto tensor_batch = [](std::vector<int64_t> shape, v1::DataType dtype, size_t bytes, float fill = 0.5f) {
    v1::ImageBatch b;
    for (int64_t d : shape) b.mutable_tensor()->add_shape(d);
    b.mutable_tensor()->set_dtype(dtype);
    std::vector<float> values(bytes / 4, fill);
    b.mutable_tensor()->set_data(std::string(reinterpret_cast<const char*>(values.data()), bytes));
    return b;
  };
  auto decode = [](v1::Tensor z) {
    return [z](v1::VaeService::Stub& stub) {
      v1::DecodeRequest r;
      *r.mutable_z() = z;
      v1::DecodeResponse out;
      return stub.Decode(Context().get(), r, &out);
    };
  };
  auto sample = [](int count, float temperature) {
    return [=](v1::VaeService::Stub& stub) {
      v1::SampleRequest r;
      r.set_count(count);
      r.set_temperature(temperature);
      v1::SampleResponse out;
      return stub.Sample(Context().get(), r, &out);
    };
  };
  auto train = [](std::function<void(v1::TrainRequest&)> change) {
    return [change](v1::VaeService::Stub& stub) {
      v1::TrainRequest r = MnistRequest(1, 100, 10, 10);
      change(r);
      return Train(stub, r).status;
    };
  };
  v1::ImageBatch wrong_size_png = PngBatch(at::zeros({1, 1, 28, 28}));
  {
    std::vector<uchar> png;
    cv::imencode(".png", cv::Mat(30, 30, CV_8UC1, cv::Scalar(0)), png);
    wrong_size_png.set_encoded(0, std::string(png.begin(), png.end()));
  }
  v1::ImageBatch garbage;
  garbage.add_encoded("definitely not a png");
  v1::ImageBatch both = PngBatch(at::zeros({1, 1, 28, 28}));
  *both.mutable_tensor() = tensor_batch({1, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136).tensor();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  v1::Tensor z_u8;
  z_u8.add_shape(1);
  z_u8.add_shape(20);
  z_u8.set_dtype(v1::DATA_TYPE_UINT8);
  z_u8.set_data(std::string(20, '\0'));

  using C = grpc::StatusCode;
  const std::vector<BadCall> cases = {
      {"rank", encode(tensor_batch({1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136)), C::INVALID_ARGUMENT,
       "encode: images.shape [1,28,28] does not match model input [N,1,28,28]"},
      {"shape", encode(tensor_batch({1, 3, 28, 28}, v1::DATA_TYPE_FLOAT32, 9408)), C::INVALID_ARGUMENT,
       "images.shape [1,3,28,28] does not match model input [N,1,28,28]"},
      {"bytes", encode(tensor_batch({2, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136)), C::INVALID_ARGUMENT,
       "images.tensor.data is 3136 bytes; expected 6272"},
      {"dtype", encode(tensor_batch({1, 1, 28, 28}, v1::DATA_TYPE_UNSPECIFIED, 3136)), C::INVALID_ARGUMENT,
       "images.tensor.dtype DATA_TYPE_UNSPECIFIED is not supported"},
      {"NaN", encode(tensor_batch({1, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136, nan)), C::INVALID_ARGUMENT,
       "images holds a non-finite value (NaN or Inf)"},
      {"Inf", encode(tensor_batch({1, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136, inf)), C::INVALID_ARGUMENT,
       "non-finite value"},
      {"range", encode(tensor_batch({1, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 3136, 2.0f)), C::INVALID_ARGUMENT,
       "outside the expected range [0, 1]"},
      {"empty", encode(tensor_batch({0, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 0)), C::INVALID_ARGUMENT,
       "images is an empty batch (N = 0); expected 1 to 8"},
      {"nothing", encode(v1::ImageBatch()), C::INVALID_ARGUMENT, "images is an empty batch"},
      {"over max_batch", encode(tensor_batch({9, 1, 28, 28}, v1::DATA_TYPE_FLOAT32, 9 * 3136)), C::INVALID_ARGUMENT,
       "images holds 9 items, over the limit of 8 (--max_batch)"},
      {"not a png", encode(garbage), C::INVALID_ARGUMENT, "images.encoded[0] is not a PNG or JPEG file"},
      {"png size", encode(wrong_size_png), C::INVALID_ARGUMENT,
       "images.encoded[0] is 30x30 (WxH), the model expects 28x28"},
      {"tensor and png", encode(both), C::INVALID_ARGUMENT, "both images.tensor and images.encoded are set"},
      {"latent size", decode(FloatProto(at::zeros({2, 5}))), C::INVALID_ARGUMENT,
       "decode: z.shape [2,5] does not match the model's latent size [N,20]"},
      {"z NaN", decode(FloatProto(at::full({1, 20}, nan))), C::INVALID_ARGUMENT, "z holds a non-finite value"},
      {"z dtype", decode(z_u8), C::INVALID_ARGUMENT, "z.dtype Byte is not supported, expected float32"},
      {"z empty", decode(FloatProto(at::zeros({0, 20}))), C::INVALID_ARGUMENT, "z is an empty batch"},
      {"count 0", sample(0, 1.0f), C::INVALID_ARGUMENT, "sample: count is 0, expected 1 to 8"},
      {"count -1", sample(-1, 1.0f), C::INVALID_ARGUMENT, "sample: count is -1"},
      {"count over", sample(9, 1.0f), C::INVALID_ARGUMENT, "sample: count is 9, expected 1 to 8 (--max_batch)"},
      {"temperature", sample(1, -2.0f), C::INVALID_ARGUMENT, "sample: temperature is -2, expected a value in (0, 10]"},
      {"temperature NaN", sample(1, nan), C::INVALID_ARGUMENT, "sample: temperature is nan"},
      {"dataset ..", train([](auto& r) { r.set_dataset("../outside"); }), C::PERMISSION_DENIED, "contains '..'"},
      {"dataset absolute", train([](auto& r) { r.set_dataset("/etc"); }), C::PERMISSION_DENIED, "absolute path"},
      {"dataset symlink", train([](auto& r) { r.set_dataset("escape"); }), C::PERMISSION_DENIED, "(--data_dir)"},
      {"dataset missing", train([](auto& r) { r.set_dataset("celeba"); }), C::NOT_FOUND, "not found"},
      {"dataset not fetched", train([](auto& r) { r.set_dataset("mnist"); }), C::NOT_FOUND, "mnist"},
      {"dataset empty", train([](auto& r) { r.set_dataset(""); }), C::INVALID_ARGUMENT, "dataset is empty"},
      {"empty folder", train([](auto& r) { r.set_dataset("faces"); }), C::INVALID_ARGUMENT, "holds no image"},
      {"epochs", train([](auto& r) { r.set_dataset("faces"), r.set_epochs(-1); }), C::INVALID_ARGUMENT,
       "epochs is -1, expected 1 to 1000"},
      {"preset", train([](auto& r) { r.set_dataset("faces"), r.set_preset("nope"); }), C::INVALID_ARGUMENT,
       "unknown preset 'nope'"},
      {"resume", train([](auto& r) { r.set_dataset("faces"), r.set_resume(true); }), C::FAILED_PRECONDITION,
       "no valid checkpoint"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const grpc::Status s = c.call(*stub_);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
  }

  ASSERT_TRUE(server_->running());
  const v1::ModelInfo after = Info();
  EXPECT_EQ(after.version().version(), before.version().version());
  EXPECT_EQ(after.version().global_step(), 0);
  EXPECT_FALSE(after.training());
  EXPECT_TRUE(ListCheckpoints(model_dir_.file("default")).empty());
  EXPECT_EQ(vae::testing::HealthStatus(server_->channel(), ""), kServing);
  EXPECT_THAT(Encode(Uint8Batch(at::zeros({2, 1, 28, 28}))).mu().shape(), ::testing::ElementsAre(2, 20));
}

TEST_F(IntegrationTest, EncodeWhileTrainingOnlyEverSeesPublishedSnapshots) {
  // With dynamic batching on (the default, said explicitly here): concurrent calls may share a model call, and each
  // must still see exactly one published snapshot.
  StartServer({"--seed=3", "--enable_batching=true"});
  const at::Tensor x = TestImages(4);
  const v1::ImageBatch batch = Uint8Batch(x);

  std::mutex mu;
  std::map<int64_t, std::vector<std::string>> answers;  // version -> every mu seen, as raw bytes
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, failures{0};
  auto hammer = [&] {
    auto stub = server_->NewStub();
    while (!stop.load()) {
      v1::EncodeRequest request;
      *request.mutable_images() = batch;
      v1::EncodeResponse response;
      if (!stub->Encode(Context().get(), request, &response).ok()) {
        ++failures;
        continue;
      }
      ++calls;
      std::lock_guard<std::mutex> lock(mu);
      answers[response.version().version()].push_back(response.mu().data());
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back(hammer);
  while (calls.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // 3 epochs of 20 steps: versions 1, 2, 3 are published while the hammer runs (0 is the fresh model).
  const TrainRun run = Train(*stub_, MnistRequest(3, 1000, 50, 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  for (auto& t : threads) t.join();
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(failures.load(), 0);

  std::map<int64_t, std::string> checkpoint_of;
  for (const auto& end : run.Of(v1::TrainProgress::EPOCH_END)) {
    checkpoint_of[end.version().version()] = end.checkpoint_path();
  }
  ASSERT_EQ(checkpoint_of.size(), 3u);
  ASSERT_TRUE(answers.count(0));
  ASSERT_TRUE(answers.count(3));
  c10::InferenceMode inference;
  for (const auto& [version, seen] : answers) {
    SCOPED_TRACE("version " + std::to_string(version));
    // Every answer of one version is what that version's weights give in-process: no request saw a
    // half-updated model (one epoch moves mu by far more than 1e-5). Not bitwise: a request that shared a batched
    // model call with others went through BLAS with more rows, whose kernels may round the last bit differently
    // (server/batcher.h); under load that happens, on a quiet machine rarely.
    Vae model = version == 0 ? server::NewSeededVae(*Preset("mnist"), 3)
                             : LoadCheckpoint(checkpoint_of.at(version), at::kCPU).value().model;
    const at::Tensor expected = model->encode(x).first;
    for (const auto& bytes : seen) {
      v1::Tensor proto;
      proto.add_shape(4);
      proto.add_shape(20);
      proto.set_dtype(v1::DATA_TYPE_FLOAT32);
      proto.set_data(bytes);
      ASSERT_LT(MaxAbsDiff(FromProto(proto), expected), 1e-5);
    }
  }
  std::cerr << calls.load() << " Encode calls saw " << answers.size() << " versions\n";
}

TEST_F(IntegrationTest, OneJobAtATimeAndCancelOrDeadlineStopsIt) {
  StartServer();
  // 20000 images in batches of 128: 157 steps per epoch, so the job is still in its first epoch when cancelled.
  grpc::ClientContext context;
  auto reader = stub_->Train(&context, MnistRequest(1000, 20000, 128, 5));
  v1::TrainProgress started, step;
  ASSERT_TRUE(reader->Read(&started));
  ASSERT_EQ(started.kind(), v1::TrainProgress::STARTED);
  ASSERT_TRUE(reader->Read(&step));
  EXPECT_EQ(step.kind(), v1::TrainProgress::STEP);
  EXPECT_TRUE(Info().training());
  EXPECT_EQ(Info().training_job_id(), started.job_id());

  const TrainRun second = Train(*stub_, MnistRequest(1, 100, 10, 10));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(second.status.error_message(),
              HasSubstr("training job " + started.job_id() + " on dataset 'mnist' is already running"));

  context.TryCancel();
  v1::TrainProgress ignored;
  while (reader->Read(&ignored)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitUntilIdle());
  // The weights so far are checkpointed and published as the model's version 1 (no epoch finished).
  auto checkpoint = LoadNewestCheckpoint(model_dir_.file("default"), at::kCPU);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_GE(checkpoint->state.global_step, 5);
  EXPECT_LT(checkpoint->state.global_step, 157);
  EXPECT_EQ(Info().version().version(), 1);
  EXPECT_EQ(Info().checkpoint_path(), checkpoint->path);
  EXPECT_THAT(Encode(Uint8Batch(TestImages(2))).mu().shape(), ::testing::ElementsAre(2, 20));

  // A deadline stops a job the same way.
  const TrainRun timed = Train(*stub_, MnistRequest(1000, 20000, 128, 5), /*deadline_seconds=*/2);
  EXPECT_EQ(timed.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_FALSE(timed.messages.empty());
  EXPECT_EQ(timed.messages.front().kind(), v1::TrainProgress::STARTED);
  ASSERT_TRUE(WaitUntilIdle());
  auto after_deadline = LoadNewestCheckpoint(model_dir_.file("default"), at::kCPU);
  ASSERT_TRUE(after_deadline.ok());
  EXPECT_NE(after_deadline->path, checkpoint->path);

  // The slot is free: the next job runs to the end.
  const TrainRun next = Train(*stub_, MnistRequest(1, 500, 100, 100));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.messages.back().kind(), v1::TrainProgress::DONE);
}

TEST_F(IntegrationTest, RestartServesAndResumesTheCheckpoint) {
  StartServer();
  const TrainRun first = Train(*stub_, MnistRequest(1, 1000, 100, 100));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const std::string checkpoint = first.messages.back().checkpoint_path();
  const v1::ImageBatch batch = Uint8Batch(TestImages(3));
  const std::string mu_before = Encode(batch).mu().data();
  ASSERT_EQ(server_->Stop(SIGTERM, std::chrono::seconds(20)), 0) << server_->log();

  StartServer();
  const v1::ModelInfo info = Info();
  EXPECT_EQ(info.checkpoint_path(), checkpoint);
  EXPECT_EQ(info.version().version(), 1);
  EXPECT_EQ(info.version().epochs_trained(), 1);
  EXPECT_EQ(info.version().global_step(), 10);
  EXPECT_TRUE(info.has_test_metrics());
  EXPECT_EQ(Encode(batch).mu().data(), mu_before);  // bitwise: the same weights

  v1::TrainRequest resume = MnistRequest(1, 1000, 100, 100);
  resume.set_resume(true);
  const TrainRun second = Train(*stub_, resume);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.messages.front().epoch(), 2);
  EXPECT_EQ(second.messages.front().epochs(), 2);
  EXPECT_EQ(second.messages.front().global_step(), 10);
  EXPECT_EQ(second.messages.back().global_step(), 20);
  EXPECT_EQ(Info().version().epochs_trained(), 2);
}

TEST_F(IntegrationTest, SigtermDuringTrainingExitsZeroWithACheckpoint) {
  StartServer();
  grpc::ClientContext context;
  auto reader = stub_->Train(&context, MnistRequest(1000, 20000, 128, 5));
  v1::TrainProgress progress;
  ASSERT_TRUE(reader->Read(&progress));
  ASSERT_TRUE(reader->Read(&progress));
  ASSERT_EQ(progress.kind(), v1::TrainProgress::STEP);

  // A probe watching health sees SERVING, then NOT_SERVING once the drain begins.
  vae::testing::HealthWatcher watcher(server_->channel(), "vae.v1.VaeService");
  EXPECT_THAT(watcher.WaitFor(1, std::chrono::seconds(10)), ::testing::ElementsAre(kServing));

  const auto start = std::chrono::steady_clock::now();
  // Stop() waits for the exit; the Train stream is drained meanwhile by this thread.
  std::thread drain([&] {
    v1::TrainProgress p;
    while (reader->Read(&p)) progress = p;
  });
  const int exit_code = server_->Stop(SIGTERM, std::chrono::seconds(30));
  drain.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(exit_code, 0) << server_->log();
  EXPECT_LT(seconds, 15.0);
  EXPECT_THAT(watcher.WaitForEnd(std::chrono::seconds(10)), ::testing::ElementsAre(kServing, kNotServing));
  // The job said goodbye: DONE, cancelled, then UNAVAILABLE (resume after the restart).
  EXPECT_EQ(progress.kind(), v1::TrainProgress::DONE);
  EXPECT_TRUE(progress.cancelled());
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  ASSERT_GT(progress.global_step(), 0);

  StartServer();
  EXPECT_EQ(Info().version().global_step(), progress.global_step());
  EXPECT_EQ(Info().checkpoint_path(), progress.checkpoint_path());
}

TEST_F(IntegrationTest, ATornNewestCheckpointIsSkipped) {
  const std::string good = WriteCheckpoint(1, 1, 10);
  const std::string torn = WriteCheckpoint(2, 2, 20);
  std::filesystem::resize_file(torn, std::filesystem::file_size(torn) - 100);
  StartServer();
  // The flat layout of an older server was moved into the default model; the torn file never became a version.
  const std::string moved = model_dir_.file("default/" + std::filesystem::path(good).filename().string());
  EXPECT_EQ(Info().checkpoint_path(), moved);
  EXPECT_EQ(Info().version().global_step(), 10);
  EXPECT_EQ(Info().version().version(), 1);
  EXPECT_THAT(server_->log(), HasSubstr("model 'default': not serving"));
}

// `vae-server --help` is where an operator looks up the flags (the README says so): it must list them, not say
// "No flags matched" as absl does when the program's name does not match its main file's.
TEST(ServerBinaryTest, HelpListsTheFlags) {
  TempDir out;
  const std::string command = std::string(VAE_SERVER_BINARY) + " --help > " + out.file("help") + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << status;
  std::ifstream in(out.file("help"));
  const std::string help((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* flag : {"--model_dir", "--data_dir", "--port", "--enable_batching", "--max_queue", "--tls_cert",
                           "--tls_client_ca", "--shutdown_grace_s"}) {
    EXPECT_THAT(help, ::testing::HasSubstr(flag)) << help;
  }
  EXPECT_THAT(help, ::testing::Not(::testing::HasSubstr("No flags matched")));
}

}  // namespace
}  // namespace vae
