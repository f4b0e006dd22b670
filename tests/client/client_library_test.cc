// vae::Client against a real vae-server (one per test binary, trained briefly: see live_server.h).
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/images.h"
#include "model/dataset.h"
#include "tests/client/live_server.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Kind = client::TrainProgress::Kind;

// The first `n` MNIST test digits, float [n, 1, 28, 28] in [0, 1].
at::Tensor TestDigits(int64_t n) {
  auto data = LoadIdxDataset(DataDir() + "/mnist/t10k-images-idx3-ubyte", "", n);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? data->images : at::Tensor();
}

// 784 * ln 2: -log p(x|z) of a binary 28x28 image under Bernoulli(0.5) pixels, which is what an untrained decoder
// (logits near 0) predicts. Real digits are mostly exactly 0 or 1, so an untrained model scores close to this.
const double kUntrainedNll = 784 * std::log(2.0);

class ClientLibraryTest : public LiveServerTest {};

TEST(ClientOfflineTest, CreateRejectsAnEmptyTargetAndBadOptions) {
  auto empty = Client::Create("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("target"));
  client::ClientOptions options;
  options.max_message_mb = 0;
  auto bad = Client::Create("127.0.0.1:1", options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("max_message_mb"));
}

TEST_F(ClientLibraryTest, HealthIsServingForTheServerAndItsService) {
  auto whole = client().Health();
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, client::ServingStatus::kServing);
  auto service = client().Health("vae.v1.VaeService");
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_EQ(*service, client::ServingStatus::kServing);
  // The standard health service answers NOT_FOUND for a service it does not know.
  EXPECT_EQ(client().Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientLibraryTest, ModelInfoDescribesTheModelTrainedBySetUp) {
  auto info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->preset, "mnist");
  EXPECT_EQ(info->input_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(info->latent_dim, 20);
  EXPECT_EQ(info->likelihood, "bernoulli");
  EXPECT_EQ(info->architecture, "mlp");
  // 784-400-20 encoder (mu and log-variance heads) and 20-400-784 decoder.
  EXPECT_EQ(info->parameter_count, (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784));
  EXPECT_EQ(info->max_batch, kMaxBatch);
  // The fresh model is version 0 (generation 0); SetUp's one epoch published version 1.
  EXPECT_EQ(info->version.generation, 1);
  EXPECT_EQ(info->version.epochs_trained, 1);
  EXPECT_EQ(info->version.global_step, kTrainImages / 100);
  ASSERT_TRUE(info->last_test.has_value());
  EXPECT_LT(info->last_test->loss, kUntrainedNll);
  EXPECT_FALSE(info->training);
  EXPECT_THAT(info->checkpoint_path, StartsWith(model_dir_->path()));
  EXPECT_THAT(info->presets, ::testing::Contains("mnist"));
}

TEST_F(ClientLibraryTest, TrainStreamedStartedStepsEpochEndAndDone) {
  const auto& m = *train_messages_;
  ASSERT_GE(m.size(), 3u);
  EXPECT_EQ(m.front().kind, Kind::kStarted);
  EXPECT_EQ(m.front().steps_per_epoch, kTrainImages / 100);
  EXPECT_EQ(m.front().dataset, "mnist");
  EXPECT_EQ(m.back().kind, Kind::kDone);
  EXPECT_FALSE(m.back().cancelled);
  int steps = 0, epoch_ends = 0;
  for (const auto& p : m) {
    EXPECT_EQ(p.job_id, m.front().job_id);
    if (p.kind == Kind::kStep) ++steps;
    if (p.kind == Kind::kEpochEnd) {
      ++epoch_ends;
      EXPECT_EQ(p.epoch, 1);
      ASSERT_TRUE(p.test.has_value());
      EXPECT_GT(p.test->loss, 0);
      EXPECT_EQ(p.version.generation, 1);
      EXPECT_FALSE(p.checkpoint_path.empty());
    }
  }
  // 20 steps with a STEP message every 5 (the last one may coincide with the epoch's end).
  EXPECT_GE(steps, 3);
  EXPECT_LE(steps, 4);
  EXPECT_EQ(epoch_ends, 1);
}

TEST_F(ClientLibraryTest, EncodeGivesTheSameCodesForFloatUint8AndPngInputs) {
  const at::Tensor x = TestDigits(4);
  auto from_float = client().Encode(client::ImageInput::FromTensor(x));
  ASSERT_TRUE(from_float.ok()) << from_float.status();
  EXPECT_EQ(from_float->mu.sizes(), (std::vector<int64_t>{4, 20}));
  EXPECT_EQ(from_float->sigma.sizes(), (std::vector<int64_t>{4, 20}));
  EXPECT_EQ(from_float->mu.scalar_type(), at::kFloat);
  EXPECT_TRUE(from_float->sigma.gt(0).all().item<bool>());
  EXPECT_EQ(from_float->version.generation, 1);

  // idx digits are v / 255 for bytes v: sending the bytes themselves is the same input.
  const at::Tensor bytes = x.mul(255).round().to(at::kByte);
  auto from_bytes = client().Encode(client::ImageInput::FromTensor(bytes));
  ASSERT_TRUE(from_bytes.ok()) << from_bytes.status();
  EXPECT_TRUE(at::allclose(from_bytes->mu, from_float->mu, 0, 1e-6));

  // And so are 8-bit grayscale PNGs of them (lossless), decoded by the server.
  auto mats = client::TensorToMats(x);
  ASSERT_TRUE(mats.ok()) << mats.status();
  std::vector<std::string> pngs;
  for (const cv::Mat& m : *mats) pngs.push_back(*client::EncodePng(m));
  auto from_png = client().Encode(client::ImageInput::FromEncoded(pngs, /*resize=*/false));
  ASSERT_TRUE(from_png.ok()) << from_png.status();
  EXPECT_TRUE(at::allclose(from_png->mu, from_float->mu, 0, 1e-6));
  EXPECT_TRUE(at::allclose(from_png->sigma, from_float->sigma, 0, 1e-6));
}

TEST_F(ClientLibraryTest, ServerErrorsKeepTheirCodeAndMessage) {
  // Three channels for a one-channel model.
  auto wrong = client().Encode(client::ImageInput::FromTensor(at::zeros({1, 3, 28, 28})));
  ASSERT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);

  // The same request straight through the generated stub: the library must hand over exactly this message.
  auto channel = server_->channel();
  auto stub = v1::VaeService::NewStub(channel);
  grpc::ClientContext context;
  v1::EncodeRequest request;
  auto* tensor = request.mutable_images()->mutable_tensor();
  for (int64_t d : {1, 3, 28, 28}) tensor->add_shape(d);
  tensor->set_dtype(v1::DATA_TYPE_FLOAT32);
  tensor->set_data(std::string(3 * 28 * 28 * 4, '\0'));
  v1::EncodeResponse response;
  const grpc::Status raw = stub->Encode(&context, request, &response);
  EXPECT_EQ(raw.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(std::string(wrong.status().message()), raw.error_message());
  EXPECT_FALSE(raw.error_message().empty());

  auto too_many = client().Sample({/*count=*/kMaxBatch + 1, /*seed=*/1, /*temperature=*/1.0f});
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr(std::to_string(kMaxBatch)));
}

