#include "client/cli.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/flags.h"
#include "client/cli/inputs.h"
#include "client/cli/outputs.h"
#include "client/cli/progress.h"
#include "client/client.h"
#include "client/grpc_status.h"
#include "client/images.h"
#include "client/latent_io.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/train_defaults.h"

// The commands of vae-client (client/cli.h). Flags and help:
// client/cli/flags.*; inputs: client/cli/inputs.*; outputs:
// client/cli/outputs.* and client/latent_io.*; the training display and
// signals: client/cli/progress.*.

namespace vae::cli {
namespace {

using client::Client;

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

// An RPC's failure: the library's one-line unreachable message as it is, else
// the server's code and message (unchanged; its messages name the call,
// "sample: count is 5000, ...") after the server's address.
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
// The commands. Each returns an exit code, having printed its one-line failure
// itself via Report.

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
    if (c == "models") return Models();
    if (c == "label") return Label();
    if (c == "delete") return Delete();
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
        Usage(
            "$VAE_TOKEN holds characters a token cannot have (spaces, "
            "control or non-ASCII characters)");
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

  // The model spec of --model, --version and --label; nullopt (after reporting a usage error) when they conflict.
  std::optional<client::ModelSpec> SpecFromFlags() {
    client::ModelSpec spec;
    spec.name = absl::GetFlag(FLAGS_model);
    spec.version = absl::GetFlag(FLAGS_model_version);
    spec.label = absl::GetFlag(FLAGS_label);
    if (spec.version < 0) {
      Usage(absl::StrCat("--version=", spec.version, ": expected a version number >= 1"));
      return std::nullopt;
    }
    if (spec.version > 0 && !spec.label.empty()) {
      Usage(absl::StrCat("--version=", spec.version, " and --label=", spec.label, ": give one of them"));
      return std::nullopt;
    }
    return spec;
  }

  // Whether any of --model, --version and --label was given.
  bool SpecGiven() const {
    return args_.flags.count("model") > 0 || args_.flags.count("version") > 0 || args_.flags.count("label") > 0;
  }

  int Health() {
    if (!NoArgs() || !Connect()) return kExitUsage;
    auto status = client_->Health(absl::GetFlag(FLAGS_service));
    if (!status.ok()) return Rpc(status.status());
    out_ << client::ServingStatusName(*status) << std::endl;
    return *status == client::ServingStatus::kServing ? kExitOk : kExitNotServing;
  }

