#include "server/snapshot.h"

#include <ATen/Context.h>

#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

namespace vae::server {
namespace {

// What a snapshot derives from its model: the BLAS-only MLP path and the parameter count.
void DeriveFromModel(Snapshot& snapshot) {
  if (MlpInference::Supports(snapshot.model)) snapshot.mlp = std::make_shared<const MlpInference>(snapshot.model);
  snapshot.parameter_count = snapshot.model->parameter_count();
}

}  // namespace

Vae NewSeededVae(const VaeOptions& options, uint64_t seed) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  at::manual_seed(seed);
  return Vae(options);
}

std::shared_ptr<Snapshot> SnapshotOfModel(const Vae& model, const c10::Device& device) {
  return SnapshotTakingModel(CloneVae(model, device), device);
}

std::shared_ptr<Snapshot> SnapshotTakingModel(Vae model, const c10::Device& device) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->model = std::move(model);
  snapshot->model->to(device);
  snapshot->model->eval();
  snapshot->options = snapshot->model->options();
  snapshot->device = device;
  DeriveFromModel(*snapshot);
  return snapshot;
}

std::shared_ptr<Snapshot> SnapshotOfCheckpoint(Checkpoint checkpoint, const c10::Device& device) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->model = std::move(checkpoint.model);
  snapshot->model->to(device);
  snapshot->model->eval();
  snapshot->options = checkpoint.options;
  snapshot->device = device;
  DeriveFromModel(*snapshot);
  snapshot->version.epochs_trained = checkpoint.state.epochs_done;
  snapshot->version.global_step = checkpoint.state.global_step;
  snapshot->checkpoint_path = checkpoint.path;
  snapshot->train_json = checkpoint.state.train_json;
  ParseMetricsJson(checkpoint.state.metrics_json, &snapshot->last_train, &snapshot->last_test);
  return snapshot;
}

void ParseMetricsJson(const std::string& json, std::optional<Metrics>* train, std::optional<Metrics>* test) {
  const auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  auto read = [&](const char* key, std::optional<Metrics>* out) {
    out->reset();
    if (!j.is_object() || !j.contains(key) || !j[key].is_object()) return;
    const auto& m = j[key];
    auto number = [&](const char* name) {
      return m.contains(name) && m[name].is_number() ? m[name].get<double>() : std::nan("");
    };
    Metrics metrics{number("loss"), number("recon"), number("kl")};
    if (std::isfinite(metrics.loss)) *out = metrics;
  };
  read("train", train);
  read("test", test);
}

}  // namespace vae::server
