// ModelRepository: the named models vae-server serves, their immutable numbered versions and their labels, over the
// folder --model_dir. No gRPC.
//
// Layout: one folder per model, <root>/<name>/, holding
//   model.json       the model's options, its default label, its labels (label -> version), the next version number
//                    (a high-water mark: a number is never reused, even after its version is deleted) and what is
//                    known of each version (epochs, step, metrics, creation time); written atomically
//                    (WriteFileAtomically), so a reader sees the old or the new file, never a torn one;
//   ckpt-<N>.vae     version N (model/checkpoint.h: the checkpoint's sequence number is the version number).
// "latest" is not stored: it always names the highest version present.
// A flat <root> of an older server (ckpt-*.vae directly inside) is migrated when the repository opens: each file is
// renamed (atomic, same filesystem) into <root>/<default_model>/, so its versions keep their numbers; a migration cut
// short by a crash continues at the next start.
//
// Roles: one process per repository trains and administers it (Publish, SetLabel, Delete*: the writer); any number of
// other processes may serve the same folder read-only (readers) and see the writer's changes through the watch
// (Rescan, every poll_interval): new complete checkpoints become servable (only files whose framing and CRC-32 check
// out: a temp file ckpt-*.tmp.* never matches, a torn or truncated ckpt-*.vae fails the check and is retried only
// once its size or mtime changes), deleted ones are unloaded and leave the listing, and a changed model.json
// (labels, default label) is re-read. Two writers on one repository are not supported.
//
// Memory: versions are loaded on demand (Resolve) into an LRU cache bounded by max_loaded_bytes (the weights' bytes).
// Eviction drops only the cache's reference: a request holding a snapshot keeps it alive until it finishes. The
// version just loaded or published always stays, so one version larger than the budget is still served. Concurrent
// requests for the same unloaded version load it once (the others wait for that load).
//
// Threads: every method may be called from any thread. One mutex (mu_) guards the in-memory state and is held only
// for map lookups, never while a checkpoint is read or a file written; writes of model.json are serialised by a
// second mutex (write_mu_), taken before mu_, so that they reach the disk in the order they were decided. The watch
// thread is owned by the repository and joined by its destructor.
#ifndef VAE_SERVER_MODEL_REPOSITORY_H_
#define VAE_SERVER_MODEL_REPOSITORY_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/snapshot.h"

namespace vae::server {

inline constexpr char kLatestLabel[] = "latest";
inline constexpr char kModelMetadataFile[] = "model.json";
inline constexpr size_t kMaxModelNameLength = 64;

// A model name or a label: 1 to 64 letters, digits, '-', '_', '.', not starting with '.'. INVALID_ARGUMENT naming
// `field` otherwise.
absl::Status ValidateName(absl::string_view name, absl::string_view field);

// Which model and version a request asks for (vae.v1.ModelSpec). All optional: an empty name is the default model;
// version 0 and an empty label is the model's default label. Version and label together are INVALID_ARGUMENT.
struct ModelRef {
  std::string name;
  int64_t version = 0;
  std::string label;
};

// What the repository knows of one version without loading it.
struct VersionListing {
  int64_t version = 0;
  int64_t epochs_trained = 0;
  int64_t global_step = 0;
  std::optional<Metrics> train;
  std::optional<Metrics> test;
  int64_t create_time_unix_ms = 0;  // when its checkpoint was written
  int64_t size_bytes = 0;           // of its checkpoint file
  std::vector<std::string> labels;  // labels naming it, "latest" included
  bool loaded = false;              // in the memory cache now
};

struct ModelListing {
  std::string name;
  std::optional<VaeOptions> options;  // unknown for a model none of whose versions was loaded and without model.json
  std::string default_label;
  std::map<std::string, int64_t> labels;  // "latest" included (when the model has a version)
  std::vector<VersionListing> versions;   // oldest first
  bool training = false;                  // this process is training it
};

struct RepositoryOptions {
  std::string root;                           // --model_dir
  std::string default_model = "default";      // --default_model
  int keep_versions = 3;                      // >= 1
  int64_t max_loaded_bytes = 0;               // 0: no limit
  absl::Duration poll_interval = absl::ZeroDuration();  // 0: no watch thread
};

class ModelRepository {
 public:
  // Creates `root` if needed, migrates a flat layout, scans every model folder, and starts the watch thread.
  // INVALID_ARGUMENT for a bad default model name or a root that cannot be created.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Open(RepositoryOptions options, c10::Device device);
  ~ModelRepository();  // stops and joins the watch thread

  const std::string& default_model() const { return options_.default_model; }
  const std::string& root() const { return options_.root; }
  // <root>/<name>
  std::string ModelDir(const std::string& name) const;

  // The snapshot that answers a request for `ref`, loading it from disk when it is not in memory. INVALID_ARGUMENT
  // for a bad name or label or both version and label; NOT_FOUND for an unknown model, version or label (naming
  // what exists); the load's error (DATA_LOSS for a corrupt file) otherwise.
  absl::StatusOr<std::shared_ptr<const Snapshot>> Resolve(const ModelRef& ref);

  // Serves `snapshot` (fresh weights, never stored) as version 0 of `name` while the model has no version; creates
  // the model in memory (not on disk) when it does not exist.
  void SetPlaceholder(const std::string& name, std::shared_ptr<Snapshot> snapshot);

