// Tests for the in-memory datasets: idx files (synthetic, then the real MNIST and Fashion-MNIST from VAE_DATA_DIR),
// image folders written with OpenCV, seeded shuffling and binarisation. Every test states the numbers it expects.
#include "model/dataset.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/model/status_matchers.h"

namespace vae {
namespace {

namespace fs = std::filesystem;
constexpr absl::StatusCode kInvalidArgument = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kNotFound = absl::StatusCode::kNotFound;

using ::vae::testing::DataDir;
using ::vae::testing::HasCodeAndWords;

// An idx file's bytes: 0x00 0x00 0x08 ndims, big-endian uint32 dims, then `data`.
std::string MakeIdx(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string out = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(d >> shift));
  }
  out.append(data.begin(), data.end());
  return out;
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

void WriteGzip(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("dataset_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------------------------
// Idx datasets

TEST_F(DatasetTest, LoadIdxDatasetScalesTo01AndAddsChannel) {
  // Three 2x2 images; 51/255 = 0.2 and 102/255 = 0.4 exactly in float.
  WriteFile(dir_ / "images", MakeIdx({3, 2, 2}, {0, 255, 51, 102, /**/ 1, 2, 3, 4, /**/ 255, 255, 0, 0}));
  WriteFile(dir_ / "labels", MakeIdx({3}, {7, 0, 9}));
  absl::StatusOr<Dataset> d = LoadIdxDataset((dir_ / "images").string(), (dir_ / "labels").string());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 3);
  EXPECT_EQ(d->images.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(d->images.scalar_type(), at::kFloat);
  EXPECT_TRUE(d->images.is_contiguous());
  EXPECT_TRUE(d->images.device().is_cpu());
  const at::Tensor expected_first = at::tensor({0.0f, 1.0f, 0.2f, 0.4f}).view({1, 2, 2});
  EXPECT_TRUE(at::equal(d->images[0], expected_first)) << d->images[0];
  EXPECT_FLOAT_EQ(d->images[1][0][1][1].item<float>(), 4.0f / 255.0f);
  EXPECT_EQ(d->labels.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(d->labels, at::tensor({7, 0, 9}, at::kLong)));
}

TEST_F(DatasetTest, LoadIdxDatasetMaxCountAndNoLabels) {
  WriteGzip(dir_ / "images.gz", MakeIdx({3, 1, 2}, {10, 20, 30, 40, 50, 60}));
  WriteFile(dir_ / "labels", MakeIdx({3}, {1, 2, 3}));
  absl::StatusOr<Dataset> two = LoadIdxDataset((dir_ / "images.gz").string(), (dir_ / "labels").string(), 2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->images.sizes(), (std::vector<int64_t>{2, 1, 1, 2}));
  EXPECT_FLOAT_EQ(two->images[1][0][0][1].item<float>(), 40.0f / 255.0f);
  EXPECT_TRUE(at::equal(two->labels, at::tensor({1, 2}, at::kLong)));

  absl::StatusOr<Dataset> unlabelled = LoadIdxDataset((dir_ / "images.gz").string(), "");
  ASSERT_TRUE(unlabelled.ok()) << unlabelled.status();
  EXPECT_EQ(unlabelled->size(), 3);
  EXPECT_FALSE(unlabelled->labels.defined());

  // max_count 0: an empty but well-shaped dataset.
  absl::StatusOr<Dataset> none = LoadIdxDataset((dir_ / "images.gz").string(), (dir_ / "labels").string(), 0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->images.sizes(), (std::vector<int64_t>{0, 1, 1, 2}));
}

TEST_F(DatasetTest, LoadIdxDatasetRejectsCountMismatchAndWrongRank) {
  WriteFile(dir_ / "images", MakeIdx({3, 2, 2}, std::vector<uint8_t>(12, 0)));
  WriteFile(dir_ / "labels2", MakeIdx({2}, {1, 2}));
  WriteFile(dir_ / "labels2d", MakeIdx({3, 1}, {1, 2, 3}));
  EXPECT_TRUE(HasCodeAndWords(LoadIdxDataset((dir_ / "images").string(), (dir_ / "labels2").string()).status(),
                              kInvalidArgument, {"hold 2 labels", "hold 3 images"}));
  EXPECT_TRUE(HasCodeAndWords(LoadIdxDataset((dir_ / "images").string(), (dir_ / "labels2d").string()).status(),
                              kInvalidArgument, {"dims [3,1]", "expected 1 dim"}));
  // Labels are not images: a 1-D file is rejected as an images file.
  EXPECT_TRUE(HasCodeAndWords(LoadIdxDataset((dir_ / "labels2").string(), "").status(), kInvalidArgument,
                              {"dims [2]", "expected 3 dims [N, H, W]"}));
  EXPECT_TRUE(HasCodeAndWords(LoadIdxDataset((dir_ / "nope").string(), "").status(), kNotFound, {"nope"}));
}

TEST_F(DatasetTest, LoadNamedDatasetFindsPlainAndGzipFiles) {
  // A fake "mnist": training files plain, test files gzipped.
  const fs::path m = dir_ / "mnist";
  WriteFile(m / "train-images-idx3-ubyte", MakeIdx({2, 2, 2}, {0, 51, 102, 153, 204, 255, 0, 0}));
  WriteFile(m / "train-labels-idx1-ubyte", MakeIdx({2}, {5, 0}));
  WriteGzip(m / "t10k-images-idx3-ubyte.gz", MakeIdx({1, 2, 2}, {255, 255, 255, 255}));
  WriteGzip(m / "t10k-labels-idx1-ubyte.gz", MakeIdx({1}, {7}));
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir_.string(), "mnist");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.images.sizes(), (std::vector<int64_t>{2, 1, 2, 2}));
  EXPECT_FLOAT_EQ(s->train.images[0][0][1][1].item<float>(), 0.6f);  // 153 / 255
  EXPECT_TRUE(at::equal(s->train.labels, at::tensor({5, 0}, at::kLong)));
  EXPECT_EQ(s->test.size(), 1);
  EXPECT_EQ(s->test.images.min().item<float>(), 1.0f);
  EXPECT_EQ(s->test.labels[0].item<int64_t>(), 7);

  absl::StatusOr<TrainTestSplit> capped = LoadNamedDataset(dir_.string(), "mnist", 1, 0);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->train.size(), 1);
  EXPECT_EQ(capped->test.size(), 0);
}

