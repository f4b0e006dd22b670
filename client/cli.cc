#include "client/cli.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/grpc_status.h"
#include "client/images.h"
#include "client/latent_io.h"
#include "model/file_util.h"
#include "model/idx.h"
#include "model/status_macros.h"

// Flags. Every flag is listed under the commands it applies to in Commands() below; a flag given to a command it does
// not apply to is a usage error.
ABSL_FLAG(std::string, server, "", "vae-server address HOST:PORT (default: $VAE_SERVER, else 127.0.0.1:50051)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each call, connecting included (train: of connecting only; training runs until it ends)");
ABSL_FLAG(bool, tls, false, "connect with TLS, verifying the server against the system's CA certificates");
ABSL_FLAG(std::string, tls_ca, "", "connect with TLS, verifying the server against this PEM CA certificate");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for a server that requires one (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token of a server started with --auth_token_file; unset: $VAE_TOKEN, if set");
ABSL_FLAG(std::string, service, "", "health: the service to check (\"\" = the whole server, or vae.v1.VaeService)");
ABSL_FLAG(bool, json, false, "info: print the model info as JSON instead of a table");
ABSL_FLAG(std::string, dataset, "mnist",
          "train: mnist, fashion-mnist, or a folder of images under the server's --data_dir");
ABSL_FLAG(int32_t, epochs, 1, "train: epochs to train in this job");
ABSL_FLAG(int32_t, batch_size, 128, "train: images per optimizer step");
ABSL_FLAG(double, lr, 1e-3, "train: Adam learning rate");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "random seed (train: shuffling and initial weights, default 1; sample: default a random seed, printed; "
          "reconstruct --sample_z: default 0)");
ABSL_FLAG(bool, resume, false, "train: continue the server's newest checkpoint instead of training a fresh model");
ABSL_FLAG(std::string, preset, "",
          "train: build the fresh model from this preset (see `info`; default: the served model's options)");
ABSL_FLAG(std::string, options_json, "",
          "train: build the fresh model from these VaeOptions (JSON, as `info --json` shows under options)");
ABSL_FLAG(int32_t, max_train_images, 0, "train: use only the first N training images (0: all)");
ABSL_FLAG(int32_t, log_every_steps, 20, "train: progress updates every N steps");
ABSL_FLAG(bool, binarize, false, "train: dynamic binarisation of training batches (Bernoulli models)");
ABSL_FLAG(std::string, output, "", "where to write the result");
ABSL_FLAG(std::string, input, "",
          "decode: latent codes, .json ({\"z\": [[...]]} or encode's {\"mu\": ...}), .csv or .npy");
ABSL_FLAG(int32_t, limit, 64, "idx inputs: use the first N images of each file (0: all)");
ABSL_FLAG(bool, resize, true, "resize PNG/JPEG inputs to the model's size (--noresize: reject other sizes)");
ABSL_FLAG(int32_t, count, 64, "sample: how many images");
ABSL_FLAG(double, temperature, 1.0, "sample: z ~ N(0, temperature^2 I); in (0, 10]");
ABSL_FLAG(bool, sample_z, false, "reconstruct: decode a sample z ~ q(z|x) (seeded by --seed) instead of z = mu");

