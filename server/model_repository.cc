#include "server/model_repository.h"

#include <glog/logging.h>
#include <sys/stat.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "model/checkpoint.h"
#include "model/options.h"

namespace vae::server {
namespace {

namespace fs = std::filesystem;

constexpr int kMetadataFormat = 1;
constexpr int64_t kMaxMetadataBytes = int64_t{16} << 20;

struct FileStat {
  int64_t size = -1;
  int64_t mtime_ns = 0;
};

std::optional<FileStat> Stat(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return FileStat{static_cast<int64_t>(st.st_size), int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
}

nlohmann::json MetricsJson(const Metrics& m) { return {{"loss", m.loss}, {"recon", m.recon}, {"kl", m.kl}}; }

std::optional<Metrics> MetricsFrom(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_object()) return std::nullopt;
  const auto& m = j[key];
  auto number = [&](const char* name) {
    return m.contains(name) && m[name].is_number() ? m[name].get<double>() : std::nan("");
  };
  Metrics metrics{number("loss"), number("recon"), number("kl")};
  if (!std::isfinite(metrics.loss)) return std::nullopt;
  return metrics;
}

int64_t Int(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

// "1, 2, 5" / "latest, stable": what exists, for NOT_FOUND messages.
template <typename Map>
std::string Keys(const Map& map) {
  std::vector<std::string> keys;
  for (const auto& [key, unused] : map) keys.push_back(absl::StrCat(key));
  return absl::StrJoin(keys, ", ");
}

// Bytes of a snapshot's weights (float32 parameters; the BLAS path shares them).
int64_t SnapshotBytes(const Snapshot& snapshot) { return snapshot.parameter_count * 4; }

}  // namespace

absl::Status ValidateName(absl::string_view name, absl::string_view field) {
  const bool chars_ok = std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  if (name.empty() || name.size() > kMaxModelNameLength || !chars_ok || name.front() == '.') {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " is '", absl::CEscape(name.substr(0, 2 * kMaxModelNameLength)), "', expected 1 to ",
        kMaxModelNameLength, " letters, digits, '-', '_' or '.', not starting with '.'"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------------------------
// Opening, layout and metadata

ModelRepository::ModelRepository(RepositoryOptions options, c10::Device device)
    : options_(std::move(options)), device_(device) {}

ModelRepository::~ModelRepository() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watch_.joinable()) watch_.join();
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Open(RepositoryOptions options,
                                                                       c10::Device device) {
  if (options.root.empty()) return absl::InvalidArgumentError("model_dir is empty; expected a folder");
  if (auto status = ValidateName(options.default_model, "default_model"); !status.ok()) return status;
  if (options.keep_versions < 1) {
    return absl::InvalidArgumentError(absl::StrCat("keep_versions is ", options.keep_versions, ", expected >= 1"));
  }
  if (options.max_loaded_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_loaded_mb is ", options.max_loaded_bytes >> 20, ", expected >= 0 (0: no limit)"));
  }
  std::error_code ec;
  fs::create_directories(options.root, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("model_dir ", options.root, " cannot be created: ", ec.message()));
  }
  std::unique_ptr<ModelRepository> repo(new ModelRepository(std::move(options), device));
  repo->MigrateFlatLayout();
  repo->Rescan();
  if (repo->options_.poll_interval > absl::ZeroDuration()) repo->watch_ = std::thread([r = repo.get()] { r->WatchLoop(); });
  return repo;
}

std::string ModelRepository::ModelDir(const std::string& name) const {
  return (fs::path(options_.root) / name).string();
}

void ModelRepository::MigrateFlatLayout() {
  // Checkpoint temp files in the root can only come from a server of the flat layout killed mid-write (this layout's
  // writers write into model folders), so no process is writing them.
  RemoveStaleTempFiles(options_.root);
  const std::vector<std::string> flat = ListCheckpoints(options_.root);
  if (flat.empty()) return;
  const fs::path target = ModelDir(options_.default_model);
  std::error_code ec;
  fs::create_directories(target, ec);
  int moved = 0;
  for (const auto& path : flat) {
    const fs::path to = target / fs::path(path).filename();
    if (fs::exists(to, ec)) {
      LOG(WARNING) << "flat model_dir: not moving " << path << ": " << to.string() << " exists";
      continue;
    }
    fs::rename(path, to, ec);  // atomic within one filesystem: the file is in one place or the other
    if (ec) {
      LOG(WARNING) << "flat model_dir: cannot move " << path << " to " << to.string() << ": " << ec.message();
    } else {
      ++moved;
    }
  }
  LOG(INFO) << "model_dir " << options_.root << " had the flat layout of an older server: moved " << moved
            << " checkpoint(s) into " << target.string() << " as versions of model '" << options_.default_model << "'";
}

std::string ModelRepository::MetadataText(const Model& model) {
  nlohmann::json j;
  j["format"] = kMetadataFormat;
  j["options"] = model.options ? nlohmann::json::parse(ToJson(*model.options)) : nlohmann::json(nullptr);
  j["default_label"] = model.default_label;
  j["labels"] = nlohmann::json::object();
  for (const auto& [label, version] : model.labels) j["labels"][label] = version;
  j["next_version"] = model.next_version;
  j["versions"] = nlohmann::json::object();
  for (const auto& [number, v] : model.versions) {
    if (!v.meta_known) continue;
    nlohmann::json e = {{"epochs_trained", v.meta.epochs_trained},
                        {"global_step", v.meta.global_step},
                        {"create_time_unix_ms", v.meta.create_time_unix_ms}};
    if (v.meta.train) e["train"] = MetricsJson(*v.meta.train);
    if (v.meta.test) e["test"] = MetricsJson(*v.meta.test);
    j["versions"][std::to_string(number)] = e;
  }
  return j.dump(2) + "\n";
}

bool ModelRepository::ApplyMetadata(const std::string& text, Model* model) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  if (j.contains("options") && j["options"].is_object()) {
    auto options = OptionsFromJson(j["options"].dump());
    if (options.ok()) model->options = *options;
  }
  if (j.contains("default_label") && j["default_label"].is_string() &&
      ValidateName(j["default_label"].get<std::string>(), "").ok()) {
    model->default_label = j["default_label"].get<std::string>();
  }
  if (j.contains("labels") && j["labels"].is_object()) {
    model->labels.clear();
    for (const auto& [label, version] : j["labels"].items()) {
      if (version.is_number_integer() && label != kLatestLabel && ValidateName(label, "").ok()) {
        model->labels[label] = version.get<int64_t>();
      }
    }
  }
  model->next_version = std::max(model->next_version, Int(j, "next_version"));
  if (j.contains("versions") && j["versions"].is_object()) {
    for (auto& [number, v] : model->versions) {
      const std::string key = std::to_string(number);
      if (!j["versions"].contains(key) || !j["versions"][key].is_object()) continue;
      const auto& e = j["versions"][key];
      v.meta.epochs_trained = Int(e, "epochs_trained");
      v.meta.global_step = Int(e, "global_step");
      if (Int(e, "create_time_unix_ms") > 0) v.meta.create_time_unix_ms = Int(e, "create_time_unix_ms");
      v.meta.train = MetricsFrom(e, "train");
      v.meta.test = MetricsFrom(e, "test");
      v.meta_known = true;
    }
  }
  return true;
}

absl::Status ModelRepository::WriteMetadata(const std::string& name, const std::string& text) {
  const std::string path = (fs::path(ModelDir(name)) / kModelMetadataFile).string();
  absl::Status status = WriteFileAtomically(path, text);
  if (!status.ok()) LOG(ERROR) << "model '" << name << "': " << status;
  return status;
}

// ---------------------------------------------------------------------------------------------------------------------
// Watch

void ModelRepository::WatchLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.poll_interval);
      if (stopping_) return;
    }
    Rescan();
  }
}