  // --- Training (the writer) ---
  // The options of an existing model (loading its newest version when model.json does not have them); NOT_FOUND
  // when the model does not exist or has neither options nor a version.
  absl::StatusOr<VaeOptions> OptionsOf(const std::string& name);
  // The checkpoint of the newest version of `name`; NOT_FOUND when it has none.
  absl::StatusOr<std::string> NewestCheckpoint(const std::string& name) const;
  // The newest version's identity and counters, without loading it (nullopt: none).
  std::optional<ModelVersion> LatestVersion(const std::string& name) const;
  // Reserves the next version number of `name` (creating the model, with `options`, when it does not exist) and
  // returns the path its checkpoint must be written to. The number is persisted in model.json before it is handed
  // out, so it is never reused. RESOURCE_EXHAUSTED / INTERNAL when model.json cannot be written.
  absl::StatusOr<std::string> ReserveVersionPath(const std::string& name, const VaeOptions& options);
  // Makes `snapshot` (whose checkpoint_path is a reserved path, already written) a version of `name`: it becomes
  // "latest", is cached, recorded in model.json, and the versions beyond keep_versions that no label names are
  // deleted. Returns its ModelVersion.
  ModelVersion Publish(const std::string& name, std::shared_ptr<Snapshot> snapshot);
  // Points `label` at `version` if that version's test loss is lower than the test loss of the version the label
  // names now (or the label does not exist, or names a version without a test loss). Returns whether it moved.
  absl::StatusOr<bool> Promote(const std::string& name, const std::string& label, int64_t version);
  // The model being trained by this process ("" none): Delete* refuse to touch it as the RPCs document.
  void SetTraining(const std::string& name);

  // --- Administration ---
  // Every model (name empty) or one (NOT_FOUND naming the models when missing), by name.
  absl::StatusOr<std::vector<ModelListing>> List(const std::string& name) const;
  // The labels naming `version` of `name` ("latest" included) and the model's default label.
  std::pair<std::vector<std::string>, std::string> LabelsOf(const std::string& name, int64_t version) const;
  // Points `label` at `version` (moving it); make_default also makes it the default label. Returns the version it
  // named before (0: new). INVALID_ARGUMENT for "latest" or a bad label; NOT_FOUND for a missing model or version.
  absl::StatusOr<int64_t> SetLabel(const std::string& name, const std::string& label, int64_t version,
                                   bool make_default);
  // Deletes one version (file, memory, listing). FAILED_PRECONDITION when labels other than "latest" name it (unless
  // `force`, which removes them), or when it is the newest version of the model being trained. Returns the labels
  // removed.
  absl::StatusOr<std::vector<std::string>> DeleteVersion(const std::string& name, int64_t version, bool force);
  // Deletes a model: every version, model.json and its folder. FAILED_PRECONDITION while it is being trained, or
  // (unless `force`) while a label other than "latest" names one of its versions. Returns the versions deleted.
  absl::StatusOr<int64_t> DeleteModel(const std::string& name, bool force);

  // --- Watch ---
  // Brings memory in line with the disk: new models, new complete checkpoints, deleted ones, changed model.json.
  // The watch thread calls it every poll_interval; tests call it directly.
  void Rescan();

  int64_t loaded_bytes() const;

 private:
  struct Version {
    std::string path;
    VersionListing meta;     // version, counters, metrics, time, size (labels/loaded filled by List)
    bool meta_known = false;  // from model.json or a load; else from the file only
  };
  struct Model {
    std::optional<VaeOptions> options;
    std::string default_label = kLatestLabel;
    std::map<std::string, int64_t> labels;  // without "latest"
    int64_t next_version = 1;
    std::map<int64_t, Version> versions;
    std::string metadata_text;  // model.json as last read or written ("" none)
    std::shared_ptr<const Snapshot> placeholder;
  };
  using Key = std::pair<std::string, int64_t>;
  struct Cached {
    std::shared_ptr<const Snapshot> snapshot;
    int64_t bytes = 0;
    uint64_t last_use = 0;
  };
  struct Loading {
    absl::Notification done;
    absl::StatusOr<std::shared_ptr<const Snapshot>> result;
  };
  // A file that failed verification, by size and mtime: not read again until one of them changes.
  struct Rejected {
    int64_t size = -1;
    int64_t mtime_ns = 0;
  };

  ModelRepository(RepositoryOptions options, c10::Device device);

  void MigrateFlatLayout();
  void WatchLoop();
  // Rescan's part for one model folder, with the folder's files read outside mu_.
  void ScanModel(const std::string& name);
  // model.json of `model`, serialised.
  static std::string MetadataText(const Model& model);
  // Applies a model.json text to `model` (labels, default label, next version, version metadata). False if invalid.
  static bool ApplyMetadata(const std::string& text, Model* model);
  // Writes `text` as <name>/model.json. Caller holds write_mu_ (not mu_).
  absl::Status WriteMetadata(const std::string& name, const std::string& text);
  // The version `ref` names in `model`, or NOT_FOUND naming what exists.
  absl::StatusOr<int64_t> VersionFor(const std::string& name, const Model& model, const ModelRef& ref) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Caches `snapshot` as (name, version) and evicts least recently used entries beyond the budget.
  void CacheLocked(const Key& key, std::shared_ptr<const Snapshot> snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLocked(const std::string& name, int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status NotFoundModel(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const RepositoryOptions options_;
  const c10::Device device_;

  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  std::map<Key, Cached> cache_ ABSL_GUARDED_BY(mu_);
  int64_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t use_clock_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Key, std::shared_ptr<Loading>> loading_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Rejected> rejected_ ABSL_GUARDED_BY(mu_);
  std::string training_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watch_;
};

}  // namespace vae::server

#endif  // VAE_SERVER_MODEL_REPOSITORY_H_