  int Info() {
    const std::optional<client::ModelSpec> spec = SpecFromFlags();
    if (!spec.has_value() || !NoArgs() || !Connect()) return kExitUsage;
    auto info = client_->GetModelInfo(*spec);
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
            {"model", i.version.model},
            {"version", VersionJson(i.version)},
            {"labels", i.labels},
            {"default_label", i.default_label},
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
        {"model", i.version.model.empty() ? "-" : i.version.model},
        {"preset", i.preset},
        {"architecture", i.architecture},
        {"likelihood", i.likelihood},
        {"input shape", absl::StrJoin(i.input_shape, "x")},
        {"latent dim", absl::StrCat(i.latent_dim)},
        {"parameters", absl::StrCat(i.parameter_count)},
        {"device", i.device},
        {"weights", VersionText(i.version)},
        {"labels", i.labels.empty() ? "-" : absl::StrJoin(i.labels, ", ")},
        {"default label", i.default_label.empty() ? "-" : i.default_label},
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

  // Model info for the input-taking commands; reports and returns nullopt on
  // failure.
  std::optional<client::ModelInfo> ModelInfoOrReport(const client::ModelSpec& spec = {}) {
    auto info = client_->GetModelInfo(spec);
    if (!info.ok()) {
      Rpc(info.status());
      return std::nullopt;
    }
    return *std::move(info);
  }

  // Sends `images` ([N, ...]) in chunks of at most max_batch through `call`,
  // which appends its results.
  template <typename Call>
  absl::Status Chunked(const at::Tensor& images, int32_t max_batch, Call call) {
    const int64_t n = images.size(0);
    const int64_t step = max_batch > 0 ? max_batch : n;
    for (int64_t start = 0; start < n; start += step) {
      VAE_RETURN_IF_ERROR(call(images.narrow(0, start, std::min(step, n - start))));
    }
    return absl::OkStatus();
  }

  // The spec that pins the version GetModelInfo resolved `info` to, so that every request of one command is
  // answered by the same weights even if a label moves or a Train publishes meanwhile. A server before model
  // versions names no version: then `requested` itself.
  static client::ModelSpec PinnedTo(const client::ModelInfo& info, const client::ModelSpec& requested) {
    if (info.version.version <= 0) return requested;
    return client::ModelSpec::Pinned(info.version.model, info.version.version);
  }

  // The positional IMAGE... arguments of encode/reconstruct, loaded and
  // converted to the model's input: checks the arguments, connects, asks for
  // the model info of the flags' spec. Returns kExitOk, or the exit code after reporting.
  struct ImageArgs {
    std::optional<client::ModelInfo> info;
    client::ModelSpec pinned;  // every request goes to this version (PinnedTo)
    Inputs inputs;
    at::Tensor tensor;
  };
  int LoadImageArgs(const char* command, ImageArgs* loaded) {
    if (args_.args.empty()) return Usage("no input images");
    if (absl::GetFlag(FLAGS_limit) < 0) {
      return Usage(absl::StrCat("--limit=", absl::GetFlag(FLAGS_limit), ": expected >= 0"));
    }
    const std::optional<client::ModelSpec> spec = SpecFromFlags();
    if (!spec.has_value() || !Connect()) return kExitUsage;
    loaded->info = ModelInfoOrReport(*spec);
    if (!loaded->info.has_value()) return kExitError;
    loaded->pinned = PinnedTo(*loaded->info, *spec);
    if (absl::Status s = LoadInputs(args_.args, *loaded->info, absl::GetFlag(FLAGS_limit), absl::GetFlag(FLAGS_resize),
                                    err_, &loaded->inputs);
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
      VAE_ASSIGN_OR_RETURN(client::EncodeResult r,
                           client_->Encode(client::ImageInput::FromTensor(chunk), loaded.pinned));
      AppendRows(ToMatrix(r.mu), &encoding.mu);
      AppendRows(ToMatrix(r.sigma), &encoding.sigma);
      NoteVersion(r.version, &encoding.version);
      return absl::OkStatus();
    });
    if (!rpc.ok()) return Rpc(rpc);
    if (absl::Status s = client::WriteEncoding(output, encoding); !s.ok()) {
      return Report(LocalFailure("encode", kExitError, s));
    }
    const bool npy = absl::EndsWithIgnoreCase(output, ".npy");
    out_ << "wrote " << output
         << (npy ? absl::StrCat(", ", client::SigmaNpyPath(output), " and ", client::VersionJsonPath(output)) : "")
         << ": mu and sigma of " << encoding.mu.rows << " image" << (encoding.mu.rows == 1 ? "" : "s")
         << ", latent dim " << encoding.mu.cols << ", model " << VersionText(encoding.version) << std::endl;
    return kExitOk;
  }