void ModelRepository::Rescan() {
  std::set<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(options_.root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    const std::string name = it->path().filename().string();
    if (it->is_directory(type_ec) && ValidateName(name, "").ok()) names.insert(name);
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, unused] : models_) names.insert(name);
  }
  for (const auto& name : names) ScanModel(name);
}

void ModelRepository::ScanModel(const std::string& name) {
  const std::string dir = ModelDir(name);
  std::map<int64_t, std::string> on_disk;
  for (const auto& path : ListCheckpoints(dir)) {
    on_disk[*CheckpointSequence(fs::path(path).filename().string())] = path;
  }
  // New files are verified (framing + CRC-32) outside the lock: reading a large checkpoint takes a while.
  std::set<int64_t> known;
  std::map<std::string, Rejected> rejected;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = models_.find(name); it != models_.end()) {
      for (const auto& [number, unused] : it->second.versions) known.insert(number);
    }
    for (const auto& [number, path] : on_disk) {
      if (auto it = rejected_.find(path); it != rejected_.end()) rejected[path] = it->second;
    }
  }
  std::map<int64_t, Version> added;
  std::map<std::string, Rejected> newly_rejected;
  for (const auto& [number, path] : on_disk) {
    if (known.count(number) > 0) continue;
    const auto stat = Stat(path);
    if (!stat.has_value()) continue;
    if (auto it = rejected.find(path);
        it != rejected.end() && it->second.size == stat->size && it->second.mtime_ns == stat->mtime_ns) {
      continue;  // unchanged since it failed: a torn file stays torn
    }
    const absl::Status verified = VerifyCheckpointFile(path);
    if (!verified.ok()) {
      if (verified.code() == absl::StatusCode::kDataLoss) {
        LOG(WARNING) << "model '" << name << "': not serving " << path << ": " << verified.message();
        newly_rejected[path] = Rejected{stat->size, stat->mtime_ns};
      }
      continue;
    }
    Version v;
    v.path = path;
    v.meta.version = number;
    v.meta.size_bytes = stat->size;
    v.meta.create_time_unix_ms = stat->mtime_ns / 1'000'000;
    added[number] = std::move(v);
  }

  absl::MutexLock write_lock(&write_mu_);
  auto text = ReadFileToString((fs::path(dir) / kModelMetadataFile).string(), kMaxMetadataBytes);
  absl::MutexLock lock(&mu_);
  for (auto& [path, r] : newly_rejected) rejected_[path] = r;
  auto it = models_.find(name);
  if (it == models_.end()) {
    if (added.empty() && !text.ok()) return;
    it = models_.emplace(name, Model()).first;
  }
  Model& model = it->second;
  // Versions whose file is gone (deleted by another process or by hand). Checked again now, under the lock: a
  // version published since the listing above has its file in place.
  for (auto v = model.versions.begin(); v != model.versions.end();) {
    std::error_code exists_ec;
    if (on_disk.count(v->first) == 0 && !fs::exists(v->second.path, exists_ec)) {
      LOG(INFO) << "model '" << name << "': version " << v->first << " was deleted from disk; no longer served";
      DropLocked(name, v->first);
      v = model.versions.erase(v);
    } else {
      ++v;
    }
  }
  bool new_versions = false;
  for (auto& [number, v] : added) {
    if (model.versions.count(number) > 0) continue;
    LOG(INFO) << "model '" << name << "': serving version " << number << " (" << v.path << ")";
    model.versions[number] = std::move(v);
    model.next_version = std::max(model.next_version, number + 1);
    new_versions = true;
  }
  if (text.ok() && (*text != model.metadata_text || new_versions)) {
    if (ApplyMetadata(*text, &model)) {
      model.metadata_text = *text;
    } else {
      LOG(WARNING) << "model '" << name << "': " << kModelMetadataFile << " is not valid JSON; ignored";
    }
  }
  if (model.versions.empty() && !text.ok() && model.placeholder == nullptr) models_.erase(it);
}

