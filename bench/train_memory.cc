// vae-train-memory: peak memory of a training job, through the server's own path (BENCHMARKS.md §14).
//
//   vae-train-memory --preset=seed --images=256 --batch_size=32 --epochs=2 --threads=2 --work_dir=/tmp/mem --json
//
// Writes --images synthetic PNGs of the preset's input shape (smooth colour gradients plus seeded noise: the decoded
// images are what a real folder gives, only their content is made up) into WORK_DIR/data/images, serves a fresh
// --serve_preset model as vae-server does at start-up, and runs one TrainingManager job on the folder: the Trainer
// with the hand-written MLP step, fused Adam, the moving average, a checkpoint in WORK_DIR/models after every epoch
// and a published snapshot after every epoch, exactly as a Train call does. A sampler thread reads VmRSS every 5 ms;
// the report gives the RSS at each event, the highest RSS between events (the phase a peak belongs to), the kernel's
// VmHWM at the end, and each as a multiple of the weights (4 bytes per parameter).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "model/options.h"
#include "model/runtime.h"
#include "server/dataset_registry.h"
#include "server/model_repository.h"
#include "server/snapshot.h"
#include "server/tensor_codec.h"
#include "server/training_job.h"

ABSL_FLAG(std::string, preset, "seed", "preset of the model to train");
ABSL_FLAG(std::string, serve_preset, "mnist", "the model served before the first epoch ends (vae-server's default)");
ABSL_FLAG(int64_t, images, 256, "synthetic PNGs in the folder (10% are held out as the test set)");
ABSL_FLAG(int64_t, batch_size, 32, "training batch size");
ABSL_FLAG(int64_t, epochs, 2, "epochs (each ends with a checkpoint and a publication)");
ABSL_FLAG(int32_t, threads, 2, "torch intra-op threads");
ABSL_FLAG(std::string, work_dir, "/tmp/vae-train-memory", "scratch folder for the PNGs and checkpoints (emptied)");
ABSL_FLAG(bool, json, false, "print the summary as one JSON line (always the last line)");

