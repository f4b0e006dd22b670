#include "model/checkpoint.h"

#include <glog/logging.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/file_util.h"
#include "model/status_macros.h"

namespace vae {
namespace {

constexpr char kMagic[8] = {'V', 'A', 'E', 'C', 'K', 'P', 'T', '1'};
constexpr char kEndMagic[4] = {'V', 'E', 'N', 'D'};
constexpr size_t kTrailerSize = 8 + 4 + 4;
constexpr int64_t kFormatVersion = 1;

void PutLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& path, Vae& model, torch::optim::Adam* optimizer,
                            const TrainState& state, Vae* train_model) {
  try {
    torch::serialize::OutputArchive archive;
    archive.write("format_version", c10::IValue(kFormatVersion));
    archive.write("options_json", c10::IValue(ToJson(model->options())));
    archive.write("state/epochs_done", c10::IValue(state.epochs_done));
    archive.write("state/step_in_epoch", c10::IValue(state.step_in_epoch));
    archive.write("state/global_step", c10::IValue(state.global_step));
    archive.write("state/seed", c10::IValue(static_cast<int64_t>(state.seed)));
    archive.write("state/train_json", c10::IValue(state.train_json));
    archive.write("state/metrics_json", c10::IValue(state.metrics_json));
    if (state.rng_state.defined()) archive.write("state/rng", state.rng_state);
    torch::serialize::OutputArchive model_archive(archive.compilation_unit());
    model->save(model_archive);
    archive.write("model", model_archive);
    if (train_model != nullptr) {
      torch::serialize::OutputArchive train_archive(archive.compilation_unit());
      (*train_model)->save(train_archive);
      archive.write("train_model", train_archive);
    }
    if (optimizer != nullptr) {
      torch::serialize::OutputArchive optimizer_archive(archive.compilation_unit());
      optimizer->save(optimizer_archive);
      archive.write("optimizer", optimizer_archive);
    }
    return WriteFileAtomically(path, [&](const ByteSink& sink) -> absl::Status {
      uint64_t length = 0;
      uint32_t crc = 0;
      sink(kMagic, sizeof(kMagic));
      archive.save_to([&](const void* data, size_t size) -> size_t {
        crc = Crc32(data, size, crc);
        length += size;
        return sink(data, size) ? size : 0;
      });
      std::string trailer;
      PutLe(trailer, length, 8);
      PutLe(trailer, crc, 4);
      trailer.append(kEndMagic, sizeof(kEndMagic));
      sink(trailer.data(), trailer.size());
      return absl::OkStatus();
    });
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving checkpoint ", path, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const torch::Device& device) {
  VAE_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, " is corrupt: ", why));
  };
  if (bytes.size() < sizeof(kMagic) + kTrailerSize) return corrupt(absl::StrCat("only ", bytes.size(), " bytes"));
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) return corrupt("bad magic (not a vae checkpoint)");
  const char* trailer = bytes.data() + bytes.size() - kTrailerSize;
  if (std::memcmp(trailer + 12, kEndMagic, sizeof(kEndMagic)) != 0) {
    return corrupt("no end marker (torn write or truncated)");
  }
  const uint64_t length = GetLe(trailer, 8);
  const uint32_t crc = static_cast<uint32_t>(GetLe(trailer + 8, 4));
  if (length != bytes.size() - sizeof(kMagic) - kTrailerSize) {
    return corrupt(absl::StrCat("payload length ", length, " does not match file size ", bytes.size()));
  }
  const char* payload = bytes.data() + sizeof(kMagic);
  const uint32_t actual_crc = Crc32(payload, length);
  if (actual_crc != crc) return corrupt(absl::StrFormat("CRC-32 %08x, expected %08x", actual_crc, crc));

  Checkpoint ckpt;
  ckpt.path = path;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(payload, length, torch::Device(torch::kCPU));
    c10::IValue v;
    archive.read("format_version", v);
    if (v.toInt() != kFormatVersion) return corrupt(absl::StrCat("unsupported format version ", v.toInt()));
    archive.read("options_json", v);
    auto options = OptionsFromJson(v.toStringRef());
    if (!options.ok()) return corrupt(std::string(options.status().message()));
    ckpt.options = *options;
    archive.read("state/epochs_done", v);
    ckpt.state.epochs_done = v.toInt();
    archive.read("state/step_in_epoch", v);
    ckpt.state.step_in_epoch = v.toInt();
    archive.read("state/global_step", v);
    ckpt.state.global_step = v.toInt();
    archive.read("state/seed", v);
    ckpt.state.seed = static_cast<uint64_t>(v.toInt());
    archive.read("state/train_json", v);
    ckpt.state.train_json = v.toStringRef();
    archive.read("state/metrics_json", v);
    ckpt.state.metrics_json = v.toStringRef();
    torch::Tensor rng;
    if (archive.try_read("state/rng", rng)) ckpt.state.rng_state = rng;

    ckpt.model = Vae(ckpt.options);
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    ckpt.model->load(model_archive);
    ckpt.model->to(device);
    torch::serialize::InputArchive train_archive;
    if (archive.try_read("train_model", train_archive)) {
      ckpt.train_model = Vae(ckpt.options);
      ckpt.train_model->load(train_archive);
      ckpt.train_model->to(device);
    }
    auto optimizer = std::make_shared<torch::serialize::InputArchive>();
    if (archive.try_read("optimizer", *optimizer)) ckpt.optimizer = optimizer;
  } catch (const c10::Error& e) {
    return corrupt(e.what_without_backtrace());
  } catch (const std::exception& e) {
    // TorchScript's importer throws torch::jit::ErrorReport (a std::exception, not a c10::Error) for an archive
    // whose code does not parse, e.g. a renamed entry (fuzz_checkpoint found it).
    return corrupt(e.what());
  }
  return ckpt;
}

std::string CheckpointFileName(int64_t sequence) { return absl::StrFormat("ckpt-%012d.vae", sequence); }

std::string NextCheckpointPath(const std::string& dir) {
  int64_t next = 1;
  auto existing = ListCheckpoints(dir);
  if (!existing.empty()) {
    const std::string name = std::filesystem::path(existing.front()).filename().string();
    next = std::stoll(name.substr(5, 12)) + 1;
  }
  return (std::filesystem::path(dir) / CheckpointFileName(next)).string();
}

std::vector<std::string> ListCheckpoints(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> paths;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() == 21 && name.rfind("ckpt-", 0) == 0 && name.substr(17) == ".vae" &&
        name.find_first_not_of("0123456789", 5) == 17 && it->is_regular_file()) {
      paths.push_back(it->path().string());
    }
  }
  std::sort(paths.rbegin(), paths.rend());  // zero-padded sequence: lexicographic == numeric
  return paths;
}

absl::StatusOr<Checkpoint> LoadNewestCheckpoint(const std::string& dir, const torch::Device& device) {
  for (const auto& path : ListCheckpoints(dir)) {
    auto ckpt = LoadCheckpoint(path, device);
    if (ckpt.ok()) return ckpt;
    LOG(WARNING) << "skipping unusable checkpoint: " << ckpt.status().message();
  }
  return absl::NotFoundError(absl::StrCat("no valid checkpoint in ", dir));
}

void PruneCheckpoints(const std::string& dir, int keep) {
  auto paths = ListCheckpoints(dir);
  for (size_t i = std::max(keep, 0); i < paths.size(); ++i) {
    std::error_code ec;
    std::filesystem::remove(paths[i], ec);
  }
}

}  // namespace vae
