// The real vae-client binary against a real vae-server (one per test binary, trained briefly: see live_server.h).
#include "client/cli.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "client/images.h"
#include "client/latent_io.h"
#include "model/dataset.h"
#include "tests/client/live_server.h"
#include "tests/client/run_cli.h"
#include "tests/common/synthetic_mnist.h"

namespace vae::testing {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Grid geometry of vae-client's PNGs: 2-pixel gaps around and between 28x28 cells.
constexpr int kCell = 28, kGap = 2;
int GridSide(int cells) { return cells * (kCell + kGap) + kGap; }

std::string IdxPath() { return DataDir() + "/mnist/t10k-images-idx3-ubyte"; }

at::Tensor TestDigits(int64_t n) {
  auto data = LoadIdxDataset(IdxPath(), "", n);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? data->images : at::Tensor();
}

// The 8-bit pixels vae-client writes for float images in [0, 1]: round(255 v).
cv::Mat Expected8Bit(const at::Tensor& image_chw) {
  auto mats = client::TensorToMats(image_chw.unsqueeze(0));
  EXPECT_TRUE(mats.ok()) << mats.status();
  return mats.ok() ? (*mats)[0] : cv::Mat();
}

// Cell (row, column) of a grid PNG.
cv::Mat Cell(const cv::Mat& grid, int row, int column) {
  return grid(cv::Rect(kGap + column * (kCell + kGap), kGap + row * (kCell + kGap), kCell, kCell));
}

bool SamePixels(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::countNonZero(a != b) == 0;
}

std::vector<std::string> Lines(const std::string& text) { return absl::StrSplit(text, '\n', absl::SkipEmpty()); }

// How vae-client names a version: "default version 1 (1 epoch, 20 steps)" ("version 2 (...)" from a server before
// model versions, which names no model).
std::string VersionWords(const client::ModelVersion& v) {
  return absl::StrFormat("%s%d (%d epoch%s, %d steps)", v.model.empty() ? "version " : v.model + " version ",
                         v.version > 0 ? v.version : v.generation, v.epochs_trained, v.epochs_trained == 1 ? "" : "s",
                         v.global_step);
}

class CliTest : public LiveServerTest {
 protected:
  // How vae-client names the served weights: "default version 1 (1 epoch, 20 steps)" after SetUpTestSuite's
  // training ("version 2 (...)" from a server before model versions, which names no model).
  std::string ServedVersion() {
    auto info = client().GetModelInfo();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? VersionWords(info->version) : "";
  }