// ---------------------------------------------------------------------------------------------------------------------
// Serving

absl::Status ModelRepository::NotFoundModel(const std::string& name) const {
  return absl::NotFoundError(models_.empty()
                                 ? absl::StrCat("model '", name, "' not found: the repository has no models")
                                 : absl::StrCat("model '", name, "' not found; models: ", Keys(models_)));
}

absl::StatusOr<int64_t> ModelRepository::VersionFor(const std::string& name, const Model& model,
                                                    const ModelRef& ref) const {
  auto versions = [&] {
    return model.versions.empty() ? std::string("it has no versions") : absl::StrCat("versions: ", Keys(model.versions));
  };
  if (ref.version > 0) {
    if (model.versions.count(ref.version) > 0) return ref.version;
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version ", ref.version, "; ", versions()));
  }
  const std::string& label = ref.label.empty() ? model.default_label : ref.label;
  if (label == kLatestLabel) {
    if (!model.versions.empty()) return model.versions.rbegin()->first;
    if (model.placeholder != nullptr) return 0;
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no versions yet"));
  }
  const auto it = model.labels.find(label);
  if (it == model.labels.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no label '", label, "'; labels: latest",
                                            model.labels.empty() ? "" : ", ", Keys(model.labels)));
  }
  if (model.versions.count(it->second) == 0) {
    return absl::NotFoundError(absl::StrCat("label '", label, "' of model '", name, "' names version ", it->second,
                                            ", which is not in the repository; ", versions()));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> ModelRepository::Resolve(const ModelRef& ref) {
  if (ref.version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_spec.version is ", ref.version, ", expected a version number >= 1 (0: not pinned)"));
  }
  if (ref.version > 0 && !ref.label.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model_spec: version (", ref.version, ") and label ('", ref.label,
                                                   "') are both set; set one of them"));
  }
  if (!ref.name.empty()) {
    if (auto status = ValidateName(ref.name, "model_spec.name"); !status.ok()) return status;
  }
  if (!ref.label.empty()) {
    if (auto status = ValidateName(ref.label, "model_spec.label"); !status.ok()) return status;
  }
  const std::string& name = ref.name.empty() ? options_.default_model : ref.name;
  std::shared_ptr<Loading> loading;
  bool leader = false;
  std::string path;
  int64_t version = 0;
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(name);
    if (model == models_.end()) return NotFoundModel(name);
    auto found = VersionFor(name, model->second, ref);
    if (!found.ok()) return found.status();
    version = *found;
    if (version == 0) return model->second.placeholder;
    const Key key(name, version);
    if (auto cached = cache_.find(key); cached != cache_.end()) {
      cached->second.last_use = ++use_clock_;
      return cached->second.snapshot;
    }
    auto& slot = loading_[key];
    if (slot == nullptr) {
      slot = std::make_shared<Loading>();
      leader = true;
    }
    loading = slot;
    path = model->second.versions.at(version).path;
  }
  if (!leader) {
    loading->done.WaitForNotification();
    return loading->result;
  }

  absl::StatusOr<std::shared_ptr<const Snapshot>> result;
  auto checkpoint = LoadCheckpoint(path, device_);
  if (!checkpoint.ok()) {
    result = absl::Status(checkpoint.status().code(), absl::StrCat("model '", name, "' version ", version, ": ",
                                                                   checkpoint.status().message()));
  } else {
    try {
      std::shared_ptr<Snapshot> snapshot = SnapshotOfCheckpoint(std::move(*checkpoint), device_);
      snapshot->version.model = name;
      snapshot->version.version = version;
      result = std::shared_ptr<const Snapshot>(std::move(snapshot));
    } catch (const std::exception& e) {  // c10::Error, std::bad_alloc
      result = absl::ResourceExhaustedError(
          absl::StrCat("model '", name, "' version ", version, ": cannot load it: ", e.what()));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    loading_.erase(Key(name, version));
    if (result.ok()) {
      const auto model = models_.find(name);
      if (model != models_.end() && model->second.versions.count(version) > 0) {  // not deleted meanwhile
        const Snapshot& s = **result;
        Version& v = model->second.versions.at(version);
        if (!v.meta_known) {
          v.meta.epochs_trained = s.version.epochs_trained;
          v.meta.global_step = s.version.global_step;
          v.meta.train = s.last_train;
          v.meta.test = s.last_test;
          v.meta_known = true;
        }
        if (!model->second.options) model->second.options = s.options;
        CacheLocked(Key(name, version), *result);
      }
    }
  }
  loading->result = result;
  loading->done.Notify();
  return result;
}

