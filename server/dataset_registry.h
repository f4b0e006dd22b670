// DatasetRegistry: turns a TrainRequest's dataset name into training and test images, confined to --data_dir.
//
//   "mnist", "fashion-mnist"  idx files under data_dir (vae::LoadNamedDataset), with their own test split. Loaded once
//                             and cached for the life of the registry (loading MNIST takes about a second).
//   any other name            a folder of images under data_dir (vae::LoadImageFolder, converted and resized to the
//                             model's input shape); 10% is held out as the test set by a fixed-seed shuffle, so the
//                             split is the same for every job and resume sees the same training set. Not cached:
//                             the folder may change between jobs.
//
// Confinement, one rule for every folder and file a Train reads (vae::ResolveWithin): with every symlink resolved it
// must lie inside data_dir. Links that stay inside are followed (a named dataset's folder, an idx file, an image may
// each link elsewhere under data_dir); a name or file that leaves data_dir is PERMISSION_DENIED, checked before
// anything is read: an absolute path, any ".." component, or a path whose symlinks resolve outside data_dir. A name
// that does not exist is NOT_FOUND.
//
// Threads: any thread; the cache is guarded by an internal mutex, held while a named dataset loads (so two jobs never
// load it twice). Datasets are handed out as shared_ptr<const>: read-only, alive while any job uses them.
#ifndef VAE_SERVER_DATASET_REGISTRY_H_
#define VAE_SERVER_DATASET_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/dataset.h"
#include "model/options.h"

namespace vae::server {

class DatasetRegistry {
 public:
  // Fraction of an image folder held out as its test set, and the seed of that split.
  static constexpr double kFolderTestFraction = 0.1;
  static constexpr uint64_t kFolderSplitSeed = 0;

  explicit DatasetRegistry(std::string data_dir);

  // True for the names served from idx files.
  static bool IsNamedDataset(const std::string& name);

  // The absolute, symlink-free path of the folder `name` refers to (for a named dataset: data_dir/name).
  // INVALID_ARGUMENT for an empty name or one with a NUL byte, PERMISSION_DENIED for one that leaves data_dir,
  // NOT_FOUND when it does not exist.
  absl::StatusOr<std::string> Resolve(const std::string& name) const;

  // Training and test images of `name` shaped for `model` ([N, C, H, W] = the model's input shape; named datasets
  // must already have it: INVALID_ARGUMENT otherwise). `max_train` > 0 keeps the first max_train training images.
  absl::StatusOr<std::shared_ptr<const TrainTestSplit>> Load(const std::string& name, const VaeOptions& model,
                                                             int64_t max_train);

  const std::string& data_dir() const { return data_dir_; }

 private:
  const std::string data_dir_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const TrainTestSplit>> named_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vae::server

#endif  // VAE_SERVER_DATASET_REGISTRY_H_