  // Records the version that answered a request; notes it when the weights
  // changed between two requests.
  void NoteVersion(const client::ModelVersion& v, client::ModelVersion* latest) {
    if (have_version_ && (v.generation != latest->generation || v.model != latest->model)) {
      err_ << "note: other weights answered during this command (" << VersionName(*latest) << " -> " << VersionName(v)
           << ")\n";
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
    std::optional<client::ModelSpec> spec = SpecFromFlags();
    if (!spec.has_value()) return kExitUsage;
    auto codes = client::ReadCodes(input);
    if (!codes.ok()) return Report(LocalFailure("decode", kExitUsage, codes.status()));
    auto stored = client::ReadCodesVersion(input);
    if (!stored.ok()) return Report(LocalFailure("decode", kExitUsage, stored.status()));
    // Codes that name their version are decoded with it, unless the flags name a version; flags without --model
    // name a version of the codes' model.
    const std::string spec_text = SpecText(*spec);
    if (stored->has_value() && !SpecGiven()) spec = client::ModelSpec::Pinned((*stored)->model, (*stored)->version);
    if (stored->has_value() && spec->name.empty()) spec->name = (*stored)->model;
    if (!Connect()) return kExitUsage;
    auto info = ModelInfoOrReport(*spec);
    if (!info.has_value()) return kExitError;
    if (const client::ModelVersion& answered = info->version;
        stored->has_value() && answered.version > 0 &&
        (answered.model != (*stored)->model || answered.version != (*stored)->version)) {
      const std::string mismatch = absl::StrCat(input, " holds codes of ", VersionName(**stored), "; ", spec_text,
                                                " is ", VersionName(answered));
      if (!absl::GetFlag(FLAGS_force)) {
        return Report(LocalFailure(
            "decode", kExitUsage,
            absl::FailedPreconditionError(absl::StrCat(
                mismatch,
                ": codes of different versions live in different latent spaces (drop --model, --version and "
                "--label to decode with the codes' own version, or pass --force)"))));
      }
      err_ << "note: " << mismatch << "; decoding with it anyway (--force)\n";
    }
    const client::ModelSpec pinned = PinnedTo(*info, *spec);
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
      VAE_ASSIGN_OR_RETURN(client::DecodeResult r, client_->Decode(chunk, pinned));
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
    const std::optional<client::ModelSpec> spec = SpecFromFlags();
    if (!spec.has_value() || !Connect()) return kExitUsage;
    client::SampleOptions options;
    options.count = count;
    options.seed = absl::GetFlag(FLAGS_seed);
    options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
    auto result = client_->Sample(options, *spec);
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
                           client_->Reconstruct(client::ImageInput::FromTensor(chunk), options, loaded.pinned));
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
    out_ << "wrote " << output << " (" << SizeText(rows * (h + 2) + 2, columns * (w + 2) + 2) << ", " << n
         << " original | reconstruction pairs): mean -log p(x|z) " << absl::StrFormat("%.2f", mean_recon)
         << " nats, mean KL " << absl::StrFormat("%.2f", mean_kl) << " nats, model " << VersionText(version)
         << std::endl;
    return kExitOk;
  }

  int Train();
  int Models();
  int Label();
  int Delete();

  // "--model=fashion --label=stable", as the flags named the spec; "the default model's default label" for none.
  static std::string SpecText(const client::ModelSpec& spec) {
    std::vector<std::string> parts;
    if (!spec.name.empty()) parts.push_back(absl::StrCat("--model=", spec.name));
    if (spec.version > 0) parts.push_back(absl::StrCat("--version=", spec.version));
    if (!spec.label.empty()) parts.push_back(absl::StrCat("--label=", spec.label));
    return parts.empty() ? "the default model's default label" : absl::StrJoin(parts, " ");
  }

  static nlohmann::json VersionJson(const client::ModelVersion& v) {
    return {{"model", v.model},
            {"version", v.version},
            {"generation", v.generation},
            {"epochs_trained", v.epochs_trained},
            {"global_step", v.global_step}};
  }

  // A version argument (>= 1) of label/delete; nullopt after reporting.
  std::optional<int64_t> VersionArg(const std::string& text) {
    int64_t version;
    if (!absl::SimpleAtoi(text, &version) || version < 1) {
      Usage(absl::StrCat("VERSION \"", text, "\": expected a version number >= 1"));
      return std::nullopt;
    }
    return version;
  }

  nlohmann::json ModelListJson(const client::ModelList& list) const;
  void PrintModelTable(const client::ModelList& list);