TEST_F(ClientLibraryTest, SampleIsBitwiseRepeatableForASeed) {
  auto a = client().Sample({/*count=*/6, /*seed=*/42, /*temperature=*/1.0f});
  auto b = client().Sample({/*count=*/6, /*seed=*/42, /*temperature=*/1.0f});
  auto c = client().Sample({/*count=*/6, /*seed=*/43, /*temperature=*/1.0f});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
  EXPECT_EQ(a->images.sizes(), (std::vector<int64_t>{6, 1, 28, 28}));
  EXPECT_EQ(a->z.sizes(), (std::vector<int64_t>{6, 20}));
  EXPECT_EQ(a->seed, 42u);
  EXPECT_TRUE(at::equal(a->images, b->images));
  EXPECT_TRUE(at::equal(a->z, b->z));
  EXPECT_FALSE(at::equal(a->z, c->z));
  EXPECT_GE(a->images.min().item<float>(), 0.0f);
  EXPECT_LE(a->images.max().item<float>(), 1.0f);

  // Decoding the returned codes gives the sampled images back (same model, same decoder mean).
  auto decoded = client().Decode(a->z);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(at::allclose(decoded->images, a->images, 0, 1e-6));

  // Without a seed the server picks one and reports it; asking again with it repeats the draw.
  auto random = client().Sample({/*count=*/2, std::nullopt, /*temperature=*/1.0f});
  ASSERT_TRUE(random.ok()) << random.status();
  auto again = client().Sample({/*count=*/2, random->seed, /*temperature=*/1.0f});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(at::equal(random->images, again->images));
}

