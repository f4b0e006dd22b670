// vae-bench: reproducible performance and quality figures for BENCHMARKS.md.
//
//   vae-bench train --data_dir=data --dataset=mnist --preset=mnist --epochs=10 --batch_size=128 --threads=2 --json
//       Trains on the full training set, evaluates -ELBO on the test set after every epoch (sampled z, fixed seed),
//       optionally the importance-weighted NLL (--iw_k, on --iw_images test images).
//
//       For Burda et al.'s settings (bench/reproduce-iwae.sh): --binarize (dynamic binarisation of the training
//       batches, and the test set binarised once with a fixed seed), --iw_samples (IWAE k), --adam_eps,
//       --lr_schedule=EPOCHS:LR,..., --checkpoint_dir (continues from the newest checkpoint there; --epochs counts the
//       model's life) and --max_seconds (stops with a checkpoint, to be continued by the next run).
//
//   vae-bench iwnll --checkpoint=DIR_OR_FILE --data_dir=data --dataset=mnist --binarize --iw_k=5000 --json
//       The importance-weighted test NLL (k samples per image, 100 decoded at a time, log-sum-exp accumulated in
//       float64) of a checkpoint's served weights on --iw_images test images (-1: all), with its standard error and
//       the checkpoint's training position.
//
//   vae-bench infer --preset=mnist --threads=2 --json
//       In-process Encode and Decode images/s through the server's InferenceEngine (validation included, no
//       transport, no batching) at batch 1, 64, 256, 1024.
//
//   vae-bench grpc --server=127.0.0.1:50051 [--server_pid=PID] --json
//       Against a running vae-server: Encode b=1 latency p50/p90/p99 from one sequential client; Encode images/s
//       for C concurrent clients (C = 1, 8, 32, 64) at b=1 and b=256; GetModelInfo calls/s at C=32 (the transport
//       floor); and the ratios c8_b256_vs_inproc (over in-process b=256 Encode in this same process) and
//       c32_b1_encode_vs_info, each the median of --ratio_rounds rounds that measure both sides back to back.
//       With --server_pid, the server's peak RSS (VmHWM) and its CPU time per call in the sequential loops (next to
//       this client's own), which says where a round trip's time goes. --clients and --batches pick the grid (e.g.
//       --batches=1 for a model whose 256-image requests would not fit in memory).
//
//   vae-bench grpc_ab --server=A --server_b=B [--ratio_rounds=5] --json
//       Two running servers side by side (same model, different flags; bench/metrics-cost.sh starts them with
//       --metrics on and off): Encode b=1 p50 and C=32 b=1 calls/s of each in interleaved rounds, and the medians of
//       the per-round B/A ratios.
//
//   vae-bench metrics_cost --latency_calls=1000000 --json
//       ns that ServerMetrics spends counting one call (CallStarted + CallFinished), on 1 and 2 threads at once.
//
//       With --spec_ratio, it first trains the server's default model for one epoch (version 1, on --dataset's first
//       1000 images) and then measures, side by side, Encode b=1 with a model spec on every request ({default, 1})
//       against the same request without one: the p50 latency ratio (encode_b1_p50_spec_vs_none) and the C=32
//       throughput ratio (c32_b1_spec_vs_none), each a median of --ratio_rounds rounds.
//
//   vae-bench load --preset=mnist --load_rounds=5 --json
//       How long a version of --preset takes to load on demand: two versions in a fresh model repository (a temp
//       folder), a memory budget that fits one, and alternating pinned Resolve calls, each of which loads its version
//       from disk (read, CRC, torch archive, snapshot). Median and max seconds over --load_rounds loads.
//
//   vae-bench loopback --latency_calls=20000 --json
//       The kernel's floor under any RPC on this machine: round trips of a 64-byte message between two threads over
//       a 127.0.0.1 TCP connection, each blocked in read() until the other writes, with the threads free to run on
//       any CPU and then both pinned to one CPU (no cross-CPU wake-up).
//
//   vae-bench png [--checkpoint=ckpt-N.vae] [--count=64] --json
//       PNG bytes/image and encode CPU time/image of a Sample answer with OpenCV (levels 0-9 x zlib strategies),
//       libspng and server/png_writer.h (libdeflate levels x row filters), and the server's EncodePngs: see
//       bench/png_bench.cc.
//
// Every mode prints one JSON object as the last line of stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/png_bench.h"
#include "bench/process_stats.h"
#include "common/lr_schedule.h"
#include "common/tool_flags.h"
#include "common/train_defaults.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/loss.h"
#include "model/runtime.h"
#include "model/trainer.h"
#include "server/inference.h"
#include "server/model_repository.h"
#include "server/server_metrics.h"
#include "server/snapshot.h"
#include "server/tensor_codec.h"
#include "vae/v1/vae_service.grpc.pb.h"

#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

ABSL_FLAG(std::string, data_dir, "data", "folder filled by scripts/fetch-data.sh");
ABSL_FLAG(std::string, dataset, "mnist", "mnist or fashion-mnist");
ABSL_FLAG(std::string, preset, "mnist", "model preset");
ABSL_FLAG(int64_t, epochs, 10, "training epochs (the benchmark's run, not a job's default)");
ABSL_FLAG(int64_t, batch_size, vae::kDefaultBatchSize, "training batch size");
ABSL_FLAG(double, lr, vae::kDefaultLearningRate, "Adam learning rate");
ABSL_FLAG(uint64_t, seed, vae::kDefaultTrainSeed, "training seed");
ABSL_FLAG(int32_t, threads, 2, "torch intra-op threads");
ABSL_FLAG(int64_t, max_train, -1, "use only the first N training images (-1: all)");
ABSL_FLAG(int64_t, iw_k, 0, "importance samples for the IW-NLL estimate (train: 0 skips it; iwnll: 0 is 5000)");
ABSL_FLAG(int64_t, iw_images, -1, "test images the IW-NLL is estimated on (-1: all)");
ABSL_FLAG(int64_t, iw_samples, vae::kDefaultIwSamples, "train: k of the IWAE objective (1: the VAE's ELBO)");
ABSL_FLAG(double, adam_eps, vae::kDefaultAdamEps, "train: Adam's epsilon");
ABSL_FLAG(std::string, lr_schedule, "", "train: EPOCHS:LR,EPOCHS:LR,... over the model's epochs (empty: --lr)");
ABSL_FLAG(bool, binarize, false,
          "train/iwnll: dynamic binarisation of training batches; the test set binarised once (fixed seed)");
