// The client's pure pieces, without a server: status conversion, latent-code files, image grids, progress lines.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/support/status.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/cli/progress.h"
#include "client/grpc_status.h"
#include "client/images.h"
#include "client/latent_io.h"
#include "client/proto_mapping.h"
#include "common/file_util.h"
#include "tests/common/test_util.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;

// --- grpc::Status -> absl::Status ----------------------------------------------------------------------------------

TEST(FromGrpcStatusTest, KeepsTheServersCodeAndMessage) {
  const grpc::Status s(grpc::StatusCode::INVALID_ARGUMENT, "encode: images.shape [3,28,28] does not match [1,28,28]");
  const absl::Status converted = client::FromGrpcStatus(s, "127.0.0.1:5", /*channel_ready=*/true);
  EXPECT_EQ(converted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(converted.message(), "encode: images.shape [3,28,28] does not match [1,28,28]");
  EXPECT_TRUE(client::FromGrpcStatus(grpc::Status::OK, "x:1", false).ok());
  // Every canonical code maps to the same number.
  for (int code = 1; code <= 16; ++code) {
    EXPECT_EQ(static_cast<int>(
                  client::FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "m"), "x:1", true).code()),
              code);
  }
}

TEST(FromGrpcStatusTest, TransportFailuresBecomeOneLineNamingTheAddress) {
  // gRPC 1.51's message for a refused connection.
  const grpc::Status refused(grpc::StatusCode::UNAVAILABLE,
                             "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to "
                             "connect to remote host: Connection refused");
  EXPECT_EQ(client::FromGrpcStatus(refused, "127.0.0.1:1", false),
            absl::UnavailableError("cannot reach vae-server at 127.0.0.1:1: connection refused"));
  // Its words are recognised even when the channel state says ready (it may have flipped since).
  EXPECT_EQ(client::FromGrpcStatus(refused, "127.0.0.1:1", true).message(),
            "cannot reach vae-server at 127.0.0.1:1: connection refused");
  const grpc::Status dns(grpc::StatusCode::UNAVAILABLE,
                         "DNS resolution failed for nosuchhost.invalid:50051: C-ares status is not ARES_SUCCESS");
  EXPECT_EQ(client::FromGrpcStatus(dns, "nosuchhost.invalid:50051", false).message(),
            "cannot reach vae-server at nosuchhost.invalid:50051: cannot resolve the host name");
  const grpc::Status deadline(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
  EXPECT_EQ(client::FromGrpcStatus(deadline, "10.0.0.1:50051", false),
            absl::DeadlineExceededError("cannot reach vae-server at 10.0.0.1:50051: timed out while connecting"));
}

TEST(FromGrpcStatusTest, ServerSideUnavailableAndDeadlineKeepTheirMessage) {
  // The call reached the server: its UNAVAILABLE (shutting down) and a slow call's deadline are the server's words.
  const grpc::Status draining(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
  EXPECT_EQ(client::FromGrpcStatus(draining, "h:1", true), absl::UnavailableError("server is shutting down"));
  // Also once the channel has left READY after the server's GOAWAY.
  EXPECT_EQ(client::FromGrpcStatus(draining, "h:1", false), absl::UnavailableError("server is shutting down"));
  const grpc::Status slow(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
  EXPECT_EQ(client::FromGrpcStatus(slow, "h:1", true), absl::DeadlineExceededError("Deadline Exceeded"));
}

// --- latent-code files -------------------------------------------------------------------------------------------

client::Encoding SomeEncoding() {
  client::Encoding e;
  // Floats that need all 9 significant digits, tiny and huge magnitudes, and a negative zero.
  e.mu = {2, 3, {0.1f, -1.0f / 3.0f, 1e-30f, 3.4028235e38f, -0.0f, 123456.789f}};
  e.sigma = {2, 3, {1.0f, 0.5f, std::nextafter(1.0f, 2.0f), 2e-7f, 7.0f, 0.333333343f}};
  e.inputs = {"a.png", "odd, \"name\".png"};
  e.version = {3, 2, 938, "mnist", 3};
  return e;
}

class LatentIoTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(LatentIoTest, EveryFormatReadsBackBitwise) {
  const client::Encoding e = SomeEncoding();
  for (const char* name : {"z.json", "z.csv", "z.npy", "Z.JSON"}) {
    const std::string path = dir_.file(name);
    ASSERT_TRUE(client::WriteEncoding(path, e).ok()) << name;
    auto mu = client::ReadCodes(path);
    ASSERT_TRUE(mu.ok()) << name << ": " << mu.status();
    EXPECT_EQ(mu->rows, 2) << name;
    EXPECT_EQ(mu->cols, 3) << name;
    ASSERT_EQ(mu->values.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
      // Bitwise, so that -0.0 and 0.0 differ.
      EXPECT_EQ(std::signbit(mu->values[i]), std::signbit(e.mu.values[i])) << name << " " << i;
      EXPECT_EQ(mu->values[i], e.mu.values[i]) << name << " " << i;
    }
  }
  auto sigma = client::ReadCodes(dir_.file("z_sigma.npy"));
  ASSERT_TRUE(sigma.ok()) << sigma.status();
  EXPECT_EQ(sigma->values, e.sigma.values);
}

TEST_F(LatentIoTest, JsonAndCsvLayouts) {
  const client::Encoding e = SomeEncoding();
  ASSERT_TRUE(client::WriteEncoding(dir_.file("z.json"), e).ok());
  ASSERT_TRUE(client::WriteEncoding(dir_.file("z.csv"), e).ok());
  auto json = ReadFileToString(dir_.file("z.json"));
  ASSERT_TRUE(json.ok());
  // Each float in the fewest digits that read back as the same float.
  EXPECT_THAT(*json, HasSubstr("\"mu\":[[0.1,-0.33333334,1e-30],[3.4028235e+38,-0.0,123456.79]]"));
  EXPECT_THAT(*json, HasSubstr("\"sigma\":[[1.0,0.5,1.0000001],[2e-07,7.0,0.33333334]]"));
  EXPECT_THAT(*json, HasSubstr("\"latent_dim\":3"));
  EXPECT_THAT(*json, HasSubstr("\"version\":{\"epochs_trained\":2,\"generation\":3,\"global_step\":938,"
                               "\"model\":\"mnist\",\"version\":3}"));
  EXPECT_THAT(*json, HasSubstr("\"inputs\":[\"a.png\",\"odd, \\\"name\\\".png\"]"));
  auto csv = ReadFileToString(dir_.file("z.csv"));
  ASSERT_TRUE(csv.ok());
  EXPECT_EQ(*csv,
            "input,mu_0,mu_1,mu_2,sigma_0,sigma_1,sigma_2,model,version\n"
            "a.png,0.1,-0.33333334,1e-30,1,0.5,1.0000001,mnist,3\n"
            "\"odd, \"\"name\"\".png\",3.4028235e+38,-0,123456.79,2e-07,7,0.33333334,mnist,3\n");
}

// Codes are stored with the model version that computed them, in every format, and read back for decode.
TEST_F(LatentIoTest, EveryFormatStoresTheModelVersion) {
  const client::Encoding e = SomeEncoding();
  for (const char* name : {"z.json", "z.csv", "z.npy"}) {
    const std::string path = dir_.file(name);
    ASSERT_TRUE(client::WriteEncoding(path, e).ok()) << name;
    auto version = client::ReadCodesVersion(path);
    ASSERT_TRUE(version.ok()) << name << ": " << version.status();
    ASSERT_TRUE(version->has_value()) << name;
    EXPECT_EQ((*version)->model, "mnist") << name;
    EXPECT_EQ((*version)->version, 3) << name;
  }
  // The .npy sidecar also keeps what the .npy cannot: the inputs.
  auto sidecar = ReadFileToString(dir_.file("z_version.json"));
  ASSERT_TRUE(sidecar.ok());
  EXPECT_THAT(*sidecar, HasSubstr("\"model\":\"mnist\",\"version\":3}"));
  EXPECT_THAT(*sidecar, HasSubstr("\"inputs\":[\"a.png\",\"odd, \\\"name\\\".png\"]"));
  EXPECT_EQ(client::VersionJsonPath("out/z.npy"), "out/z_version.json");
}

TEST_F(LatentIoTest, CodesWithoutAVersionReadAsUnversioned) {
  // Hand-written codes, an .npy without its sidecar, and what vae-client wrote before model versions.
  std::ofstream(dir_.file("z.json")) << R"({"z": [[0.5, 1.5]]})";
  std::ofstream(dir_.file("old.json"))
      << R"({"mu": [[0.5]], "version": {"generation": 3, "epochs_trained": 2, "global_step": 938}})";
  std::ofstream(dir_.file("z.csv")) << "z_0,z_1\n0.5,1.5\n";
  ASSERT_TRUE(WriteFileAtomically(dir_.file("z.npy"), client::NpyBytes({1, 2, {0.5f, 1.5f}})).ok());
  for (const char* name : {"z.json", "old.json", "z.csv", "z.npy"}) {
    auto version = client::ReadCodesVersion(dir_.file(name));
    ASSERT_TRUE(version.ok()) << name << ": " << version.status();
    EXPECT_FALSE(version->has_value()) << name;
  }
}

TEST_F(LatentIoTest, CsvRowsOfDifferentVersionsAreRefused) {
  std::ofstream(dir_.file("mixed.csv")) << "input,mu_0,sigma_0,model,version\na,1,1,mnist,3\nb,2,1,mnist,4\n";
  auto version = client::ReadCodesVersion(dir_.file("mixed.csv"));
  ASSERT_FALSE(version.ok());
  EXPECT_EQ(version.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(version.status().message(),
            dir_.file("mixed.csv") +
                ": line 3 holds a code of mnist version 4, an earlier one of mnist version 3: "
                "codes of different versions cannot be decoded together");
  std::ofstream(dir_.file("bad.json")) << R"({"mu": [[0.5]], "version": {"model": "mnist", "version": "three"}})";
  version = client::ReadCodesVersion(dir_.file("bad.json"));
  ASSERT_FALSE(version.ok());
  EXPECT_EQ(version.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(version.status().message()), HasSubstr("\"version\" is"));
}

TEST_F(LatentIoTest, NpyHeaderIsVersionOneAlignedTo64Bytes) {
  const client::Matrix m{2, 3, {1, 2, 3, 4, 5, 6}};
  const std::string bytes = client::NpyBytes(m);
  ASSERT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_len + 6 * 4);
  EXPECT_EQ(bytes.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  auto back = client::ParseNpy(bytes, "m.npy");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, m.values);
}

TEST_F(LatentIoTest, ReadCodesAcceptsZMuAndBareArrays) {
  std::ofstream(dir_.file("z.json")) << R"({"z": [[1, 2], [3, 4]], "mu": [[9, 9]]})";
  std::ofstream(dir_.file("mu.json")) << R"({"mu": [[5, 6.5]]})";
  std::ofstream(dir_.file("bare.json")) << R"([[1.5, 2.5, 3.5]])";
  std::ofstream(dir_.file("flat.json")) << R"([7, 8])";
  std::ofstream(dir_.file("z.csv")) << "z_0,z_1,label\n1,2,x\n3,4,y\n";
  std::ofstream(dir_.file("plain.csv")) << "1, 2\r\n3, 4\r\n";
  const std::vector<std::pair<std::string, std::vector<float>>> expected = {
      {"z.json", {1, 2, 3, 4}}, {"mu.json", {5, 6.5f}},  {"bare.json", {1.5f, 2.5f, 3.5f}},
      {"flat.json", {7, 8}},    {"z.csv", {1, 2, 3, 4}}, {"plain.csv", {1, 2, 3, 4}}};
  for (const auto& [name, values] : expected) {
    auto m = client::ReadCodes(dir_.file(name));
    ASSERT_TRUE(m.ok()) << name << ": " << m.status();
    EXPECT_EQ(m->values, values) << name;
    EXPECT_EQ(m->rows * m->cols, static_cast<int64_t>(values.size())) << name;
  }
}

TEST_F(LatentIoTest, ReadCodesRejectsBadFilesNamingThem) {
  std::ofstream(dir_.file("ragged.json")) << R"({"z": [[1, 2], [3]]})";
  std::ofstream(dir_.file("text.json")) << R"({"z": [["a", 2]]})";
  std::ofstream(dir_.file("broken.json")) << R"({"z": [[1, 2)";
  std::ofstream(dir_.file("bad.csv")) << "mu_0,mu_1\n1,oops\n";
  const std::string int_header = "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }\n";
  std::ofstream(dir_.file("int.npy")) << std::string("\x93NUMPY\x01\x00", 8) << static_cast<char>(int_header.size())
                                      << '\0' << int_header << std::string(4, '\0');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"ragged.json", "row 1 has 1 values; expected 2"},
      {"text.json", "not a number"},
      {"broken.json", "not valid JSON"},
      {"bad.csv", "line 2 column 2 is not a number"},
      {"int.npy", "dtype '<i4'; expected '<f4' or '<f8'"},
  };
  for (const auto& [name, words] : cases) {
    auto m = client::ReadCodes(dir_.file(name));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(m.status().message(), HasSubstr(dir_.file(name))) << name;
    EXPECT_THAT(m.status().message(), HasSubstr(words)) << name;
  }
  EXPECT_EQ(client::ReadCodes(dir_.file("missing.json")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client::ReadCodes(dir_.file("z.txt")).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LatentIoPathsTest, SigmaGoesNextToMu) {
  EXPECT_EQ(client::SigmaNpyPath("out/z.npy"), "out/z_sigma.npy");
  EXPECT_EQ(client::SigmaNpyPath("codes.NPY"), "codes_sigma.NPY");
}

// --- images --------------------------------------------------------------------------------------------------------

TEST(ImagesTest, GridColumnsAreTheCeilingOfTheSquareRoot) {
  const std::vector<std::pair<int, int>> cases = {{1, 1}, {2, 2}, {4, 2}, {5, 3}, {9, 3}, {10, 4}, {64, 8}, {65, 9}};
  for (const auto& [n, columns] : cases) EXPECT_EQ(client::GridColumns(n), columns) << n;
}

TEST(ImagesTest, TileGridPlacesCellsRowByRowWithGaps) {
  std::vector<cv::Mat> cells;
  for (int i = 0; i < 5; ++i) cells.emplace_back(3, 4, CV_8UC1, cv::Scalar(10 * (i + 1)));
  auto grid = client::TileGrid(cells, /*columns=*/2, /*border=*/2, /*border_value=*/128);
  ASSERT_TRUE(grid.ok()) << grid.status();
  // 3 rows of (3 + 2) pixels + 2; 2 columns of (4 + 2) pixels + 2.
  EXPECT_EQ(grid->rows, 17);
  EXPECT_EQ(grid->cols, 14);
  EXPECT_EQ(grid->at<uint8_t>(0, 0), 128);
  EXPECT_EQ(grid->at<uint8_t>(2, 2), 10);    // cell 0, top-left pixel
  EXPECT_EQ(grid->at<uint8_t>(2, 8), 20);    // cell 1: x = 2 + (4 + 2)
  EXPECT_EQ(grid->at<uint8_t>(7, 2), 30);    // cell 2: y = 2 + (3 + 2)
  EXPECT_EQ(grid->at<uint8_t>(12, 5), 50);   // cell 4, bottom-right pixel of its row's first cell
  EXPECT_EQ(grid->at<uint8_t>(12, 8), 128);  // the empty sixth cell
  EXPECT_EQ(grid->at<uint8_t>(2, 6), 128);   // the gap between cells 0 and 1
  cells.emplace_back(4, 4, CV_8UC1);
  EXPECT_EQ(client::TileGrid(cells, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImagesTest, TensorToMatsRoundsAndUsesOpenCvChannelOrder) {
  // One RGB pixel (1, 0.5, 1/255) and one gray pixel.
  at::Tensor rgb = at::zeros({1, 3, 1, 1});
  rgb[0][0][0][0] = 1.0f;
  rgb[0][1][0][0] = 0.5f;
  rgb[0][2][0][0] = 1.0f / 255.0f;
  auto mats = client::TensorToMats(rgb);
  ASSERT_TRUE(mats.ok()) << mats.status();
  const cv::Vec3b bgr = (*mats)[0].at<cv::Vec3b>(0, 0);
  EXPECT_EQ(bgr[0], 1);                                            // blue
  EXPECT_EQ(bgr[1], 128);                                          // 0.5 * 255 = 127.5 rounds up
  EXPECT_EQ(bgr[2], 255);                                          // red
  auto gray = client::TensorToMats(at::full({2, 1, 2, 2}, 1.5f));  // clamped to 1
  ASSERT_TRUE(gray.ok());
  EXPECT_EQ(gray->size(), 2u);
  EXPECT_EQ((*gray)[1].type(), CV_8UC1);
  EXPECT_EQ((*gray)[1].at<uint8_t>(1, 1), 255);
  EXPECT_EQ(client::TensorToMats(at::zeros({1, 2, 4, 4})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client::TensorToMats(at::zeros({4, 4})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImagesTest, ConvertForModelMatchesTheModelsChannelsAndSize) {
  // A BGR image, pure blue: to RGB it becomes (0, 0, 255); to gray 0.114 * 255 = 29.07 -> 29.
  cv::Mat blue(4, 6, CV_8UC3, cv::Scalar(255, 0, 0));
  client::Conversion c;
  auto rgb = client::ConvertForModel(blue, 3, 4, 6, &c);
  ASSERT_TRUE(rgb.ok());
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 255));
  EXPECT_FALSE(c.resized);
  EXPECT_EQ(c.from_channels, 3);
  auto gray = client::ConvertForModel(blue, 1, 2, 3, &c);
  ASSERT_TRUE(gray.ok());
  EXPECT_EQ(gray->type(), CV_8UC1);
  EXPECT_EQ(gray->size(), cv::Size(3, 2));
  EXPECT_EQ(gray->at<uint8_t>(1, 2), 29);
  EXPECT_TRUE(c.resized);
  EXPECT_EQ(c.from_height, 4);
  EXPECT_EQ(c.from_width, 6);
  // 16-bit input scales to 8 bits: 65535 -> 255.
  auto deep = client::ConvertForModel(cv::Mat(2, 2, CV_16UC1, cv::Scalar(65535)), 1, 2, 2);
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(deep->at<uint8_t>(0, 0), 255);
  EXPECT_EQ(client::ConvertForModel(cv::Mat(), 1, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client::ConvertForModel(blue, 2, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImagesTest, MatsToTensorIsPlanarAndCopies) {
  cv::Mat a(1, 2, CV_8UC3, cv::Scalar(1, 2, 3));
  auto t = client::MatsToTensor({a, a});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->sizes(), (std::vector<int64_t>{2, 3, 1, 2}));
  EXPECT_EQ(t->scalar_type(), at::kByte);
  EXPECT_EQ((*t)[1][2][0][1].item<uint8_t>(), 3);
  a.setTo(cv::Scalar(9, 9, 9));  // the tensor owns its bytes
  EXPECT_EQ((*t)[0][0][0][0].item<uint8_t>(), 1);
  EXPECT_EQ(client::MatsToTensor({a, cv::Mat(2, 2, CV_8UC3)}).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- progress lines ------------------------------------------------------------------------------------------------

client::TrainProgress SomeStep() {
  client::TrainProgress p;
  p.kind = client::TrainProgress::Kind::kStep;
  p.epoch = 2;
  p.epochs = 5;
  p.step_in_epoch = 130;
  p.steps_per_epoch = 469;
  p.train = {123.456, 100.1, 23.356};
  p.images_per_sec = 4321.4;
  p.eta_sec = 83;
  return p;
}

TEST(ProgressTest, DurationsAreClockLike) {
  EXPECT_EQ(cli::FormatDuration(5), "0:05");
  EXPECT_EQ(cli::FormatDuration(83.4), "1:23");
  EXPECT_EQ(cli::FormatDuration(3723), "1:02:03");
  EXPECT_EQ(cli::FormatDuration(-1), "?");
  EXPECT_EQ(cli::FormatDuration(std::numeric_limits<double>::infinity()), "?");
}

TEST(ProgressTest, BarShowsEpochStepLossSpeedAndEta) {
  // 80 columns: a 20-character bar; 130 / 469 of it is 5 characters.
  EXPECT_EQ(cli::FormatProgressBar(SomeStep(), 80),
            "epoch 2/5 [#####...............] 130/469  loss 123.46  4321 img/s  ETA 1:23");
  // Its width depends on the terminal only, not on the numbers.
  client::TrainProgress later = SomeStep();
  later.step_in_epoch = 469;
  later.images_per_sec = 12345.6;
  EXPECT_EQ(cli::FormatProgressBar(later, 80),
            "epoch 2/5 [####################] 469/469  loss 123.46  12346 img/s  ETA 1:23");
}

TEST(ProgressTest, EpochLineHasTrainAndTestLoss) {
  client::TrainProgress p = SomeStep();
  p.kind = client::TrainProgress::Kind::kEpochEnd;
  p.test = client::Metrics{120.111, 99.9, 20.2};
  p.elapsed_sec = 12.3;
  p.version.generation = 3;
  // A server before model versions names no model: its generation is the version.
  EXPECT_EQ(cli::FormatEpochLine(p),
            "epoch 2/5: train loss 123.46 (recon 100.10, kl 23.36), test loss 120.11, 4321 img/s, 0:12 elapsed, "
            "serving version 3");
  p.version.model = "fashion";
  p.version.version = 3;
  EXPECT_THAT(cli::FormatEpochLine(p), ::testing::EndsWith(", 0:12 elapsed, serving fashion version 3"));
}

TEST(DefaultServerTest, ComesFromTheEnvironment) {
  ASSERT_EQ(setenv("VAE_SERVER", "example:1234", 1), 0);
  EXPECT_EQ(cli::DefaultServer(), "example:1234");
  ASSERT_EQ(setenv("VAE_SERVER", "", 1), 0);
  EXPECT_EQ(cli::DefaultServer(), "127.0.0.1:50051");
  ASSERT_EQ(unsetenv("VAE_SERVER"), 0);
  EXPECT_EQ(cli::DefaultServer(), "127.0.0.1:50051");
}

// Every field of the wire's TrainProgress reaches the client's, each from its own value; an unknown kind and a
// message without test metrics read as such.
TEST(ClientProtoMappingTest, TrainProgressCarriesEveryField) {
  v1::TrainProgress p;
  p.set_kind(v1::TrainProgress::EPOCH_END);
  p.set_job_id("train-1");
  p.set_dataset("mnist");
  p.set_epoch(2);
  p.set_epochs(3);
  p.set_step_in_epoch(4);
  p.set_steps_per_epoch(5);
  p.set_global_step(6);
  p.mutable_train()->set_loss(7);
  p.mutable_train()->set_recon(8);
  p.mutable_train()->set_kl(9);
  p.set_has_test_metrics(true);
  p.mutable_test()->set_loss(10);
  p.mutable_test()->set_recon(11);
  p.mutable_test()->set_kl(12);
  p.set_images_per_sec(13);
  p.set_elapsed_sec(14);
  p.set_eta_sec(15);
  p.set_cancelled(true);
  p.set_checkpoint_path("/ckpt");
  p.mutable_version()->set_generation(16);
  p.mutable_version()->set_epochs_trained(17);
  p.mutable_version()->set_global_step(18);
  p.mutable_version()->set_model("mnist");
  p.mutable_version()->set_version(16);
  p.set_label_moved(true);
  const client::TrainProgress c = client::FromProto(p);
  EXPECT_EQ(c.kind, client::TrainProgress::Kind::kEpochEnd);
  EXPECT_EQ(c.job_id, "train-1");
  EXPECT_EQ(c.dataset, "mnist");
  EXPECT_EQ(c.epoch, 2);
  EXPECT_EQ(c.epochs, 3);
  EXPECT_EQ(c.step_in_epoch, 4);
  EXPECT_EQ(c.steps_per_epoch, 5);
  EXPECT_EQ(c.global_step, 6);
  EXPECT_EQ(c.train.loss, 7);
  EXPECT_EQ(c.train.recon, 8);
  EXPECT_EQ(c.train.kl, 9);
  ASSERT_TRUE(c.test.has_value());
  EXPECT_EQ(c.test->loss, 10);
  EXPECT_EQ(c.test->recon, 11);
  EXPECT_EQ(c.test->kl, 12);
  EXPECT_EQ(c.images_per_sec, 13);
  EXPECT_EQ(c.elapsed_sec, 14);
  EXPECT_EQ(c.eta_sec, 15);
  EXPECT_TRUE(c.cancelled);
  EXPECT_EQ(c.checkpoint_path, "/ckpt");
  EXPECT_EQ(c.version.generation, 16);
  EXPECT_EQ(c.version.epochs_trained, 17);
  EXPECT_EQ(c.version.global_step, 18);
  EXPECT_EQ(c.version.model, "mnist");
  EXPECT_EQ(c.version.version, 16);
  EXPECT_TRUE(c.label_moved);

  v1::TrainProgress unknown;
  unknown.set_kind(static_cast<v1::TrainProgress::Kind>(99));
  const client::TrainProgress u = client::FromProto(unknown);
  EXPECT_EQ(u.kind, client::TrainProgress::Kind::kUnspecified);
  EXPECT_FALSE(u.test.has_value());
}

// TrainOptions go out as they are: zeros stay zeros, for the server to read as its defaults.
TEST(ClientProtoMappingTest, TrainOptionsKeepZerosForTheServersDefaults) {
  client::TrainOptions o;
  o.dataset = "fashion-mnist";
  o.max_train_images = 7;
  o.binarize = true;
  v1::TrainRequest r;
  client::ToProto(o, &r);
  EXPECT_EQ(r.dataset(), "fashion-mnist");
  EXPECT_EQ(r.epochs(), 0);
  EXPECT_EQ(r.batch_size(), 0);
  EXPECT_EQ(r.learning_rate(), 0.0);
  EXPECT_EQ(r.seed(), 0u);
  EXPECT_EQ(r.log_every_steps(), 0);
  EXPECT_EQ(r.max_train_images(), 7);
  EXPECT_TRUE(r.binarize());
  EXPECT_EQ(r.model(), "");
  EXPECT_EQ(r.promote_label(), "");
  o.model = "fashion";
  o.promote_label = "stable";
  client::ToProto(o, &r);
  EXPECT_EQ(r.model(), "fashion");
  EXPECT_EQ(r.promote_label(), "stable");
  EXPECT_EQ(r.iw_samples(), 0);
  EXPECT_EQ(r.adam_eps(), 0.0);
  EXPECT_EQ(r.lr_schedule_size(), 0);
}

TEST(ClientProtoMappingTest, TrainOptionsCarryTheIwaeOptionsAndTheSchedule) {
  client::TrainOptions o;
  o.iw_samples = 5;
  o.adam_eps = 1e-4;
  o.lr_schedule = {{1, 1e-3}, {3, 7.2e-4}};
  v1::TrainRequest r;
  client::ToProto(o, &r);
  EXPECT_EQ(r.iw_samples(), 5);
  EXPECT_EQ(r.adam_eps(), 1e-4);
  ASSERT_EQ(r.lr_schedule_size(), 2);
  EXPECT_EQ(r.lr_schedule(1).epochs(), 3);
  EXPECT_EQ(r.lr_schedule(1).learning_rate(), 7.2e-4);
}

}  // namespace
}  // namespace vae::testing
