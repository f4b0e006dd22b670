// vae-bench png [--checkpoint=ckpt-N.vae | --preset=mnist] [--count=64] [--rounds=5] [--seconds=0.2] --json
//
// The images a Sample answer would carry (`count` codes z ~ N(0, I), seed 1, decoded by the checkpoint's model or a
// fresh `preset` model), PNG-encoded by every candidate, round after round (each setting runs ~`seconds` per round;
// rounds interleave the settings, so the machine's neighbours move them alike). Per setting: bytes per image, the
// encoding thread's CPU time per image (median over rounds) and whether every file decodes (OpenCV) to exactly the
// input pixels. Candidates: OpenCV's cv::imencode as the server used it (its defaults: level 1, SUB filter, RLE
// strategy), at levels 0-9 with each zlib strategy; libspng (when built with it); server/png_writer.h (libdeflate)
// at levels 0-12 with each row filter; and the server's whole float-to-PNG path, EncodePngs, on one thread and with
// the idle helpers (process CPU and wall time per image for that one).
#include "bench/png_bench.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/process_stats.h"
#include "model/checkpoint.h"
#include "model/options.h"
#include "server/idle_helpers.h"
#include "server/inference.h"
#include "server/png_writer.h"
#include "server/snapshot.h"
#include "server/tensor_codec.h"

#include <ATen/ATen.h>

#ifdef VAE_HAVE_SPNG
#include <spng.h>
#endif

ABSL_DECLARE_FLAG(std::string, checkpoint);  // vae_bench.cc; png: decode with this checkpoint's model
ABSL_FLAG(int64_t, count, 64, "png: images per answer");
ABSL_FLAG(int64_t, rounds, 5, "png: rounds over every setting (the figures are medians over them)");
ABSL_FLAG(double, png_seconds, 0.2, "png: seconds each setting runs per round");