namespace vae::cli {
namespace {

using client::Client;

// ---------------------------------------------------------------------------------------------------------------
// Commands and their help.

struct FlagDoc {
  const char* name;
  const char* help;  // overrides the flag's own help text for this command when not null
};

struct Command {
  const char* name;
  const char* usage;    // after "vae-client "
  const char* summary;  // one line, for the command list
  const char* details;  // paragraphs for `COMMAND --help`
  std::vector<FlagDoc> flags;
};

const std::vector<FlagDoc> kGlobalFlags = {{"server", nullptr},   {"timeout", nullptr},  {"tls", nullptr},
                                           {"tls_ca", nullptr},   {"tls_cert", nullptr}, {"tls_key", nullptr},
                                           {"token_file", nullptr}};

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"health",
       "health [--service=NAME]",
       "prints SERVING or NOT_SERVING; exit 0 only when SERVING",
       "Asks the standard grpc.health.v1 service. Prints the status on stdout. Exit codes: 0 SERVING, 3 any other\n"
       "status, 1 when the server cannot be reached. Suitable for Docker HEALTHCHECK:\n"
       "  vae-client health --timeout=3s",
       {{"service", nullptr}}},
      {"info",
       "info [--json]",
       "the served model: preset, shapes, version, metrics, training state",
       "Prints GetModelInfo as a readable table, or with --json as one JSON object (options and train are the\n"
       "model's VaeOptions and training hyperparameters, parsed).",
       {{"json", nullptr}}},
      {"train",
       "train [--dataset=mnist] [--epochs=N] [--batch_size=B] [--lr=X] [--seed=S] [...]",
       "trains the served model on a dataset under the server's --data_dir, with live progress",
       "Starts a training job on the server and follows it. On a terminal, a live bar (epoch, step, loss,\n"
       "images/s, ETA) on stderr; one line per epoch on stdout in any case. New weights are served after every\n"
       "epoch. Ctrl-C (or SIGTERM) cancels the job cleanly: the server writes a checkpoint of the steps done and\n"
       "keeps serving its last published weights; vae-client says which version that is and exits 130.\n"
       "A second Ctrl-C exits at once. One job at a time: a second train fails while one runs.",
       {{"dataset", nullptr},
        {"epochs", nullptr},
        {"batch_size", nullptr},
        {"lr", nullptr},
        {"seed", "shuffling and a fresh model's initial weights (default 1)"},
        {"resume", nullptr},
        {"preset", nullptr},
        {"options_json", nullptr},
        {"max_train_images", nullptr},
        {"log_every_steps", nullptr},
        {"binarize", nullptr}}},
      {"encode",
       "encode IMAGE... --output=FILE.(json|csv|npy) [--limit=N] [--noresize]",
       "images -> the posterior mean and standard deviation of z",
       "IMAGE is a PNG/JPEG file (converted to the model's channels; resized to its height x width with area\n"
       "interpolation, saying so on stderr) or an idx file such as t10k-images-idx3-ubyte[.gz] (its first --limit\n"
       "images). Writes mu and sigma, one row per image, chosen by the extension of --output:\n"
       "  .json  {\"mu\": [[...]], \"sigma\": [[...]], \"inputs\": [...], \"latent_dim\": J, \"version\": {...}}\n"
       "  .csv   header input,mu_0..mu_{J-1},sigma_0..sigma_{J-1}; one row per image\n"
       "  .npy   float32 (N, J): mu in FILE.npy, sigma in FILE_sigma.npy",
       {{"output", "FILE.json, FILE.csv or FILE.npy"}, {"limit", nullptr}, {"resize", nullptr}}},
      {"decode",
       "decode --input=Z.(json|csv|npy) --output=GRID.png|DIR/",
       "latent codes -> images (a grid PNG, or one PNG per code)",
       "Reads codes (the \"z\" or \"mu\" rows of a JSON file such as encode writes, the z_* or mu_* columns of a\n"
       "CSV, or a float .npy of shape (N, J)) and decodes them. --output=GRID.png writes a near-square grid with\n"
       "2-pixel gaps; --output=DIR/ writes DIR/0000.png, DIR/0001.png, ...",
       {{"input", nullptr}, {"output", "GRID.png, or DIR/ for one PNG per code"}}},
      {"sample",
       "sample [--count=64] [--seed=S] [--temperature=T] --output=GRID.png|DIR/",
       "draws z ~ N(0, T^2 I) and decodes it; the same seed gives the same file",
       "Writes a near-square grid PNG with 2-pixel gaps (or one PNG per image with --output=DIR/). Without --seed\n"
       "the server picks one; it is printed so the run can be repeated.",
       {{"count", nullptr},
        {"seed", "the same seed gives a byte-identical file from the same model version (default: random)"},
        {"temperature", nullptr},
        {"output", "GRID.png, or DIR/ for one PNG per image"}}},
      {"reconstruct",
       "reconstruct IMAGE... --output=FILE.png [--limit=N] [--sample_z]",
       "images -> encode -> decode; originals and reconstructions side by side",
       "Inputs as for encode. Writes a grid of (original | reconstruction) pairs and prints the mean\n"
       "reconstruction term -log p(x|z) and KL of the inputs, in nats.",
       {{"output", "FILE.png"},
        {"limit", nullptr},
        {"resize", nullptr},
        {"sample_z", nullptr},
        {"seed", "reconstruct --sample_z: the seed of the z sample (default 0)"}}},
  };
  return *commands;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string FlagLine(const FlagDoc& doc) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(doc.name);
  std::string value = flag == nullptr ? "" : flag->DefaultValue();
  std::string line = absl::StrFormat("  --%-18s %s", doc.name, doc.help != nullptr ? doc.help : flag->Help());
  if (std::string(doc.name) == "server") return line;  // its help states the default
  if (flag != nullptr && flag->IsOfType<std::string>()) value = "\"" + value + "\"";
  if (flag != nullptr && flag->IsOfType<std::optional<uint64_t>>() && value.empty()) value = "unset";
  absl::StrAppend(&line, " (default: ", value, ")");
  return line;
}

void PrintMainHelp(std::ostream& out) {
  out << "vae-client: trains and queries a vae-server (a Variational Autoencoder over gRPC)\n\n"
         "usage: vae-client [--server=HOST:PORT] [--timeout=30s] [--tls_ca=CA.pem] COMMAND [ARGS...] [FLAGS...]\n\n"
         "commands:\n";
  for (const Command& c : Commands()) out << absl::StrFormat("  %-12s %s\n", c.name, c.summary);
  out << "\nglobal flags:\n";
  for (const FlagDoc& f : kGlobalFlags) out << FlagLine(f) << "\n";
  out << "\nexit codes: 0 ok, 1 the server or an RPC failed, 2 usage error (bad flags, arguments or input files),\n"
         "3 health: not SERVING, 130 train interrupted (Ctrl-C).\n"
         "Run `vae-client COMMAND --help` for a command's flags.\n";
}

void PrintCommandHelp(const Command& c, std::ostream& out) {
  out << "usage: vae-client " << c.usage << "\n\n" << c.summary << ".\n\n" << c.details << "\n\nflags:\n";
  for (const FlagDoc& f : c.flags) out << FlagLine(f) << "\n";
  out << "\nglobal flags:\n";
  for (const FlagDoc& f : kGlobalFlags) out << FlagLine(f) << "\n";
}

// ---------------------------------------------------------------------------------------------------------------
// Command-line parsing: absl flags hold the definitions, help texts and value parsers; this loop only decides which
// word is a flag, so that every mistake is a one-line usage error with exit code 2 (absl::ParseCommandLine would
// exit(1) with its own text).

struct ParsedArgs {
  std::string command;
  std::vector<std::string> args;  // positional arguments after the command
  std::set<std::string> flags;    // the flags given
  bool help = false;
  bool version = false;
};

// Every flag this program defines, reset to its default.
std::set<std::string> AllFlagNames() {
  std::set<std::string> names;
  for (const FlagDoc& f : kGlobalFlags) names.insert(f.name);
  for (const Command& c : Commands()) {
    for (const FlagDoc& f : c.flags) names.insert(f.name);
  }
  return names;
}