TEST_F(DatasetTest, LoadNamedDatasetMissingFileSaysHowToFetch) {
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir_.string(), "fashion-mnist");
  EXPECT_TRUE(
      HasCodeAndWords(s.status(), kNotFound,
                      {(dir_ / "fashion-mnist" / "train-images-idx3-ubyte").string(), "train-images-idx3-ubyte.gz",
                       absl::StrCat("run scripts/fetch-data.sh ", dir_.string())}));
}

TEST_F(DatasetTest, LoadNamedDatasetUnknownNameListsKnownOnes) {
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir_.string(), "cifar10");
  EXPECT_TRUE(HasCodeAndWords(s.status(), kInvalidArgument, {"\"cifar10\"", "mnist, fashion-mnist"}));
}

TEST_F(DatasetTest, LoadNamedDatasetRejectsTrainTestShapeMismatch) {
  const fs::path m = dir_ / "mnist";
  WriteFile(m / "train-images-idx3-ubyte", MakeIdx({1, 2, 2}, {0, 0, 0, 0}));
  WriteFile(m / "train-labels-idx1-ubyte", MakeIdx({1}, {1}));
  WriteFile(m / "t10k-images-idx3-ubyte", MakeIdx({1, 1, 3}, {0, 0, 0}));
  WriteFile(m / "t10k-labels-idx1-ubyte", MakeIdx({1}, {1}));
  EXPECT_TRUE(HasCodeAndWords(LoadNamedDataset(dir_.string(), "mnist").status(), kInvalidArgument,
                              {"training images are [1,2,2]", "test images are [1,1,3]"}));
}

