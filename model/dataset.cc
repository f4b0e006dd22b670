#include "model/dataset.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/idx.h"
#include "common/status_macros.h"

namespace vae {
namespace {

namespace fs = std::filesystem;

constexpr std::array<const char*, 2> kKnownDatasets = {"mnist", "fashion-mnist"};
constexpr std::array<const char*, 4> kImageExtensions = {".png", ".jpg", ".jpeg", ".bmp"};

// splitmix64 (Steele, Lea & Flood 2014): a bijective mixer, so distinct inputs give distinct generator seeds.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The seed of the generator for (seed, stream): the golden-ratio multiple spreads consecutive streams (epochs)
// over the whole 64-bit range before mixing.
uint64_t MixSeed(uint64_t seed, uint64_t stream) { return SplitMix64(seed ^ (stream * 0x9E3779B97F4A7C15ULL)); }

// SplitDataset shuffles with its own stream so that its order is unrelated to any epoch's order.
constexpr uint64_t kSplitStream = 0x5350'4C49'5400'0000ULL;  // "SPLIT"

std::string DimsString(const std::vector<int64_t>& dims) { return absl::StrCat("[", absl::StrJoin(dims, ","), "]"); }

std::string LowerCase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool IsImageFile(const fs::path& p) {
  const std::string ext = LowerCase(p.extension().string());
  return std::any_of(kImageExtensions.begin(), kImageExtensions.end(), [&](const char* e) { return ext == e; });
}

// data_dir/name/file, or data_dir/name/file.gz when only that exists.
absl::StatusOr<std::string> FindIdxFile(const std::string& data_dir, const std::string& name, const std::string& file) {
  const fs::path plain = fs::path(data_dir) / name / file;
  const fs::path gz = fs::path(data_dir) / name / (file + ".gz");
  std::error_code ec;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  if (fs::is_regular_file(gz, ec)) return gz.string();
  return absl::NotFoundError(absl::StrCat("dataset ", name, ": neither ", plain.string(), " nor ", gz.string(),
                                          " exists; run scripts/fetch-data.sh ", data_dir));
}

// Decodes one image into `out` ([C, H, W] float32, already allocated) as values in [0, 255].
absl::Status DecodeImageInto(const std::string& path, int64_t channels, int64_t height, int64_t width, at::Tensor out) {
  cv::Mat img;
  try {
    img = cv::imread(path, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    if (img.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("image folder: cannot decode ", path));
    }
    if (channels == 3) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);  // OpenCV decodes to BGR; tensors are RGB
    if (img.rows != height || img.cols != width) {
      cv::Mat resized;
      cv::resize(img, resized, cv::Size(static_cast<int>(width), static_cast<int>(height)), 0, 0, cv::INTER_AREA);
      img = resized;
    }
    if (!img.isContinuous()) img = img.clone();
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image folder: cannot decode ", path, ": ", e.what()));
  }
  if (img.type() != (channels == 1 ? CV_8UC1 : CV_8UC3)) {
    return absl::InvalidArgumentError(absl::StrCat("image folder: ", path, " decoded to OpenCV type ", img.type(),
                                                   ", expected 8-bit with ", channels, " channels"));
  }
  // from_blob borrows the Mat's pixels; copy_ converts HWC uint8 into the tensor's own CHW float storage, so
  // nothing refers to `img` after this function returns (the effect of .clone(), without a second copy).
  const at::Tensor hwc = at::from_blob(img.data, {height, width, channels}, at::kByte);
  out.copy_(hwc.permute({2, 0, 1}));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                                       int64_t max_count) {
  VAE_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(images_path));
  if (images.dims.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("images ", images_path, ": dims ", DimsString(images.dims), ", expected 3 dims [N, H, W]"));
  }
  const int64_t n = images.dims[0];
  const int64_t h = images.dims[1];
  const int64_t w = images.dims[2];
  const int64_t keep = max_count >= 0 ? std::min(n, max_count) : n;

  IdxArray labels;
  if (!labels_path.empty()) {
    VAE_ASSIGN_OR_RETURN(labels, ReadIdx(labels_path));
    if (labels.dims.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels ", labels_path, ": dims ", DimsString(labels.dims), ", expected 1 dim [N]"));
    }
    if (labels.dims[0] != n) {
      return absl::InvalidArgumentError(absl::StrCat("labels ", labels_path, " hold ", labels.dims[0],
                                                     " labels, images ", images_path, " hold ", n, " images"));
    }
  }

  try {
    Dataset out;
    // from_blob borrows the idx buffer; .to() copies into a tensor that owns its memory.
    out.images = at::from_blob(images.data.data(), {keep, 1, h, w}, at::kByte).to(at::kFloat).div_(255.0f);
    if (!labels_path.empty()) {
      out.labels = at::from_blob(labels.data.data(), {keep}, at::kByte).to(at::kLong);
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LoadIdxDataset ", images_path, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<TrainTestSplit> LoadNamedDataset(const std::string& data_dir, const std::string& name, int64_t max_train,
                                                int64_t max_test, const std::string& confine_to) {
  if (std::find_if(kKnownDatasets.begin(), kKnownDatasets.end(), [&](const char* k) { return name == k; }) ==
      kKnownDatasets.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dataset \"", name, "\"; known datasets: ", absl::StrJoin(kKnownDatasets, ", ")));
  }
  VAE_ASSIGN_OR_RETURN(std::string train_images, FindIdxFile(data_dir, name, "train-images-idx3-ubyte"));
  VAE_ASSIGN_OR_RETURN(std::string train_labels, FindIdxFile(data_dir, name, "train-labels-idx1-ubyte"));
  VAE_ASSIGN_OR_RETURN(std::string test_images, FindIdxFile(data_dir, name, "t10k-images-idx3-ubyte"));
  VAE_ASSIGN_OR_RETURN(std::string test_labels, FindIdxFile(data_dir, name, "t10k-labels-idx1-ubyte"));
  if (!confine_to.empty()) {
    for (const std::string* path : {&train_images, &train_labels, &test_images, &test_labels}) {
      VAE_RETURN_IF_ERROR(ResolveWithin(*path, confine_to).status());
    }
  }
  TrainTestSplit split;
  VAE_ASSIGN_OR_RETURN(split.train, LoadIdxDataset(train_images, train_labels, max_train));
  VAE_ASSIGN_OR_RETURN(split.test, LoadIdxDataset(test_images, test_labels, max_test));
  if (split.train.images.sizes().slice(1) != split.test.images.sizes().slice(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset ", name, ": training images are ", DimsString(split.train.images.sizes().slice(1).vec()),
                     ", test images are ", DimsString(split.test.images.sizes().slice(1).vec())));
  }
  return split;
}

