// A tiny MNIST look-alike that the tests write themselves, so that the unit tests of the model, data and server
// layers need no download (tests that check facts of the real MNIST are in suites named *RealDataTest, labelled
// `real_data` in CTest; see tests/CMakeLists.txt).
//
// WriteSyntheticMnist(dir, ...) writes dir/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte, the layout
// scripts/fetch-data.sh writes, so LoadNamedDataset and DatasetRegistry find it under the name "mnist". Image i of
// each file has label i % 10 and shows a "digit" of two crossing strokes on a 0 background, each 24 pixels long and
// 3 wide (ink 255 on the centre line, grey 128 beside it): a vertical one centred on column 6 + 3 * label / 2 and a
// horizontal one on row 20 - 3 * label / 2 (integer division), each shifted by -2..2 pixels by a generator seeded
// with `seed`, so the images vary along two directions a VAE learns in a few steps. Every image has 135 inked
// pixels of 784 (17 %; MNIST: 19 %), 47 of them at 255; its pixel mean is 0.116 (MNIST: 0.131). Torch-free.
#ifndef VAE_TESTS_COMMON_SYNTHETIC_MNIST_H_
#define VAE_TESTS_COMMON_SYNTHETIC_MNIST_H_

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/common/test_util.h"

namespace vae::testing {

constexpr int kSyntheticSide = 28;           // images are 28 x 28, one channel, as MNIST's
constexpr int kSyntheticTrainImages = 1200;  // default sizes: enough for 12 batches of 100
constexpr int kSyntheticTestImages = 200;

// The 28 x 28 bytes of a synthetic digit `label` (0..9), row-major; draws two values from `rng`.
inline std::vector<uint8_t> SyntheticDigit(int label, std::mt19937& rng) {
  // Raw mt19937 output (fully specified by the standard), not a distribution (implementation-defined): the same
  // seed gives the same images with every standard library.
  const int column = 6 + 3 * label / 2 + static_cast<int>(rng() % 5) - 2;
  const int row = 20 - 3 * label / 2 + static_cast<int>(rng() % 5) - 2;
  std::vector<uint8_t> image(kSyntheticSide * kSyntheticSide, 0);
  auto ink = [&](int r, int c, int offset) {  // offset: distance from the stroke's centre line
    const uint8_t value = offset == 0 ? 255 : 128;
    uint8_t& pixel = image[r * kSyntheticSide + c];
    if (value > pixel) pixel = value;
  };
  // column is in 4..21 and row in 5..22: both strokes lie inside the image and always cross (in a 3 x 3 square).
  for (int i = 2; i < 26; ++i) {
    for (int offset = -1; offset <= 1; ++offset) {
      ink(i, column + offset, offset);  // the vertical stroke, rows 2..25
      ink(row + offset, i, offset);     // the horizontal stroke, columns 2..25
    }
  }
  return image;
}

// An idx file: 0x00 0x00 0x08 (unsigned bytes) ndims, big-endian uint32 dims, then the bytes.
inline void WriteIdxFile(const std::filesystem::path& path, const std::vector<uint32_t>& dims,
                         const std::vector<uint8_t>& data) {
  std::string header = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<char>(d >> shift));
  }
  std::ofstream out(path, std::ios::binary);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out.good()) ADD_FAILURE() << "cannot write " << path;
}

// Writes `train` training and `test` test images with their labels into dir/mnist (created), as described above.
// The test images come from the same generator, after the training ones.
inline void WriteSyntheticMnist(const std::string& dir, int train = kSyntheticTrainImages,
                                int test = kSyntheticTestImages, uint32_t seed = 1) {
  const std::filesystem::path mnist = std::filesystem::path(dir) / "mnist";
  std::filesystem::create_directories(mnist);
  std::mt19937 rng(seed);
  for (const auto& [prefix, count] : {std::pair<std::string, int>{"train", train}, {"t10k", test}}) {
    std::vector<uint8_t> images, labels;
    for (int i = 0; i < count; ++i) {
      const std::vector<uint8_t> digit = SyntheticDigit(i % 10, rng);
      images.insert(images.end(), digit.begin(), digit.end());
      labels.push_back(static_cast<uint8_t>(i % 10));
    }
    const auto n = static_cast<uint32_t>(count), side = static_cast<uint32_t>(kSyntheticSide);
    WriteIdxFile(mnist / (prefix + "-images-idx3-ubyte"), {n, side, side}, images);
    WriteIdxFile(mnist / (prefix + "-labels-idx1-ubyte"), {n}, labels);
  }
}

// A temporary data directory holding only the synthetic "mnist" (removed with everything in it when the object
// goes away): what a unit test passes where the server takes --data_dir.
class SyntheticDataDir {
 public:
  explicit SyntheticDataDir(int train = kSyntheticTrainImages, int test = kSyntheticTestImages, uint32_t seed = 1) {
    WriteSyntheticMnist(dir_.path(), train, test, seed);
  }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

}  // namespace vae::testing

#endif  // VAE_TESTS_COMMON_SYNTHETIC_MNIST_H_