TEST(SyntheticMnistTest, LoadsAsMnistWithTheDocumentedPixels) {
  // tests/common/synthetic_mnist.h: what the unit tests train on instead of the real MNIST.
  const vae::testing::SyntheticDataDir dir(/*train=*/30, /*test=*/20);
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir.path(), "mnist");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.images.sizes(), (std::vector<int64_t>{30, 1, 28, 28}));
  EXPECT_EQ(s->test.images.sizes(), (std::vector<int64_t>{20, 1, 28, 28}));
  EXPECT_TRUE(at::equal(s->train.labels, at::arange(30, at::kLong).remainder(10))) << s->train.labels;
  // Every pixel is background 0, grey edge 128 or ink 255.
  const at::Tensor bytes = s->train.images.mul(255).round();
  EXPECT_TRUE(bytes.eq(0).logical_or(bytes.eq(128)).logical_or(bytes.eq(255)).all().item<bool>());
  // Two 24 x 3 strokes crossing in a 3 x 3 square: 2 * 72 - 9 = 135 pixels inked in each image, of which the two
  // centre lines, 2 * 24 - 1 = 47, at 255; pixel mean (47 * 255 + 88 * 128) / 255 / 784 = 0.1163.
  const at::Tensor inked = bytes.gt(0).sum({1, 2, 3});
  EXPECT_TRUE(at::equal(inked, at::full({30}, 135, at::kLong))) << inked;
  EXPECT_TRUE(at::equal(bytes.eq(255).sum({1, 2, 3}), at::full({30}, 47, at::kLong)));
  EXPECT_NEAR(s->train.images.mean().item<double>(), 0.1163, 1e-4);
  // The label moves the vertical stroke right by 3/2 pixel per step: label 9's is 13 pixels right of label 0's,
  // more than the shifts (-2..2 each) can close, so their column sums peak in different places.
  const at::Tensor columns = s->train.images.sum({1, 2});  // [30, 28]
  EXPECT_GE(columns[9].argmax().item<int64_t>() - columns[0].argmax().item<int64_t>(), 9);
  // Seeded: a second directory written with the same seed holds the same bytes; another seed moves the strokes.
  const vae::testing::SyntheticDataDir same(30, 20), other(30, 20, /*seed=*/2);
  EXPECT_TRUE(at::equal(LoadNamedDataset(same.path(), "mnist")->train.images, s->train.images));
  EXPECT_FALSE(at::equal(LoadNamedDataset(other.path(), "mnist")->train.images, s->train.images));
}

// ---------------------------------------------------------------------------------------------------------------
// Real data (scripts/fetch-data.sh)