void ModelRepository::CacheLocked(const Key& key, std::shared_ptr<const Snapshot> snapshot) {
  DropLocked(key.first, key.second);
  Cached& entry = cache_[key];
  entry.bytes = SnapshotBytes(*snapshot);
  entry.snapshot = std::move(snapshot);
  entry.last_use = ++use_clock_;
  cached_bytes_ += entry.bytes;
  while (options_.max_loaded_bytes > 0 && cached_bytes_ > options_.max_loaded_bytes) {
    auto lru = cache_.end();
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if (it->first != key && (lru == cache_.end() || it->second.last_use < lru->second.last_use)) lru = it;
    }
    if (lru == cache_.end()) break;  // only `key` is left: served even over the budget
    VLOG(1) << "unloading model '" << lru->first.first << "' version " << lru->first.second << " (budget)";
    cached_bytes_ -= lru->second.bytes;
    cache_.erase(lru);
  }
}

void ModelRepository::DropLocked(const std::string& name, int64_t version) {
  const auto it = cache_.find(Key(name, version));
  if (it == cache_.end()) return;
  cached_bytes_ -= it->second.bytes;
  cache_.erase(it);
}

int64_t ModelRepository::loaded_bytes() const {
  absl::MutexLock lock(&mu_);
  return cached_bytes_;
}