absl::Status ParseArgs(int argc, char** argv, ParsedArgs* parsed) {
  const std::set<std::string> known = AllFlagNames();
  for (const std::string& name : known) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    flag->ParseFrom(flag->DefaultValue(), &error);
  }
  bool only_positional = false;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help" || arg == "--helpfull" || arg == "--helpshort") {
      parsed->help = true;
      continue;
    }
    if (arg == "--version") {
      parsed->version = true;
      continue;
    }
    std::string body = std::string(absl::StripPrefix(absl::StripPrefix(arg, "-"), "-"));
    std::optional<std::string> value;
    if (const size_t eq = body.find('='); eq != std::string::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    std::string name = body;
    absl::CommandLineFlag* flag = known.count(name) ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr && absl::StartsWith(name, "no") && known.count(name.substr(2)) && !value.has_value()) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        name = name.substr(2);
        flag = negated;
        value = "false";
      }
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", body));
    if (!value.has_value()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc && !absl::StartsWith(argv[i + 1], "--")) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", *value, ": ", error));
    }
    parsed->flags.insert(name);
  }
  if (!positional.empty()) {
    parsed->command = positional.front();
    parsed->args.assign(positional.begin() + 1, positional.end());
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------------------
// Errors: one line each.

std::string OneLine(std::string text) {
  absl::StrReplaceAll({{"\r\n", " "}, {"\n", " "}, {"\r", " "}}, &text);
  return std::string(absl::StripAsciiWhitespace(text));
}

struct Failure {
  int code;
  std::string message;
};

// An RPC's failure: the library's one-line unreachable message as it is, else the server's code and message
// (unchanged; its messages name the call, "sample: count is 5000, ...") after the server's address.
Failure RpcFailure(const Client& client, const absl::Status& status) {
  if (absl::StartsWith(status.message(), client::kCannotReachPrefix)) {
    return {kExitError, std::string(status.message())};
  }
  return {kExitError, absl::StrCat("vae-server at ", client.target(), ": ", absl::StatusCodeToString(status.code()),
                                   ": ", status.message())};
}

Failure UsageFailure(const std::string& command, const std::string& message) {
  const std::string help = command.empty() ? "vae-client --help" : absl::StrCat("vae-client ", command, " --help");
  return {kExitUsage,
          absl::StrCat("vae-client", command.empty() ? "" : " ", command, ": ", message, " (see ", help, ")")};
}

Failure LocalFailure(const std::string& command, int code, const absl::Status& status) {
  return {code, absl::StrCat("vae-client ", command, ": ", status.message())};
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs: PNG/JPEG files and idx files, converted to the model's input.

struct Inputs {
  std::vector<cv::Mat> images;  // 8-bit, the model's channels (RGB order) and size
  std::vector<std::string> names;
};

bool LooksLikeIdx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(head), 4);
  if (in.gcount() < 4) return false;
  const bool gzip = head[0] == 0x1f && head[1] == 0x8b;
  const bool idx = head[0] == 0 && head[1] == 0 && head[2] == 0x08;
  return gzip || idx;
}

std::string Shape(int h, int w) { return absl::StrCat(w, "x", h); }

// Loads every input; notes (resizes, limits) go to `err`. Errors are usage errors: they name the file.
absl::Status LoadInputs(const std::vector<std::string>& paths, const client::ModelInfo& model, int32_t limit,
                        bool resize, std::ostream& err, Inputs* inputs) {
  if (model.input_shape.size() != 3) {
    return absl::InternalError(absl::StrCat("the server reports input_shape [", absl::StrJoin(model.input_shape, ","),
                                            "]; expected [C, H, W]"));
  }
  const int64_t c = model.input_shape[0], h = model.input_shape[1], w = model.input_shape[2];
  auto add = [&](const cv::Mat& image, const std::string& name, bool report) -> absl::Status {
    client::Conversion conversion;
    if (!resize && (image.rows != h || image.cols != w)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is ", Shape(image.rows, image.cols), "; the model takes ",
                                                     Shape(h, w), " (drop --noresize to resize)"));
    }
    auto converted = client::ConvertForModel(image, c, h, w, &conversion);
    if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", converted.status().message()));
    if (report && conversion.resized) {
      err << "resized " << name << " from " << Shape(conversion.from_height, conversion.from_width) << " to "
          << Shape(h, w) << "\n";
    }
    if (report && conversion.from_channels != c) {
      err << "converted " << name << " from " << conversion.from_channels << " channel"
          << (conversion.from_channels == 1 ? "" : "s") << " to " << (c == 1 ? "grayscale" : "RGB") << "\n";
    }
    inputs->images.push_back(*std::move(converted));
    inputs->names.push_back(name);
    return absl::OkStatus();
  };
  for (const std::string& path : paths) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      return absl::NotFoundError(absl::StrCat(
          "cannot read ", path, ": ", std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
    }
    if (LooksLikeIdx(path)) {
      VAE_ASSIGN_OR_RETURN(IdxArray idx, ReadIdx(path, int64_t{1} << 31));
      if (idx.dims.size() != 3) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": an idx file of ", idx.dims.size(), " dimensions; expected images [N, H, W]"));
      }
      const int64_t n = idx.dims[0], ih = idx.dims[1], iw = idx.dims[2];
      const int64_t take = limit > 0 ? std::min<int64_t>(n, limit) : n;
      if (take < n) err << "using the first " << take << " of " << n << " images in " << path << " (--limit)\n";
      if (take > 0 && (ih != h || iw != w)) {
        err << "resized the images of " << path << " from " << Shape(ih, iw) << " to " << Shape(h, w) << "\n";
      }
      for (int64_t i = 0; i < take; ++i) {
        const cv::Mat image(static_cast<int>(ih), static_cast<int>(iw), CV_8UC1, idx.data.data() + i * ih * iw);
        VAE_RETURN_IF_ERROR(add(image, absl::StrCat(path, "[", i, "]"), /*report=*/false));
      }
      continue;
    }
    VAE_ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path, int64_t{1} << 30));
    cv::Mat image;
    try {
      image = cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()), cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception&) {
      image = cv::Mat();
    }
    if (image.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": not a PNG/JPEG image or an idx file"));
    }
    VAE_RETURN_IF_ERROR(add(image, path, /*report=*/true));
  }
  if (inputs->images.empty()) return absl::InvalidArgumentError("no images in the inputs");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs.

// --output=DIR/ (or an existing folder): one PNG per image; else a grid PNG.
bool IsFolderOutput(const std::string& path) {
  std::error_code ec;
  return absl::EndsWith(path, "/") || std::filesystem::is_directory(path, ec);
}

absl::Status CheckPngOutput(const std::string& path, bool folder_allowed) {
  if (path.empty()) return absl::InvalidArgumentError("--output is required");
  if (folder_allowed && IsFolderOutput(path)) return absl::OkStatus();
  if (!absl::EndsWithIgnoreCase(path, ".png")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--output=", path, ": expected a .png file", folder_allowed ? " or a folder ending in /" : ""));
  }
  return absl::OkStatus();
}