TEST(RealDataTest, Mnist) {
  const std::string dir = DataDir();
  if (dir.empty()) return;
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir, "mnist");
  ASSERT_TRUE(s.ok()) << s.status();
  // LeCun's MNIST: 60000 training and 10000 test digits of 28x28.
  EXPECT_EQ(s->train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(s->test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(s->train.labels.sizes(), (std::vector<int64_t>{60000}));
  EXPECT_EQ(s->test.labels.sizes(), (std::vector<int64_t>{10000}));
  // The first training digit is the well-known "5", the first test digit a "7".
  EXPECT_EQ(s->train.labels[0].item<int64_t>(), 5);
  EXPECT_EQ(s->test.labels[0].item<int64_t>(), 7);
  // Labels are digits; every digit occurs. Pixels span exactly [0, 1].
  EXPECT_EQ(s->train.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(s->train.labels.max().item<int64_t>(), 9);
  EXPECT_EQ(s->train.images.min().item<float>(), 0.0f);
  EXPECT_EQ(s->train.images.max().item<float>(), 1.0f);
  // The normalisation constants every MNIST example uses: mean 0.1307, std 0.3081 of the training pixels.
  EXPECT_NEAR(s->train.images.mean().item<double>(), 0.1307, 1e-3);
  EXPECT_NEAR(s->train.images.std().item<double>(), 0.3081, 1e-3);
}

TEST(RealDataTest, FashionMnist) {
  const std::string dir = DataDir();
  if (dir.empty()) return;
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir, "fashion-mnist");
  ASSERT_TRUE(s.ok()) << s.status();
  // Zalando's Fashion-MNIST: same shapes as MNIST, by design.
  EXPECT_EQ(s->train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(s->test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  // The first training and test items are both class 9 (ankle boot).
  EXPECT_EQ(s->train.labels[0].item<int64_t>(), 9);
  EXPECT_EQ(s->test.labels[0].item<int64_t>(), 9);
  // Balanced classes: 6000 training images of each of the 10 classes.
  const at::Tensor counts = at::bincount(s->train.labels);
  EXPECT_TRUE(at::equal(counts, at::full({10}, 6000, at::kLong))) << counts;
  // Training pixel mean 0.2860 (the constant Fashion-MNIST examples normalise with).
  EXPECT_NEAR(s->train.images.mean().item<double>(), 0.2860, 1e-3);
}

TEST(RealDataTest, MaxTrainAndMaxTestKeepTheFirstImages) {
  const std::string dir = DataDir();
  if (dir.empty()) return;
  absl::StatusOr<TrainTestSplit> s = LoadNamedDataset(dir, "mnist", 100, 10);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.size(), 100);
  EXPECT_EQ(s->test.size(), 10);
  EXPECT_EQ(s->train.labels[0].item<int64_t>(), 5);
}

// ---------------------------------------------------------------------------------------------------------------
// Image folders

TEST_F(DatasetTest, ImageFolderGrayscaleExactPixels) {
  // A 2x2 PNG (lossless) with pixels 0, 51, 102, 255.
  cv::Mat gray = (cv::Mat_<uint8_t>(2, 2) << 0, 51, 102, 255);
  ASSERT_TRUE(cv::imwrite((dir_ / "g.png").string(), gray));
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 1, 2, 2);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->images.sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
  EXPECT_TRUE(d->images.is_contiguous());
  EXPECT_FALSE(d->labels.defined());
  EXPECT_TRUE(at::equal(d->images[0][0], at::tensor({0.0f, 0.2f, 0.4f, 1.0f}).view({2, 2}))) << d->images;
}

TEST_F(DatasetTest, ImageFolderConvertsBgrToRgb) {
  // OpenCV stores pixels as BGR: (0, 0, 255) is pure red, (255, 0, 0) pure blue. In the tensor red must be
  // channel 0 and blue channel 2.
  cv::Mat red(3, 3, CV_8UC3, cv::Scalar(0, 0, 255));
  red.at<cv::Vec3b>(1, 1) = cv::Vec3b(255, 0, 0);
  ASSERT_TRUE(cv::imwrite((dir_ / "red.png").string(), red));
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 3, 3, 3);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->images.sizes(), (std::vector<int64_t>{1, 3, 3, 3}));
  const at::Tensor img = d->images[0];
  EXPECT_EQ(img[0][0][0].item<float>(), 1.0f);  // R
  EXPECT_EQ(img[1][0][0].item<float>(), 0.0f);  // G
  EXPECT_EQ(img[2][0][0].item<float>(), 0.0f);  // B
  EXPECT_EQ(img[0][1][1].item<float>(), 0.0f);  // the blue centre pixel
  EXPECT_EQ(img[2][1][1].item<float>(), 1.0f);
  // 8 red pixels and 1 blue one.
  EXPECT_FLOAT_EQ(img[0].sum().item<float>(), 8.0f);
  EXPECT_FLOAT_EQ(img[2].sum().item<float>(), 1.0f);
}

TEST_F(DatasetTest, ImageFolderGrayscaleFromColour) {
  // channels = 1 decodes colour as luma: pure red is 0.299 * 255 = 76.2 -> 76 (OpenCV rounds), so 76/255.
  ASSERT_TRUE(cv::imwrite((dir_ / "red.png").string(), cv::Mat(2, 2, CV_8UC3, cv::Scalar(0, 0, 255))));
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 1, 2, 2);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_NEAR(d->images[0][0][0][0].item<float>(), 76.0f / 255.0f, 1.01f / 255.0f);
}

TEST_F(DatasetTest, ImageFolderResizesNonSquareWithAreaAveraging) {
  // A 4 (high) x 8 (wide) image whose columns alternate 0 and 200. Down to 4x4, INTER_AREA averages each pair of
  // columns: every output pixel is 100, i.e. 100/255. A nearest-neighbour resize would give 0 or 200 instead.
  cv::Mat stripes(4, 8, CV_8UC1);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 8; ++c) stripes.at<uint8_t>(r, c) = c % 2 == 0 ? 0 : 200;
  }
  ASSERT_TRUE(cv::imwrite((dir_ / "stripes.png").string(), stripes));
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 1, 4, 4);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->images.sizes(), (std::vector<int64_t>{1, 1, 4, 4}));
  EXPECT_TRUE(at::allclose(d->images, at::full({1, 1, 4, 4}, 100.0f / 255.0f)));

  // Non-square output: 4x8 -> 2x4 averages 2x2 blocks, again 100.
  absl::StatusOr<Dataset> wide = LoadImageFolder(dir_.string(), 1, 2, 4);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->images.sizes(), (std::vector<int64_t>{1, 1, 2, 4}));
  EXPECT_TRUE(at::allclose(wide->images, at::full({1, 1, 2, 4}, 100.0f / 255.0f)));
}