namespace vae::bench {
namespace {

double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// One image as interleaved bytes, in the channel order the encoder expects.
struct Image {
  cv::Mat rgb;  // what PNG must hold: CV_8UC1 or CV_8UC3 in RGB order
  cv::Mat bgr;  // the same in OpenCV's order (what cv::imencode takes)
};

struct Setting {
  Setting(std::string name, std::function<std::vector<std::string>()> encode, bool whole_process_cpu = false)
      : name(std::move(name)), encode(std::move(encode)), whole_process_cpu(whole_process_cpu) {}
  std::string name;
  // Encodes every image; returns the files. Runs on this thread (except "EncodePngs, idle helpers").
  std::function<std::vector<std::string>()> encode;
  bool whole_process_cpu = false;  // time with the process's CPU clock (helpers included)
  std::vector<double> cpu_us, wall_us;
  double bytes = 0;
  bool lossless = true;
};

std::vector<std::string> OpenCv(const std::vector<Image>& images, std::vector<int> params) {
  std::vector<std::string> out;
  std::vector<uchar> buffer;
  for (const Image& image : images) {
    cv::imencode(".png", image.bgr, buffer, params);
    out.emplace_back(buffer.begin(), buffer.end());
  }
  return out;
}

#ifdef VAE_HAVE_SPNG
std::vector<std::string> Spng(const std::vector<Image>& images, int level, int filter_choice) {
  std::vector<std::string> out;
  for (const Image& image : images) {
    spng_ctx* ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, level);
    spng_set_option(ctx, SPNG_FILTER_CHOICE, filter_choice);
    spng_ihdr ihdr{};
    ihdr.width = static_cast<uint32_t>(image.rgb.cols);
    ihdr.height = static_cast<uint32_t>(image.rgb.rows);
    ihdr.bit_depth = 8;
    ihdr.color_type = image.rgb.channels() == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR;
    spng_set_ihdr(ctx, &ihdr);
    const size_t size = image.rgb.total() * image.rgb.elemSize();
    int error = spng_encode_image(ctx, image.rgb.data, size, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    size_t png_size = 0;
    void* png = error == 0 ? spng_get_png_buffer(ctx, &png_size, &error) : nullptr;
    out.emplace_back(png != nullptr ? std::string(static_cast<char*>(png), png_size) : std::string());
    free(png);
    spng_ctx_free(ctx);
  }
  return out;
}
#endif

std::vector<std::string> Ours(const std::vector<Image>& images, server::PngOptions options) {
  std::vector<std::string> out;
  for (const Image& image : images) {
    auto png = server::WritePng(image.rgb.data, image.rgb.cols, image.rgb.rows, image.rgb.channels(), options);
    out.push_back(png.ok() ? std::move(*png) : std::string());
  }
  return out;
}

// True when every file decodes to exactly its image's pixels.
bool Lossless(const std::vector<std::string>& files, const std::vector<Image>& images) {
  if (files.size() != images.size()) return false;
  for (size_t i = 0; i < files.size(); ++i) {
    const cv::Mat decoded = cv::imdecode(std::vector<uchar>(files[i].begin(), files[i].end()), cv::IMREAD_UNCHANGED);
    if (decoded.empty() || decoded.size() != images[i].bgr.size() || decoded.type() != images[i].bgr.type() ||
        cv::norm(decoded, images[i].bgr, cv::NORM_INF) != 0) {
      return false;
    }
  }
  return true;
}

const char* FilterName(server::PngFilter f) {
  switch (f) {
    case server::PngFilter::kNone:
      return "none";
    case server::PngFilter::kSub:
      return "sub";
    case server::PngFilter::kUp:
      return "up";
    case server::PngFilter::kAverage:
      return "average";
    case server::PngFilter::kPaeth:
      return "paeth";
    case server::PngFilter::kAdaptive:
      return "adaptive";
  }
  return "?";
}

}  // namespace

int RunPng(const std::string& preset) {
  // The images: a Sample answer of the model.
  std::shared_ptr<server::Snapshot> snapshot;
  if (const std::string path = absl::GetFlag(FLAGS_checkpoint); !path.empty()) {
    auto checkpoint = LoadCheckpoint(path, torch::kCPU);
    if (!checkpoint.ok()) {
      std::cerr << "vae-bench: " << checkpoint.status() << "\n";
      return 1;
    }
    snapshot = server::SnapshotOfCheckpoint(std::move(*checkpoint), torch::kCPU);
  } else {
    auto options = Preset(preset);
    if (!options.ok()) {
      std::cerr << "vae-bench: " << options.status() << "\n";
      return 1;
    }
    snapshot = server::SnapshotOfModel(server::NewSeededVae(*options, 1), torch::kCPU);
  }
  const int64_t count = absl::GetFlag(FLAGS_count);
  server::InferenceEngine engine(1 << 16, 1);
  auto sample = engine.Sample(*snapshot, count, 1, 1.0, absl::InfiniteFuture());
  if (!sample.ok()) {
    std::cerr << "vae-bench: " << sample.status() << "\n";
    return 1;
  }
  const at::Tensor floats = sample->images.contiguous();
  const int64_t c = floats.size(1), h = floats.size(2), w = floats.size(3);
  if (c != 1 && c != 3) {
    std::cerr << "vae-bench: png compares 1- and 3-channel models; this one has " << c << " channels\n";
    return 2;
  }
  const at::Tensor bytes = floats.clamp(0, 1).mul(255.0).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();
  std::vector<Image> images(count);
  for (int64_t i = 0; i < count; ++i) {
    images[i].rgb = cv::Mat(h, w, CV_8UC(static_cast<int>(c)), bytes[i].data_ptr()).clone();
    if (c == 3) {
      cv::cvtColor(images[i].rgb, images[i].bgr, cv::COLOR_RGB2BGR);
    } else {
      images[i].bgr = images[i].rgb;
    }
  }

  std::vector<Setting> settings;
  // The server's path before: ATen quantises the batch, then cv::imencode with OpenCV's defaults per image.
  settings.push_back(
      {"EncodePngs before: ATen + opencv default", [&] {
         const at::Tensor q = floats.clamp(0, 1).mul(255.0).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();
         std::vector<std::string> out;
         std::vector<uchar> buffer;
         for (int64_t i = 0; i < count; ++i) {
           cv::Mat image(static_cast<int>(h), static_cast<int>(w), CV_8UC(static_cast<int>(c)), q[i].data_ptr());
           cv::Mat bgr;
           if (c == 3) {
             cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
           } else {
             bgr = image;
           }
           cv::imencode(".png", bgr, buffer);
           out.emplace_back(buffer.begin(), buffer.end());
         }
         return out;
       }});
  settings.push_back({"opencv default (level 1, SUB, RLE)", [&] { return OpenCv(images, {}); }});
  const std::pair<const char*, int> strategies[] = {{"default", cv::IMWRITE_PNG_STRATEGY_DEFAULT},
                                                    {"filtered", cv::IMWRITE_PNG_STRATEGY_FILTERED},
                                                    {"huffman_only", cv::IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY},
                                                    {"rle", cv::IMWRITE_PNG_STRATEGY_RLE}};
  for (const auto& [strategy_name, strategy] : strategies) {
    for (int level = 0; level <= 9; ++level) {
      settings.push_back({absl::StrCat("opencv level ", level, " ", strategy_name), [&images, level, s = strategy] {
                            return OpenCv(images, {cv::IMWRITE_PNG_COMPRESSION, level, cv::IMWRITE_PNG_STRATEGY, s});
                          }});
    }
  }
#ifdef VAE_HAVE_SPNG
  const std::pair<const char*, int> spng_filters[] = {
      {"none", SPNG_DISABLE_FILTERING}, {"up", SPNG_FILTER_CHOICE_UP}, {"all", SPNG_FILTER_CHOICE_ALL}};
  for (const auto& [filter_name, filter] : spng_filters) {
    for (int level : {1, 6, 9}) {
      settings.push_back({absl::StrCat("libspng level ", level, " filter ", filter_name),
                          [&images, level, f = filter] { return Spng(images, level, f); }});
    }
  }
#endif
  for (server::PngFilter filter :
       {server::PngFilter::kNone, server::PngFilter::kSub, server::PngFilter::kUp, server::PngFilter::kAverage,
        server::PngFilter::kPaeth, server::PngFilter::kAdaptive}) {
    for (int level : {0, 1, 2, 3, 4, 6, 9, 12}) {
      settings.push_back(
          {absl::StrCat("libdeflate level ", level, " filter ", FilterName(filter)), [&images, level, filter] {
             return Ours(images, {level, filter});
           }});
    }
  }
  // The server's whole path from the float tensor: quantise, filter, compress (the serving defaults).
  server::IdleHelpers helpers(std::max(0, static_cast<int>(std::thread::hardware_concurrency()) - 1));
  settings.push_back({"EncodePngs, one thread (serving)", [&] {
                        server::PngEncoding one_thread;
                        one_thread.helpers = nullptr;
                        return *server::EncodePngs(floats, one_thread);
                      }});
  settings.push_back({"EncodePngs, idle helpers (serving)",
                      [&] {
                        server::PngEncoding parallel;
                        parallel.helpers = &helpers;
                        return *server::EncodePngs(floats, parallel);
                      },
                      /*whole_process_cpu=*/true});

  const double seconds = absl::GetFlag(FLAGS_png_seconds);
  for (Setting& s : settings) {
    const std::vector<std::string> files = s.encode();
    s.lossless = Lossless(files, images);
    for (const auto& f : files) s.bytes += f.size();
    s.bytes /= static_cast<double>(count);
  }
  for (int64_t round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (Setting& s : settings) {
      int64_t calls = 0;
      const auto wall0 = std::chrono::steady_clock::now();
      const double cpu0 = s.whole_process_cpu ? SelfCpuSeconds() : ThreadCpuSeconds();
      double wall = 0;
      do {
        (void)s.encode();
        ++calls;
        wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
      } while (wall < seconds);
      const double cpu = (s.whole_process_cpu ? SelfCpuSeconds() : ThreadCpuSeconds()) - cpu0;
      s.cpu_us.push_back(cpu / (calls * count) * 1e6);
      s.wall_us.push_back(wall / (calls * count) * 1e6);
    }
  }

  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  const double baseline = median(settings.front().cpu_us);
  nlohmann::json out = {{"mode", "png"},
                        {"preset", snapshot->options.preset},
                        {"checkpoint", absl::GetFlag(FLAGS_checkpoint)},
                        {"images", count},
                        {"channels", c},
                        {"height", h},
                        {"width", w},
                        {"rounds", absl::GetFlag(FLAGS_rounds)}};
  std::fprintf(stderr, "%lld images %lldx%lldx%lld (CxHxW), median of %lld rounds\n", static_cast<long long>(count),
               static_cast<long long>(c), static_cast<long long>(h), static_cast<long long>(w),
               static_cast<long long>(absl::GetFlag(FLAGS_rounds)));
  std::fprintf(stderr, "%-44s %12s %14s %12s %10s %9s\n", "setting", "bytes/image", "CPU us/image", "wall us/image",
               "x cheaper", "lossless");
  for (const Setting& s : settings) {
    const double cpu = median(s.cpu_us), wall = median(s.wall_us);
    std::fprintf(stderr, "%-44s %12.0f %14.2f %12.2f %10.2f %9s\n", s.name.c_str(), s.bytes, cpu, wall, baseline / cpu,
                 s.lossless ? "yes" : "NO");
    out["settings"].push_back({{"name", s.name},
                               {"bytes_per_image", s.bytes},
                               {"cpu_us_per_image", cpu},
                               {"wall_us_per_image", wall},
                               {"cpu_us_per_image_rounds", s.cpu_us},
                               {"x_cheaper_than_before", baseline / cpu},
                               {"lossless", s.lossless}});
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace vae::bench