ABSL_FLAG(double, ema_decay, 0.998, "train: decay of the served weight average (0: serve the raw weights)");
ABSL_FLAG(std::string, checkpoint_dir, "", "train: checkpoint every epoch here and resume from the newest one");
ABSL_FLAG(double, max_seconds, 0, "train: stop (with a checkpoint) after this many seconds (0: no limit)");
ABSL_FLAG(
    std::string, checkpoint, "",
    "iwnll: a checkpoint file, or a folder (its newest checkpoint); png: decode with this checkpoint file's model "
    "(default: a fresh --preset model)");
ABSL_FLAG(bool, fast_mlp_step, true, "train: the hand-written MLP step (false: autograd), see model/mlp_step.h");
ABSL_FLAG(bool, json, false, "print the summary as one JSON line (always the last line)");
ABSL_FLAG(std::string, server, "127.0.0.1:50051", "grpc: the vae-server to measure");
ABSL_FLAG(int64_t, server_pid, 0, "grpc: the server's PID, to report its peak RSS");
ABSL_FLAG(double, seconds, 2.0, "infer/grpc: seconds each throughput point runs");
ABSL_FLAG(int64_t, latency_calls, 3000, "grpc/loopback: sequential calls (round trips) for the latency percentiles");
ABSL_FLAG(std::vector<std::string>, clients, std::vector<std::string>({"1", "8", "32", "64"}),
          "grpc: concurrent client counts of the throughput grid");
ABSL_FLAG(int64_t, ratio_rounds, 5,
          "grpc: rounds of back-to-back measurements behind each ratio (c32_b1_encode_vs_info, c8_b256_vs_inproc)");
ABSL_FLAG(int64_t, server_b_pid, 0, "grpc_ab: --server_b's PID, for its CPU time per call");
ABSL_FLAG(std::string, server_b, "",
          "grpc_ab: the second vae-server, measured against --server in interleaved rounds (e.g. --metrics=false)");
ABSL_FLAG(bool, spec_ratio, false,
          "grpc: train the default model's version 1, then measure Encode b=1 with a model spec vs without");
ABSL_FLAG(int64_t, load_rounds, 5, "load: on-demand loads timed");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "256"}),
          "grpc: images per Encode request of the throughput grid");

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

absl::Status AddIwNll(vae::Vae& model, const vae::Dataset& test, int64_t k, uint64_t seed, nlohmann::json& out);

// The named dataset; with --binarize its test images are binarised once, from a fixed seed, so that every evaluation
// (the trainer's, iwnll's, any later run's) sees the same binary test set.
absl::StatusOr<vae::TrainTestSplit> LoadData(int64_t max_train) {
  auto split = vae::LoadNamedDataset(absl::GetFlag(FLAGS_data_dir), absl::GetFlag(FLAGS_dataset), max_train);
  if (split.ok() && absl::GetFlag(FLAGS_binarize)) {
    constexpr uint64_t kTestBinarizationSeed = 20151101;
    auto generator = vae::MakeGenerator(kTestBinarizationSeed);
    split->test.images = vae::Binarize(split->test.images, generator);
  }
  return split;
}