void ModelRepository::SetPlaceholder(const std::string& name, std::shared_ptr<Snapshot> snapshot) {
  snapshot->version.model = name;
  snapshot->version.version = 0;
  absl::MutexLock lock(&mu_);
  Model& model = models_[name];
  if (!model.options) model.options = snapshot->options;
  model.placeholder = std::move(snapshot);
}

// ---------------------------------------------------------------------------------------------------------------------
// Training

absl::StatusOr<VaeOptions> ModelRepository::OptionsOf(const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(name);
    if (model == models_.end()) return NotFoundModel(name);
    if (model->second.options) return *model->second.options;
    if (model->second.versions.empty()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' has no versions and no options yet"));
    }
  }
  auto snapshot = Resolve(ModelRef{name, 0, kLatestLabel});
  if (!snapshot.ok()) return snapshot.status();
  return (*snapshot)->options;
}

absl::StatusOr<std::string> ModelRepository::NewestCheckpoint(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  const auto model = models_.find(name);
  if (model == models_.end() || model->second.versions.empty()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version"));
  }
  return model->second.versions.rbegin()->second.path;
}

std::optional<ModelVersion> ModelRepository::LatestVersion(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  const auto model = models_.find(name);
  if (model == models_.end()) return std::nullopt;
  if (model->second.versions.empty()) {
    if (model->second.placeholder) return model->second.placeholder->version;
    return std::nullopt;
  }
  const auto& [number, v] = *model->second.versions.rbegin();
  return ModelVersion{name, number, v.meta.epochs_trained, v.meta.global_step};
}