absl::Status WritePng(const std::string& path, const cv::Mat& image) {
  VAE_ASSIGN_OR_RETURN(const std::string png, client::EncodePng(image));
  return WriteFileAtomically(path, png);
}

// Writes `images` (float [N, C, H, W] in [0, 1]) as a grid PNG or a folder of PNGs. Returns what was written, for
// the "wrote ..." line.
absl::StatusOr<std::string> WriteImages(const at::Tensor& images, const std::string& output) {
  VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> mats, client::TensorToMats(images));
  if (IsFolderOutput(output)) {
    std::error_code ec;
    std::filesystem::create_directories(output, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", output, ": ", ec.message()));
    const int digits = std::max<int>(4, static_cast<int>(std::to_string(mats.size() - 1).size()));
    for (size_t i = 0; i < mats.size(); ++i) {
      const std::string path = (std::filesystem::path(output) / absl::StrFormat("%0*d.png", digits, i)).string();
      VAE_RETURN_IF_ERROR(WritePng(path, mats[i]));
    }
    return absl::StrCat(mats.size(), " PNG files (", Shape(mats[0].rows, mats[0].cols), ") in ", output);
  }
  VAE_ASSIGN_OR_RETURN(cv::Mat grid, client::TileGrid(mats, client::GridColumns(static_cast<int>(mats.size()))));
  VAE_RETURN_IF_ERROR(WritePng(output, grid));
  return absl::StrCat(output, " (", Shape(grid.rows, grid.cols), ", ", mats.size(), " images)");
}

std::string VersionText(const client::ModelVersion& v) {
  return absl::StrCat("version ", v.generation, " (", v.epochs_trained, " epoch", v.epochs_trained == 1 ? "" : "s",
                      ", ", v.global_step, " steps)");
}