int RunTrain() {
  vae::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  auto split = LoadData(absl::GetFlag(FLAGS_max_train));
  if (!split.ok()) return Fail(split.status());
  auto options = vae::Preset(absl::GetFlag(FLAGS_preset));
  if (!options.ok()) return Fail(options.status());
  auto schedule = vae::ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule), "--lr_schedule");
  if (!schedule.ok()) return Fail(schedule.status());
  vae::TrainOptions t;
  t.epochs = absl::GetFlag(FLAGS_epochs);
  t.batch_size = absl::GetFlag(FLAGS_batch_size);
  t.learning_rate = absl::GetFlag(FLAGS_lr);
  t.lr_schedule = *schedule;
  t.adam_eps = absl::GetFlag(FLAGS_adam_eps);
  t.iw_samples = absl::GetFlag(FLAGS_iw_samples);
  t.binarize = absl::GetFlag(FLAGS_binarize);
  t.ema_decay = absl::GetFlag(FLAGS_ema_decay);
  t.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  t.seed = absl::GetFlag(FLAGS_seed);
  t.log_every_steps = 0;
  t.fast_mlp_step = absl::GetFlag(FLAGS_fast_mlp_step);
  torch::manual_seed(t.seed);  // weight initialisation
  vae::Vae model(*options);
  absl::StatusOr<vae::Checkpoint> resume = absl::NotFoundError("no checkpoint_dir");
  if (!t.checkpoint_dir.empty()) {
    resume = vae::LoadNewestCheckpoint(t.checkpoint_dir, torch::kCPU);
    if (!resume.ok() && resume.status().code() != absl::StatusCode::kNotFound) return Fail(resume.status());
    if (resume.ok()) model = resume->model;
  }
  vae::Trainer trainer(model, t, torch::kCPU);
  if (resume.ok()) {
    if (auto s = trainer.Resume(*resume); !s.ok()) return Fail(s);
    std::fprintf(stderr, "resumed from %s: %lld epochs + %lld steps done\n", resume->path.c_str(),
                 static_cast<long long>(trainer.state().epochs_done),
                 static_cast<long long>(trainer.state().step_in_epoch));
  }
  std::atomic<bool> cancel{false};
  const double max_seconds = absl::GetFlag(FLAGS_max_seconds);
  const auto start = std::chrono::steady_clock::now();
  auto result = trainer.Run(
      split->train, &split->test,
      [&](const vae::Progress& p, const vae::Vae&) {
        if (max_seconds > 0 &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > max_seconds) {
          cancel = true;
        }
        if (p.kind != vae::Progress::Kind::kEpochEnd) return;
        std::fprintf(stderr, "epoch %lld/%lld  lr %.3g  train %.3f  test %.3f (recon %.3f, kl %.3f)  %.0f images/s\n",
                     static_cast<long long>(p.epoch), static_cast<long long>(p.epochs),
                     vae::LearningRateAt(t.lr_schedule, p.epoch - 1, t.learning_rate), p.train.loss, p.test.loss,
                     p.test.recon, p.test.kl, p.images_per_sec);
      },
      &cancel);
  if (!result.ok()) return Fail(result.status());

  nlohmann::json out = {{"mode", "train"},
                        {"preset", absl::GetFlag(FLAGS_preset)},
                        {"dataset", absl::GetFlag(FLAGS_dataset)},
                        {"train_images", split->train.size()},
                        {"test_images", split->test.size()},
                        {"epochs", t.epochs},
                        {"epochs_done", result->state.epochs_done},
                        {"step_in_epoch", result->state.step_in_epoch},
                        {"stopped", result->cancelled},
                        {"iw_samples", t.iw_samples},
                        {"lr_schedule", vae::FormatLrSchedule(t.lr_schedule)},
                        {"checkpoint", result->checkpoint_path},
                        {"batch_size", t.batch_size},
                        {"lr", t.learning_rate},
                        {"threads", absl::GetFlag(FLAGS_threads)},
                        {"fast_mlp_step", t.fast_mlp_step},
                        {"images_per_sec_median", Median(result->epoch_images_per_sec)},
                        {"images_per_sec", result->epoch_images_per_sec},
                        {"test_loss", result->last_test.loss},
                        {"test_recon", result->last_test.recon},
                        {"test_kl", result->last_test.kl}};
  std::vector<double> per_epoch;
  for (const auto& m : result->epoch_test) per_epoch.push_back(m.loss);
  out["test_loss_per_epoch"] = per_epoch;

  if (const int64_t k = absl::GetFlag(FLAGS_iw_k); k > 0) {
    if (auto s = AddIwNll(trainer.serving_model(), split->test, k, t.seed + 1000, out); !s.ok()) return Fail(s);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

// IW-NLL with `k` samples on the first --iw_images images of `test` into `out` (iw_nll, its standard error over the
// images, iw_k, iw_images, iw_seconds).
absl::Status AddIwNll(vae::Vae& model, const vae::Dataset& test, int64_t k, uint64_t seed, nlohmann::json& out) {
  const int64_t limit = absl::GetFlag(FLAGS_iw_images);
  const int64_t n = limit < 0 ? test.size() : std::min(limit, test.size());
  vae::Dataset part = test;
  part.images = test.images.slice(0, 0, n);
  const auto start = std::chrono::steady_clock::now();
  auto nll = vae::EvaluateIwNll(model, part, k, seed, torch::kCPU);
  if (!nll.ok()) return nll.status();
  out["iw_k"] = k;
  out["iw_images"] = n;
  out["iw_nll"] = nll->mean().item<double>();
  out["iw_nll_stderr"] = n > 1 ? nll->std().item<double>() / std::sqrt(static_cast<double>(n)) : 0.0;
  out["iw_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "IW-NLL (k=%lld, %lld test images): %.3f +- %.3f (%.0f s)\n", static_cast<long long>(k),
               static_cast<long long>(n), out["iw_nll"].get<double>(), out["iw_nll_stderr"].get<double>(),
               out["iw_seconds"].get<double>());
  return absl::OkStatus();
}

int RunIwNll() {
  vae::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  const int64_t k = absl::GetFlag(FLAGS_iw_k) == 0 ? vae::kDefaultIwnllSamples : absl::GetFlag(FLAGS_iw_k);
  if (k < 1 || k > vae::kMaxIwnllSamples) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--iw_k is ", k, ", expected 1 to ", vae::kMaxIwnllSamples,
                                                        " (0: ", vae::kDefaultIwnllSamples, ")")));
  }
  const std::string where = absl::GetFlag(FLAGS_checkpoint);
  if (where.empty()) return Fail(absl::InvalidArgumentError("iwnll: --checkpoint is required"));
  auto checkpoint = std::filesystem::is_directory(where) ? vae::LoadNewestCheckpoint(where, torch::kCPU)
                                                         : vae::LoadCheckpoint(where, torch::kCPU);
  if (!checkpoint.ok()) return Fail(checkpoint.status());
  auto split = LoadData(/*max_train=*/1);
  if (!split.ok()) return Fail(split.status());
  nlohmann::json out = {{"mode", "iwnll"},
                        {"checkpoint", checkpoint->path},
                        {"preset", checkpoint->options.preset},
                        {"dataset", absl::GetFlag(FLAGS_dataset)},
                        {"binarized", absl::GetFlag(FLAGS_binarize)},
                        {"epochs_done", checkpoint->state.epochs_done},
                        {"step_in_epoch", checkpoint->state.step_in_epoch},
                        {"global_step", checkpoint->state.global_step},
                        {"train", nlohmann::json::parse(checkpoint->state.train_json, nullptr, false)},
                        {"metrics", nlohmann::json::parse(checkpoint->state.metrics_json, nullptr, false)}};
  if (auto s = AddIwNll(checkpoint->model, split->test, k, absl::GetFlag(FLAGS_seed) + 1000, out); !s.ok()) {
    return Fail(s);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

// Calls `fn` for ~`seconds` (after a short warm-up) and returns calls per second.
template <typename Fn>
double CallsPerSecond(Fn&& fn, double seconds) {
  for (int i = 0; i < 3; ++i) fn();
  int64_t calls = 0;
  const auto start = Clock::now();
  while (SecondsSince(start) < seconds) {
    fn();
    ++calls;
  }
  return calls / SecondsSince(start);
}

// In-process Encode images/s at batch `b` through the server's InferenceEngine (unbatched, `threads` torch threads).
double InProcessEncodeImagesPerSec(const vae::server::Snapshot& snapshot, int64_t b, int threads, double seconds) {
  vae::server::InferenceEngine engine(1 << 16, threads);
  const auto& o = snapshot.options;
  const at::Tensor x = at::rand({b, o.channels, o.height, o.width});
  return b * CallsPerSecond([&] { (void)engine.Encode(snapshot, x, absl::InfiniteFuture()); }, seconds);
}

int RunInfer() {
  const int threads = absl::GetFlag(FLAGS_threads);
  vae::ConfigureThreads(threads);
  auto options = vae::Preset(absl::GetFlag(FLAGS_preset));
  if (!options.ok()) return Fail(options.status());
  auto snapshot = vae::server::SnapshotOfModel(vae::server::NewSeededVae(*options, 1), torch::kCPU);
  vae::server::InferenceEngine engine(1 << 16, threads);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  nlohmann::json out = {{"mode", "infer"}, {"preset", options->preset}, {"threads", threads}};
  for (int64_t b : {1, 64, 256, 1024}) {
    const at::Tensor x = at::rand({b, options->channels, options->height, options->width});
    const at::Tensor z = at::randn({b, options->latent_dim});
    const double enc = b * CallsPerSecond([&] { (void)engine.Encode(*snapshot, x, absl::InfiniteFuture()); }, seconds);
    const double dec = b * CallsPerSecond([&] { (void)engine.Decode(*snapshot, z, absl::InfiniteFuture()); }, seconds);
    out[absl::StrCat("encode_b", b, "_images_per_sec")] = enc;
    out[absl::StrCat("decode_b", b, "_images_per_sec")] = dec;
    std::fprintf(stderr, "b=%-5lld encode %10.0f images/s   decode %10.0f images/s\n", static_cast<long long>(b), enc,
                 dec);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per client thread
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

vae::v1::EncodeRequest MakeEncodeRequest(const vae::VaeOptions& o, int64_t b) {
  vae::v1::EncodeRequest request;
  vae::server::TensorToProto(at::rand({b, o.channels, o.height, o.width}), request.mutable_images()->mutable_tensor());
  return request;
}

// `clients` threads, each with its own channel, call `call(stub)` in a closed loop for `seconds`; returns calls/s.
template <typename Call>
double ClosedLoop(const std::string& target, int clients, double seconds, Call call) {
  std::atomic<int64_t> calls{0}, failures{0};
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      auto stub = vae::v1::VaeService::NewStub(NewChannel(target));
      for (int i = 0; i < 3; ++i) call(*stub);  // connect and warm up
      while (!go.load()) std::this_thread::yield();
      int64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (call(*stub)) {
          ++mine;
        } else {
          ++failures;
        }
      }
      calls += mine;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto start = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const double elapsed = SecondsSince(start);
  for (auto& t : threads) t.join();
  if (failures.load() > 0) std::fprintf(stderr, "  (%lld failed calls)\n", static_cast<long long>(failures.load()));
  return calls.load() / elapsed;
}

// Runs `call` `n` times in sequence; returns the latency percentiles (us) and, in `out` under `prefix`, the CPU time
// per call of this client and (with `server_pid` > 0) of the server.
template <typename Call>
void SequentialLoop(const char* prefix, int64_t n, int64_t server_pid, nlohmann::json& out, Call call) {
  std::vector<double> us;
  us.reserve(n);
  const double client0 = vae::bench::SelfCpuSeconds();
  const double server0 = server_pid > 0 ? vae::bench::ProcessCpuSeconds(server_pid) : -1;
  for (int64_t i = 0; i < n; ++i) {
    const auto t = Clock::now();
    call();
    us.push_back(SecondsSince(t) * 1e6);
  }
  const double client_cpu_us = (vae::bench::SelfCpuSeconds() - client0) / n * 1e6;
  out[absl::StrCat(prefix, "_p50_us")] = Percentile(us, 0.50);
  out[absl::StrCat(prefix, "_p90_us")] = Percentile(us, 0.90);
  out[absl::StrCat(prefix, "_p99_us")] = Percentile(us, 0.99);
  out[absl::StrCat(prefix, "_client_cpu_us")] = client_cpu_us;
  std::fprintf(stderr, "%s latency: p50 %.0f us  p90 %.0f us  p99 %.0f us;  CPU per call: client %.0f us", prefix,
               Percentile(us, 0.5), Percentile(us, 0.9), Percentile(us, 0.99), client_cpu_us);
  if (server0 >= 0) {
    const double server_cpu_us = (vae::bench::ProcessCpuSeconds(server_pid) - server0) / n * 1e6;
    out[absl::StrCat(prefix, "_server_cpu_us")] = server_cpu_us;
    std::fprintf(stderr, ", server %.0f us", server_cpu_us);
  }
  std::fprintf(stderr, "\n");
}

std::vector<int64_t> IntList(const std::vector<std::string>& items, const char* flag) {
  std::vector<int64_t> v;
  for (const auto& item : items) {
    int64_t x = 0;
    if (!absl::SimpleAtoi(item, &x) || x < 1) {
      std::cerr << "vae-bench: --" << flag << " takes positive integers, got '" << item << "'\n";
      std::exit(2);
    }
    v.push_back(x);
  }
  return v;
}

int64_t PeakRssKb(int64_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

int RunLoad() {
  vae::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  auto options = vae::Preset(absl::GetFlag(FLAGS_preset));
  if (!options.ok()) return Fail(options.status());
  char pattern[] = "/tmp/vae-bench-load-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return Fail(absl::InternalError("mkdtemp failed"));
  const std::string root = pattern;
  nlohmann::json out = {{"mode", "load"}, {"preset", options->preset}};
  {
    // Two versions (the same weights twice: what is timed does not depend on their values).
    vae::Vae model = vae::server::NewSeededVae(*options, 1);
    out["parameters"] = model->parameter_count();
    for (int64_t v = 1; v <= 2; ++v) {
      const std::string dir = root + "/m";
      std::filesystem::create_directories(dir);
      const std::string path = dir + "/" + vae::CheckpointFileName(v);
      const absl::Status saved = vae::SaveCheckpoint(path, model, nullptr, vae::TrainState());
      if (!saved.ok()) return Fail(saved);
      out["file_bytes"] = std::filesystem::file_size(path);
    }
  }
  vae::server::RepositoryOptions ro;
  ro.root = root;
  ro.max_loaded_bytes = 1;  // holds only the version loaded last
  std::vector<double> seconds;
  {
    auto repo = vae::server::ModelRepository::Open(ro, torch::kCPU);
    if (!repo.ok()) return Fail(repo.status());
    for (int64_t i = 0; i < std::max<int64_t>(1, absl::GetFlag(FLAGS_load_rounds)); ++i) {
      const auto t = Clock::now();
      auto snapshot = (*repo)->Resolve(vae::server::ModelRef{"m", 1 + i % 2, ""});
      if (!snapshot.ok()) return Fail(snapshot.status());
      seconds.push_back(SecondsSince(t));
      std::fprintf(stderr, "load %lld: version %lld in %.3f s\n", static_cast<long long>(i + 1),
                   static_cast<long long>(1 + i % 2), seconds.back());
    }
  }
  std::filesystem::remove_all(root);
  out["load_seconds_median"] = Median(seconds);
  out["load_seconds_max"] = *std::max_element(seconds.begin(), seconds.end());
  out["load_seconds"] = seconds;
  std::cout << out.dump() << std::endl;
  return 0;
}

int RunGrpc() {
  const std::string target = absl::GetFlag(FLAGS_server);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int threads = absl::GetFlag(FLAGS_threads);
  vae::ConfigureThreads(threads);
  auto stub = vae::v1::VaeService::NewStub(NewChannel(target));
  vae::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status s = stub->GetModelInfo(&ctx, vae::v1::GetModelInfoRequest(), &info);
    if (!s.ok())
      return Fail(absl::UnavailableError(absl::StrCat("cannot reach vae-server at ", target, ": ", s.error_message())));
  }
  auto options = vae::OptionsFromJson(info.options_json());
  if (!options.ok()) return Fail(options.status());
  nlohmann::json out = {{"mode", "grpc"}, {"server", target}, {"preset", options->preset}, {"bench_threads", threads}};
  if (absl::GetFlag(FLAGS_spec_ratio)) {
    // Version 1 of the default model, so that a spec can pin it (the fresh model is version 0, not pinnable).
    vae::v1::TrainRequest train;
    train.set_dataset(absl::GetFlag(FLAGS_dataset));
    train.set_max_train_images(1000);
    grpc::ClientContext ctx;
    auto reader = stub->Train(&ctx, train);
    vae::v1::TrainProgress progress;
    while (reader->Read(&progress)) {
    }
    const grpc::Status s = reader->Finish();
    if (!s.ok()) return Fail(absl::InternalError(absl::StrCat("spec_ratio: training version 1: ", s.error_message())));
    out["spec_ratio_version"] = progress.version().version();
  }

  // 1. Sequential Encode b=1 latency, then the same loop with GetModelInfo (no tensors, no model: the transport floor).
  const int64_t server_pid = absl::GetFlag(FLAGS_server_pid);
  const auto req1 = MakeEncodeRequest(*options, 1);
  auto encode = [](vae::v1::VaeService::Stub& s, const vae::v1::EncodeRequest& req) {
    grpc::ClientContext ctx;
    vae::v1::EncodeResponse resp;
    const grpc::Status status = s.Encode(&ctx, req, &resp);
    if (!status.ok()) {
      static std::once_flag once;
      std::call_once(once, [&] {
        std::fprintf(stderr, "  first failed Encode: code %d: %s\n", static_cast<int>(status.error_code()),
                     status.error_message().c_str());
      });
    }
    return status.ok();
  };
  for (int i = 0; i < 200; ++i) encode(*stub, req1);
  const int64_t n = absl::GetFlag(FLAGS_latency_calls);
  bool failed = false;
  SequentialLoop("encode_b1", n, server_pid, out, [&] { failed |= !encode(*stub, req1); });
  if (failed) return Fail(absl::InternalError("encode b=1 failed"));
  SequentialLoop("info_b1", n, server_pid, out, [&] {
    grpc::ClientContext ctx;
    vae::v1::ModelInfo resp;
    stub->GetModelInfo(&ctx, vae::v1::GetModelInfoRequest(), &resp);
  });

  // 2. Throughput grid.
  const std::vector<int64_t> clients = IntList(absl::GetFlag(FLAGS_clients), "clients");
  const std::vector<int64_t> batches = IntList(absl::GetFlag(FLAGS_batches), "batches");
  for (int64_t b : batches) {
    const auto req = MakeEncodeRequest(*options, b);
    for (int64_t c : clients) {
      const double cps = ClosedLoop(target, static_cast<int>(c), seconds,
                                    [&](vae::v1::VaeService::Stub& s) { return encode(s, req); });
      out[absl::StrCat("encode_c", c, "_b", b, "_images_per_sec")] = cps * b;
      out[absl::StrCat("encode_c", c, "_b", b, "_calls_per_sec")] = cps;
      std::fprintf(stderr, "encode C=%-3lld b=%-4lld %10.0f images/s  (%8.0f calls/s)\n", static_cast<long long>(c),
                   static_cast<long long>(b), cps * b, cps);
    }
  }
  auto model_info = [](vae::v1::VaeService::Stub& s) {
    grpc::ClientContext ctx;
    vae::v1::ModelInfo resp;
    return s.GetModelInfo(&ctx, vae::v1::GetModelInfoRequest(), &resp).ok();
  };
  const double info_cps = ClosedLoop(target, 32, seconds, model_info);
  out["info_c32_calls_per_sec"] = info_cps;
  std::fprintf(stderr, "GetModelInfo C=32 %10.0f calls/s\n", info_cps);

  // 3. The two ratios, each the median over --ratio_rounds rounds that measure both of its sides back to back
  // (alternating which goes first): the host's neighbours move absolute figures by 20-30 % within a minute, which
  // separate phases of the grid would fold into the ratio.
  const int64_t rounds = std::max<int64_t>(1, absl::GetFlag(FLAGS_ratio_rounds));
  auto ratio = [&](const char* name, auto numerator, auto denominator) {
    std::vector<double> per_round;
    for (int64_t r = 0; r < rounds; ++r) {
      double num = 0, den = 0;
      if (r % 2 == 0) {
        num = numerator();
        den = denominator();
      } else {
        den = denominator();
        num = numerator();
      }
      per_round.push_back(num / den);
      std::fprintf(stderr, "  %s round %lld: %.0f / %.0f\n", name, static_cast<long long>(r + 1), num, den);
    }
    out[name] = Median(per_round);
    out[absl::StrCat(name, "_rounds")] = per_round;
    std::fprintf(stderr, "%s %.3f (median of", name, Median(per_round));
    for (double x : per_round) std::fprintf(stderr, " %.3f", x);
    std::fprintf(stderr, ")\n");
  };
  const bool has_b1 = std::count(batches.begin(), batches.end(), 1) > 0;
  const bool has_b256 = std::count(batches.begin(), batches.end(), 256) > 0;
  if (has_b1 && std::count(clients.begin(), clients.end(), 32) > 0) {
    ratio(
        "c32_b1_encode_vs_info",
        [&] { return ClosedLoop(target, 32, seconds, [&](vae::v1::VaeService::Stub& s) { return encode(s, req1); }); },
        [&] { return ClosedLoop(target, 32, seconds, model_info); });
  }
  if (has_b256 && std::count(clients.begin(), clients.end(), 8) > 0) {
    // In-process b=256 in this same process (same weights' shape; the cost does not depend on their values).
    auto snapshot = vae::server::SnapshotOfModel(vae::server::NewSeededVae(*options, 1), torch::kCPU);
    const auto req256 = MakeEncodeRequest(*options, 256);
    ratio(
        "c8_b256_vs_inproc",
        [&] {
          return 256 * ClosedLoop(target, 8, seconds, [&](vae::v1::VaeService::Stub& s) { return encode(s, req256); });
        },
        [&] {
          const double inproc = InProcessEncodeImagesPerSec(*snapshot, 256, threads, seconds);
          out["inproc_encode_b256_images_per_sec"] = inproc;
          return inproc;
        });
  }
  if (absl::GetFlag(FLAGS_spec_ratio)) {
    // The same version either way: the spec names what a request without one resolves to.
    auto spec_req = req1;
    spec_req.mutable_model_spec()->set_name("default");
    spec_req.mutable_model_spec()->set_version(1);
    if (!encode(*stub, spec_req)) return Fail(absl::InternalError("encode with model spec {default, 1} failed"));
    auto p50 = [&](const vae::v1::EncodeRequest& req) {
      nlohmann::json sink;
      SequentialLoop("spec_ratio", std::max<int64_t>(1, n / 5), 0, sink, [&] { encode(*stub, req); });
      return sink["spec_ratio_p50_us"].get<double>();
    };
    ratio(
        "encode_b1_p50_spec_vs_none", [&] { return p50(spec_req); }, [&] { return p50(req1); });
    ratio(
        "c32_b1_spec_vs_none",
        [&] {
          return ClosedLoop(target, 32, seconds, [&](vae::v1::VaeService::Stub& s) { return encode(s, spec_req); });
        },
        [&] { return ClosedLoop(target, 32, seconds, [&](vae::v1::VaeService::Stub& s) { return encode(s, req1); }); });
  }
  if (server_pid > 0) {
    out["server_peak_rss_mb"] = PeakRssKb(server_pid) / 1024.0;
    std::fprintf(stderr, "server peak RSS %.1f MB\n", out["server_peak_rss_mb"].get<double>());
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

// Two servers, A (--server) and B (--server_b), with the same model and different flags: Encode b=1 p50 latency and
// C=32 b=1 throughput of each, measured in --ratio_rounds interleaved rounds (A then B, then B then A, ...) so that
// the host's drift falls on both sides; prints each round's B/A ratios and their medians.
int RunGrpcAB() {
  const std::string a_target = absl::GetFlag(FLAGS_server), b_target = absl::GetFlag(FLAGS_server_b);
  if (b_target.empty()) return Fail(absl::InvalidArgumentError("grpc_ab needs --server_b"));
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int64_t n = absl::GetFlag(FLAGS_latency_calls);
  const int64_t rounds = std::max<int64_t>(1, absl::GetFlag(FLAGS_ratio_rounds));
  auto a_stub = vae::v1::VaeService::NewStub(NewChannel(a_target));
  auto b_stub = vae::v1::VaeService::NewStub(NewChannel(b_target));
  vae::v1::ModelInfo info;
  for (auto* stub : {a_stub.get(), b_stub.get()}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status s = stub->GetModelInfo(&ctx, vae::v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return Fail(absl::UnavailableError(absl::StrCat("cannot reach a vae-server: ", s.error_message())));
  }
  auto options = vae::OptionsFromJson(info.options_json());
  if (!options.ok()) return Fail(options.status());
  const auto req = MakeEncodeRequest(*options, 1);
  auto encode = [&req](vae::v1::VaeService::Stub& s) {
    grpc::ClientContext ctx;
    vae::v1::EncodeResponse resp;
    return s.Encode(&ctx, req, &resp).ok();
  };
  auto p50 = [&](vae::v1::VaeService::Stub& stub) {
    std::vector<double> us;
    us.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      const auto t = Clock::now();
      if (!encode(stub)) return -1.0;
      us.push_back(SecondsSince(t) * 1e6);
    }
    return Percentile(us, 0.5);
  };
  for (int i = 0; i < 200; ++i) encode(*a_stub), encode(*b_stub);
  nlohmann::json out = {{"mode", "grpc_ab"}, {"server", a_target}, {"server_b", b_target}, {"preset", options->preset}};
  // Server CPU per call at C=32 (with both PIDs): what the host's other load disturbs least.
  const int64_t a_pid = absl::GetFlag(FLAGS_server_pid), b_pid = absl::GetFlag(FLAGS_server_b_pid);
  auto cpu_us_per_call = [&](int64_t pid, const std::string& target, double* calls_per_sec) {
    const double cpu0 = pid > 0 ? vae::bench::ProcessCpuSeconds(pid) : 0;
    *calls_per_sec = ClosedLoop(target, 32, seconds, encode);
    return pid > 0 ? (vae::bench::ProcessCpuSeconds(pid) - cpu0) / (*calls_per_sec * seconds) * 1e6 : 0;
  };
  std::vector<double> p50_ratio, tput_ratio, cpu_ratio, a_p50, b_p50, a_tput, b_tput;
  for (int64_t r = 0; r < rounds; ++r) {
    double ap = 0, bp = 0, at = 0, bt = 0, ac = 0, bc = 0;
    auto measure_a = [&] {
      ap = p50(*a_stub);
      ac = cpu_us_per_call(a_pid, a_target, &at);
    };
    auto measure_b = [&] {
      bp = p50(*b_stub);
      bc = cpu_us_per_call(b_pid, b_target, &bt);
    };
    if (r % 2 == 0) {
      measure_a();
      measure_b();
    } else {
      measure_b();
      measure_a();
    }
    if (ap <= 0 || bp <= 0) return Fail(absl::InternalError("an Encode failed"));
    a_p50.push_back(ap), b_p50.push_back(bp), a_tput.push_back(at), b_tput.push_back(bt);
    p50_ratio.push_back(bp / ap);
    tput_ratio.push_back(bt / at);
    if (ac > 0) cpu_ratio.push_back(bc / ac);
    if (ac > 0)
      std::fprintf(stderr, "  server CPU per call at C=32: A %.1f us, B %.1f us (B/A %.3f)\n", ac, bc, bc / ac);
    std::fprintf(
        stderr,
        "round %lld: encode b=1 p50 A %.1f us, B %.1f us (B/A %.3f); C=32 b=1 A %.0f, B %.0f calls/s (B/A %.3f)\n",
        static_cast<long long>(r + 1), ap, bp, bp / ap, at, bt, bt / at);
  }
  out["encode_b1_p50_us_a"] = Median(a_p50);
  out["encode_b1_p50_us_b"] = Median(b_p50);
  out["encode_c32_b1_calls_per_sec_a"] = Median(a_tput);
  out["encode_c32_b1_calls_per_sec_b"] = Median(b_tput);
  out["p50_b_over_a"] = Median(p50_ratio);
  out["p50_b_over_a_rounds"] = p50_ratio;
  out["c32_b1_b_over_a"] = Median(tput_ratio);
  out["c32_b1_b_over_a_rounds"] = tput_ratio;
  if (!cpu_ratio.empty()) {
    out["c32_server_cpu_b_over_a"] = Median(cpu_ratio);
    out["c32_server_cpu_b_over_a_rounds"] = cpu_ratio;
    std::fprintf(stderr, "median B/A server CPU per call at C=32: %.3f\n", Median(cpu_ratio));
  }
  std::fprintf(stderr, "median B/A: encode b=1 p50 %.3f, C=32 b=1 throughput %.3f\n", Median(p50_ratio),
               Median(tput_ratio));
  std::cout << out.dump() << std::endl;
  return 0;
}

// What counting one call costs: ServerMetrics::CallStarted + CallFinished (an OK Encode of a model version, as the
// service reports it; no request log), --latency_calls times on each of 1 and 2 threads, in ns per call. The series are
// the server's own (server/server_metrics.cc); nothing is scraped meanwhile.
int RunMetricsCost() {
  const int64_t n = absl::GetFlag(FLAGS_latency_calls);
  nlohmann::json out = {{"mode", "metrics_cost"}, {"calls", n}};
  for (int threads : {1, 2}) {
    vae::server::ServerMetrics::Options options;
    options.methods = {"Encode", "Decode", "Sample", "Reconstruct", "GetModelInfo", "Train"};
    vae::server::ServerMetrics metrics(nullptr, options);  // the core is read only when scraped
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        vae::server::ServerMetrics::Call call;
        call.method = "Encode";
        call.version = 1;
        call.images = 1;
        for (int64_t i = 0; i < n; ++i) {
          metrics.CallStarted();
          call.latency = absl::Microseconds(100 + i % 400);
          metrics.CallFinished(call);
        }
      });
    }
    for (auto& t : pool) t.join();
    const double ns = SecondsSince(start) * 1e9 / static_cast<double>(n);  // wall time per call of one thread
    out[absl::StrCat("ns_per_call_", threads, "_threads")] = ns;
    std::fprintf(stderr, "metrics per call, %d thread(s) counting at once: %.0f ns\n", threads, ns);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

// Pins the calling thread to `cpu` (>= 0); returns false when the kernel refuses.
bool PinThisThread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

// `n` round trips of a 64-byte message between this thread and an echo thread over a 127.0.0.1 TCP connection
// (TCP_NODELAY, both sides blocked in read()). `pin_cpu` >= 0 pins both threads to that CPU. Latencies in us.
absl::StatusOr<std::vector<double>> TcpPingPong(int64_t n, int pin_cpu) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(listener);
    return absl::InternalError("cannot listen on 127.0.0.1");
  }
  constexpr size_t kBytes = 64;
  const int one = 1;
  std::thread echo([&] {
    if (pin_cpu >= 0) PinThisThread(pin_cpu);
    const int conn = accept(listener, nullptr, nullptr);
    if (conn < 0) return;
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[kBytes];
    for (;;) {
      const ssize_t got = read(conn, buf, sizeof(buf));
      if (got <= 0 || write(conn, buf, got) != got) break;
    }
    close(conn);
  });
  const int conn = socket(AF_INET, SOCK_STREAM, 0);
  std::vector<double> us;
  absl::Status status;
  if (conn < 0 || connect(conn, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    status = absl::InternalError("cannot connect to the echo thread");
  } else {
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[kBytes] = {};
    us.reserve(n);
    for (int64_t i = 0; i < n + 1000 && status.ok(); ++i) {  // the first 1000 warm up
      const auto t = Clock::now();
      size_t got = 0;
      if (write(conn, buf, kBytes) != static_cast<ssize_t>(kBytes)) status = absl::InternalError("write failed");
      while (status.ok() && got < kBytes) {
        const ssize_t r = read(conn, buf + got, kBytes - got);
        if (r <= 0) status = absl::InternalError("read failed");
        got += r > 0 ? r : 0;
      }
      if (i >= 1000) us.push_back(SecondsSince(t) * 1e6);
    }
  }
  if (conn >= 0) {
    shutdown(conn, SHUT_RDWR);
    close(conn);
  } else {
    shutdown(listener, SHUT_RDWR);  // unblocks accept()
  }
  echo.join();
  close(listener);
  if (!status.ok()) return status;
  return us;
}

int RunLoopback() {
  const int64_t n = std::max<int64_t>(absl::GetFlag(FLAGS_latency_calls), 100);
  nlohmann::json out = {{"mode", "loopback"}, {"round_trips", n}, {"message_bytes", 64}};
  cpu_set_t original;
  CPU_ZERO(&original);
  sched_getaffinity(0, sizeof(original), &original);
  const int cpu = sched_getcpu();
  for (const char* placement : {"any_cpu", "one_cpu"}) {
    const bool pinned = std::string(placement) == "one_cpu";
    if (pinned && !PinThisThread(cpu)) return Fail(absl::InternalError("cannot pin to one CPU"));
    auto us = TcpPingPong(n, pinned ? cpu : -1);
    if (pinned) sched_setaffinity(0, sizeof(original), &original);
    if (!us.ok()) return Fail(us.status());
    out[absl::StrCat("tcp_rtt_", placement, "_p50_us")] = Percentile(*us, 0.50);
    out[absl::StrCat("tcp_rtt_", placement, "_p99_us")] = Percentile(*us, 0.99);
    std::fprintf(stderr, "TCP round trip over 127.0.0.1, threads on %s: p50 %.1f us  p99 %.1f us\n",
                 pinned ? "one CPU" : "any CPU", Percentile(*us, 0.5), Percentile(*us, 0.99));
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = vae::ParseToolFlags(argc, argv,
                                                {"vae-bench",
                                                 "vae-bench MODE [--flags]; MODE is train, iwnll, infer, grpc, "
                                                 "grpc_ab, load, loopback or png. See BENCHMARKS.md.",
                                                 "bench/"});
  if (args.size() < 2) {
    std::cerr << "usage: vae-bench train|iwnll|infer|grpc|grpc_ab|load|loopback|png [--flags] (--help lists them)\n";
    return 2;
  }
  const std::string mode = args[1];
  if (mode == "train") return RunTrain();
  if (mode == "iwnll") return RunIwNll();
  if (mode == "infer") return RunInfer();
  if (mode == "grpc") return RunGrpc();
  if (mode == "grpc_ab") return RunGrpcAB();
  if (mode == "metrics_cost") return RunMetricsCost();
  if (mode == "loopback") return RunLoopback();
  if (mode == "load") return RunLoad();
  if (mode == "png") return vae::bench::RunPng(absl::GetFlag(FLAGS_preset));
  std::cerr << "vae-bench: unknown mode '" << mode
            << "' (expected train, iwnll, infer, grpc, grpc_ab, load, loopback or png)\n";
  return 2;
}