TEST_F(DatasetTest, ImageFolderRecursesSortsAndFiltersExtensions) {
  // Pixel value = the order the paths sort in: "a/x.BMP" < "b.jpeg" < "c.png" (a jpeg is lossy: a flat image
  // stays within a level or two). Non-image files are ignored.
  const auto flat = [](int v) { return cv::Mat(2, 2, CV_8UC1, cv::Scalar(v)); };
  fs::create_directories(dir_ / "a");
  ASSERT_TRUE(cv::imwrite((dir_ / "c.png").string(), flat(30)));
  ASSERT_TRUE(cv::imwrite((dir_ / "a" / "x.BMP").string(), flat(10)));
  ASSERT_TRUE(cv::imwrite((dir_ / "b.jpeg").string(), flat(20)));
  WriteFile(dir_ / "notes.txt", "not an image");
  WriteFile(dir_ / "a" / "README", "not an image either");
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 1, 2, 2);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 3);
  EXPECT_FLOAT_EQ(d->images[0].mean().item<float>(), 10.0f / 255.0f);
  EXPECT_NEAR(d->images[1].mean().item<float>(), 20.0f / 255.0f, 2.0f / 255.0f);
  EXPECT_FLOAT_EQ(d->images[2].mean().item<float>(), 30.0f / 255.0f);

  absl::StatusOr<Dataset> first = LoadImageFolder(dir_.string(), 1, 2, 2, /*max_count=*/1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1);
  EXPECT_FLOAT_EQ(first->images[0].mean().item<float>(), 10.0f / 255.0f);
}

TEST_F(DatasetTest, ImageFolderUndecodableFileIsNamed) {
  ASSERT_TRUE(cv::imwrite((dir_ / "good.png").string(), cv::Mat(2, 2, CV_8UC1, cv::Scalar(1))));
  WriteFile(dir_ / "broken.png", "this is text, not a PNG");
  absl::StatusOr<Dataset> d = LoadImageFolder(dir_.string(), 1, 2, 2);
  EXPECT_TRUE(HasCodeAndWords(d.status(), kInvalidArgument, {"cannot decode", (dir_ / "broken.png").string()}));
}

TEST_F(DatasetTest, ImageFolderConfinedToADirectoryRefusesFilesThatLinkOut) {
  const fs::path folder = dir_ / "images";
  const fs::path outside = dir_ / "elsewhere";
  fs::create_directories(folder);
  fs::create_directories(outside);
  ASSERT_TRUE(cv::imwrite((folder / "a.png").string(), cv::Mat(2, 2, CV_8UC1, cv::Scalar(1))));
  ASSERT_TRUE(cv::imwrite((outside / "b.png").string(), cv::Mat(2, 2, CV_8UC1, cv::Scalar(2))));
  fs::create_symlink(outside / "b.png", folder / "b.png");
  // Unconfined, the link is just another image; confined to the folder, it leads out.
  auto all = LoadImageFolder(folder.string(), 1, 2, 2);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 2);
  EXPECT_TRUE(HasCodeAndWords(LoadImageFolder(folder.string(), 1, 2, 2, -1, folder.string()).status(),
                              absl::StatusCode::kPermissionDenied, {(folder / "b.png").string(), "outside"}));
  // Confined to a directory that holds both, it is fine.
  auto both = LoadImageFolder(folder.string(), 1, 2, 2, -1, dir_.string());
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->size(), 2);
  EXPECT_TRUE(PathIsWithin("/data/x", "/data"));
  EXPECT_TRUE(PathIsWithin("/data", "/data/"));
  EXPECT_FALSE(PathIsWithin("/data2/x", "/data"));
  EXPECT_FALSE(PathIsWithin("/", "/data"));
}

TEST_F(DatasetTest, ImageFolderEmptyMissingAndBadArguments) {
  WriteFile(dir_ / "notes.txt", "no images here");
  EXPECT_TRUE(HasCodeAndWords(LoadImageFolder(dir_.string(), 1, 28, 28).status(), kInvalidArgument,
                              {"holds no image", dir_.string()}));
  EXPECT_TRUE(
      HasCodeAndWords(LoadImageFolder((dir_ / "missing").string(), 1, 28, 28).status(), kNotFound, {"does not exist"}));
  EXPECT_TRUE(HasCodeAndWords(LoadImageFolder(dir_.string(), 2, 28, 28).status(), kInvalidArgument,
                              {"channels is 2, expected 1 or 3"}));
  EXPECT_TRUE(HasCodeAndWords(LoadImageFolder(dir_.string(), 1, 0, 28).status(), kInvalidArgument, {"size 0x28"}));
}