absl::StatusOr<std::string> ModelRepository::ReserveVersionPath(const std::string& name, const VaeOptions& options) {
  absl::MutexLock write_lock(&write_mu_);
  std::error_code ec;
  fs::create_directories(ModelDir(name), ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("model '", name, "': cannot create ", ModelDir(name), ": ", ec.message()));
  }
  // Above every checkpoint name in the folder, even one that is not a version (torn, or not scanned yet): a new
  // version never overwrites a file, and is always the newest.
  int64_t on_disk = 0;
  for (const auto& path : ListCheckpoints(ModelDir(name))) {
    on_disk = std::max(on_disk, *CheckpointSequence(fs::path(path).filename().string()));
  }
  int64_t number = 0;
  std::string text;
  {
    absl::MutexLock lock(&mu_);
    Model& model = models_[name];
    if (!model.options || model.versions.empty()) model.options = options;
    model.next_version = std::max(model.next_version, on_disk + 1);
    number = model.next_version++;
    text = MetadataText(model);
    model.metadata_text = text;
  }
  // Persisted before the number is used: a crash after this never hands the same number out again.
  if (auto status = WriteMetadata(name, text); !status.ok()) return status;
  return (fs::path(ModelDir(name)) / CheckpointFileName(number)).string();
}

ModelVersion ModelRepository::Publish(const std::string& name, std::shared_ptr<Snapshot> snapshot) {
  const auto number = CheckpointSequence(fs::path(snapshot->checkpoint_path).filename().string());
  CHECK(number.has_value()) << "Publish: " << snapshot->checkpoint_path << " is not a reserved version path";
  snapshot->version.model = name;
  snapshot->version.version = *number;
  const ModelVersion published = snapshot->version;
  std::vector<std::string> pruned;
  std::string text;
  absl::MutexLock write_lock(&write_mu_);
  {
    absl::MutexLock lock(&mu_);
    Model& model = models_[name];
    if (!model.options || model.versions.empty()) model.options = snapshot->options;
    Version& v = model.versions[*number];
    v.path = snapshot->checkpoint_path;
    v.meta.version = *number;
    v.meta.epochs_trained = snapshot->version.epochs_trained;
    v.meta.global_step = snapshot->version.global_step;
    v.meta.train = snapshot->last_train;
    v.meta.test = snapshot->last_test;
    v.meta.create_time_unix_ms = absl::ToUnixMillis(absl::Now());
    if (const auto stat = Stat(v.path)) v.meta.size_bytes = stat->size;
    v.meta_known = true;
    model.next_version = std::max(model.next_version, *number + 1);
    CacheLocked(Key(name, *number), std::move(snapshot));
    // The newest keep_versions stay, and every labelled one.
    std::set<int64_t> labelled;
    for (const auto& [label, version] : model.labels) labelled.insert(version);
    int newer = 0;  // versions newer than the one looked at
    for (auto it = model.versions.rbegin(); it != model.versions.rend(); ++newer) {
      if (newer < options_.keep_versions || labelled.count(it->first) > 0) {
        ++it;
        continue;
      }
      pruned.push_back(it->second.path);
      DropLocked(name, it->first);
      it = std::make_reverse_iterator(model.versions.erase(std::next(it).base()));
    }
    text = MetadataText(model);
    model.metadata_text = text;
  }
  WriteMetadata(name, text).IgnoreError();  // logged; the version itself is on disk and served
  for (const auto& path : pruned) {
    std::error_code ec;
    fs::remove(path, ec);
    LOG(INFO) << "model '" << name << "': deleted " << path << " (older than the newest " << options_.keep_versions
              << " versions, unlabelled)";
  }
  return published;
}