  const ParsedArgs& args_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<Client> client_;
  bool have_version_ = false;
};

nlohmann::json Cli::ModelListJson(const client::ModelList& list) const {
  nlohmann::json models = nlohmann::json::array();
  for (const client::ModelEntry& m : list.models) {
    nlohmann::json versions = nlohmann::json::array();
    for (const client::VersionInfo& v : m.versions) {
      versions.push_back({{"version", v.version},
                          {"epochs_trained", v.epochs_trained},
                          {"global_step", v.global_step},
                          {"train", MetricsJson(v.train)},
                          {"test", MetricsJson(v.test)},
                          {"created", absl::FormatTime(absl::RFC3339_sec, v.created, absl::UTCTimeZone())},
                          {"created_unix_ms", absl::ToUnixMillis(v.created)},
                          {"labels", v.labels},
                          {"loaded", v.loaded},
                          {"size_bytes", v.size_bytes}});
    }
    models.push_back({{"name", m.name},
                      {"preset", m.preset},
                      {"options", ParsedOrString(m.options_json)},
                      {"parameter_count", m.parameter_count},
                      {"default_label", m.default_label},
                      {"labels", m.labels},
                      {"training", m.training},
                      {"versions", std::move(versions)}});
  }
  return {{"server", client_->target()}, {"default_model", list.default_model}, {"models", std::move(models)}};
}

void Cli::PrintModelTable(const client::ModelList& list) {
  std::vector<std::vector<std::string>> rows = {
      {"MODEL", "VERSION", "LABELS", "EPOCHS", "TEST LOSS", "LOADED", "SIZE", "CREATED (UTC)"}};
  for (const client::ModelEntry& m : list.models) {
    const std::string name = absl::StrCat(m.name, m.training ? " (training)" : "");
    if (m.versions.empty()) rows.push_back({name, "-", "-", "-", "-", "-", "-", "-"});
    for (const client::VersionInfo& v : m.versions) {
      std::vector<std::string> labels;
      for (const std::string& label : v.labels) labels.push_back(label + (label == m.default_label ? "*" : ""));
      rows.push_back({name, absl::StrCat(v.version), labels.empty() ? "-" : absl::StrJoin(labels, ","),
                      absl::StrCat(v.epochs_trained), v.test.has_value() ? absl::StrFormat("%.2f", v.test->loss) : "-",
                      v.loaded ? "yes" : "no", ByteSize(v.size_bytes),
                      absl::FormatTime("%Y-%m-%d %H:%M:%S", v.created, absl::UTCTimeZone())});
    }
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      // Numbers right-aligned, text left-aligned; no padding after the last column.
      const bool numeric = c == 1 || c == 3 || c == 4 || c == 6;
      const std::string pad(widths[c] - row[c].size(), ' ');
      absl::StrAppend(&line, c == 0 ? "" : "  ", numeric ? pad + row[c] : row[c] + (c + 1 < row.size() ? pad : ""));
    }
    out_ << line << "\n";
  }
  out_ << "* the model's default label (requests without --version or --label use it); default model: "
       << (list.default_model.empty() ? "-" : list.default_model) << std::endl;
}

int Cli::Models() {
  if (args_.args.size() > 1) return Usage(absl::StrCat("unexpected argument \"", args_.args[1], "\""));
  if (!Connect()) return kExitUsage;
  auto list = client_->ListModels(args_.args.empty() ? "" : args_.args[0]);
  if (!list.ok()) return Rpc(list.status());
  if (absl::GetFlag(FLAGS_json)) {
    out_ << ModelListJson(*list).dump(2) << std::endl;
  } else {
    PrintModelTable(*list);
  }
  return kExitOk;
}

