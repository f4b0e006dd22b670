#include "client/cli/flags.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/train_defaults.h"

ABSL_FLAG(std::string, server, "",
          "vae-server address HOST:PORT (default: $VAE_SERVER, else "
          "127.0.0.1:50051)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each call, connecting included (train: of connecting "
          "only; training runs until it ends)");
ABSL_FLAG(bool, tls, false,
          "connect with TLS, verifying the server against the system's CA "
          "certificates");
ABSL_FLAG(std::string, tls_ca, "", "connect with TLS, verifying the server against this PEM CA certificate");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for a server that requires one (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token of a server started with "
          "--auth_token_file; unset: $VAE_TOKEN, if set");
ABSL_FLAG(std::string, service, "",
          "health: the service to check (\"\" = the whole server, or "
          "vae.v1.VaeService)");
ABSL_FLAG(bool, json, false, "info: print the model info as JSON instead of a table");
ABSL_FLAG(std::string, dataset, "mnist",
          "train: mnist, fashion-mnist, or a folder of images under the "
          "server's --data_dir");
ABSL_FLAG(int32_t, epochs, vae::kDefaultTrainEpochs, "train: epochs to train in this job");
ABSL_FLAG(int32_t, batch_size, vae::kDefaultBatchSize, "train: images per optimizer step");
ABSL_FLAG(double, lr, vae::kDefaultLearningRate, "train: Adam learning rate");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "random seed (train: shuffling and initial weights, default 1; "
          "sample: default a random seed, printed; "
          "reconstruct --sample_z: default 0)");
ABSL_FLAG(bool, resume, false,
          "train: continue the server's newest checkpoint instead of training "
          "a fresh model");
ABSL_FLAG(std::string, preset, "",
          "train: build the fresh model from this preset (see `info`; default: "
          "the served model's options)");
ABSL_FLAG(std::string, options_json, "",
          "train: build the fresh model from these VaeOptions (JSON, as `info "
          "--json` shows under options)");
ABSL_FLAG(int32_t, max_train_images, 0, "train: use only the first N training images (0: all)");
// The terminal's progress line is redrawn more often than the server's default (kDefaultLogEverySteps) would: a
// presentation choice of the CLI, not a training default.
ABSL_FLAG(int32_t, log_every_steps, 20, "train: progress updates every N steps");
ABSL_FLAG(bool, binarize, false, "train: dynamic binarisation of training batches (Bernoulli models)");
ABSL_FLAG(int32_t, iw_samples, vae::kDefaultIwSamples,
          "train: k of the IWAE objective (importance samples per image; 1: the VAE's ELBO)");
ABSL_FLAG(double, adam_eps, vae::kDefaultAdamEps, "train: Adam's epsilon (Burda et al. use 1e-4)");
ABSL_FLAG(std::string, lr_schedule, "",
          "train: learning rate per stage of the model's epochs, EPOCHS:LR,EPOCHS:LR,... (replaces --lr; the last "
          "rate holds past the end)");
ABSL_FLAG(std::string, output, "", "where to write the result");
ABSL_FLAG(std::string, input, "",
          "decode: latent codes, .json ({\"z\": [[...]]} or encode's {\"mu\": "
          "...}), .csv or .npy");
ABSL_FLAG(int32_t, limit, 64, "idx inputs: use the first N images of each file (0: all)");
ABSL_FLAG(bool, resize, true,
          "resize PNG/JPEG inputs to the model's size (--noresize: reject "
          "other sizes)");
ABSL_FLAG(int32_t, count, 64, "sample: how many images");
ABSL_FLAG(double, temperature, 1.0, "sample: z ~ N(0, temperature^2 I); in (0, 10]");
ABSL_FLAG(bool, sample_z, false,
          "reconstruct: decode a sample z ~ q(z|x) (seeded by --seed) instead "
          "of z = mu");