absl::StatusOr<bool> ModelRepository::Promote(const std::string& name, const std::string& label, int64_t version) {
  if (auto status = ValidateName(label, "promote_label"); !status.ok()) return status;
  absl::MutexLock write_lock(&write_mu_);
  std::string text;
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(name);
    if (model == models_.end()) return NotFoundModel(name);
    Model& m = model->second;
    const auto candidate = m.versions.find(version);
    if (candidate == m.versions.end()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' has no version ", version));
    }
    const auto current = m.labels.find(label);
    if (current != m.labels.end()) {
      const auto held = m.versions.find(current->second);
      const std::optional<Metrics>& now = candidate->second.meta.test;
      const bool held_scored = held != m.versions.end() && held->second.meta.test.has_value();
      // Moves only on a strict improvement of a known test loss over a known test loss.
      if (held_scored && (!now.has_value() || now->loss >= held->second.meta.test->loss)) return false;
    }
    m.labels[label] = version;
    text = MetadataText(m);
    m.metadata_text = text;
  }
  if (auto status = WriteMetadata(name, text); !status.ok()) return status;
  return true;
}

void ModelRepository::SetTraining(const std::string& name) {
  absl::MutexLock lock(&mu_);
  training_ = name;
}

// ---------------------------------------------------------------------------------------------------------------------
// Administration

absl::StatusOr<std::vector<ModelListing>> ModelRepository::List(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  if (!name.empty() && models_.count(name) == 0) return NotFoundModel(name);
  std::vector<ModelListing> out;
  for (const auto& [model_name, model] : models_) {
    if (!name.empty() && model_name != name) continue;
    ModelListing listing;
    listing.name = model_name;
    listing.options = model.options;
    listing.default_label = model.default_label;
    listing.labels = model.labels;
    if (!model.versions.empty()) listing.labels[kLatestLabel] = model.versions.rbegin()->first;
    listing.training = training_ == model_name;
    for (const auto& [number, v] : model.versions) {
      VersionListing entry = v.meta;
      entry.version = number;
      for (const auto& [label, version] : listing.labels) {
        if (version == number) entry.labels.push_back(label);
      }
      entry.loaded = cache_.count(Key(model_name, number)) > 0;
      listing.versions.push_back(std::move(entry));
    }
    out.push_back(std::move(listing));
  }
  return out;
}

std::pair<std::vector<std::string>, std::string> ModelRepository::LabelsOf(const std::string& name,
                                                                          int64_t version) const {
  absl::MutexLock lock(&mu_);
  const auto model = models_.find(name);
  if (model == models_.end()) return {{}, kLatestLabel};
  std::vector<std::string> labels;
  const auto& m = model->second;
  if ((m.versions.empty() && version == 0) || (!m.versions.empty() && m.versions.rbegin()->first == version)) {
    labels.push_back(kLatestLabel);
  }
  for (const auto& [label, number] : m.labels) {
    if (number == version) labels.push_back(label);
  }
  return {labels, m.default_label};
}

absl::StatusOr<int64_t> ModelRepository::SetLabel(const std::string& name, const std::string& label,
                                                  int64_t version, bool make_default) {
  if (!name.empty()) {
    if (auto status = ValidateName(name, "model"); !status.ok()) return status;
  }
  if (auto status = ValidateName(label, "label"); !status.ok()) return status;
  if (label == kLatestLabel) {
    return absl::InvalidArgumentError("label: 'latest' always names the newest version and cannot be set");
  }
  const std::string& model_name = name.empty() ? options_.default_model : name;
  absl::MutexLock write_lock(&write_mu_);
  std::string text;
  int64_t previous = 0;
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(model_name);
    if (model == models_.end()) return NotFoundModel(model_name);
    Model& m = model->second;
    if (m.versions.count(version) == 0) {
      return absl::NotFoundError(absl::StrCat("version: model '", model_name, "' has no version ", version, "; ",
                                              m.versions.empty() ? std::string("it has no versions")
                                                                 : absl::StrCat("versions: ", Keys(m.versions))));
    }
    if (auto it = m.labels.find(label); it != m.labels.end()) previous = it->second;
    m.labels[label] = version;
    if (make_default) m.default_label = label;
    text = MetadataText(m);
    m.metadata_text = text;
  }
  if (auto status = WriteMetadata(model_name, text); !status.ok()) return status;
  LOG(INFO) << "model '" << model_name << "': label '" << label << "' -> version " << version
            << (make_default ? " (default label)" : "");
  return previous;
}