bool PathIsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator in root
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

absl::StatusOr<fs::path> ResolveWithin(const fs::path& path, const fs::path& root) {
  std::error_code ec;
  const fs::path real_root = fs::canonical(root, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(root.string(), " cannot be resolved: ", ec.message()));
  const fs::path target = fs::weakly_canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), " cannot be resolved: ", ec.message()));
  if (!PathIsWithin(target, real_root)) {
    return absl::PermissionDeniedError(
        absl::StrCat(path.string(), " resolves to ", target.string(), ", outside ", real_root.string()));
  }
  return target;
}

absl::StatusOr<Dataset> LoadImageFolder(const std::string& dir, int64_t channels, int64_t height, int64_t width,
                                        int64_t max_count, const std::string& confine_to) {
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("image folder: channels is ", channels, ", expected 1 or 3"));
  }
  if (height <= 0 || width <= 0 || height > 1 << 15 || width > 1 << 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("image folder: size ", height, "x", width, " is not in 1x1 .. 32768x32768"));
  }
  std::error_code ec;
  if (!fs::exists(dir, ec)) return absl::NotFoundError(absl::StrCat("image folder ", dir, " does not exist"));
  if (!fs::is_directory(dir, ec)) return absl::InvalidArgumentError(absl::StrCat(dir, " is not a directory"));

  std::vector<std::string> paths;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_regular_file(type_ec) && IsImageFile(it->path())) paths.push_back(it->path().string());
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("image folder ", dir, ": cannot list: ", ec.message()));
  if (paths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("image folder ", dir, " holds no image (", absl::StrJoin(kImageExtensions, " "), ")"));
  }
  std::sort(paths.begin(), paths.end());
  if (max_count >= 0 && static_cast<int64_t>(paths.size()) > max_count) paths.resize(max_count);
  if (!confine_to.empty()) {
    // The listing does not enter linked folders, but a linked file is "regular" through its link.
    for (const std::string& path : paths) {
      auto inside = ResolveWithin(path, confine_to);
      if (!inside.ok()) {
        return absl::Status(inside.status().code(), absl::StrCat("image folder: ", inside.status().message()));
      }
    }
  }

  try {
    Dataset out;
    out.images = at::empty({static_cast<int64_t>(paths.size()), channels, height, width}, at::kFloat);
    for (size_t i = 0; i < paths.size(); ++i) {
      VAE_RETURN_IF_ERROR(DecodeImageInto(paths[i], channels, height, width, out.images[i]));
    }
    out.images.div_(255.0f);
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LoadImageFolder ", dir, ": ", e.what_without_backtrace()));
  }
}

TrainTestSplit SplitDataset(const Dataset& data, double test_fraction, uint64_t seed) {
  const int64_t n = data.size();
  if (n == 0) return {data, data};
  const double fraction = std::isnan(test_fraction) ? 0.0 : std::clamp(test_fraction, 0.0, 1.0);
  const int64_t n_test = std::clamp<int64_t>(std::llround(fraction * static_cast<double>(n)), 0, n);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(seed, kSplitStream));
  const at::Tensor perm = at::randperm(n, gen, at::kLong);
  const at::Tensor train_idx = perm.slice(0, 0, n - n_test);
  const at::Tensor test_idx = perm.slice(0, n - n_test, n);
  TrainTestSplit split;
  split.train.images = data.images.index_select(0, train_idx);
  split.test.images = data.images.index_select(0, test_idx);
  if (data.labels.defined()) {
    split.train.labels = data.labels.index_select(0, train_idx);
    split.test.labels = data.labels.index_select(0, test_idx);
  }
  return split;
}

at::Tensor EpochPermutation(int64_t n, uint64_t seed, int64_t epoch) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(seed, static_cast<uint64_t>(epoch)));
  return at::randperm(n, gen, at::kLong);
}

at::Tensor Binarize(const at::Tensor& x, at::Generator& generator) { return at::bernoulli(x, generator); }

}  // namespace vae
