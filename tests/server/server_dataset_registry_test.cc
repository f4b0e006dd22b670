// Dataset names -> images, confined to --data_dir.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "server/dataset_registry.h"
#include "tests/common/synthetic_mnist.h"
#include "tests/common/test_util.h"
#include "tests/server/server_test_util.h"

namespace vae::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::vae::testing::SyntheticDataDir;
using ::vae::testing::TempDir;
using ::vae::testing::TinyOptions;

// data_dir/
//   digits/      20 grayscale 28x28 PNGs, image i filled with value 10 * i
//   inner -> digits           (a symlink that stays inside)
//   escape -> outside/        (a symlink that leaves)
//   notes.txt
// outside/       2 PNGs
class DatasetRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = fs::path(root_.path()) / "data";
    outside_ = fs::path(root_.path()) / "outside";
    fs::create_directories(data_ / "digits");
    fs::create_directories(outside_);
    for (int i = 0; i < 20; ++i) {
      const cv::Mat image(28, 28, CV_8UC1, cv::Scalar(10 * i));
      ASSERT_TRUE(cv::imwrite((data_ / "digits" / ("img" + std::to_string(100 + i) + ".png")).string(), image));
    }
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(cv::imwrite((outside_ / ("x" + std::to_string(i) + ".png")).string(), cv::Mat(28, 28, CV_8UC1)));
    }
    fs::create_directory_symlink(data_ / "digits", data_ / "inner");
    fs::create_directory_symlink(outside_, data_ / "escape");
    std::ofstream(data_ / "notes.txt") << "not a folder";
  }
  TempDir root_;
  fs::path data_, outside_;
};

TEST_F(DatasetRegistryTest, NamesThatLeaveDataDirArePermissionDenied) {
  DatasetRegistry registry(data_.string());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/etc", "dataset '/etc' is an absolute path; expected a path relative to --data_dir"},
      {outside_.string(), "is an absolute path"},
      {"..", "dataset '..' contains '..'; expected a path inside --data_dir"},
      {"../outside", "contains '..'"},
      {"digits/../../outside", "contains '..'"},
      {"escape", "dataset 'escape': " + (data_ / "escape").string() + " resolves to " +
                     fs::canonical(outside_).string() + ", outside " + fs::canonical(data_).string()},
      {"escape/", "outside " + fs::canonical(data_).string()},
      {"escape/missing", "outside " + fs::canonical(data_).string()},
  };
  for (const auto& [name, message] : cases) {
    SCOPED_TRACE(name);
    auto resolved = registry.Resolve(name);
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(resolved.status().message(), HasSubstr(message));
    EXPECT_EQ(registry.Load(name, TinyOptions(), 0).status().code(), absl::StatusCode::kPermissionDenied);
  }
}

// The folder itself may be inside --data_dir while a file in it links out: the file is refused, nothing is read.
TEST_F(DatasetRegistryTest, ImageFilesThatLinkOutOfDataDirArePermissionDenied) {
  DatasetRegistry registry(data_.string());
  fs::create_directories(data_ / "mixed");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cv::imwrite((data_ / "mixed" / ("own" + std::to_string(i) + ".png")).string(),
                            cv::Mat(28, 28, CV_8UC1, cv::Scalar(50))));
  }
  fs::create_symlink(data_ / "digits" / "img100.png", data_ / "mixed" / "linked_inside.png");
  ASSERT_TRUE(registry.Load("mixed", TinyOptions(), 0).ok());  // a link that stays inside is fine: 4 images

  fs::create_symlink(outside_ / "x0.png", data_ / "mixed" / "leak.png");
  auto leaked = registry.Load("mixed", TinyOptions(), 0);
  EXPECT_EQ(leaked.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(leaked.status().message(), HasSubstr((data_ / "mixed" / "leak.png").string()));
  EXPECT_THAT(leaked.status().message(), HasSubstr("resolves to " + fs::canonical(outside_ / "x0.png").string()));
}

// A named dataset in MNIST's layout: `train` 28x28 training images (image i filled with value i) and 2 test images.
void WriteTinyMnist(const fs::path& dir, int train) {
  fs::create_directories(dir);
  auto idx = [](const fs::path& path, std::vector<uint32_t> dims, uint8_t first) {
    std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
    size_t count = 1;
    for (uint32_t d : dims) {
      for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>(d >> shift));
      count *= d;
    }
    const size_t per_item = count / dims[0];
    for (size_t i = 0; i < count; ++i) bytes.push_back(static_cast<char>(first + i / per_item));
    std::ofstream(path, std::ios::binary) << bytes;
  };
  const uint32_t n = static_cast<uint32_t>(train);
  idx(dir / "train-images-idx3-ubyte", {n, 28, 28}, 0);
  idx(dir / "train-labels-idx1-ubyte", {n}, 0);
  idx(dir / "t10k-images-idx3-ubyte", {2, 28, 28}, 100);
  idx(dir / "t10k-labels-idx1-ubyte", {2}, 0);
}