client::Matrix ToMatrix(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  client::Matrix m;
  m.rows = c.size(0);
  m.cols = c.dim() > 1 ? c.size(1) : 1;
  m.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// The commands. Each returns an exit code, having printed its one-line failure itself via Report.

class Cli {
 public:
  Cli(const ParsedArgs& args, std::ostream& out, std::ostream& err) : args_(args), out_(out), err_(err) {}

  int Main() {
    const std::string& c = args_.command;
    if (c == "health") return Health();
    if (c == "info") return Info();
    if (c == "train") return Train();
    if (c == "encode") return Encode();
    if (c == "decode") return Decode();
    if (c == "sample") return Sample();
    if (c == "reconstruct") return Reconstruct();
    return Report(UsageFailure("", absl::StrCat("unknown command \"", c, "\"")));
  }

 private:
  int Report(const Failure& failure) {
    err_ << OneLine(failure.message) << std::endl;
    return failure.code;
  }
  int Usage(const std::string& message) { return Report(UsageFailure(args_.command, message)); }
  int Rpc(const absl::Status& status) { return Report(RpcFailure(*client_, status)); }

  // Creates the client; false (after reporting) on bad options.
  bool Connect() {
    std::string server = absl::GetFlag(FLAGS_server);
    if (server.empty()) server = DefaultServer();
    client::ClientOptions options;
    options.timeout = absl::GetFlag(FLAGS_timeout);
    if (options.timeout <= absl::ZeroDuration()) {
      Usage(absl::StrCat("--timeout=", absl::FormatDuration(options.timeout), ": expected a positive duration"));
      return false;
    }
    const std::string ca = absl::GetFlag(FLAGS_tls_ca), cert = absl::GetFlag(FLAGS_tls_cert),
                      key = absl::GetFlag(FLAGS_tls_key);
    if (absl::GetFlag(FLAGS_tls) || !ca.empty() || !cert.empty() || !key.empty()) {
      auto tls = client::LoadTlsFiles(ca, cert, key);
      if (!tls.ok()) {
        Usage(std::string(tls.status().message()));
        return false;
      }
      options.tls = *std::move(tls);
    }
    if (const std::string token_file = absl::GetFlag(FLAGS_token_file); !token_file.empty()) {
      auto token = ReadTokenFile(token_file);
      if (!token.ok()) {
        Usage(absl::StrCat("--token_file: ", token.status().message()));
        return false;
      }
      options.token = *std::move(token);
    } else if (const char* env = std::getenv("VAE_TOKEN"); env != nullptr && *env != '\0') {
      if (!IsValidToken(env)) {
        Usage("$VAE_TOKEN holds characters a token cannot have (spaces, control or non-ASCII characters)");
        return false;
      }
      options.token = env;
    }
    auto client = Client::Create(server, options);
    if (!client.ok()) {
      Usage(absl::StrCat("--server=", server, ": ", client.status().message()));
      return false;
    }
    client_ = *std::move(client);
    return true;
  }

  bool NoArgs() {
    if (args_.args.empty()) return true;
    Usage(absl::StrCat("unexpected argument \"", args_.args.front(), "\""));
    return false;
  }

  int Health() {
    if (!NoArgs() || !Connect()) return kExitUsage;
    auto status = client_->Health(absl::GetFlag(FLAGS_service));
    if (!status.ok()) return Rpc(status.status());
    out_ << client::ServingStatusName(*status) << std::endl;
    return *status == client::ServingStatus::kServing ? kExitOk : kExitNotServing;
  }

  int Info() {
    if (!NoArgs() || !Connect()) return kExitUsage;
    auto info = client_->GetModelInfo();
    if (!info.ok()) return Rpc(info.status());
    if (absl::GetFlag(FLAGS_json)) {
      out_ << InfoJson(*info).dump(2) << std::endl;
    } else {
      PrintInfoTable(*info);
    }
    return kExitOk;
  }

  static nlohmann::json MetricsJson(const std::optional<client::Metrics>& m) {
    if (!m.has_value()) return nullptr;
    return {{"loss", m->loss}, {"recon", m->recon}, {"kl", m->kl}};
  }

  static nlohmann::json ParsedOrString(const std::string& text) {
    if (text.empty()) return nullptr;
    nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    return parsed.is_discarded() ? nlohmann::json(text) : parsed;
  }

  nlohmann::json InfoJson(const client::ModelInfo& i) const {
    return {{"server", client_->target()},
            {"preset", i.preset},
            {"architecture", i.architecture},
            {"likelihood", i.likelihood},
            {"input_shape", i.input_shape},
            {"latent_dim", i.latent_dim},
            {"parameter_count", i.parameter_count},
            {"device", i.device},
            {"version",
             {{"generation", i.version.generation},
              {"epochs_trained", i.version.epochs_trained},
              {"global_step", i.version.global_step}}},
            {"last_train", MetricsJson(i.last_train)},
            {"last_test", MetricsJson(i.last_test)},
            {"checkpoint_path", i.checkpoint_path},
            {"training", i.training},
            {"training_job_id", i.training_job_id},
            {"max_batch", i.max_batch},
            {"presets", i.presets},
            {"options", ParsedOrString(i.options_json)},
            {"train", ParsedOrString(i.train_json)}};
  }

  void PrintInfoTable(const client::ModelInfo& i) {
    auto metrics = [](const std::optional<client::Metrics>& m) -> std::string {
      if (!m.has_value()) return "-";
      return absl::StrFormat("loss %.4f (recon %.4f, kl %.4f) nats/image", m->loss, m->recon, m->kl);
    };
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"server", client_->target()},
        {"preset", i.preset},
        {"architecture", i.architecture},
        {"likelihood", i.likelihood},
        {"input shape", absl::StrJoin(i.input_shape, "x")},
        {"latent dim", absl::StrCat(i.latent_dim)},
        {"parameters", absl::StrCat(i.parameter_count)},
        {"device", i.device},
        {"weights", VersionText(i.version)},
        {"last train", metrics(i.last_train)},
        {"last test", metrics(i.last_test)},
        {"checkpoint", i.checkpoint_path.empty() ? "- (fresh model)" : i.checkpoint_path},
        {"training", i.training ? absl::StrCat("yes, job ", i.training_job_id) : "no"},
        {"max batch", absl::StrCat(i.max_batch)},
        {"presets", absl::StrJoin(i.presets, ", ")},
    };
    for (const auto& [key, value] : rows) out_ << absl::StrFormat("%-14s %s\n", key, value);
    out_.flush();
  }

  // Model info for the input-taking commands; reports and returns nullopt on failure.
  std::optional<client::ModelInfo> ModelInfoOrReport() {
    auto info = client_->GetModelInfo();
    if (!info.ok()) {
      Rpc(info.status());
      return std::nullopt;
    }
    return *std::move(info);
  }

  // Sends `images` ([N, ...]) in chunks of at most max_batch through `call`, which appends its results.
  template <typename Call>
  absl::Status Chunked(const at::Tensor& images, int32_t max_batch, Call call) {
    const int64_t n = images.size(0);
    const int64_t step = max_batch > 0 ? max_batch : n;
    for (int64_t start = 0; start < n; start += step) {
      VAE_RETURN_IF_ERROR(call(images.narrow(0, start, std::min(step, n - start))));
    }
    return absl::OkStatus();
  }

  // The positional IMAGE... arguments of encode/reconstruct, loaded and converted to the model's input: checks
  // the arguments, connects, asks for the model info. Returns kExitOk, or the exit code after reporting.
  struct ImageArgs {
    std::optional<client::ModelInfo> info;
    Inputs inputs;
    at::Tensor tensor;
  };
  int LoadImageArgs(const char* command, ImageArgs* loaded) {
    if (args_.args.empty()) return Usage("no input images");
    if (absl::GetFlag(FLAGS_limit) < 0) {
      return Usage(absl::StrCat("--limit=", absl::GetFlag(FLAGS_limit), ": expected >= 0"));
    }
    if (!Connect()) return kExitUsage;
    loaded->info = ModelInfoOrReport();
    if (!loaded->info.has_value()) return kExitError;
    if (absl::Status s = LoadInputs(args_.args, *loaded->info, absl::GetFlag(FLAGS_limit),
                                    absl::GetFlag(FLAGS_resize), err_, &loaded->inputs);
        !s.ok()) {
      return Report(LocalFailure(command, kExitUsage, s));
    }
    auto tensor = client::MatsToTensor(loaded->inputs.images);
    if (!tensor.ok()) return Report(LocalFailure(command, kExitError, tensor.status()));
    loaded->tensor = *std::move(tensor);
    return kExitOk;
  }

  int Encode() {
    const std::string output = absl::GetFlag(FLAGS_output);
    if (output.empty()) return Usage("--output is required");
    if (auto format = client::LatentFormatOf(output); !format.ok()) {
      return Usage(std::string(format.status().message()));
    }
    ImageArgs loaded;
    if (const int code = LoadImageArgs("encode", &loaded); code != kExitOk) return code;
    const client::ModelInfo& info = *loaded.info;
    const Inputs& inputs = loaded.inputs;
    const at::Tensor& tensor = loaded.tensor;
    client::Encoding encoding;
    encoding.inputs = inputs.names;
    absl::Status rpc = Chunked(tensor, info.max_batch, [&](const at::Tensor& chunk) -> absl::Status {
      VAE_ASSIGN_OR_RETURN(client::EncodeResult r, client_->Encode(client::ImageInput::FromTensor(chunk)));
      Append(ToMatrix(r.mu), &encoding.mu);
      Append(ToMatrix(r.sigma), &encoding.sigma);
      NoteVersion(r.version, &encoding.version);
      return absl::OkStatus();
    });
    if (!rpc.ok()) return Rpc(rpc);
    if (absl::Status s = client::WriteEncoding(output, encoding); !s.ok()) {
      return Report(LocalFailure("encode", kExitError, s));
    }
    const bool npy = absl::EndsWithIgnoreCase(output, ".npy");
    out_ << "wrote " << output << (npy ? absl::StrCat(" and ", client::SigmaNpyPath(output)) : "")
         << ": mu and sigma of " << encoding.mu.rows << " image" << (encoding.mu.rows == 1 ? "" : "s")
         << ", latent dim " << encoding.mu.cols << ", model " << VersionText(encoding.version) << std::endl;
    return kExitOk;
  }

  static void Append(const client::Matrix& part, client::Matrix* all) {
    all->cols = part.cols;
    all->rows += part.rows;
    all->values.insert(all->values.end(), part.values.begin(), part.values.end());
  }

  // Records the version that answered a request; notes it when the weights changed between two requests.
  void NoteVersion(const client::ModelVersion& v, client::ModelVersion* latest) {
    if (have_version_ && v.generation != latest->generation) {
      err_ << "note: the server published new weights during this command (generation " << latest->generation << " -> "
           << v.generation << ")\n";
    }
    *latest = v;
    have_version_ = true;
  }

  int Decode() {
    const std::string input = absl::GetFlag(FLAGS_input), output = absl::GetFlag(FLAGS_output);
    if (input.empty()) return Usage("--input is required");
    if (absl::Status s = CheckPngOutput(output, /*folder_allowed=*/true); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    if (!NoArgs()) return kExitUsage;
    auto codes = client::ReadCodes(input);
    if (!codes.ok()) return Report(LocalFailure("decode", kExitUsage, codes.status()));
    if (!Connect()) return kExitUsage;
    auto info = ModelInfoOrReport();
    if (!info.has_value()) return kExitError;
    if (codes->cols != info->latent_dim) {
      return Report(LocalFailure("decode", kExitUsage,
                                 absl::InvalidArgumentError(absl::StrCat(input, ": codes of ", codes->cols,
                                                                         " dimensions; the model's "
                                                                         "latent dim is ",
                                                                         info->latent_dim))));
    }
    at::Tensor z;
    try {
      z = at::Tensor(at::empty({codes->rows, codes->cols}, at::kFloat));
      std::copy(codes->values.begin(), codes->values.end(), z.data_ptr<float>());
    } catch (const c10::Error& e) {
      return Report(LocalFailure("decode", kExitError, absl::InternalError(e.what_without_backtrace())));
    }
    std::vector<at::Tensor> parts;
    client::ModelVersion version;
    absl::Status rpc = Chunked(z, info->max_batch, [&](const at::Tensor& chunk) -> absl::Status {
      VAE_ASSIGN_OR_RETURN(client::DecodeResult r, client_->Decode(chunk));
      parts.push_back(r.images);
      NoteVersion(r.version, &version);
      return absl::OkStatus();
    });
    if (!rpc.ok()) return Rpc(rpc);
    auto written = WriteImages(Concat(parts), output);
    if (!written.ok()) return Report(LocalFailure("decode", kExitError, written.status()));
    out_ << "wrote " << *written << " decoded from " << input << ", model " << VersionText(version) << std::endl;
    return kExitOk;
  }

  static at::Tensor Concat(const std::vector<at::Tensor>& parts);

  int Sample() {
    const std::string output = absl::GetFlag(FLAGS_output);
    if (absl::Status s = CheckPngOutput(output, /*folder_allowed=*/true); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    if (!NoArgs()) return kExitUsage;
    const int32_t count = absl::GetFlag(FLAGS_count);
    if (count < 1) return Usage(absl::StrCat("--count=", count, ": expected >= 1"));
    if (!Connect()) return kExitUsage;
    client::SampleOptions options;
    options.count = count;
    options.seed = absl::GetFlag(FLAGS_seed);
    options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
    auto result = client_->Sample(options);
    if (!result.ok()) return Rpc(result.status());
    auto written = WriteImages(result->images, output);
    if (!written.ok()) return Report(LocalFailure("sample", kExitError, written.status()));
    out_ << "wrote " << *written << ": seed " << result->seed << ", model " << VersionText(result->version)
         << std::endl;
    return kExitOk;
  }

  int Reconstruct() {
    const std::string output = absl::GetFlag(FLAGS_output);
    if (absl::Status s = CheckPngOutput(output, /*folder_allowed=*/false); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    ImageArgs loaded;
    if (const int code = LoadImageArgs("reconstruct", &loaded); code != kExitOk) return code;
    const client::ModelInfo& info = *loaded.info;
    const Inputs& inputs = loaded.inputs;
    const at::Tensor& tensor = loaded.tensor;
    client::ReconstructOptions options;
    options.sample_z = absl::GetFlag(FLAGS_sample_z);
    options.seed = absl::GetFlag(FLAGS_seed).value_or(0);
    std::vector<at::Tensor> parts;
    std::vector<float> recon, kl;
    client::ModelVersion version;
    absl::Status rpc = Chunked(tensor, info.max_batch, [&](const at::Tensor& chunk) -> absl::Status {
      VAE_ASSIGN_OR_RETURN(client::ReconstructResult r,
                           client_->Reconstruct(client::ImageInput::FromTensor(chunk), options));
      parts.push_back(r.images);
      recon.insert(recon.end(), r.recon_nll.begin(), r.recon_nll.end());
      kl.insert(kl.end(), r.kl.begin(), r.kl.end());
      NoteVersion(r.version, &version);
      return absl::OkStatus();
    });
    if (!rpc.ok()) return Rpc(rpc);
    absl::Status written = WritePairs(tensor, Concat(parts), output);
    if (!written.ok()) return Report(LocalFailure("reconstruct", kExitError, written));
    double mean_recon = 0, mean_kl = 0;
    for (float v : recon) mean_recon += v;
    for (float v : kl) mean_kl += v;
    mean_recon /= std::max<size_t>(1, recon.size());
    mean_kl /= std::max<size_t>(1, kl.size());
    const int n = static_cast<int>(inputs.images.size());
    const int columns = 2 * client::GridColumns(n);
    const int h = inputs.images[0].rows, w = inputs.images[0].cols;
    const int rows = (n + columns / 2 - 1) / (columns / 2);
    out_ << "wrote " << output << " (" << Shape(rows * (h + 2) + 2, columns * (w + 2) + 2) << ", " << n
         << " original | reconstruction pairs): mean -log p(x|z) " << absl::StrFormat("%.2f", mean_recon)
         << " nats, mean KL " << absl::StrFormat("%.2f", mean_kl) << " nats, model " << VersionText(version)
         << std::endl;
    return kExitOk;
  }

  // A grid of (original | reconstruction) pairs: originals are the uint8 inputs as sent, reconstructions float.
  static absl::Status WritePairs(const at::Tensor& originals, const at::Tensor& reconstructions,
                                 const std::string& output) {
    VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> left, client::TensorToMats(originals.to(at::kFloat).div(255.0)));
    VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> right, client::TensorToMats(reconstructions));
    if (left.size() != right.size()) {
      return absl::InternalError(
          absl::StrCat("the server returned ", right.size(), " reconstructions for ", left.size(), " images"));
    }
    std::vector<cv::Mat> cells;
    for (size_t i = 0; i < left.size(); ++i) {
      cells.push_back(left[i]);
      cells.push_back(right[i]);
    }
    VAE_ASSIGN_OR_RETURN(cv::Mat grid, client::TileGrid(cells, 2 * client::GridColumns(static_cast<int>(left.size()))));
    return WritePng(output, grid);
  }

  int Train();

  const ParsedArgs& args_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<Client> client_;
  bool have_version_ = false;
};