// ---------------------------------------------------------------------------------------------------------------
// Shuffling, splitting, binarisation

TEST(EpochPermutationTest, IsASeededPermutation) {
  const at::Tensor p = EpochPermutation(1000, /*seed=*/42, /*epoch=*/3);
  EXPECT_EQ(p.scalar_type(), at::kLong);
  // A permutation: sorted it is 0..999.
  EXPECT_TRUE(at::equal(std::get<0>(p.sort()), at::arange(1000, at::kLong)));
  // Not the identity (probability 1/1000! of a false failure).
  EXPECT_FALSE(at::equal(p, at::arange(1000, at::kLong)));
  // Same (seed, epoch): identical, whatever ran before (the generator is created per call).
  (void)EpochPermutation(1000, 42, 2);
  EXPECT_TRUE(at::equal(p, EpochPermutation(1000, 42, 3)));
  // Another epoch or another seed: a different order.
  EXPECT_FALSE(at::equal(p, EpochPermutation(1000, 42, 4)));
  EXPECT_FALSE(at::equal(p, EpochPermutation(1000, 43, 3)));
  EXPECT_EQ(EpochPermutation(0, 42, 0).numel(), 0);
}

TEST(SplitDatasetTest, SplitsBySeededShuffleAndKeepsLabelsWithImages) {
  // Ten 1x1x1 images whose pixel value is label / 10, so a mix-up of images and labels would show.
  Dataset d;
  d.labels = at::arange(10, at::kLong);
  d.images = (d.labels.to(at::kFloat) / 10.0f).view({10, 1, 1, 1});
  const TrainTestSplit s = SplitDataset(d, 0.2, 7);
  EXPECT_EQ(s.train.size(), 8);
  EXPECT_EQ(s.test.size(), 2);
  for (const Dataset* part : {&s.train, &s.test}) {
    EXPECT_TRUE(at::allclose(part->images.flatten(), part->labels.to(at::kFloat) / 10.0f));
  }
  // Together they hold every example once.
  const at::Tensor all = at::cat({s.train.labels, s.test.labels});
  EXPECT_TRUE(at::equal(std::get<0>(all.sort()), at::arange(10, at::kLong)));
  // Same seed, same split; fractions 0 and 1 give empty test and empty train sets.
  EXPECT_TRUE(at::equal(SplitDataset(d, 0.2, 7).test.labels, s.test.labels));
  EXPECT_EQ(SplitDataset(d, 0.0, 7).test.size(), 0);
  EXPECT_EQ(SplitDataset(d, 1.0, 7).train.size(), 0);
  // Unlabelled data splits too.
  Dataset unlabelled{d.images, at::Tensor()};
  EXPECT_EQ(SplitDataset(unlabelled, 0.5, 7).test.size(), 5);
  EXPECT_FALSE(SplitDataset(unlabelled, 0.5, 7).test.labels.defined());
}

TEST(BinarizeTest, BernoulliOfThePixelValue) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(123);
  // 0 stays 0 and 1 stays 1 with certainty.
  const at::Tensor ends = Binarize(at::tensor({0.0f, 1.0f, 0.0f, 1.0f}), gen);
  EXPECT_TRUE(at::equal(ends, at::tensor({0.0f, 1.0f, 0.0f, 1.0f})));
  // 100000 pixels of 0.3: all 0 or 1, mean 0.3 within 0.01 (the std of the mean is sqrt(0.21/1e5) = 0.0014, so
  // this is a 7-sigma bound).
  const at::Tensor b = Binarize(at::full({100000}, 0.3f), gen);
  EXPECT_EQ(b.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::logical_or(b == 0, b == 1).all().item<bool>());
  EXPECT_NEAR(b.mean().item<double>(), 0.3, 0.01);
  // Same generator seed, same draw.
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator g0 = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor x = at::rand({64}, g0);
  EXPECT_TRUE(at::equal(Binarize(x, g1), Binarize(x, g2)));
}

}  // namespace
}  // namespace vae
