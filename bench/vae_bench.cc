// vae-bench: reproducible performance and quality figures for BENCHMARKS.md.
//
//   vae-bench train --data_dir=data --dataset=mnist --preset=mnist --epochs=10 --batch_size=128 --threads=2 --json
//       Trains on the full training set, evaluates -ELBO on the test set after every epoch (sampled z, fixed seed),
//       optionally the importance-weighted NLL (--iw_k, on --iw_images test images). The last line of stdout is one
//       JSON object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "model/dataset.h"
#include "model/loss.h"
#include "model/runtime.h"
#include "model/trainer.h"

ABSL_FLAG(std::string, data_dir, "data", "folder filled by scripts/fetch-data.sh");
ABSL_FLAG(std::string, dataset, "mnist", "mnist or fashion-mnist");
ABSL_FLAG(std::string, preset, "mnist", "model preset");
ABSL_FLAG(int64_t, epochs, 10, "training epochs");
ABSL_FLAG(int64_t, batch_size, 128, "training batch size");
ABSL_FLAG(double, lr, 1e-3, "Adam learning rate");
ABSL_FLAG(uint64_t, seed, 1, "training seed");
ABSL_FLAG(int32_t, threads, 2, "torch intra-op threads");
ABSL_FLAG(int64_t, max_train, -1, "use only the first N training images (-1: all)");
ABSL_FLAG(int64_t, iw_k, 0, "importance samples for the IW-NLL estimate (0: skip)");
ABSL_FLAG(int64_t, iw_images, 1000, "test images the IW-NLL is estimated on");
ABSL_FLAG(bool, json, false, "print the summary as one JSON line (always the last line)");

namespace {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

int Fail(const absl::Status& s) {
  std::cerr << "vae-bench: " << s << "\n";
  return 1;
}

int RunTrain() {
  vae::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  auto split = vae::LoadNamedDataset(absl::GetFlag(FLAGS_data_dir), absl::GetFlag(FLAGS_dataset),
                                     absl::GetFlag(FLAGS_max_train));
  if (!split.ok()) return Fail(split.status());
  auto options = vae::Preset(absl::GetFlag(FLAGS_preset));
  if (!options.ok()) return Fail(options.status());
  vae::TrainOptions t;
  t.epochs = absl::GetFlag(FLAGS_epochs);
  t.batch_size = absl::GetFlag(FLAGS_batch_size);
  t.learning_rate = absl::GetFlag(FLAGS_lr);
  t.seed = absl::GetFlag(FLAGS_seed);
  t.log_every_steps = 0;
  torch::manual_seed(t.seed);  // weight initialisation
  vae::Trainer trainer(vae::Vae(*options), t, torch::kCPU);
  auto result = trainer.Run(split->train, &split->test, [](const vae::Progress& p, const vae::Vae&) {
    if (p.kind != vae::Progress::Kind::kEpochEnd) return;
    std::fprintf(stderr, "epoch %lld/%lld  train %.3f  test %.3f (recon %.3f, kl %.3f)  %.0f images/s\n",
                 static_cast<long long>(p.epoch), static_cast<long long>(p.epochs), p.train.loss, p.test.loss,
                 p.test.recon, p.test.kl, p.images_per_sec);
  });
  if (!result.ok()) return Fail(result.status());

  nlohmann::json out = {{"mode", "train"},
                        {"preset", absl::GetFlag(FLAGS_preset)},
                        {"dataset", absl::GetFlag(FLAGS_dataset)},
                        {"train_images", split->train.size()},
                        {"test_images", split->test.size()},
                        {"epochs", t.epochs},
                        {"batch_size", t.batch_size},
                        {"lr", t.learning_rate},
                        {"threads", absl::GetFlag(FLAGS_threads)},
                        {"images_per_sec_median", Median(result->epoch_images_per_sec)},
                        {"images_per_sec", result->epoch_images_per_sec},
                        {"test_loss", result->last_test.loss},
                        {"test_recon", result->last_test.recon},
                        {"test_kl", result->last_test.kl}};
  std::vector<double> per_epoch;
  for (const auto& m : result->epoch_test) per_epoch.push_back(m.loss);
  out["test_loss_per_epoch"] = per_epoch;

  if (const int64_t k = absl::GetFlag(FLAGS_iw_k); k > 0) {
    const int64_t n = std::min(absl::GetFlag(FLAGS_iw_images), split->test.size());
    auto x = split->test.images.slice(0, 0, n);
    auto start = std::chrono::steady_clock::now();
    torch::Tensor ll;
    for (int64_t b = 0; b < n; b += 100) {
      auto part = vae::ImportanceWeightedLogLikelihood(trainer.serving_model(), x.slice(0, b, std::min(n, b + 100)), k,
                                                       vae::MakeGenerator(t.seed + 1000 + b));
      ll = ll.defined() ? torch::cat({ll, part}) : part;
    }
    out["iw_k"] = k;
    out["iw_images"] = n;
    out["iw_nll"] = -ll.mean().item<double>();
    out["iw_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "IW-NLL (k=%lld, %lld test images): %.3f\n", static_cast<long long>(k),
                 static_cast<long long>(n), out["iw_nll"].get<double>());
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("vae-bench MODE [--flags]; MODE is train. See BENCHMARKS.md.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << "usage: vae-bench train [--flags] (--help lists them)\n";
    return 2;
  }
  const std::string mode = args[1];
  if (mode == "train") return RunTrain();
  std::cerr << "vae-bench: unknown mode '" << mode << "' (expected train)\n";
  return 2;
}