int Cli::Label() {
  if (args_.args.size() != 3) {
    return Usage(absl::StrCat("expected MODEL LABEL VERSION, got ", args_.args.size(), " argument",
                              args_.args.size() == 1 ? "" : "s"));
  }
  const std::string& model = args_.args[0];
  const std::string& label = args_.args[1];
  const std::optional<int64_t> version = VersionArg(args_.args[2]);
  if (!version.has_value() || !Connect()) return kExitUsage;
  const bool make_default = absl::GetFlag(FLAGS_make_default);
  auto result = client_->SetLabel(model, label, *version, make_default);
  if (!result.ok()) return Rpc(result.status());
  out_ << model << ": label " << label << " -> version " << *version
       << (result->previous_version > 0 ? absl::StrCat(" (was version ", result->previous_version, ")") : " (new)")
       << (make_default ? absl::StrCat("; ", label, " is now the default label") : "") << std::endl;
  return kExitOk;
}

int Cli::Delete() {
  if (args_.args.empty() || args_.args.size() > 2) {
    return Usage(absl::StrCat("expected MODEL [VERSION], got ", args_.args.size(), " arguments"));
  }
  const std::string& model = args_.args[0];
  const bool force = absl::GetFlag(FLAGS_force);
  if (args_.args.size() == 1) {
    if (!Connect()) return kExitUsage;
    auto result = client_->DeleteModel(model, force);
    if (!result.ok()) return Rpc(result.status());
    out_ << "deleted model " << model << " (" << result->versions_deleted << " version"
         << (result->versions_deleted == 1 ? "" : "s") << ")" << std::endl;
    return kExitOk;
  }
  const std::optional<int64_t> version = VersionArg(args_.args[1]);
  if (!version.has_value() || !Connect()) return kExitUsage;
  auto result = client_->DeleteVersion(model, *version, force);
  if (!result.ok()) return Rpc(result.status());
  out_ << "deleted " << model << " version " << *version
       << (result->removed_labels.empty()
               ? ""
               : absl::StrCat(" and its labels ", absl::StrJoin(result->removed_labels, ", ")))
       << std::endl;
  return kExitOk;
}

at::Tensor Cli::Concat(const std::vector<at::Tensor>& parts) {
  return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
}