TEST_F(ClientLibraryTest, ReconstructionsOfTheTrainedModelBeatTheUntrainedBaseline) {
  const at::Tensor x = TestDigits(16);
  auto r = client().Reconstruct(client::ImageInput::FromTensor(x));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->images.sizes(), x.sizes());
  ASSERT_EQ(r->recon_nll.size(), 16u);
  ASSERT_EQ(r->kl.size(), 16u);
  double nll = 0;
  for (float v : r->recon_nll) nll += v / 16;
  // One short epoch already takes the mean well below 784 ln 2 = 543.4 nats (it reaches ~200).
  EXPECT_LT(nll, 0.6 * kUntrainedNll);
  for (float v : r->kl) EXPECT_GE(v, 0.0f);  // a KL divergence is never negative

  // sample_z: a seeded draw from q(z|x), repeatable, and different from decoding the mean.
  client::ReconstructOptions sampled{/*sample_z=*/true, /*seed=*/7};
  auto s1 = client().Reconstruct(client::ImageInput::FromTensor(x), sampled);
  auto s2 = client().Reconstruct(client::ImageInput::FromTensor(x), sampled);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_TRUE(at::equal(s1->images, s2->images));
  EXPECT_FALSE(at::equal(s1->images, r->images));
}

TEST_F(ClientLibraryTest, ConcurrentCallsShareOneClient) {
  const at::Tensor x = TestDigits(2);
  auto expected = client().Encode(client::ImageInput::FromTensor(x));
  ASSERT_TRUE(expected.ok()) << expected.status();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto got = client().Encode(client::ImageInput::FromTensor(x));
        if (!got.ok() || !at::allclose(got->mu, expected->mu, 0, 1e-6)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ClientLibraryTest, TrainCancelledFromAnotherThreadStopsAndKeepsServing) {
  const auto before = client().GetModelInfo();
  ASSERT_TRUE(before.ok()) << before.status();

  // The whole MNIST training set for 5 epochs: far longer than this test waits. A model of its own: the steps a
  // cancelled job did become a version of the model it trains, and the default model must not change for the other
  // tests.
  client::TrainOptions options;
  options.model = "cancelled";
  options.dataset = "mnist";
  options.epochs = 5;
  options.log_every_steps = 2;
  client::TrainCancellation cancellation;
  absl::Notification stepping;
  absl::StatusOr<client::TrainResult> result;
  std::thread trainer([&] {
    result = client().Train(
        options,
        [&](const client::TrainProgress& p) {
          if (p.kind == Kind::kStep && !stepping.HasBeenNotified()) stepping.Notify();
        },
        &cancellation);
  });
  const bool stepped = stepping.WaitForNotificationWithTimeout(absl::Seconds(60));
  cancellation.Cancel();
  trainer.join();
  ASSERT_TRUE(stepped) << "no STEP message within 60 s";
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->cancelled);
  EXPECT_TRUE(cancellation.cancelled());
  EXPECT_EQ(result->last.kind, Kind::kStep);  // the stream ends without DONE when the client cancels
  EXPECT_EQ(result->last.epoch, 1);

  // The server stops the job before its next step and publishes the steps done as the model's first version; the
  // default model is untouched and keeps serving.
  bool stopped = false;
  for (int i = 0; i < 100 && !stopped; ++i) {
    auto info = client().GetModelInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    stopped = !info->training;
    if (!stopped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(stopped) << "the job still runs 10 s after the cancel";
  auto after = client().GetModelInfo();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->version.model, before->version.model);
  EXPECT_EQ(after->version.version, before->version.version);
  auto cancelled = client().GetModelInfo(client::ModelSpec::Labelled("cancelled", "latest"));
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->version.version, 1);
  EXPECT_EQ(cancelled->version.epochs_trained, 0);
  EXPECT_GE(cancelled->version.global_step, 2);  // a STEP message came after log_every_steps = 2 steps
  EXPECT_THAT(cancelled->checkpoint_path, StartsWith(model_dir_->path() + "/cancelled/ckpt-"));
  EXPECT_TRUE(std::filesystem::exists(cancelled->checkpoint_path));
  EXPECT_EQ(*client().Health(), client::ServingStatus::kServing);
}

