#include "model/checkpoint.h"

#include <glog/logging.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "common/status_macros.h"

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

absl::Status Corrupt(const std::string& path, absl::string_view why) {
  return absl::DataLossError(absl::StrCat("checkpoint ", path, " is corrupt: ", why));
}

// The payload's length and CRC-32 from a checkpoint file of `size` bytes, given its first 8 and last kTrailerSize
// bytes, once magic, end marker and length check out.
struct Framing {
  uint64_t length = 0;
  uint32_t crc = 0;
};
absl::StatusOr<Framing> CheckFraming(const std::string& path, uint64_t size, const char* head, const char* trailer) {
  if (size < sizeof(kMagic) + kTrailerSize) return Corrupt(path, absl::StrCat("only ", size, " bytes"));
  if (std::memcmp(head, kMagic, sizeof(kMagic)) != 0) return Corrupt(path, "bad magic (not a vae checkpoint)");
  if (std::memcmp(trailer + 12, kEndMagic, sizeof(kEndMagic)) != 0) {
    return Corrupt(path, "no end marker (torn write or truncated)");
  }
  Framing framing{GetLe(trailer, 8), static_cast<uint32_t>(GetLe(trailer + 8, 4))};
  if (framing.length != size - sizeof(kMagic) - kTrailerSize) {
    return Corrupt(path, absl::StrCat("payload length ", framing.length, " does not match file size ", size));
  }
  return framing;
}

absl::Status CheckCrc(const std::string& path, uint32_t actual, uint32_t expected) {
  if (actual == expected) return absl::OkStatus();
  return Corrupt(path, absl::StrFormat("CRC-32 %08x, expected %08x", actual, expected));
}

// Opens `path` into `in` and checks its framing and CRC-32, streaming the file through the CRC a piece at a time,
// never whole: pruning verifies the newest checkpoints after every checkpoint written, and one of the seed preset
// (weights, average, Adam's two moments) is 4.3 GB. Returns the payload's length; the payload starts at
// sizeof(kMagic). NOT_FOUND when missing, INTERNAL when unreadable, DATA_LOSS when torn or corrupt.
absl::StatusOr<uint64_t> OpenVerified(const std::string& path, std::ifstream& in) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", ec.message()));
  in.open(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", path));
  auto read = [&](uint64_t offset, char* out, uint64_t n) -> absl::Status {
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(out, static_cast<std::streamsize>(n));
    if (in.gcount() != static_cast<std::streamsize>(n)) {
      return absl::InternalError(absl::StrCat("short read from ", path));
    }
    return absl::OkStatus();
  };
  char head[sizeof(kMagic)] = {}, trailer[kTrailerSize] = {};
  if (size >= sizeof(kMagic) + kTrailerSize) {
    VAE_RETURN_IF_ERROR(read(0, head, sizeof(head)));
    VAE_RETURN_IF_ERROR(read(size - kTrailerSize, trailer, sizeof(trailer)));
  }
  VAE_ASSIGN_OR_RETURN(const Framing framing, CheckFraming(path, size, head, trailer));
  std::vector<char> piece(std::min<uint64_t>(framing.length, uint64_t{4} << 20));
  uint32_t crc = 0;
  for (uint64_t done = 0; done < framing.length; done += piece.size()) {
    const uint64_t n = std::min<uint64_t>(piece.size(), framing.length - done);
    VAE_RETURN_IF_ERROR(read(sizeof(kMagic) + done, piece.data(), n));
    crc = Crc32(piece.data(), n, crc);
  }
  VAE_RETURN_IF_ERROR(CheckCrc(path, crc, framing.crc));
  return framing.length;
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& path, Vae& model, torch::optim::Adam* optimizer, const TrainState& state,
                            Vae* train_model) {
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
        // Always tell torch the bytes were written. Its zip writer turns a short write into a c10::Error, and throws
        // it again from ~PyTorchStreamWriter while that first error unwinds the stack: std::terminate, the whole
        // server aborts (seen on a full disk). A failed write is instead remembered by `sink`, which writes nothing
        // after it, and reported by WriteFileAtomically once save_to has returned; it also deletes the temp file.
        sink(data, size);
        return size;
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
  } catch (const std::exception& e) {  // std::bad_alloc
    return absl::InternalError(absl::StrCat("saving checkpoint ", path, ": ", e.what()));
  }
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const torch::Device& device) {
  // Read from the file as torch asks for each record, not into one buffer first: the tensors are the only copy.
  std::ifstream in;
  VAE_ASSIGN_OR_RETURN(const uint64_t length, OpenVerified(path, in));
  auto read_payload = [&](uint64_t pos, void* buf, size_t n) -> size_t {
    if (pos >= length) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, length - pos));
    in.clear();
    in.seekg(static_cast<std::streamoff>(sizeof(kMagic) + pos));
    in.read(static_cast<char*>(buf), static_cast<std::streamsize>(n));
    return static_cast<size_t>(in.gcount());
  };
  auto corrupt = [&](const std::string& why) { return Corrupt(path, why); };

  Checkpoint ckpt;
  ckpt.path = path;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(
        read_payload, [length] { return static_cast<size_t>(length); }, torch::Device(torch::kCPU));
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

