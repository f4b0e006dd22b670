// In-memory image datasets: idx files (MNIST, Fashion-MNIST), folders of images (OpenCV), seeded shuffling and
// dynamic binarisation. A Dataset is one float tensor, which is what makes an MLP epoch fast (index_select per batch).
#ifndef VAE_MODEL_DATASET_H_
#define VAE_MODEL_DATASET_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace vae {

struct Dataset {
  at::Tensor images;  // [N, C, H, W] float32 in [0, 1], CPU, contiguous
  at::Tensor labels;  // [N] int64, or undefined when the source has none
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// Images from an idx file (uint8, [N, H, W] -> [N, 1, H, W] / 255) and, when `labels_path` is not empty, labels.
// `max_count` >= 0 keeps only the first max_count images. INVALID_ARGUMENT when the counts disagree.
absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                                       int64_t max_count = -1);

struct TrainTestSplit {
  Dataset train;
  Dataset test;
};

// A dataset by name under `data_dir` (the layout scripts/fetch-data.sh writes):
//   "mnist"          data_dir/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   "fashion-mnist"  data_dir/fashion-mnist/ (same file names)
// NOT_FOUND naming the missing file and the command that fetches it.
absl::StatusOr<TrainTestSplit> LoadNamedDataset(const std::string& data_dir, const std::string& name,
                                                int64_t max_train = -1, int64_t max_test = -1);

// Every .png/.jpg/.jpeg/.bmp under `dir` (sorted by path), decoded by OpenCV, BGR converted to RGB (or to grayscale
// when channels == 1), resized to height x width (INTER_AREA). INVALID_ARGUMENT when a file cannot be decoded or
// the folder holds no image.
absl::StatusOr<Dataset> LoadImageFolder(const std::string& dir, int64_t channels, int64_t height, int64_t width,
                                        int64_t max_count = -1);

// Splits off the last `test_fraction` of a dataset (after a seeded shuffle) as its test set.
TrainTestSplit SplitDataset(const Dataset& data, double test_fraction, uint64_t seed);

// The order in which epoch `epoch` visits `n` examples: a permutation drawn from a generator seeded by
// (seed, epoch), so an epoch's order does not depend on how many epochs ran before (resume is exact).
at::Tensor EpochPermutation(int64_t n, uint64_t seed, int64_t epoch);

// Dynamic binarisation: each pixel becomes 1 with probability equal to its value.
at::Tensor Binarize(const at::Tensor& x, at::Generator& generator);

}  // namespace vae

#endif  // VAE_MODEL_DATASET_H_