namespace vae::cli {
namespace {

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

// Every flag this program defines, reset to its default.
std::set<std::string> AllFlagNames() {
  std::set<std::string> names;
  for (const FlagDoc& f : GlobalFlags()) names.insert(f.name);
  for (const Command& c : Commands()) {
    for (const FlagDoc& f : c.flags) names.insert(f.name);
  }
  return names;
}

}  // namespace

const std::vector<FlagDoc>& GlobalFlags() {
  static const auto* flags =
      new std::vector<FlagDoc>{{"server", nullptr},   {"timeout", nullptr}, {"tls", nullptr},       {"tls_ca", nullptr},
                               {"tls_cert", nullptr}, {"tls_key", nullptr}, {"token_file", nullptr}};
  return *flags;
}

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"health",
       "health [--service=NAME]",
       "prints SERVING or NOT_SERVING; exit 0 only when SERVING",
       "Asks the standard grpc.health.v1 service. Prints the status on stdout. "
       "Exit codes: 0 SERVING, 3 any other\n"
       "status, 1 when the server cannot be reached. Suitable for Docker "
       "HEALTHCHECK:\n"
       "  vae-client health --timeout=3s",
       {{"service", nullptr}}},
      {"info",
       "info [--json]",
       "the served model: preset, shapes, version, metrics, training state",
       "Prints GetModelInfo as a readable table, or with --json as one JSON "
       "object (options and train are the\n"
       "model's VaeOptions and training hyperparameters, parsed).",
       {{"json", nullptr}}},
      {"train",
       "train [--dataset=mnist] [--epochs=N] [--batch_size=B] [--lr=X] "
       "[--seed=S] [...]",
       "trains the served model on a dataset under the server's --data_dir, "
       "with live progress",
       "Starts a training job on the server and follows it. On a terminal, a "
       "live bar (epoch, step, loss,\n"
       "images/s, ETA) on stderr; one line per epoch on stdout in any case. "
       "New weights are served after every\n"
       "epoch. Ctrl-C (or SIGTERM) cancels the job cleanly: the server writes "
       "a checkpoint of the steps done and\n"
       "keeps serving its last published weights; vae-client says which "
       "version that is and exits 130.\n"
       "A second Ctrl-C exits at once. One job at a time: a second train fails "
       "while one runs.",
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
        {"binarize", nullptr},
        {"iw_samples", nullptr},
        {"adam_eps", nullptr},
        {"lr_schedule", nullptr}}},
      {"encode",
       "encode IMAGE... --output=FILE.(json|csv|npy) [--limit=N] [--noresize]",
       "images -> the posterior mean and standard deviation of z",
       "IMAGE is a PNG/JPEG file (converted to the model's channels; resized "
       "to its height x width with area\n"
       "interpolation, saying so on stderr) or an idx file such as "
       "t10k-images-idx3-ubyte[.gz] (its first --limit\n"
       "images). Writes mu and sigma, one row per image, chosen by the "
       "extension of --output:\n"
       "  .json  {\"mu\": [[...]], \"sigma\": [[...]], \"inputs\": [...], "
       "\"latent_dim\": J, \"version\": {...}}\n"
       "  .csv   header input,mu_0..mu_{J-1},sigma_0..sigma_{J-1}; one row per "
       "image\n"
       "  .npy   float32 (N, J): mu in FILE.npy, sigma in FILE_sigma.npy",
       {{"output", "FILE.json, FILE.csv or FILE.npy"}, {"limit", nullptr}, {"resize", nullptr}}},
      {"decode",
       "decode --input=Z.(json|csv|npy) --output=GRID.png|DIR/",
       "latent codes -> images (a grid PNG, or one PNG per code)",
       "Reads codes (the \"z\" or \"mu\" rows of a JSON file such as encode "
       "writes, the z_* or mu_* columns of a\n"
       "CSV, or a float .npy of shape (N, J)) and decodes them. "
       "--output=GRID.png writes a near-square grid with\n"
       "2-pixel gaps; --output=DIR/ writes DIR/0000.png, DIR/0001.png, ...",
       {{"input", nullptr}, {"output", "GRID.png, or DIR/ for one PNG per code"}}},
      {"sample",
       "sample [--count=64] [--seed=S] [--temperature=T] "
       "--output=GRID.png|DIR/",
       "draws z ~ N(0, T^2 I) and decodes it; the same seed gives the same "
       "file",
       "Writes a near-square grid PNG with 2-pixel gaps (or one PNG per image "
       "with --output=DIR/). Without --seed\n"
       "the server picks one; it is printed so the run can be repeated.",
       {{"count", nullptr},
        {"seed",
         "the same seed gives a byte-identical file from the same "
         "model version (default: random)"},
        {"temperature", nullptr},
        {"output", "GRID.png, or DIR/ for one PNG per image"}}},
      {"reconstruct",
       "reconstruct IMAGE... --output=FILE.png [--limit=N] [--sample_z]",
       "images -> encode -> decode; originals and reconstructions side by side",
       "Inputs as for encode. Writes a grid of (original | reconstruction) "
       "pairs and prints the mean\n"
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

void PrintMainHelp(std::ostream& out) {
  out << "vae-client: trains and queries a vae-server (a Variational "
         "Autoencoder over gRPC)\n\n"
         "usage: vae-client [--server=HOST:PORT] [--timeout=30s] "
         "[--tls_ca=CA.pem] COMMAND [ARGS...] [FLAGS...]\n\n"
         "commands:\n";
  for (const Command& c : Commands()) out << absl::StrFormat("  %-12s %s\n", c.name, c.summary);
  out << "\nglobal flags:\n";
  for (const FlagDoc& f : GlobalFlags()) out << FlagLine(f) << "\n";
  out << "\nexit codes: 0 ok, 1 the server or an RPC failed, 2 usage error "
         "(bad flags, arguments or input files),\n"
         "3 health: not SERVING, 130 train interrupted (Ctrl-C).\n"
         "Run `vae-client COMMAND --help` for a command's flags.\n";
}

void PrintCommandHelp(const Command& c, std::ostream& out) {
  out << "usage: vae-client " << c.usage << "\n\n" << c.summary << ".\n\n" << c.details << "\n\nflags:\n";
  for (const FlagDoc& f : c.flags) out << FlagLine(f) << "\n";
  out << "\nglobal flags:\n";
  for (const FlagDoc& f : GlobalFlags()) out << FlagLine(f) << "\n";
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

absl::Status CheckFlagsApply(const Command& command, const ParsedArgs& args) {
  std::set<std::string> allowed;
  for (const FlagDoc& f : GlobalFlags()) allowed.insert(f.name);
  for (const FlagDoc& f : command.flags) allowed.insert(f.name);
  for (const std::string& flag : args.flags) {
    if (allowed.count(flag) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, " does not apply to ", command.name));
    }
  }
  return absl::OkStatus();
}

}  // namespace vae::cli