TEST_F(ClientLibraryTest, CancelBeforeTrainReturnsWithoutStartingAJob) {
  client::TrainCancellation cancellation;
  cancellation.Cancel();
  client::TrainOptions options;
  options.dataset = "mnist";
  int messages = 0;
  auto result = client().Train(
      options, [&](const client::TrainProgress&) { ++messages; }, &cancellation);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->cancelled);
  EXPECT_EQ(messages, 0);
  EXPECT_EQ(result->last.kind, Kind::kUnspecified);
  EXPECT_FALSE(client().GetModelInfo()->training);
}

TEST_F(ClientLibraryTest, TrainErrorsComeFromTheServer) {
  client::TrainOptions missing;
  missing.dataset = "no-such-dataset-folder";
  EXPECT_EQ(client().Train(missing).status().code(), absl::StatusCode::kNotFound);
  client::TrainOptions outside;
  outside.dataset = "../etc";
  EXPECT_EQ(client().Train(outside).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(ClientOfflineTest, UnreachableServerIsUnavailableWithAOneLineMessage) {
  const int port = ClosedPort();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto closed = Client::Create(target);
  ASSERT_TRUE(closed.ok());
  auto health = (*closed)->Health();
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(health.status().message(), "cannot reach vae-server at " + target + ": connection refused");
  auto info = (*closed)->GetModelInfo();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(info.status().message(), "cannot reach vae-server at " + target + ": connection refused");
  client::TrainOptions options;
  options.dataset = "mnist";
  auto train = (*closed)->Train(options);
  EXPECT_EQ(train.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(train.status().message(), "cannot reach vae-server at " + target + ": connection refused");
}

TEST(ClientOfflineTest, ServerThatNeverAnswersTimesOutWhileConnecting) {
  // A socket that listens but never accepts: TCP connects (the kernel's backlog), the HTTP/2 handshake never ends.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  client::ClientOptions options;
  options.timeout = absl::Milliseconds(500);
  auto silent = Client::Create(target, options);
  ASSERT_TRUE(silent.ok());
  const auto start = std::chrono::steady_clock::now();
  auto health = (*silent)->Health();
  const auto waited = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_EQ(health.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(health.status().message(), "cannot reach vae-server at " + target + ": timed out while connecting");
  EXPECT_LT(waited, std::chrono::seconds(5));
}

}  // namespace
}  // namespace vae::testing