// Regression: the folder's resolved path used to be split into parent + "mnist", so a named dataset folder linked to
// another place inside --data_dir was NOT_FOUND.
TEST_F(DatasetRegistryTest, ANamedDatasetFolderMayLinkElsewhereInsideDataDir) {
  WriteTinyMnist(data_ / "store" / "mnist-v1", 4);
  fs::create_directory_symlink(data_ / "store" / "mnist-v1", data_ / "mnist");
  DatasetRegistry registry(data_.string());
  auto split = registry.Load("mnist", TinyOptions(), 0);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ((*split)->train.size(), 4);
  EXPECT_EQ((*split)->test.size(), 2);
  // Training image i is filled with i / 255, test image j with (100 + j) / 255: the files of the linked folder.
  EXPECT_FLOAT_EQ((*split)->train.images[3].mean().item<float>(), 3.0f / 255.0f);
  EXPECT_FLOAT_EQ((*split)->test.images[1].mean().item<float>(), 101.0f / 255.0f);
}

// Regression: idx files were opened wherever their links pointed. Now they follow the image files' rule: a link that
// stays inside --data_dir is followed, one that leaves is PERMISSION_DENIED, naming the file, before anything is read.
TEST_F(DatasetRegistryTest, IdxFilesThatLinkOutOfDataDirArePermissionDenied) {
  WriteTinyMnist(data_ / "mnist", 4);
  WriteTinyMnist(data_ / "spare", 6);
  WriteTinyMnist(outside_ / "mnist", 8);
  const fs::path train_images = data_ / "mnist" / "train-images-idx3-ubyte";
  const fs::path train_labels = data_ / "mnist" / "train-labels-idx1-ubyte";
  fs::remove(train_images);
  fs::remove(train_labels);
  fs::create_symlink(data_ / "spare" / "train-images-idx3-ubyte", train_images);
  fs::create_symlink(data_ / "spare" / "train-labels-idx1-ubyte", train_labels);
  auto inside = DatasetRegistry(data_.string()).Load("mnist", TinyOptions(), 0);
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ((*inside)->train.size(), 6);  // spare's images, through the links

  fs::remove(train_images);
  fs::create_symlink(outside_ / "mnist" / "train-images-idx3-ubyte", train_images);
  auto leaked = DatasetRegistry(data_.string()).Load("mnist", TinyOptions(), 0);
  EXPECT_EQ(leaked.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(leaked.status().message(),
              HasSubstr(train_images.string() + " resolves to " +
                        fs::canonical(outside_ / "mnist" / "train-images-idx3-ubyte").string() + ", outside " +
                        fs::canonical(data_).string()));
}

TEST_F(DatasetRegistryTest, MissingEmptyAndNonFolderNames) {
  DatasetRegistry registry(data_.string());
  auto missing = registry.Resolve("celeba");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("dataset 'celeba' not found under --data_dir"));
  EXPECT_EQ(registry.Resolve("mnist").status().code(), absl::StatusCode::kNotFound);  // not fetched into this dir
  EXPECT_EQ(registry.Resolve("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Resolve(std::string("dig\0its", 7)).status().code(), absl::StatusCode::kInvalidArgument);
  auto file = registry.Resolve("notes.txt");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("is not a folder"));
  EXPECT_EQ(DatasetRegistry("/no/such/dir").Resolve("digits").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetRegistryTest, AnImageFolderIsSplitNinetyTen) {
  DatasetRegistry registry(data_.string());
  EXPECT_EQ(*registry.Resolve("inner"), fs::canonical(data_ / "digits").string());  // a symlink that stays inside
  auto split = registry.Load("digits", TinyOptions(), 0);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ((*split)->train.size(), 18);
  EXPECT_EQ((*split)->test.size(), 2);
  EXPECT_EQ((*split)->train.images.sizes(), at::IntArrayRef({18, 1, 28, 28}));
  // Every image is one flat value 10 * i / 255; together train and test hold each i once.
  const at::Tensor values = at::cat({(*split)->train.images, (*split)->test.images}).mean({1, 2, 3}).mul(25.5).round();
  EXPECT_TRUE(at::equal(std::get<0>(values.sort()), at::arange(20, at::kFloat)));
  // The split is fixed: a second load holds out the same images.
  auto again = registry.Load("digits", TinyOptions(), 0);
  EXPECT_TRUE(at::equal((*again)->test.images, (*split)->test.images));
  // max_train keeps the first N training images.
  auto head = registry.Load("digits", TinyOptions(), 5);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ((*head)->train.size(), 5);
  EXPECT_TRUE(at::equal((*head)->train.images, (*split)->train.images.slice(0, 0, 5)));
  EXPECT_EQ((*head)->test.size(), 2);
}

TEST(DatasetRegistryMnistTest, NamedDatasetsLoadOnceAndMustMatchTheModel) {
  const SyntheticDataDir data;
  DatasetRegistry registry(data.path());
  auto first = registry.Load("mnist", *Preset("mnist"), 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->train.size(), vae::testing::kSyntheticTrainImages);
  EXPECT_EQ((*first)->test.size(), vae::testing::kSyntheticTestImages);
  auto head = registry.Load("mnist", *Preset("mnist"), 1000);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ((*head)->train.size(), 1000);
  EXPECT_EQ((*head)->test.size(), vae::testing::kSyntheticTestImages);
  // Cached: the second load shares the first one's memory.
  EXPECT_EQ((*head)->train.images.data_ptr(), (*first)->train.images.data_ptr());
  EXPECT_EQ((*head)->test.images.data_ptr(), (*first)->test.images.data_ptr());

  auto mismatch = registry.Load("mnist", *Preset("conv64"), 0);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(),
              HasSubstr("dataset mnist has images [1,28,28], the model expects [3,64,64]"));
}

}  // namespace
}  // namespace vae::server