// Any number of digits that fits an int64 (the writer pads to 12, and a 13th digit appears after 10^12 - 1).
std::optional<int64_t> CheckpointSequence(absl::string_view name) {
  constexpr absl::string_view kPrefix = "ckpt-", kSuffix = ".vae";
  if (!absl::ConsumePrefix(&name, kPrefix) || !absl::ConsumeSuffix(&name, kSuffix)) return std::nullopt;
  int64_t sequence = 0;
  if (name.empty() || name.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(name, &sequence)) {
    return std::nullopt;
  }
  return sequence;
}

std::string CheckpointFileName(int64_t sequence) { return absl::StrFormat("ckpt-%012d.vae", sequence); }

std::string NextCheckpointPath(const std::string& dir) {
  int64_t next = 1;
  auto existing = ListCheckpoints(dir);
  if (!existing.empty()) {
    const int64_t newest = *CheckpointSequence(std::filesystem::path(existing.front()).filename().string());
    // Saturates instead of overflowing: the newest is then replaced atomically (needs a hand-made file name).
    next = newest == std::numeric_limits<int64_t>::max() ? newest : newest + 1;
  }
  return (std::filesystem::path(dir) / CheckpointFileName(next)).string();
}

std::vector<std::string> ListCheckpoints(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto sequence = CheckpointSequence(it->path().filename().string());
    std::error_code type_ec;
    if (sequence.has_value() && it->is_regular_file(type_ec)) found.emplace_back(*sequence, it->path().string());
  }
  // By number, not by name: 13 digits sort after 12 ("ckpt-1000000000000" < "ckpt-999999999999" as text).
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> paths;
  for (auto& item : found) paths.push_back(std::move(item.second));
  return paths;
}

absl::Status VerifyCheckpointFile(const std::string& path) {
  std::ifstream in;
  return OpenVerified(path, in).status();
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
  int valid = 0;
  for (const auto& path : ListCheckpoints(dir)) {
    std::error_code ec;
    if (valid >= keep) {  // older than the newest `keep` valid ones: no need to read it
      std::filesystem::remove(path, ec);
      continue;
    }
    const absl::Status status = VerifyCheckpointFile(path);
    if (status.ok()) {
      ++valid;
    } else if (status.code() == absl::StatusCode::kDataLoss) {
      LOG(WARNING) << "deleting unusable checkpoint: " << status.message();
      std::filesystem::remove(path, ec);
    } else {
      LOG(WARNING) << "pruning: keeping " << path << ", which cannot be checked now: " << status.message();
    }
  }
}

int RemoveStaleTempFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> stale;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (IsAtomicWriteTempFile(it->path().filename().string(), "ckpt-")) stale.push_back(it->path());
  }
  int removed = 0;
  for (const auto& path : stale) {
    std::error_code remove_ec;
    if (fs::remove(path, remove_ec)) {
      LOG(WARNING) << "removed " << path.string() << ", a checkpoint temp file left by a process that was killed "
                   << "mid-write";
      ++removed;
    } else if (remove_ec) {
      LOG(WARNING) << "cannot remove stale temp file " << path.string() << ": " << remove_ec.message();
    }
  }
  return removed;
}

}  // namespace vae