namespace {

// One field of /proc/self/status in bytes (VmRSS, VmHWM), -1 when missing.
int64_t StatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

int Fail(const absl::Status& s) {
  std::cerr << "vae-train-memory: " << s << "\n";
  return 1;
}

const char* KindName(vae::Progress::Kind k) {
  switch (k) {
    case vae::Progress::Kind::kStarted:
      return "STARTED";
    case vae::Progress::Kind::kStep:
      return "STEP";
    case vae::Progress::Kind::kEpochEnd:
      return "EPOCH_END";
    case vae::Progress::Kind::kDone:
      return "DONE";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("vae-train-memory [--flags]: peak RSS of a training job (BENCHMARKS.md section 8)");
  absl::ParseCommandLine(argc, argv);
  vae::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  auto options = vae::Preset(absl::GetFlag(FLAGS_preset));
  if (!options.ok()) return Fail(options.status());
  const double weights = 4.0 * vae::server::CountParameters(*options);
  const double gb = 1e9;

  namespace fs = std::filesystem;
  const fs::path work = absl::GetFlag(FLAGS_work_dir);
  fs::remove_all(work);
  fs::create_directories(work / "data" / "images");
  fs::create_directories(work / "models");
  {
    // Synthetic images, written in chunks of 16 so that making them costs no memory worth mentioning.
    at::manual_seed(1);
    const int64_t n = absl::GetFlag(FLAGS_images);
    for (int64_t begin = 0; begin < n; begin += 16) {
      const int64_t count = std::min<int64_t>(16, n - begin);
      auto ramp_y = at::linspace(0, 1, options->height).view({1, 1, -1, 1});
      auto ramp_x = at::linspace(0, 1, options->width).view({1, 1, 1, -1});
      auto colour = at::rand({count, options->channels, 1, 1});
      auto images = (0.5 * colour * ramp_y + 0.3 * (1 - colour) * ramp_x +
                     0.2 * at::rand({count, options->channels, options->height, options->width}))
                        .clamp(0, 1);
      auto pngs = vae::server::EncodePngs(images);
      if (!pngs.ok()) return Fail(pngs.status());
      for (int64_t i = 0; i < count; ++i) {
        std::ofstream(work / "data" / "images" / absl::StrCat("img", begin + i, ".png"), std::ios::binary)
            << (*pngs)[i];
      }
    }
  }

  // The server's repository (one version kept, as the server's pruning would at --keep_versions=1), serving a fresh
  // --serve_preset model as the default model's version 0 until the job publishes.
  vae::server::RepositoryOptions repository_options;
  repository_options.root = (work / "models").string();
  repository_options.keep_versions = 1;
  auto repository = vae::server::ModelRepository::Open(repository_options, at::kCPU);
  if (!repository.ok()) return Fail(repository.status());
  auto serve = vae::Preset(absl::GetFlag(FLAGS_serve_preset));
  if (!serve.ok()) return Fail(serve.status());
  (*repository)
      ->SetPlaceholder(repository_options.default_model,
                       vae::server::SnapshotTakingModel(vae::server::NewSeededVae(*serve, 1), at::kCPU));
  vae::server::DatasetRegistry datasets((work / "data").string());
  vae::server::TrainingManager manager(repository->get(), &datasets, at::kCPU);

  // The sampler: the highest VmRSS since the last event.
  std::atomic<bool> stop{false};
  std::mutex mu;
  int64_t window_peak = 0;
  std::thread sampler([&] {
    while (!stop.load()) {
      const int64_t rss = StatusBytes("VmRSS");
      {
        std::lock_guard<std::mutex> lock(mu);
        window_peak = std::max(window_peak, rss);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto take_window = [&] {
    std::lock_guard<std::mutex> lock(mu);
    const int64_t peak = std::max(window_peak, StatusBytes("VmRSS"));
    window_peak = 0;
    return peak;
  };

  nlohmann::json events = nlohmann::json::array();
  const int64_t before_start = StatusBytes("VmRSS");
  take_window();
  vae::server::TrainSpec spec;
  spec.dataset = "images";
  spec.preset = absl::GetFlag(FLAGS_preset);
  spec.epochs = absl::GetFlag(FLAGS_epochs);
  spec.batch_size = absl::GetFlag(FLAGS_batch_size);
  spec.log_every_steps = 1;
  const auto start = std::chrono::steady_clock::now();
  auto job = manager.Start(spec);
  if (!job.ok()) return Fail(job.status());
  std::vector<double> epoch_ips;
  vae::server::TrainEvent event;
  std::fprintf(stderr, "%-10s %5s %5s %10s %14s\n", "event", "epoch", "step", "RSS GB", "peak before GB");
  std::fprintf(stderr, "%-10s %5s %5s %10.2f %14s\n", "(start)", "", "", before_start / gb, "");
  while (true) {
    const auto poll = (*job)->Next(&event, absl::Seconds(1));
    if (poll == vae::server::TrainingJob::Poll::kEnd) break;
    if (poll != vae::server::TrainingJob::Poll::kEvent) continue;
    const auto& p = event.progress;
    const int64_t rss = StatusBytes("VmRSS"), peak = take_window();
    std::fprintf(stderr, "%-10s %5lld %5lld %10.2f %14.2f\n", KindName(p.kind), static_cast<long long>(p.epoch),
                 static_cast<long long>(p.step_in_epoch), rss / gb, peak / gb);
    events.push_back({{"event", KindName(p.kind)},
                      {"epoch", p.epoch},
                      {"step", p.step_in_epoch},
                      {"rss_gb", rss / gb},
                      {"peak_since_previous_gb", peak / gb}});
    if (p.kind == vae::Progress::Kind::kEpochEnd) epoch_ips.push_back(p.images_per_sec);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop.store(true);
  sampler.join();
  if (!(*job)->status().ok()) return Fail((*job)->status());

  const int64_t hwm = StatusBytes("VmHWM");
  std::fprintf(stderr, "weights %.3f GB; peak RSS (VmHWM) %.2f GB = %.2fx the weights; %.1f s\n", weights / gb,
               hwm / gb, hwm / weights, seconds);
  nlohmann::json out = {{"mode", "train-memory"},
                        {"preset", options->preset},
                        {"images", absl::GetFlag(FLAGS_images)},
                        {"batch_size", spec.batch_size},
                        {"epochs", spec.epochs},
                        {"weights_gb", weights / gb},
                        {"rss_before_start_gb", before_start / gb},
                        {"peak_rss_gb", hwm / gb},
                        {"peak_over_weights", hwm / weights},
                        {"epoch_images_per_sec", epoch_ips},
                        {"seconds", seconds},
                        {"events", events}};
  if (absl::GetFlag(FLAGS_json)) std::cout << out.dump() << "\n";
  fs::remove_all(work);
  return 0;
}