absl::StatusOr<std::vector<std::string>> ModelRepository::DeleteVersion(const std::string& name, int64_t version,
                                                                        bool force) {
  if (!name.empty()) {
    if (auto status = ValidateName(name, "model"); !status.ok()) return status;
  }
  const std::string& model_name = name.empty() ? options_.default_model : name;
  absl::MutexLock write_lock(&write_mu_);
  std::string text, path;
  std::vector<std::string> removed;
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(model_name);
    if (model == models_.end()) return NotFoundModel(model_name);
    Model& m = model->second;
    const auto v = m.versions.find(version);
    if (v == m.versions.end()) {
      return absl::NotFoundError(absl::StrCat("version: model '", model_name, "' has no version ", version, "; ",
                                              m.versions.empty() ? std::string("it has no versions")
                                                                 : absl::StrCat("versions: ", Keys(m.versions))));
    }
    if (training_ == model_name && m.versions.rbegin()->first == version) {
      return absl::FailedPreconditionError(absl::StrCat("version ", version, " of model '", model_name,
                                                        "' is the newest of a model being trained; wait for the job"));
    }
    for (const auto& [label, number] : m.labels) {
      if (number == version) removed.push_back(label);
    }
    if (!removed.empty() && !force) {
      return absl::FailedPreconditionError(absl::StrCat("version ", version, " of model '", model_name,
                                                        "' is labelled ", absl::StrJoin(removed, ", "),
                                                        "; move the labels first, or set force to remove them too"));
    }
    for (const auto& label : removed) {
      m.labels.erase(label);
      if (m.default_label == label) m.default_label = kLatestLabel;
    }
    path = v->second.path;
    DropLocked(model_name, version);
    m.versions.erase(v);
    text = MetadataText(m);
    m.metadata_text = text;
  }
  // model.json first: a crash in between leaves an unlabelled file, never a label naming a missing version.
  WriteMetadata(model_name, text).IgnoreError();
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot delete ", path, ": ", ec.message()));
  LOG(INFO) << "model '" << model_name << "': deleted version " << version;
  return removed;
}

absl::StatusOr<int64_t> ModelRepository::DeleteModel(const std::string& name, bool force) {
  if (!name.empty()) {
    if (auto status = ValidateName(name, "model"); !status.ok()) return status;
  }
  const std::string& model_name = name.empty() ? options_.default_model : name;
  absl::MutexLock write_lock(&write_mu_);
  std::vector<std::string> paths;
  {
    absl::MutexLock lock(&mu_);
    const auto model = models_.find(model_name);
    if (model == models_.end()) return NotFoundModel(model_name);
    if (training_ == model_name) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", model_name, "' is being trained; cancel the job or wait for it first"));
    }
    if (!model->second.labels.empty() && !force) {
      return absl::FailedPreconditionError(absl::StrCat("model '", model_name, "' has labels ",
                                                        Keys(model->second.labels),
                                                        "; remove them first, or set force"));
    }
    for (const auto& [number, v] : model->second.versions) {
      paths.push_back(v.path);
      DropLocked(model_name, number);
    }
    models_.erase(model);
  }
  // model.json first, so that a reader never sees labels without their versions.
  std::error_code ec;
  fs::remove(fs::path(ModelDir(model_name)) / kModelMetadataFile, ec);
  for (const auto& path : paths) fs::remove(path, ec);
  fs::remove_all(ModelDir(model_name), ec);
  LOG(INFO) << "deleted model '" << model_name << "' (" << paths.size() << " versions)";
  return static_cast<int64_t>(paths.size());
}

}  // namespace vae::server