at::Tensor Cli::Concat(const std::vector<at::Tensor>& parts) {
  return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
}

// Prints the Train stream: a live bar on a terminal (stderr), one line per epoch and a summary on `out`. Called from
// the Train thread and (Note) from the signal watcher: everything under one mutex.
class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream& out, std::ostream& err, bool tty) : out_(out), err_(err), tty_(tty) {
    if (tty_) {
      winsize ws{};
      if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
    }
  }

  void On(const client::TrainProgress& p) {
    absl::MutexLock lock(&mu_);
    using Kind = client::TrainProgress::Kind;
    switch (p.kind) {
      case Kind::kStarted:
        ClearBarLocked();
        out_ << "training job " << p.job_id << " on " << p.dataset << ": "
             << (p.epoch == p.epochs ? absl::StrCat("epoch ", p.epoch)
                                     : absl::StrCat("epochs ", p.epoch, " to ", p.epochs))
             << ", " << p.steps_per_epoch << " steps per epoch" << std::endl;
        break;
      case Kind::kStep:
        if (tty_) {
          err_ << "\r" << FormatProgressBar(p, width_ - 1) << "\033[K" << std::flush;
          bar_shown_ = true;
        }
        break;
      case Kind::kEpochEnd:
        ClearBarLocked();
        out_ << FormatEpochLine(p) << std::endl;
        break;
      case Kind::kDone:
        ClearBarLocked();
        if (!p.cancelled) {
          out_ << "done: job " << p.job_id << " trained to epoch " << p.epoch << " (" << p.global_step << " steps) in "
               << FormatDuration(p.elapsed_sec) << "; the server serves " << VersionText(p.version)
               << (p.checkpoint_path.empty() ? "" : absl::StrCat(", checkpoint ", p.checkpoint_path)) << std::endl;
        }
        break;
      case Kind::kUnspecified:
        break;
    }
  }

  void Note(const std::string& line) {
    absl::MutexLock lock(&mu_);
    ClearBarLocked();
    err_ << line << std::endl;
  }

  void ClearBar() {
    absl::MutexLock lock(&mu_);
    ClearBarLocked();
  }

 private:
  void ClearBarLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (bar_shown_) err_ << "\r\033[K" << std::flush;
    bar_shown_ = false;
  }

  absl::Mutex mu_;
  std::ostream& out_;
  std::ostream& err_;
  const bool tty_;
  int width_ = 80;
  bool bar_shown_ ABSL_GUARDED_BY(mu_) = false;
};

// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after: gRPC's) and receives them on a
// watcher thread until destroyed: the first calls `on_first`, a second exits the process at once.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
  }
  ~SignalWatcher() {
    Stop();
    // Drop a signal that arrived after the watcher stopped, then restore the mask.
    timespec zero{0, 0};
    while (sigtimedwait(&signals_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }

  void Start(std::function<void(int)> on_first) {
    thread_ = std::thread([this, on_first = std::move(on_first)] {
      timespec poll{0, 50 * 1000 * 1000};
      while (!stop_.load()) {
        const int signal_number = sigtimedwait(&signals_, nullptr, &poll);
        if (signal_number <= 0) continue;
        if (received_.fetch_add(1) == 0) {
          on_first(signal_number);
        } else {
          static const char kMessage[] =
              "vae-client train: interrupted again; exiting without waiting for the server\n";
          [[maybe_unused]] ssize_t n = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
          _exit(kExitInterrupted);
        }
      }
    });
  }

  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  sigset_t signals_;
  sigset_t previous_;
  std::atomic<bool> stop_{false};
  std::atomic<int> received_{0};
  std::thread thread_;
};

int Cli::Train() {
  if (!NoArgs()) return kExitUsage;
  client::TrainOptions options;
  options.dataset = absl::GetFlag(FLAGS_dataset);
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.seed = absl::GetFlag(FLAGS_seed).value_or(1);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.preset = absl::GetFlag(FLAGS_preset);
  options.options_json = absl::GetFlag(FLAGS_options_json);
  options.max_train_images = absl::GetFlag(FLAGS_max_train_images);
  options.log_every_steps = absl::GetFlag(FLAGS_log_every_steps);
  options.binarize = absl::GetFlag(FLAGS_binarize);
  if (options.dataset.empty()) return Usage("--dataset is required");
  if (options.epochs < 1) return Usage(absl::StrCat("--epochs=", options.epochs, ": expected >= 1"));
  if (options.batch_size < 1) return Usage(absl::StrCat("--batch_size=", options.batch_size, ": expected >= 1"));
  if (!(options.learning_rate > 0)) return Usage(absl::StrCat("--lr=", options.learning_rate, ": expected > 0"));
  if (options.max_train_images < 0) {
    return Usage(absl::StrCat("--max_train_images=", options.max_train_images, ": expected >= 0"));
  }
  if (options.log_every_steps < 1) {
    return Usage(absl::StrCat("--log_every_steps=", options.log_every_steps, ": expected >= 1"));
  }

  // Before the first gRPC call, so that gRPC's threads inherit the blocked mask.
  SignalWatcher signals;
  if (!Connect()) return kExitUsage;
  // Train has no deadline (a job may run for hours): make sure the server answers within --timeout first.
  if (!ModelInfoOrReport().has_value()) return kExitError;

  const bool tty = &err_ == &std::cerr && isatty(STDERR_FILENO) == 1;
  ProgressPrinter printer(out_, err_, tty);
  client::TrainCancellation cancellation;
  signals.Start([&](int signal_number) {
    printer.Note(absl::StrCat(tty ? "\n" : "", signal_number == SIGINT ? "Ctrl-C" : "SIGTERM",
                              ": cancelling the job (the server checkpoints it; Ctrl-C again to quit at once)"));
    cancellation.Cancel();
  });
  client::TrainProgress last;
  auto result = client_->Train(
      options,
      [&](const client::TrainProgress& p) {
        last = p;
        printer.On(p);
      },
      &cancellation);
  signals.Stop();
  printer.ClearBar();
  if (!result.ok()) return Rpc(result.status());
  if (!result->cancelled) return kExitOk;

  // Cancelled: the server stops the job before its next step, writes a checkpoint and keeps its published weights.
  // Wait (briefly) for it to finish that, to say what is served.
  std::string served = "the server is still stopping the job";
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (absl::Now() < give_up) {
    auto info = client_->GetModelInfo();
    if (!info.ok()) break;
    if (!info->training || info->training_job_id != last.job_id) {
      served = absl::StrCat("it serves ", VersionText(info->version));
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::string where = "before the job started";
  if (last.kind != client::TrainProgress::Kind::kUnspecified) {
    where = absl::StrCat("in epoch ", last.epoch, " (last reported step ", last.step_in_epoch, "/",
                         last.steps_per_epoch, ", job ", last.job_id, ")");
  }
  err_ << "train: cancelled " << where
       << "; the server keeps a checkpoint of the steps done in its --model_dir (continue with --resume) and " << served
       << std::endl;
  return kExitInterrupted;
}

}  // namespace

std::string DefaultServer() {
  const char* env = std::getenv("VAE_SERVER");
  if (env != nullptr && *env != '\0') return env;
  return "127.0.0.1:50051";
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, s);
  return absl::StrFormat("%d:%02d", m, s);
}

std::string FormatProgressBar(const client::TrainProgress& p, int width) {
  const std::string head = absl::StrFormat("epoch %d/%d ", p.epoch, p.epochs);
  const std::string tail = absl::StrFormat(" %d/%d  loss %.2f  %.0f img/s  ETA %s", p.step_in_epoch, p.steps_per_epoch,
                                           p.train.loss, p.images_per_sec, FormatDuration(p.eta_sec));
  // A fixed width for a given terminal, so that the bar does not jump as the numbers change length.
  const int bar = std::clamp(width - 60, 10, 30);
  const double fraction =
      p.steps_per_epoch > 0 ? std::clamp(static_cast<double>(p.step_in_epoch) / p.steps_per_epoch, 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(fraction * bar);
  return absl::StrCat(head, "[", std::string(filled, '#'), std::string(bar - filled, '.'), "]", tail);
}

std::string FormatEpochLine(const client::TrainProgress& p) {
  std::string line = absl::StrFormat("epoch %d/%d: train loss %.2f (recon %.2f, kl %.2f)", p.epoch, p.epochs,
                                     p.train.loss, p.train.recon, p.train.kl);
  if (p.test.has_value()) absl::StrAppendFormat(&line, ", test loss %.2f", p.test->loss);
  absl::StrAppendFormat(&line, ", %.0f img/s, %s elapsed, serving version %d", p.images_per_sec,
                        FormatDuration(p.elapsed_sec), p.version.generation);
  return line;
}

int Run(int argc, char** argv, std::ostream& out, std::ostream& err) {
  ParsedArgs args;
  if (absl::Status s = ParseArgs(argc, argv, &args); !s.ok()) {
    // Name the command when there is one, so that the hint points at its help.
    std::string command;
    for (int i = 1; i < argc && command.empty(); ++i) {
      if (argv[i][0] != '-' && FindCommand(argv[i]) != nullptr) command = argv[i];
    }
    err << OneLine(UsageFailure(command, std::string(s.message())).message) << std::endl;
    return kExitUsage;
  }
  if (args.version) {
    out << "vae-client 0.1.0" << std::endl;
    return kExitOk;
  }
  const Command* command = args.command.empty() ? nullptr : FindCommand(args.command);
  if (args.help) {
    if (command != nullptr) {
      PrintCommandHelp(*command, out);
    } else {
      PrintMainHelp(out);
    }
    return kExitOk;
  }
  if (args.command.empty()) {
    PrintMainHelp(err);
    return kExitUsage;
  }
  if (command == nullptr) {
    err << OneLine(UsageFailure("", absl::StrCat("unknown command \"", args.command,
                                                 "\"; expected one of health, "
                                                 "info, train, encode, decode, sample, reconstruct"))
                       .message)
        << std::endl;
    return kExitUsage;
  }
  // A flag that the command does not take is a mistake, not something to ignore.
  std::set<std::string> allowed;
  for (const FlagDoc& f : kGlobalFlags) allowed.insert(f.name);
  for (const FlagDoc& f : command->flags) allowed.insert(f.name);
  for (const std::string& flag : args.flags) {
    if (allowed.count(flag) == 0) {
      err << OneLine(UsageFailure(args.command, absl::StrCat("--", flag, " does not apply to ", args.command)).message)
          << std::endl;
      return kExitUsage;
    }
  }
  try {
    return Cli(args, out, err).Main();
  } catch (const c10::Error& e) {
    err << "vae-client " << args.command << ": internal error: " << OneLine(e.what_without_backtrace()) << std::endl;
    return kExitError;
  } catch (const std::exception& e) {
    // Nothing below is meant to throw; should a library still do so, keep to one line and a non-zero exit.
    err << "vae-client " << args.command << ": internal error: " << OneLine(e.what()) << std::endl;
    return kExitError;
  }
}

}  // namespace vae::cli
