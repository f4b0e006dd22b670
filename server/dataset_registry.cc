#include "server/dataset_registry.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace vae::server {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

std::shared_ptr<const TrainTestSplit> HeadOfTrain(const std::shared_ptr<const TrainTestSplit>& split,
                                                  int64_t max_train) {
  if (max_train <= 0 || max_train >= split->train.size()) return split;
  auto head = std::make_shared<TrainTestSplit>();
  head->train.images = split->train.images.slice(0, 0, max_train);  // a view: the cached tensor stays read-only
  if (split->train.labels.defined()) head->train.labels = split->train.labels.slice(0, 0, max_train);
  head->test = split->test;
  return head;
}

}  // namespace

DatasetRegistry::DatasetRegistry(std::string data_dir) : data_dir_(std::move(data_dir)) {}

bool DatasetRegistry::IsNamedDataset(const std::string& name) { return name == "mnist" || name == "fashion-mnist"; }

absl::StatusOr<std::string> DatasetRegistry::Resolve(const std::string& name) const {
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "dataset is empty; expected mnist, fashion-mnist or a folder of images relative to --data_dir");
  }
  if (name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("dataset contains a NUL byte; expected a relative folder name");
  }
  const fs::path relative(name);
  if (relative.is_absolute() || relative.has_root_name() || relative.has_root_directory()) {
    return absl::PermissionDeniedError(
        absl::StrCat("dataset '", name, "' is an absolute path; expected a path relative to --data_dir"));
  }
  for (const auto& part : relative) {
    if (part == "..") {
      return absl::PermissionDeniedError(
          absl::StrCat("dataset '", name, "' contains '..'; expected a path inside --data_dir"));
    }
  }
  std::error_code ec;
  if (!fs::is_directory(data_dir_, ec)) {
    return absl::NotFoundError(absl::StrCat("--data_dir '", data_dir_, "' does not exist or is not a folder"));
  }
  // Every symlink of the part that exists is resolved: a link that points out of data_dir is caught here, before
  // anything is opened. The files inside are held to the same rule when they are loaded.
  auto resolved = ResolveWithin(fs::path(data_dir_) / relative, data_dir_);
  if (!resolved.ok()) {
    return absl::Status(resolved.status().code(),
                        absl::StrCat("dataset '", name, "': ", resolved.status().message(), " (--data_dir)"));
  }
  const fs::path& target = *resolved;
  if (!fs::exists(target, ec)) {
    return absl::NotFoundError(absl::StrCat("dataset '", name, "' not found under --data_dir ", data_dir_));
  }
  if (!fs::is_directory(target, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", name, "' is not a folder"));
  }
  return target.string();
}

absl::StatusOr<std::shared_ptr<const TrainTestSplit>> DatasetRegistry::Load(const std::string& name,
                                                                            const VaeOptions& model,
                                                                            int64_t max_train) {
  VAE_ASSIGN_OR_RETURN(const std::string folder, Resolve(name));
  std::shared_ptr<const TrainTestSplit> split;
  if (IsNamedDataset(name)) {
    absl::MutexLock lock(&mu_);
    auto& cached = named_[name];
    if (cached == nullptr) {
      // Opened by its name under data_dir (the folder may be a link to elsewhere inside it); each idx file must
      // resolve inside data_dir as well.
      auto loaded = LoadNamedDataset(data_dir_, name, -1, -1, data_dir_);
      if (!loaded.ok()) {
        named_.erase(name);
        return loaded.status();
      }
      cached = std::make_shared<const TrainTestSplit>(std::move(*loaded));
    }
    split = cached;
    const auto shape = split->train.images.sizes().slice(1);
    if (shape != at::IntArrayRef(model.input_shape())) {
      return absl::InvalidArgumentError(absl::StrCat("dataset ", name, " has images ", ShapeString(shape),
                                                     ", the model expects ", ShapeString(model.input_shape())));
    }
  } else {
    // Files inside the folder may be symlinks too: none may lead out of --data_dir.
    VAE_ASSIGN_OR_RETURN(Dataset all,
                         LoadImageFolder(folder, model.channels, model.height, model.width, -1, data_dir_));
    if (all.size() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset '", name, "' holds ", all.size(), " image; at least 2 are needed (train and test)"));
    }
    auto own = std::make_shared<TrainTestSplit>(SplitDataset(all, kFolderTestFraction, kFolderSplitSeed));
    if (own->test.size() == 0) {  // tiny folders: hold out one image rather than none
      own =
          std::make_shared<TrainTestSplit>(SplitDataset(all, 1.0 / static_cast<double>(all.size()), kFolderSplitSeed));
    }
    split = std::move(own);
  }
  return HeadOfTrain(split, max_train);
}

}  // namespace vae::server