  TempDir dir_;
};

TEST_F(CliTest, HealthPrintsServingAndExitsZero) {
  const auto r = RunCli({"health", ServerFlag()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  EXPECT_EQ(r.err, "");
  // An unknown service is an error of the server (NOT_FOUND), not a status: exit 1.
  const auto unknown = RunCli({"health", ServerFlag(), "--service=no.such.Service"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, StartsWith("vae-server at " + address() + ": NOT_FOUND: "));
}

TEST_F(CliTest, ServerDefaultsToTheVaeServerVariable) {
  const auto from_env = RunCli({"health"}, {"VAE_SERVER=" + address()});
  EXPECT_EQ(from_env.exit_code, 0) << from_env.err;
  EXPECT_EQ(from_env.out, "SERVING\n");
  // --server wins over the variable.
  const std::string closed = "127.0.0.1:" + std::to_string(ClosedPort());
  const auto flag_wins = RunCli({"health", "--server=" + closed}, {"VAE_SERVER=" + address()});
  EXPECT_EQ(flag_wins.exit_code, 1);
  EXPECT_EQ(flag_wins.err, "cannot reach vae-server at " + closed + ": connection refused\n");
}

TEST_F(CliTest, InfoJsonMatchesGetModelInfo) {
  const auto r = RunCli({"info", "--json", ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  auto info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(j["server"], address());
  EXPECT_EQ(j["preset"], info->preset);
  EXPECT_EQ(j["input_shape"].get<std::vector<int64_t>>(), info->input_shape);
  EXPECT_EQ(j["latent_dim"], info->latent_dim);
  EXPECT_EQ(j["parameter_count"], info->parameter_count);
  EXPECT_EQ(j["likelihood"], info->likelihood);
  EXPECT_EQ(j["architecture"], info->architecture);
  EXPECT_EQ(j["version"]["generation"], info->version.generation);
  EXPECT_EQ(j["version"]["epochs_trained"], info->version.epochs_trained);
  EXPECT_EQ(j["version"]["global_step"], info->version.global_step);
  // A version published by a cancelled job (another test of this server may have made one) has no test metrics.
  EXPECT_EQ(j["last_test"].is_null(), !info->last_test.has_value());
  if (info->last_test) {
    EXPECT_DOUBLE_EQ(j["last_test"]["loss"].get<double>(), info->last_test->loss);
  }
  EXPECT_EQ(j["checkpoint_path"], info->checkpoint_path);
  EXPECT_EQ(j["max_batch"], kMaxBatch);
  EXPECT_EQ(j["training"], false);
  EXPECT_EQ(j["presets"].get<std::vector<std::string>>(), info->presets);
  // options is the model's VaeOptions, parsed from options_json.
  EXPECT_EQ(j["options"], nlohmann::json::parse(info->options_json));
  EXPECT_EQ(j["options"]["latent_dim"], 20);
}

TEST_F(CliTest, InfoTableNamesTheModel) {
  const auto r = RunCli({"info", ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("preset         mnist\n"));
  EXPECT_THAT(r.out, HasSubstr("input shape    1x28x28\n"));
  EXPECT_THAT(r.out, HasSubstr("latent dim     20\n"));
  EXPECT_THAT(r.out, HasSubstr("weights        " + ServedVersion() + "\n"));
  EXPECT_THAT(r.out, HasSubstr("training       no\n"));
}

TEST_F(CliTest, EncodeJsonMatchesTheLibrary) {
  const auto r = RunCli({"encode", IdxPath(), "--limit=8", "--output=" + dir_.file("z.json"), ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "using the first 8 of 10000 images in " + IdxPath() + " (--limit)\n");
  EXPECT_THAT(r.out, StartsWith("wrote " + dir_.file("z.json") + ": mu and sigma of 8 images, latent dim 20"));
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir_.file("z.json")));

  auto expected = client().Encode(client::ImageInput::FromTensor(TestDigits(8)));
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(j["mu"].size(), 8u);
  ASSERT_EQ(j["sigma"].size(), 8u);
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(j["mu"][i].size(), 20u);
    for (int k = 0; k < 20; ++k) {
      EXPECT_NEAR(j["mu"][i][k].get<double>(), expected->mu[i][k].item<float>(), 1e-6) << i << "," << k;
      EXPECT_NEAR(j["sigma"][i][k].get<double>(), expected->sigma[i][k].item<float>(), 1e-6) << i << "," << k;
    }
  }
  EXPECT_EQ(j["inputs"][3], IdxPath() + "[3]");
  EXPECT_EQ(j["latent_dim"], 20);
  EXPECT_EQ(j["version"]["generation"], expected->version.generation);
}

TEST_F(CliTest, EncodeCsvAndNpyHoldTheSameNumbersAsJson) {
  for (const char* name : {"z.json", "z.csv", "z.npy"}) {
    const auto r = RunCli({"encode", IdxPath(), "--limit=3", "--output=" + dir_.file(name), ServerFlag()});
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
  }
  auto json = client::ReadCodes(dir_.file("z.json"));
  auto csv = client::ReadCodes(dir_.file("z.csv"));
  auto npy = client::ReadCodes(dir_.file("z.npy"));
  auto npy_sigma = client::ReadCodes(dir_.file("z_sigma.npy"));
  ASSERT_TRUE(json.ok() && csv.ok() && npy.ok() && npy_sigma.ok());
  EXPECT_EQ(json->rows, 3);
  EXPECT_EQ(json->cols, 20);
  // Each format writes floats that read back bitwise.
  EXPECT_EQ(csv->values, json->values);
  EXPECT_EQ(npy->values, json->values);
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir_.file("z.json")));
  EXPECT_EQ(npy_sigma->values[20 + 5], j["sigma"][1][5].get<float>());
  const std::string header = Lines(ReadFile(dir_.file("z.csv")))[0];
  EXPECT_THAT(header, StartsWith("input,mu_0,mu_1,"));
  EXPECT_THAT(header, HasSubstr(",mu_19,sigma_0,"));
}

TEST_F(CliTest, EncodeResizesPngsAndSaysSo) {
  // A test digit scaled up 2x by pixel replication: area interpolation back to 28x28 averages four equal pixels,
  // which gives the digit back exactly, so its codes are the digit's own.
  const at::Tensor digit = TestDigits(1);
  const cv::Mat small = Expected8Bit(digit[0]);
  cv::Mat big;
  cv::resize(small, big, cv::Size(56, 56), 0, 0, cv::INTER_NEAREST);
  const std::string png = dir_.file("digit.png");
  ASSERT_TRUE(cv::imwrite(png, big));
  const auto r = RunCli({"encode", png, "--output=" + dir_.file("z.json"), ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "resized " + png + " from 56x56 to 28x28\n");
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir_.file("z.json")));
  auto expected = client().Encode(client::ImageInput::FromTensor(digit));
  ASSERT_TRUE(expected.ok());
  for (int k = 0; k < 20; ++k) EXPECT_NEAR(j["mu"][0][k].get<double>(), expected->mu[0][k].item<float>(), 1e-6);

  // --noresize refuses it instead: a usage error naming both sizes.
  const auto refused = RunCli({"encode", png, "--noresize", "--output=" + dir_.file("y.json"), ServerFlag()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_EQ(refused.err,
            "vae-client encode: " + png + " is 56x56; the model takes 28x28 (drop --noresize to resize)\n");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("y.json")));
}

TEST_F(CliTest, EncodeConvertsColourImagesToTheModelsGrayscale) {
  cv::Mat colour(28, 28, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::rectangle(colour, cv::Rect(8, 8, 12, 12), cv::Scalar(255, 255, 255), cv::FILLED);
  const std::string png = dir_.file("colour.png");
  ASSERT_TRUE(cv::imwrite(png, colour));
  const auto r = RunCli({"encode", png, "--output=" + dir_.file("z.json"), ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "converted " + png + " from 3 channels to grayscale\n");
  // White stays 255 and black 0 in grayscale: the same codes as the one-channel image.
  cv::Mat gray;
  cv::cvtColor(colour, gray, cv::COLOR_BGR2GRAY);
  auto expected = client().Encode(client::ImageInput::FromTensor(*client::MatsToTensor({gray})));
  ASSERT_TRUE(expected.ok());
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir_.file("z.json")));
  for (int k = 0; k < 20; ++k) EXPECT_NEAR(j["mu"][0][k].get<double>(), expected->mu[0][k].item<float>(), 1e-6);
}

TEST_F(CliTest, EncodeSplitsRequestsAtTheServersMaxBatch) {
  // 100 images with --max_batch=64: two requests, 64 + 36.
  const auto r = RunCli({"encode", IdxPath(), "--limit=100", "--output=" + dir_.file("z.npy"), ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto mu = client::ReadCodes(dir_.file("z.npy"));
  ASSERT_TRUE(mu.ok()) << mu.status();
  ASSERT_EQ(mu->rows, 100);
  const at::Tensor digits = TestDigits(100);
  auto head = client().Encode(client::ImageInput::FromTensor(digits.narrow(0, 0, 64)));
  auto tail = client().Encode(client::ImageInput::FromTensor(digits.narrow(0, 64, 36)));
  ASSERT_TRUE(head.ok() && tail.ok());
  EXPECT_NEAR(mu->at(0, 0), head->mu[0][0].item<float>(), 1e-6);
  EXPECT_NEAR(mu->at(63, 19), head->mu[63][19].item<float>(), 1e-6);
  EXPECT_NEAR(mu->at(64, 0), tail->mu[0][0].item<float>(), 1e-6);
  EXPECT_NEAR(mu->at(99, 7), tail->mu[35][7].item<float>(), 1e-6);
}

TEST_F(CliTest, BadInputsAreOneLineUsageErrors) {
  const std::string text = dir_.file("notes.txt");
  std::ofstream(text) << "not an image\n";
  const auto not_image = RunCli({"encode", text, "--output=" + dir_.file("z.json"), ServerFlag()});
  EXPECT_EQ(not_image.exit_code, 2);
  EXPECT_EQ(not_image.err, "vae-client encode: cannot read " + text + ": not a PNG/JPEG image or an idx file\n");
  EXPECT_EQ(not_image.out, "");

  const auto missing = RunCli({"reconstruct", dir_.file("nope.png"), "--output=" + dir_.file("r.png"), ServerFlag()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.err, "vae-client reconstruct: cannot read " + dir_.file("nope.png") + ": no such file\n");

  const auto bad_codes = RunCli({"decode", "--input=" + text, "--output=" + dir_.file("d.png"), ServerFlag()});
  EXPECT_EQ(bad_codes.exit_code, 2);
  EXPECT_EQ(bad_codes.err,
            "vae-client decode: " + text + ": unknown extension \".txt\"; expected .json, .csv or .npy\n");

  std::ofstream(dir_.file("short.json")) << R"({"z": [[0.5, 1.5]]})";
  const auto wrong_dim =
      RunCli({"decode", "--input=" + dir_.file("short.json"), "--output=" + dir_.file("d.png"), ServerFlag()});
  EXPECT_EQ(wrong_dim.exit_code, 2);
  EXPECT_EQ(wrong_dim.err, "vae-client decode: " + dir_.file("short.json") +
                               ": codes of 2 dimensions; the model's latent dim is 20\n");
}

TEST_F(CliTest, ServerRejectionsCarryTheServersMessage) {
  // count over the server's --max_batch: the server's INVALID_ARGUMENT, its message as the library sees it.
  const auto r =
      RunCli({"sample", "--count=" + std::to_string(kMaxBatch + 1), "--output=" + dir_.file("s.png"), ServerFlag()});
  EXPECT_EQ(r.exit_code, 1);
  auto direct = client().Sample({kMaxBatch + 1, std::nullopt, 1.0f});
  ASSERT_EQ(direct.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.err,
            "vae-server at " + address() + ": INVALID_ARGUMENT: " + std::string(direct.status().message()) + "\n");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("s.png")));
}

TEST_F(CliTest, SampleGridHasTheExpectedSizeAndRepeatsForASeed) {
  // 10 images: ceil(sqrt(10)) = 4 columns, 3 rows.
  const std::string a = dir_.file("a.png"), b = dir_.file("b.png"), c = dir_.file("c.png");
  const auto ra = RunCli({"sample", "--count=10", "--seed=5", "--output=" + a, ServerFlag()});
  ASSERT_EQ(ra.exit_code, 0) << ra.err;
  EXPECT_EQ(ra.out, "wrote " + a + " (122x92, 10 images): seed 5, model " + ServedVersion() + "\n");
  ASSERT_EQ(RunCli({"sample", "--count=10", "--seed=5", "--output=" + b, ServerFlag()}).exit_code, 0);
  ASSERT_EQ(RunCli({"sample", "--count=10", "--seed=6", "--output=" + c, ServerFlag()}).exit_code, 0);
  const cv::Mat grid = cv::imread(a, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(grid.empty());
  EXPECT_EQ(grid.cols, GridSide(4));
  EXPECT_EQ(grid.rows, GridSide(3));
  EXPECT_EQ(grid.type(), CV_8UC1);
  EXPECT_EQ(ReadFile(a), ReadFile(b));  // byte-identical
  EXPECT_NE(ReadFile(a), ReadFile(c));

  // The cells are the library's samples for that seed, in row order, as round(255 v).
  auto samples = client().Sample({10, 5, 1.0f});
  ASSERT_TRUE(samples.ok());
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(SamePixels(Cell(grid, i / 4, i % 4), Expected8Bit(samples->images[i]))) << "cell " << i;
  }
  // The two unused cells of the last row stay gap-coloured (128).
  EXPECT_EQ(cv::countNonZero(Cell(grid, 2, 3) != 128), 0);
}

TEST_F(CliTest, SampleToAFolderWritesOnePngPerImage) {
  const std::string folder = dir_.file("samples") + "/";
  const auto r = RunCli({"sample", "--count=3", "--seed=9", "--output=" + folder, ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto samples = client().Sample({3, 9, 1.0f});
  ASSERT_TRUE(samples.ok());
  for (int i = 0; i < 3; ++i) {
    const cv::Mat image = cv::imread(folder + "000" + std::to_string(i) + ".png", cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(image.empty()) << i;
    EXPECT_EQ(image.size(), cv::Size(28, 28));
    EXPECT_TRUE(SamePixels(image, Expected8Bit(samples->images[i]))) << i;
  }
  EXPECT_FALSE(std::filesystem::exists(folder + "0003.png"));
}

TEST_F(CliTest, ReconstructPutsOriginalsAndReconstructionsSideBySide) {
  const std::string out = dir_.file("r.png");
  const auto r = RunCli({"reconstruct", IdxPath(), "--limit=10", "--output=" + out, ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 10 pairs: 4 pairs (8 cells) per row, 3 rows.
  const cv::Mat grid = cv::imread(out, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(grid.empty());
  EXPECT_EQ(grid.cols, GridSide(8));
  EXPECT_EQ(grid.rows, GridSide(3));
  const at::Tensor digits = TestDigits(10);
  auto expected = client().Reconstruct(client::ImageInput::FromTensor(digits));
  ASSERT_TRUE(expected.ok());
  for (int i = 0; i < 10; ++i) {
    const int row = i / 4, column = 2 * (i % 4);
    EXPECT_TRUE(SamePixels(Cell(grid, row, column), Expected8Bit(digits[i]))) << "original " << i;
    EXPECT_TRUE(SamePixels(Cell(grid, row, column + 1), Expected8Bit(expected->images[i]))) << "reconstruction " << i;
  }
  // The means, summed in the same order as vae-client does.
  double nll = 0, kl = 0;
  for (int i = 0; i < 10; ++i) {
    nll += expected->recon_nll[i];
    kl += expected->kl[i];
  }
  EXPECT_EQ(r.out, absl::StrFormat("wrote %s (242x92, 10 original | reconstruction pairs): mean -log p(x|z) %.2f "
                                   "nats, mean KL %.2f nats, model %s\n",
                                   out, nll / 10, kl / 10, ServedVersion()));
}

TEST_F(CliTest, DecodeReadsWhatEncodeWrote) {
  const std::string z = dir_.file("z.json");
  ASSERT_EQ(RunCli({"encode", IdxPath(), "--limit=5", "--output=" + z, ServerFlag()}).exit_code, 0);
  ASSERT_EQ(RunCli({"encode", IdxPath(), "--limit=5", "--output=" + dir_.file("z.csv"), ServerFlag()}).exit_code, 0);
  ASSERT_EQ(RunCli({"encode", IdxPath(), "--limit=5", "--output=" + dir_.file("z.npy"), ServerFlag()}).exit_code, 0);
  const auto r = RunCli({"decode", "--input=" + z, "--output=" + dir_.file("d.png"), ServerFlag()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 5 images: 3 columns, 2 rows.
  EXPECT_EQ(r.out, "wrote " + dir_.file("d.png") + " (92x62, 5 images) decoded from " + z + ", model " +
                       ServedVersion() + "\n");
  // decode(mu) of the digits, through the library.
  auto codes = client().Encode(client::ImageInput::FromTensor(TestDigits(5)));
  ASSERT_TRUE(codes.ok());
  auto decoded = client().Decode(codes->mu);
  ASSERT_TRUE(decoded.ok());
  const cv::Mat grid = cv::imread(dir_.file("d.png"), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(grid.size(), cv::Size(GridSide(3), GridSide(2)));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(SamePixels(Cell(grid, i / 3, i % 3), Expected8Bit(decoded->images[i]))) << i;
  }
  // The CSV and .npy files hold the same codes, so they decode to the same file.
  for (const char* input : {"z.csv", "z.npy"}) {
    const std::string png = dir_.file(std::string(input) + ".png");
    ASSERT_EQ(RunCli({"decode", "--input=" + dir_.file(input), "--output=" + png, ServerFlag()}).exit_code, 0);
    EXPECT_EQ(ReadFile(png), ReadFile(dir_.file("d.png"))) << input;
  }
}

TEST_F(CliTest, TrainPrintsOneLinePerEpochWhenNotOnATerminal) {
  // A server of its own: training a fresh model replaces what the shared server serves, which other tests check.
  const auto own = LiveServer::Start();
  ASSERT_NE(own, nullptr);
  auto before = own->client->GetModelInfo();
  ASSERT_TRUE(before.ok());
  // A fresh model (no --resume) trains epochs 1 and 2 and publishes two new generations.
  const std::string first = std::to_string(before->version.generation + 1);
  const std::string second = std::to_string(before->version.generation + 2);
  const auto r = RunCli({"train", "--dataset=mnist", "--epochs=2", "--batch_size=100", "--max_train_images=500",
                         "--lr=0.001", "--seed=3", "--server=" + own->process->address()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // no progress bar without a terminal
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_THAT(lines[0], ContainsRegex("^training job \\S+ on mnist: epochs 1 to 2, 5 steps per epoch$"));
  EXPECT_THAT(lines[1], ContainsRegex("^epoch 1/2: train loss [0-9.]+ \\(recon [0-9.]+, kl [0-9.]+\\), test loss "
                                      "[0-9.]+, [0-9]+ img/s, [0-9]+:[0-9]{2} elapsed, serving (\\S+ )?version " +
                                      first + "$"));
  EXPECT_THAT(lines[2], ContainsRegex("^epoch 2/2: .* serving (\\S+ )?version " + second + "$"));
  EXPECT_THAT(lines[3], ContainsRegex("^done: job \\S+ trained to epoch 2 \\(10 steps\\) in [0-9:]+; the server serves "
                                      "(\\S+ )?version " +
                                      second + " \\(2 epochs, 10 steps\\), checkpoint " + own->model_dir.path()));
  auto info = own->client->GetModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version.generation, before->version.generation + 2);
  EXPECT_EQ(info->version.global_step, 10);
}

TEST_F(CliTest, CtrlCCancelsTrainingAndSaysWhatIsServed) {
  // A server of its own: the steps a cancelled job did are published as a version, which would change what the
  // shared server serves to the other tests.
  const auto own = LiveServer::Start();
  ASSERT_NE(own, nullptr);
  // The full training set for 3 epochs: minutes, far longer than the test waits.
  CliProcess train({"train", "--dataset=mnist", "--epochs=3", "--server=" + own->process->address()});
  ASSERT_TRUE(train.WaitForOutput("training job ", std::chrono::seconds(60)));
  train.Signal(SIGINT);
  const auto r = train.Wait(std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 130);
  auto after = own->client->GetModelInfo();
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->training);
  const std::vector<std::string> err = Lines(r.err);
  ASSERT_EQ(err.size(), 2u) << r.err;
  EXPECT_EQ(err[0], "Ctrl-C: cancelling the job (the server checkpoints it; Ctrl-C again to quit at once)");
  // vae-client waits for the job to stop, so it names what the server serves from then on: the version of the
  // steps done, or the fresh weights (version 0) when it was stopped before its first step.
  EXPECT_THAT(
      err[1],
      AllOf(StartsWith("train: cancelled "),
            HasSubstr("; the server keeps a checkpoint of the steps done in its --model_dir (continue with --resume) "
                      "and it serves " +
                      VersionWords(after->version))));
}

// --- without a server ----------------------------------------------------------------------------------------------

TEST(CliOfflineTest, UnreachableServerIsOneLineAndExitCodeOne) {
  TempDir dir;
  const SyntheticDataDir data;
  const std::string closed = "127.0.0.1:" + std::to_string(ClosedPort());
  const std::string expected = "cannot reach vae-server at " + closed + ": connection refused\n";
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"health"},
           {"info"},
           {"sample", "--output=" + dir.file("s.png")},
           {"encode", data.path() + "/mnist/t10k-images-idx3-ubyte", "--output=" + dir.file("z.json")},
           {"train", "--epochs=1"}}) {
    std::vector<std::string> with_server = args;
    with_server.push_back("--server=" + closed);
    const auto r = RunCli(with_server);
    EXPECT_EQ(r.exit_code, 1) << args[0];
    EXPECT_EQ(r.err, expected) << args[0];
    EXPECT_EQ(r.out, "") << args[0];
  }
}

TEST(CliOfflineTest, HealthExitsThreeWhenNotServing) {
  // A bare gRPC server with the standard health service, whose status the test sets (and VaeService's generated
  // base, which answers UNIMPLEMENTED: gRPC builds no server without a registered service).
  grpc::EnableDefaultHealthCheckService(true);
  v1::VaeService::Service unimplemented;
  grpc::ServerBuilder builder;
  builder.RegisterService(&unimplemented);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  const std::string flag = "--server=127.0.0.1:" + std::to_string(port);
  server->GetHealthCheckService()->SetServingStatus("", false);
  const auto not_serving = RunCli({"health", flag});
  EXPECT_EQ(not_serving.exit_code, 3);
  EXPECT_EQ(not_serving.out, "NOT_SERVING\n");
  EXPECT_EQ(not_serving.err, "");
  server->GetHealthCheckService()->SetServingStatus("", true);
  const auto serving = RunCli({"health", flag});
  EXPECT_EQ(serving.exit_code, 0);
  EXPECT_EQ(serving.out, "SERVING\n");
  server->Shutdown();
}

TEST(CliOfflineTest, UsageErrorsExitTwoWithOneLine) {
  ExpectUsageErrors({
      {{"frobnicate"},
       "vae-client: unknown command \"frobnicate\"; expected one of health, info, train, encode, decode, sample, "
       "reconstruct, models, label, delete (see vae-client --help)\n"},
      {{"sample", "--output=x.png", "--bogus=1"},
       "vae-client sample: unknown flag --bogus (see vae-client sample --help)\n"},
      {{"sample", "--output"}, "vae-client sample: --output needs a value (see vae-client sample --help)\n"},
      {{"encode", "a.png", "--count=3", "--output=z.json"},
       "vae-client encode: --count does not apply to encode (see vae-client encode --help)\n"},
      {{"sample", "--count=lots", "--output=x.png"},
       "vae-client sample: --count=lots: Illegal value 'lots' specified for flag 'count' (see vae-client sample "
       "--help)\n"},
      {{"sample"}, "vae-client sample: --output is required (see vae-client sample --help)\n"},
      {{"sample", "--output=x.jpg"},
       "vae-client sample: --output=x.jpg: expected a .png file or a folder ending in / (see vae-client sample "
       "--help)\n"},
      {{"sample", "--count=0", "--output=x.png"},
       "vae-client sample: --count=0: expected >= 1 (see vae-client sample --help)\n"},
      {{"encode", "--output=z.json"}, "vae-client encode: no input images (see vae-client encode --help)\n"},
      {{"encode", "a.png", "--output=z.txt"},
       "vae-client encode: z.txt: unknown extension \".txt\"; expected .json, .csv or .npy (see vae-client encode "
       "--help)\n"},
      {{"encode", "a.png", "--limit=-1", "--output=z.json"},
       "vae-client encode: --limit=-1: expected >= 0 (see vae-client encode --help)\n"},
      {{"decode", "--output=d.png"}, "vae-client decode: --input is required (see vae-client decode --help)\n"},
      {{"reconstruct", "a.png", "--output=out/"},
       "vae-client reconstruct: --output=out/: expected a .png file (see vae-client reconstruct --help)\n"},
      {{"train", "--epochs=0"}, "vae-client train: --epochs=0: expected 1 to 1000 (see vae-client train --help)\n"},
      {{"train", "--epochs=1001"},
       "vae-client train: --epochs=1001: expected 1 to 1000 (see vae-client train --help)\n"},
      {{"train", "--lr=-1"}, "vae-client train: --lr=-1: expected a value in (0, 10] (see vae-client train --help)\n"},
      {{"train", "--lr=11"}, "vae-client train: --lr=11: expected a value in (0, 10] (see vae-client train --help)\n"},
      {{"health", "extra"}, "vae-client health: unexpected argument \"extra\" (see vae-client health --help)\n"},
      {{"health", "--timeout=0s"},
       "vae-client health: --timeout=0: expected a positive duration (see vae-client health --help)\n"},
  });
  // No command at all: the usage on stderr.
  const auto none = RunInProcess({});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.err, HasSubstr("usage: vae-client"));
  EXPECT_EQ(none.out, "");
}

TEST(CliOfflineTest, HelpListsEveryCommandAndEveryFlag) {
  const auto main_help = RunInProcess({"--help"});
  EXPECT_EQ(main_help.exit_code, 0);
  EXPECT_EQ(main_help.err, "");
  for (const char* command : {"health", "info", "train", "encode", "decode", "sample", "reconstruct"}) {
    EXPECT_THAT(main_help.out, HasSubstr(std::string("\n  ") + command + " ")) << command;
  }
  EXPECT_THAT(main_help.out, HasSubstr("\n  --server "));
  EXPECT_THAT(main_help.out, HasSubstr("\n  --timeout "));
  const std::map<std::string, std::vector<std::string>> flags = {
      {"health", {"service"}},
      {"info", {"json"}},
      {"train",
       {"dataset", "epochs", "batch_size", "lr", "seed", "resume", "preset", "options_json", "max_train_images",
        "log_every_steps", "binarize"}},
      {"encode", {"output", "limit", "resize"}},
      {"decode", {"input", "output"}},
      {"sample", {"count", "seed", "temperature", "output"}},
      {"reconstruct", {"output", "limit", "resize", "sample_z", "seed"}},
  };
  for (const auto& [command, names] : flags) {
    const auto help = RunInProcess({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_THAT(help.out, StartsWith("usage: vae-client " + command)) << command;
    for (const std::string& name : names) EXPECT_THAT(help.out, HasSubstr("\n  --" + name + " ")) << command;
    EXPECT_THAT(help.out, HasSubstr("\n  --server ")) << command;
    EXPECT_THAT(help.out, HasSubstr("\n  --timeout ")) << command;
  }
}

TEST(CliOfflineTest, TheBinaryIsWiredToRun) {
  // The same help and usage error through the real binary (main.cc), with exit codes.
  const auto help = RunCli({"sample", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_EQ(help.out, RunInProcess({"sample", "--help"}).out);
  const auto unknown = RunCli({"sample", "--bogus"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_EQ(unknown.err, "vae-client sample: unknown flag --bogus (see vae-client sample --help)\n");
  const auto version = RunCli({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, "vae-client 0.1.0\n");
}

}  // namespace
}  // namespace vae::testing
