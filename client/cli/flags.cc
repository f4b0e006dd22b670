#include "client/cli/flags.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
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
ABSL_FLAG(bool, json, false, "print JSON instead of a table");
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
ABSL_FLAG(std::string, model, "", "the model that answers; empty: the server's default model");
ABSL_FLAG(int64_t, model_version, 0,
          "pin this version of the model (>= 1); 0: the version --label, else the model's default label, names");
ABSL_FLAG(std::string, label, "",
          "the version this label names, e.g. stable or latest (not with --version); empty: the model's default "
          "label");
ABSL_FLAG(std::string, promote_label, "",
          "train: at the end of the job, point this label at the final version if its test loss beats the "
          "version the label names now (or the label is new)");
ABSL_FLAG(bool, force, false, "go ahead although a check says no (see the command's help)");
ABSL_FLAG(bool, make_default, false, "label: also make LABEL the model's default label");
ABSL_FLAG(bool, sample_z, false,
          "reconstruct: decode a sample z ~ q(z|x) (seeded by --seed) instead "
          "of z = mu");

namespace vae::cli {

std::string AbslFlagName(const std::string& cli_name) {
  if (cli_name == "version") return "model_version";
  if (cli_name == "default") return "make_default";
  return cli_name;
}

namespace {

// --model, --version and --label, which every inference command takes.
std::vector<FlagDoc> WithModelSpec(std::vector<FlagDoc> flags) {
  flags.push_back({"model", nullptr});
  flags.push_back({"version", nullptr});
  flags.push_back({"label", nullptr});
  return flags;
}

std::string FlagLine(const FlagDoc& doc) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(AbslFlagName(doc.name));
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
      {"info", "info [--model=NAME] [--version=N | --label=LABEL] [--json]",
       "a model version: preset, shapes, version, labels, metrics, training state",
       "Prints GetModelInfo of the version --model/--version/--label name (default: the default model's default\n"
       "label) as a readable table, or with --json as one JSON object (options and train are the model's\n"
       "VaeOptions and training hyperparameters, parsed).",
       WithModelSpec({{"json", nullptr}})},
      {"train",
       "train [--model=NAME] [--dataset=mnist] [--epochs=N] [--batch_size=B] [--lr=X] "
       "[--seed=S] [--promote_label=LABEL] [...]",
       "trains a model (new versions of it) on a dataset under the server's --data_dir, "
       "with live progress",
       "Starts a training job on the server and follows it. On a terminal, a live bar (epoch, step, loss,\n"
       "images/s, ETA) on stderr; one line per epoch on stdout in any case. Every epoch is published as a new\n"
       "version of the model. Ctrl-C (or SIGTERM) cancels the job cleanly: the server checkpoints the steps done\n"
       "(published as a version too); vae-client says which version the model serves and exits 130.\n"
       "A second Ctrl-C exits at once. One job at a time: a second train fails while one runs.\n"
       "--model names the model to train: a new name creates it (from --preset or --options_json), an existing\n"
       "one gets new versions (its options are kept; other models are untouched). --promote_label=stable moves\n"
       "the label `stable` to the final version at the end if that version's test loss beats the one it names.",
       {{"model", "the model to train; a new name creates it; empty: the server's default model"},
        {"promote_label", nullptr},
        {"dataset", nullptr},
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
      {"encode", "encode IMAGE... --output=FILE.(json|csv|npy) [--limit=N] [--noresize]",
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
       "  .npy   float32 (N, J): mu in FILE.npy, sigma in FILE_sigma.npy, model, version and inputs in\n"
       "         FILE_version.json\n"
       "Every file stores the model name and version the codes belong to (codes of different versions live in\n"
       "different latent spaces); every request of one command goes to the version the first one resolved to.",
       WithModelSpec({{"output", "FILE.json, FILE.csv or FILE.npy"}, {"limit", nullptr}, {"resize", nullptr}})},
      {"decode", "decode --input=Z.(json|csv|npy) --output=GRID.png|DIR/ [--model=NAME] [--version=N | --label=LABEL]",
       "latent codes -> images (a grid PNG, or one PNG per code)",
       "Reads codes (the \"z\" or \"mu\" rows of a JSON file such as encode "
       "writes, the z_* or mu_* columns of a\n"
       "CSV, or a float .npy of shape (N, J)) and decodes them. "
       "--output=GRID.png writes a near-square grid with\n"
       "2-pixel gaps; --output=DIR/ writes DIR/0000.png, DIR/0001.png, ...\n"
       "Codes that encode wrote name their model version: without --model/--version/--label they are decoded\n"
       "with that version (--version/--label without --model name a version of the codes' model); a version\n"
       "named by the flags that differs from theirs is refused (exit 2) unless --force.",
       WithModelSpec({{"input", nullptr},
                      {"output", "GRID.png, or DIR/ for one PNG per code"},
                      {"force", "decode with the version the flags name even if the codes name another"}})},
      {"sample",
       "sample [--count=64] [--seed=S] [--temperature=T] "
       "--output=GRID.png|DIR/",
       "draws z ~ N(0, T^2 I) and decodes it; the same seed gives the same "
       "file",
       "Writes a near-square grid PNG with 2-pixel gaps (or one PNG per image "
       "with --output=DIR/). Without --seed\n"
       "the server picks one; it is printed so the run can be repeated.",
       WithModelSpec({{"count", nullptr},
                      {"seed",
                       "the same seed gives a byte-identical file from the same "
                       "model version (default: random)"},
                      {"temperature", nullptr},
                      {"output", "GRID.png, or DIR/ for one PNG per image"}})},
      {"reconstruct", "reconstruct IMAGE... --output=FILE.png [--limit=N] [--sample_z]",
       "images -> encode -> decode; originals and reconstructions side by side",
       "Inputs as for encode. Writes a grid of (original | reconstruction) "
       "pairs and prints the mean\n"
       "reconstruction term -log p(x|z) and KL of the inputs, in nats.",
       WithModelSpec({{"output", "FILE.png"},
                      {"limit", nullptr},
                      {"resize", nullptr},
                      {"sample_z", nullptr},
                      {"seed", "reconstruct --sample_z: the seed of the z sample (default 0)"}})},
      {"models",
       "models [NAME] [--json]",
       "the model repository: every model's versions, labels, metrics and what is loaded",
       "Prints ListModels as a table, one row per version: model, version, labels (* marks the model's\n"
       "default label), epochs, test loss, loaded (in the server's memory), checkpoint size, creation time (UTC).\n"
       "NAME lists one model. --json prints the whole answer as one JSON object.",
       {{"json", nullptr}}},
      {"label",
       "label MODEL LABEL VERSION [--default]",
       "points LABEL of MODEL at VERSION (moving it if it exists)",
       "Labels name versions: requests with --label=LABEL, and requests without a version once LABEL is the\n"
       "model's default label (--default), get that version. \"latest\" always names the newest version and\n"
       "cannot be set. Needs the read-write token on a server with tokens.",
       {{"default", nullptr}}},
      {"delete",
       "delete MODEL [VERSION] [--force]",
       "deletes a version of MODEL, or the whole model, from the server's memory and disk",
       "A version that a label other than \"latest\" names is refused unless --force, which also drops those\n"
       "labels; so is a model with such labels. A model in training cannot be deleted. Codes encoded with a\n"
       "deleted version can no longer be decoded. Needs the read-write token on a server with tokens.",
       {{"force", "delete even if labels name the version(s); the labels are removed"}}},
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
  out << "\nmodels and versions: every inference command takes --model=NAME (default: the server's default model)\n"
         "and --version=N (pin a version) or --label=LABEL (default: the model's default label, usually latest).\n"
         "Store the version with any latent code you keep: codes of different versions are not comparable.\n"
         "\nexit codes: 0 ok, 1 the server or an RPC failed, 2 usage error "
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
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(AbslFlagName(name));
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
    // --version alone is the program's version; --version N and --version=N pin a model version.
    if (arg == "--version" || arg == "-version") {
      int64_t number;
      if (i + 1 < argc && absl::SimpleAtoi(argv[i + 1], &number)) {
        std::string error;
        absl::FindCommandLineFlag(AbslFlagName("version"))->ParseFrom(argv[++i], &error);
        parsed->flags.insert("version");
      } else {
        parsed->version = true;
      }
      continue;
    }
    std::string body = std::string(absl::StripPrefix(absl::StripPrefix(arg, "-"), "-"));
    std::optional<std::string> value;
    if (const size_t eq = body.find('='); eq != std::string::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    std::string name = body;
    absl::CommandLineFlag* flag = known.count(name) ? absl::FindCommandLineFlag(AbslFlagName(name)) : nullptr;
    if (flag == nullptr && absl::StartsWith(name, "no") && known.count(name.substr(2)) && !value.has_value()) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(AbslFlagName(name.substr(2)));
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
      // absl's message names the flag by its absl name.
      absl::StrReplaceAll({{absl::StrCat("'", AbslFlagName(name), "'"), absl::StrCat("'", name, "'")}}, &error);
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