int Cli::Train() {
  if (!NoArgs()) return kExitUsage;
  client::TrainOptions options;
  options.dataset = absl::GetFlag(FLAGS_dataset);
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.seed = absl::GetFlag(FLAGS_seed).value_or(kDefaultTrainSeed);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.preset = absl::GetFlag(FLAGS_preset);
  options.options_json = absl::GetFlag(FLAGS_options_json);
  options.max_train_images = absl::GetFlag(FLAGS_max_train_images);
  options.log_every_steps = absl::GetFlag(FLAGS_log_every_steps);
  options.binarize = absl::GetFlag(FLAGS_binarize);
  options.model = absl::GetFlag(FLAGS_model);
  options.promote_label = absl::GetFlag(FLAGS_promote_label);
  options.iw_samples = absl::GetFlag(FLAGS_iw_samples);
  options.adam_eps = absl::GetFlag(FLAGS_adam_eps);
  auto schedule = ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule), "--lr_schedule");
  if (!schedule.ok()) return Usage(std::string(schedule.status().message()));
  options.lr_schedule = *std::move(schedule);
  if (options.dataset.empty()) return Usage("--dataset is required");
  // The wire reads 0 as "the server's default": a 0 typed here must be refused, not silently replaced. These are
  // the server's own ranges (common/train_defaults.h), checked before connecting; the rest the server checks.
  if (!IsValidEpochs(options.epochs))
    return Usage(absl::StrCat("--epochs=", options.epochs, ": expected 1 to ", kMaxEpochs));
  if (!IsValidBatchSize(options.batch_size))
    return Usage(absl::StrCat("--batch_size=", options.batch_size, ": expected 1 to ", kMaxBatchSize));
  if (!IsValidLearningRate(options.learning_rate))
    return Usage(absl::StrCat("--lr=", options.learning_rate, ": expected a value in (0, ", kMaxLearningRate, "]"));
  if (!IsValidLogEverySteps(options.log_every_steps))
    return Usage(absl::StrCat("--log_every_steps=", options.log_every_steps, ": expected >= 1"));
  if (!IsValidIwSamples(options.iw_samples))
    return Usage(absl::StrCat("--iw_samples=", options.iw_samples, ": expected 1 to ", kMaxIwSamples));
  if (!IsValidAdamEps(options.adam_eps))
    return Usage(absl::StrCat("--adam_eps=", options.adam_eps, ": expected a value in (0, ", kMaxAdamEps, "]"));

  // Before the first gRPC call, so that gRPC's threads inherit the blocked
  // mask.
  SignalWatcher signals;
  if (!Connect()) return kExitUsage;
  // Train has no deadline (a job may run for hours): make sure the server
  // answers within --timeout first.
  if (!ModelInfoOrReport().has_value()) return kExitError;

  const bool tty = &err_ == &std::cerr && isatty(STDERR_FILENO) == 1;
  ProgressPrinter printer(out_, err_, tty);
  client::TrainCancellation cancellation;
  signals.Start([&](int signal_number) {
    printer.Note(absl::StrCat(tty ? "\n" : "", signal_number == SIGINT ? "Ctrl-C" : "SIGTERM",
                              ": cancelling the job (the server checkpoints "
                              "it; Ctrl-C again to quit at once)"));
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
  if (!result->cancelled) {
    if (!options.promote_label.empty() && last.kind == client::TrainProgress::Kind::kDone) {
      out_ << "label " << options.promote_label
           << (last.label_moved ? absl::StrCat(" now names ", VersionName(last.version))
                                : absl::StrCat(" not moved: ", VersionName(last.version),
                                               " does not beat the test loss of the version it names"))
           << std::endl;
    }
    return kExitOk;
  }

  // Cancelled: the server stops the job before its next step, writes a
  // checkpoint and keeps its published weights. Wait (briefly) for it to finish
  // that, to say what is served.
  std::string served = "the server is still stopping the job";
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (absl::Now() < give_up) {
    // The default model's info says whether a job runs (any model's); then the trained model's says what it serves.
    auto running = client_->GetModelInfo();
    if (!running.ok()) break;
    if (!running->training || running->training_job_id != last.job_id) {
      auto info = client_->GetModelInfo(client::ModelSpec{options.model, 0, ""});
      served = info.ok() ? absl::StrCat("it serves ", VersionText(info->version))
                         : absl::StrCat("model ", options.model, " has no version yet");
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
       << "; the server keeps a checkpoint of the steps done in its "
          "--model_dir (continue with --resume) and "
       << served << std::endl;
  return kExitInterrupted;
}

}  // namespace

std::string DefaultServer() {
  const char* env = std::getenv("VAE_SERVER");
  if (env != nullptr && *env != '\0') return env;
  return "127.0.0.1:50051";
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
    std::vector<std::string> names;
    for (const Command& c : Commands()) names.push_back(c.name);
    err << OneLine(UsageFailure("", absl::StrCat("unknown command \"", args.command, "\"; expected one of ",
                                                 absl::StrJoin(names, ", ")))
                       .message)
        << std::endl;
    return kExitUsage;
  }
  // A flag that the command does not take is a mistake, not something to
  // ignore.
  if (absl::Status s = CheckFlagsApply(*command, args); !s.ok()) {
    err << OneLine(UsageFailure(args.command, std::string(s.message())).message) << std::endl;
    return kExitUsage;
  }
  try {
    return Cli(args, out, err).Main();
  } catch (const c10::Error& e) {
    err << "vae-client " << args.command << ": internal error: " << OneLine(e.what_without_backtrace()) << std::endl;
    return kExitError;
  } catch (const std::exception& e) {
    // Nothing below is meant to throw; should a library still do so, keep to
    // one line and a non-zero exit.
    err << "vae-client " << args.command << ": internal error: " << OneLine(e.what()) << std::endl;
    return kExitError;
  }
}

}  // namespace vae::cli
