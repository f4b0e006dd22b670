#include "model/options.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace vae {
namespace {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

constexpr EnumName<Activation> kActivations[] = {{Activation::kRelu, "relu"}, {Activation::kTanh, "tanh"}};
constexpr EnumName<Architecture> kArchitectures[] = {{Architecture::kMlp, "mlp"}, {Architecture::kConv, "conv"}};
constexpr EnumName<Likelihood> kLikelihoods[] = {{Likelihood::kBernoulli, "bernoulli"},
                                                 {Likelihood::kGaussianLearned, "gaussian"},
                                                 {Likelihood::kGaussianFixed, "gaussian_fixed"}};

template <typename E, size_t N>
std::string NameOf(const EnumName<E> (&table)[N], E value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "unknown";
}

template <typename E, size_t N>
absl::StatusOr<E> Parse(const EnumName<E> (&table)[N], const std::string& s, const char* field) {
  std::vector<std::string> names;
  for (const auto& entry : table) {
    if (s == entry.name) return entry.value;
    names.push_back(entry.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": unknown value '", s, "', expected one of ", absl::StrJoin(names, ", ")));
}

VaeOptions Mlp(std::string name, int64_t c, int64_t h, int64_t w, std::vector<int64_t> hidden, int64_t j,
               Activation act, Likelihood lik) {
  VaeOptions o;
  o.preset = std::move(name);
  o.channels = c;
  o.height = h;
  o.width = w;
  o.hidden = std::move(hidden);
  o.latent_dim = j;
  o.activation = act;
  o.architecture = Architecture::kMlp;
  o.likelihood = lik;
  return o;
}

// A JSON integer into `out`. get<int64_t>() would truncate 2.5 to 2, and converting a double outside int64's range
// (1e30) is undefined behaviour (fuzz_options_json found it), so any non-integer number is rejected.
absl::Status GetInt(const nlohmann::json& value, const std::string& field, int64_t* out) {
  if (!value.is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model options: ", field, " must be an integer, got ", value.dump()));
  }
  *out = value.get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

std::string ToString(Activation a) { return NameOf(kActivations, a); }
std::string ToString(Architecture a) { return NameOf(kArchitectures, a); }
std::string ToString(Likelihood l) { return NameOf(kLikelihoods, l); }
absl::StatusOr<Activation> ParseActivation(const std::string& s) { return Parse(kActivations, s, "activation"); }
absl::StatusOr<Architecture> ParseArchitecture(const std::string& s) {
  return Parse(kArchitectures, s, "architecture");
}
absl::StatusOr<Likelihood> ParseLikelihood(const std::string& s) { return Parse(kLikelihoods, s, "likelihood"); }

absl::Status Validate(const VaeOptions& o) {
  auto positive = [](const char* field, int64_t v, int64_t max) -> absl::Status {
    if (v < 1 || v > max) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be in [1, ", max, "], got ", v));
    }
    return absl::OkStatus();
  };
  for (auto s :
       {positive("channels", o.channels, 4), positive("height", o.height, 4096), positive("width", o.width, 4096),
        positive("latent_dim", o.latent_dim, 4096), positive("mc_samples", o.mc_samples, 1000)}) {
    if (!s.ok()) return s;
  }
  if (o.hidden.empty()) return absl::InvalidArgumentError("hidden must list at least one layer");
  for (size_t i = 0; i < o.hidden.size(); ++i) {
    if (o.hidden[i] < 1 || o.hidden[i] > 65536) {
      return absl::InvalidArgumentError(absl::StrCat("hidden[", i, "] must be in [1, 65536], got ", o.hidden[i]));
    }
  }
  if (!(o.beta >= 0.0)) return absl::InvalidArgumentError(absl::StrCat("beta must be >= 0, got ", o.beta));
  if (!(o.fixed_sigma > 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat("fixed_sigma must be > 0, got ", o.fixed_sigma));
  }
  if (o.architecture == Architecture::kConv) {
    const int64_t factor = int64_t{1} << o.hidden.size();
    if (o.hidden.size() > 8 || o.height % factor != 0 || o.width % factor != 0) {
      return absl::InvalidArgumentError(absl::StrCat("conv: input ", o.height, "x", o.width,
                                                     " must be divisible by 2^stages = ", factor, " (", o.hidden.size(),
                                                     " stages in hidden)"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> PresetNames() { return {"mnist", "aevb", "iwae1", "seed", "conv", "conv64", "fashion"}; }

absl::StatusOr<VaeOptions> Preset(const std::string& name) {
  if (name == "mnist") {
    return Mlp(name, 1, 28, 28, {400}, 20, Activation::kRelu, Likelihood::kBernoulli);
  }
  if (name == "aevb") {
    return Mlp(name, 1, 28, 28, {500}, 20, Activation::kTanh, Likelihood::kBernoulli);
  }
  if (name == "iwae1") {
    // Burda et al. (2015), MNIST, one stochastic layer: 784-200-200-(2x50) tanh encoder, 50-200-200-784 tanh decoder.
    return Mlp(name, 1, 28, 28, {200, 200}, 50, Activation::kTanh, Likelihood::kBernoulli);
  }
  if (name == "seed") {
    // The source document: 3x218x178 (D = 116412) -> 1164 -> 116 -> (mu, log sigma^2) of J = 10, mirrored decoder.
    return Mlp(name, 3, 218, 178, {1164, 116}, 10, Activation::kRelu, Likelihood::kBernoulli);
  }
  if (name == "conv" || name == "conv64") {
    VaeOptions o = name == "conv"
                       ? Mlp(name, 1, 28, 28, {32, 64}, 20, Activation::kRelu, Likelihood::kBernoulli)
                       : Mlp(name, 3, 64, 64, {32, 64, 128, 256}, 32, Activation::kRelu, Likelihood::kBernoulli);
    o.architecture = Architecture::kConv;
    return o;
  }
  if (name == "fashion") {
    return Mlp(name, 1, 28, 28, {512, 256}, 16, Activation::kRelu, Likelihood::kGaussianLearned);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("preset: unknown preset '", name, "', expected one of ", absl::StrJoin(PresetNames(), ", ")));
}

std::string ToJson(const VaeOptions& o) {
  nlohmann::json j = {{"preset", o.preset},
                      {"channels", o.channels},
                      {"height", o.height},
                      {"width", o.width},
                      {"latent_dim", o.latent_dim},
                      {"hidden", o.hidden},
                      {"activation", ToString(o.activation)},
                      {"architecture", ToString(o.architecture)},
                      {"likelihood", ToString(o.likelihood)},
                      {"fixed_sigma", o.fixed_sigma},
                      {"beta", o.beta},
                      {"mc_samples", o.mc_samples}};
  return j.dump();
}

absl::StatusOr<VaeOptions> OptionsFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("model options: not a JSON object");
  }
  VaeOptions o;
  try {
    o.preset = j.value("preset", o.preset);
    for (auto [field, out] : {std::pair{"channels", &o.channels}, std::pair{"height", &o.height},
                              std::pair{"width", &o.width}, std::pair{"latent_dim", &o.latent_dim}}) {
      VAE_RETURN_IF_ERROR(GetInt(j.at(field), field, out));
    }
    if (j.contains("mc_samples")) VAE_RETURN_IF_ERROR(GetInt(j["mc_samples"], "mc_samples", &o.mc_samples));
    const nlohmann::json& hidden = j.at("hidden");
    if (!hidden.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("model options: hidden must be an array, got ", hidden.dump()));
    }
    o.hidden.assign(hidden.size(), 0);
    for (size_t i = 0; i < hidden.size(); ++i) {
      VAE_RETURN_IF_ERROR(GetInt(hidden[i], absl::StrCat("hidden[", i, "]"), &o.hidden[i]));
    }
    o.fixed_sigma = j.value("fixed_sigma", o.fixed_sigma);
    o.beta = j.value("beta", o.beta);
    auto act = ParseActivation(j.at("activation").get<std::string>());
    auto arch = ParseArchitecture(j.at("architecture").get<std::string>());
    auto lik = ParseLikelihood(j.at("likelihood").get<std::string>());
    if (!act.ok()) return act.status();
    if (!arch.ok()) return arch.status();
    if (!lik.ok()) return lik.status();
    o.activation = *act;
    o.architecture = *arch;
    o.likelihood = *lik;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model options: ", e.what()));
  }
  auto status = Validate(o);
  if (!status.ok()) return status;
  return o;
}

}  // namespace vae
