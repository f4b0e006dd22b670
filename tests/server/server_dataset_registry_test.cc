// Dataset names -> images, confined to --data_dir.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

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
      {"escape", "dataset 'escape' resolves to " + fs::canonical(outside_).string() + ", outside --data_dir"},
      {"escape/", "outside --data_dir"},
      {"escape/missing", "outside --data_dir"},
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
