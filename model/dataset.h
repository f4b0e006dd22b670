// In-memory image datasets: idx files (MNIST, Fashion-MNIST), folders of images (OpenCV), seeded shuffling and
// dynamic binarisation. A Dataset is one float tensor, which is what makes an MLP epoch fast (index_select per batch).
// Only narrow ATen headers here (torch::Tensor is the same type as at::Tensor). The loaders are thread-safe (no
// shared state); torch failures inside them come back as INTERNAL, never as exceptions.
#ifndef VAE_MODEL_DATASET_H_
#define VAE_MODEL_DATASET_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace vae {

struct Dataset {
  at::Tensor images;  // [N, C, H, W] float32 in [0, 1], CPU, contiguous
  at::Tensor labels;  // [N] int64, or undefined when the source has none
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// Images from an idx file (uint8, [N, H, W] -> [N, 1, H, W] / 255) and, when `labels_path` is not empty, labels.
// `max_count` >= 0 keeps only the first max_count images. Errors: those of ReadIdx (NOT_FOUND, INVALID_ARGUMENT);
// INVALID_ARGUMENT when the images file is not 3-D, the labels file not 1-D, or their counts disagree.
absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                                       int64_t max_count = -1);

struct TrainTestSplit {
  Dataset train;
  Dataset test;
};

// A dataset by name under `data_dir` (the layout scripts/fetch-data.sh writes):
//   "mnist"          data_dir/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   "fashion-mnist"  data_dir/fashion-mnist/ (same file names)
// NOT_FOUND naming the missing file and the command that fetches it; INVALID_ARGUMENT for any other name (the message
// lists the known ones) or when training and test images differ in size. With `confine_to` (a directory), every idx
// file must resolve inside it (ResolveWithin), checked before any file is read.
absl::StatusOr<TrainTestSplit> LoadNamedDataset(const std::string& data_dir, const std::string& name,
                                                int64_t max_train = -1, int64_t max_test = -1,
                                                const std::string& confine_to = "");

// Every .png/.jpg/.jpeg/.bmp under `dir` (sorted by path), decoded by OpenCV, BGR converted to RGB (or to grayscale
// when channels == 1), resized to height x width (INTER_AREA); extensions match case-insensitively, subfolders are
// searched. `max_count` >= 0 keeps the first max_count paths. Labels are left undefined. NOT_FOUND when `dir` does
// not exist; INVALID_ARGUMENT when channels is not 1 or 3, a file cannot be decoded (the message names it) or the
// folder holds no image. With `confine_to` (a directory), every image file must resolve inside it (ResolveWithin),
// checked before any file is decoded.
absl::StatusOr<Dataset> LoadImageFolder(const std::string& dir, int64_t channels, int64_t height, int64_t width,
                                        int64_t max_count = -1, const std::string& confine_to = "");

// True when `path` is `root` or lies below it (both absolute and normalised), compared component by component so
// that /data2 is not taken to be inside /data.
bool PathIsWithin(const std::filesystem::path& path, const std::filesystem::path& root);

// The confinement rule for every file and folder a dataset is read from: `path` with every symlink of its existing
// part resolved (std::filesystem::weakly_canonical) must lie inside `root` (resolved too). Returns that resolved path;
// PERMISSION_DENIED "PATH resolves to TARGET, outside ROOT" otherwise; NOT_FOUND when `root` does not exist. A link
// anywhere on the way (the folder, a subfolder, the file) may point elsewhere inside `root`, never out of it.
absl::StatusOr<std::filesystem::path> ResolveWithin(const std::filesystem::path& path,
                                                    const std::filesystem::path& root);

// Splits off the last `test_fraction` (clamped to [0, 1], rounded to whole examples) of a dataset, after a shuffle
// seeded by `seed`, as its test set; labels stay with their images. The shuffle is independent of EpochPermutation.
TrainTestSplit SplitDataset(const Dataset& data, double test_fraction, uint64_t seed);

// The order in which epoch `epoch` visits `n` examples: a permutation drawn from a generator seeded by
// (seed, epoch), so an epoch's order does not depend on how many epochs ran before (resume is exact).
// [n] int64 on the CPU; n >= 0.
at::Tensor EpochPermutation(int64_t n, uint64_t seed, int64_t epoch);

// Dynamic binarisation: each pixel becomes 1 with probability equal to its value. `x` must hold values in [0, 1]
// (every Dataset's images do; torch throws c10::Error otherwise). Draws from, and advances, `generator`, locking it
// for the call, so a generator may be shared between threads.
at::Tensor Binarize(const at::Tensor& x, at::Generator& generator);

}  // namespace vae

#endif  // VAE_MODEL_DATASET_H_
