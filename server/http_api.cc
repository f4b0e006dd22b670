#include "server/http_api.h"

#include <ATen/ATen.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include <charconv>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/http_server.h"
#include "server/proto_mapping.h"
#include "server/server_core.h"
#include "server/tensor_codec.h"
#include "server/web/web_assets.h"

namespace vae::server {
namespace {

using json = nlohmann::json;
using httplib::Request;
using httplib::Response;

// Routes. {name} and {label} are anything but '/' and ':'; {v} a version number.
constexpr char kModelPath[] = R"(/v1/models/([^/:]+)(?:/versions/([0-9]{1,18})|/labels/([^/:]+))?)";
const std::string kModelRoute = kModelPath;
const std::string kCallRoute = absl::StrCat(kModelPath, ":(encode|decode|sample|reconstruct)");
constexpr char kModelsRoute[] = "/v1/models";
constexpr char kTrainRoute[] = "/v1/train";
constexpr int kMaxJsonDepth = 32;  // deeper than any valid body ([N][C][H][W] images sit at depth 6)

// The model a path names. A version in the path must be a stored one (>= 1): 0 would mean "not pinned".
absl::StatusOr<ModelRef> RefOf(const Request& req) {
  ModelRef ref{req.matches[1].str(), 0, req.matches[3].str()};
  if (req.matches[2].matched) {
    ref.version = std::stoll(req.matches[2].str());
    if (ref.version < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("the path's version is ", ref.version, ", expected a version number >= 1"));
    }
  }
  return ref;
}

// The JSON error body of `status`, with its code's HTTP status or `http` (415, 405: no absl code says those).
void WriteError(Response& res, const absl::Status& status, int http = 0) {
  HttpServer::SetError(status, res);
  if (http != 0) res.status = http;
}

// The body of a POST: JSON, sent as application/json. `*http` becomes 415 for another content type.
absl::StatusOr<json> ParseBody(const Request& req, int* http) {
  const std::string type = absl::AsciiStrToLower(req.get_header_value("Content-Type"));
  if (type != "application/json" && !absl::StartsWith(type, "application/json;")) {
    *http = 415;
    return absl::InvalidArgumentError(absl::StrCat("Content-Type is '", req.get_header_value("Content-Type"),
                                                   "'; send the request body as application/json"));
  }
  // Bounded nesting: a body of a million '[' would otherwise cost a million nested values.
  const json::parser_callback_t depth_limit = [](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth) {
      throw std::invalid_argument(absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
    }
    return true;
  };
  try {
    json body = json::parse(req.body, depth_limit);
    if (!body.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request body is a JSON ", body.type_name(), "; expected an object"));
    }
    return body;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the request body is not valid JSON: ", e.what()));
  }
}

// Refuses a body with a field the operation does not know (a typo would otherwise be silently ignored).
absl::Status CheckFields(const json& body, std::initializer_list<const char*> known) {
  for (const auto& item : body.items()) {
    bool found = false;
    for (const char* name : known) found = found || item.key() == name;
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field '", item.key(), "'; this call takes ", absl::StrJoin(known, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::Status WrongType(const std::string& field, const json& value, const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is a ", value.type_name(), ", expected ", expected));
}

absl::StatusOr<int64_t> IntField(const json& body, const char* name, int64_t fallback) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return WrongType(name, *it, "an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> NumberField(const json& body, const char* name, double fallback) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number()) return WrongType(name, *it, "a number");
  return it->get<double>();
}

absl::StatusOr<bool> BoolField(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_boolean()) return WrongType(name, *it, "true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> StringField(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::string();
  if (!it->is_string()) return WrongType(name, *it, "a string");
  return it->get<std::string>();
}

// A uint64 seed: a JSON number, or a decimal string (proto3 JSON writes 64-bit integers as strings, and JavaScript
// numbers hold only 53 bits).
absl::StatusOr<std::optional<uint64_t>> SeedField(const json& body) {
  const auto it = body.find("seed");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    uint64_t seed = 0;
    const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), seed);
    if (error == std::errc() && end == s.data() + s.size() && !s.empty()) return seed;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("seed is ", it->dump(), ", expected an integer in [0, 2^64) (a number or a decimal string)"));
}

// `format`: "tensor", "png", "tensor_and_png" (or the proto's IMAGE_FORMAT_* names, or their numbers); absent: tensor.
absl::StatusOr<int> FormatField(const json& body) {
  const auto it = body.find("format");
  if (it == body.end() || it->is_null()) return 0;
  if (it->is_number_integer()) {
    const int64_t format = it->get<int64_t>();
    VAE_RETURN_IF_ERROR(InputRules::CheckImageFormat(format < 0 || format > kMaxImageFormat ? -1 : int(format)));
    return static_cast<int>(format);
  }
  if (it->is_string()) {
    std::string name = absl::AsciiStrToLower(it->get<std::string>());
    if (absl::StartsWith(name, "image_format_")) name = name.substr(13);
    if (name == "unspecified") return 0;
    if (name == "tensor") return kImageFormatTensor;
    if (name == "png") return kImageFormatPng;
    if (name == "tensor_and_png") return kImageFormatTensorAndPng;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("format is ", it->dump(), "; expected \"tensor\", \"png\" or \"tensor_and_png\""));
}

// Nested JSON arrays of numbers -> a float32 tensor of their shape (rank <= kMaxTensorRank). Every array at one depth
// must have the length of the first; every leaf must be a number. Errors name the element, e.g. "z[2][5]".
class NestedArrays {
 public:
  static absl::StatusOr<at::Tensor> ToTensor(const json& value, const std::string& field) {
    std::vector<int64_t> shape;
    for (const json* p = &value; p->is_array(); p = &(*p)[0]) {
      shape.push_back(static_cast<int64_t>(p->size()));
      if (shape.size() > static_cast<size_t>(kMaxTensorRank)) {
        return absl::InvalidArgumentError(absl::StrCat(field, " is nested more than ", kMaxTensorRank, " deep"));
      }
      if (p->empty()) break;
    }
    if (shape.empty()) return WrongType(field, value, "nested arrays of numbers");
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    NestedArrays walk(field, shape);
    walk.data_.reserve(count);
    VAE_RETURN_IF_ERROR(walk.Fill(value, 0));
    return at::from_blob(walk.data_.data(), shape, at::kFloat).clone();
  }

 private:
  NestedArrays(const std::string& field, std::vector<int64_t> shape) : field_(field), shape_(std::move(shape)) {}

  std::string Path() const {
    std::string path = field_;
    for (size_t i : index_) absl::StrAppend(&path, "[", i, "]");
    return path;
  }

  absl::Status Fill(const json& node, size_t depth) {
    if (depth == shape_.size()) {
      if (!node.is_number()) return WrongType(Path(), node, "a number");
      data_.push_back(node.get<float>());
      return absl::OkStatus();
    }
    if (!node.is_array() || static_cast<int64_t>(node.size()) != shape_[depth]) {
      return absl::InvalidArgumentError(
          absl::StrCat(Path(), " is ", node.is_array() ? absl::StrCat("an array of ", node.size()) : node.type_name(),
                       "; expected an array of ", shape_[depth], " (as its first sibling: shape [",
                       absl::StrJoin(shape_, ","), "])"));
    }
    index_.push_back(0);
    for (const json& child : node) {
      VAE_RETURN_IF_ERROR(Fill(child, depth + 1));
      ++index_.back();
    }
    index_.pop_back();
    return absl::OkStatus();
  }

  const std::string& field_;
  const std::vector<int64_t> shape_;
  std::vector<size_t> index_;
  std::vector<float> data_;
};

// The request's `images`: a list of {"b64": PNG or JPEG} (the tensor codec decodes them under `rules`; "resize"
// resizes them to the model), or nested arrays [N][C][H][W] (or [N][H][W] for one channel) of values in [0, 1].
absl::StatusOr<at::Tensor> ImagesOf(const json& body, const Snapshot& model, const InputRules& rules) {
  const auto it = body.find("images");
  if (it == body.end()) {
    return absl::InvalidArgumentError(
        "images is missing; expected a list of {\"b64\": PNG/JPEG} or nested arrays [N][C][H][W]");
  }
  if (!it->is_array()) return WrongType("images", *it, "a list of images");
  if (it->empty()) return absl::InvalidArgumentError("images is an empty list; expected at least one image");
  VAE_ASSIGN_OR_RETURN(const bool resize, BoolField(body, "resize"));
  if ((*it)[0].is_object()) {
    google::protobuf::RepeatedPtrField<std::string> files;
    for (size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      const std::string field = absl::StrCat("images[", i, "]");
      if (!item.is_object() || item.size() != 1 || !item.contains("b64") || !item["b64"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(field, " is ", item.dump().substr(0, 40),
                                                       "; expected {\"b64\": \"<base64 PNG or JPEG>\"} ",
                                                       "like images[0]"));
      }
      absl::string_view text = item["b64"].get_ref<const std::string&>();
      // A data URL (what a browser's FileReader gives) carries the base64 after its first comma.
      if (absl::StartsWith(text, "data:") && text.find(",") != absl::string_view::npos) {
        text.remove_prefix(text.find(",") + 1);
      }
      if (!absl::Base64Unescape(text, files.Add())) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".b64 is not valid base64"));
      }
    }
    return ImagesFromEncoded(files, resize, model.options, rules,
                             EncodedImagesFields{"images", "\"resize\": true", "nested arrays [N][C][H][W]"});
  }
  VAE_ASSIGN_OR_RETURN(at::Tensor images, NestedArrays::ToTensor(*it, "images"));
  if (images.dim() == 3) return images.unsqueeze(1);
  if (images.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("images has shape [", absl::StrJoin(images.sizes(), ","), "]",
                                                   " (nested arrays); expected [N][C][H][W] or [N][H][W]"));
  }
  return images;
}

// A float tensor as nested JSON arrays, each value in its shortest form that reads back as the same float32.
void AppendNested(const float* data, const int64_t* shape, int64_t rank, std::string* out, size_t* at) {
  out->push_back('[');
  for (int64_t i = 0; i < shape[0]; ++i) {
    if (i > 0) out->push_back(',');
    if (rank > 1) {
      AppendNested(data, shape + 1, rank - 1, out, at);
    } else {
      const float v = data[(*at)++];
      if (!std::isfinite(v)) {
        out->append("null");
        continue;
      }
      char buffer[32];
      const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
      out->append(buffer, result.ptr);
    }
  }
  out->push_back(']');
}

std::string TensorText(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(at::kCPU, at::kFloat).contiguous();
  std::string out;
  out.reserve(t.numel() * 10 + 16);
  size_t at = 0;
  const std::vector<int64_t> shape = t.sizes().vec();
  if (shape.empty()) return "[]";
  AppendNested(t.data_ptr<float>(), shape.data(), static_cast<int64_t>(shape.size()), &out, &at);
  return out;
}

// A message in proto3's JSON mapping (field names as in the .proto, 64-bit integers as strings, zeros printed).
absl::StatusOr<std::string> ProtoJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) {
    return absl::InternalError(absl::StrCat(message.GetTypeName(), " could not be written as JSON"));
  }
  return out;
}

json VersionJson(const Snapshot& model) {
  const ModelVersion& v = model.version;
  return {{"name", v.model},
          {"version", v.version},
          {"generation", v.version},
          {"epochs_trained", v.epochs_trained},
          {"global_step", v.global_step}};
}

// An answer: `fields` (small JSON) plus `tensors` (already JSON text, spliced in without a JSON tree of every value),
// and "model": which version answered. Refused like gRPC's answers when over --max_message_mb.
absl::StatusOr<std::string> Answer(const Snapshot& model, json fields,
                                   const std::vector<std::pair<std::string, std::string>>& tensors,
                                   const InputRules& rules) {
  fields["model"] = VersionJson(model);
  std::string out = fields.dump();
  out.pop_back();  // the closing '}'
  for (const auto& [name, text] : tensors) absl::StrAppend(&out, ",\"", name, "\":", text);
  out.push_back('}');
  VAE_RETURN_IF_ERROR(rules.CheckResponseBytes("the JSON response is", static_cast<int64_t>(out.size())));
  return out;
}

// The images as `format` asks: "images" (nested arrays) and/or "png" (a list of {"b64": ...}).
absl::Status AddImages(const at::Tensor& images, int format, json* fields,
                       std::vector<std::pair<std::string, std::string>>* tensors) {
  if (InputRules::WantsTensor(format)) tensors->emplace_back("images", TensorText(images));
  if (InputRules::WantsPng(format)) {
    VAE_ASSIGN_OR_RETURN(std::vector<std::string> pngs, EncodePngs(images));
    json list = json::array();
    for (const std::string& png : pngs) list.push_back({{"b64", absl::Base64Escape(png)}});
    (*fields)["png"] = std::move(list);
  }
  return absl::OkStatus();
}

int64_t Rows(const at::Tensor& t) { return t.dim() > 0 ? t.size(0) : 0; }

json MetricsJson(const Metrics& m) { return {{"loss", m.loss}, {"recon", m.recon}, {"kl", m.kl}}; }

const char* KindName(Progress::Kind kind) {
  switch (kind) {
    case Progress::Kind::kStarted:
      return "STARTED";
    case Progress::Kind::kStep:
      return "STEP";
    case Progress::Kind::kEpochEnd:
      return "EPOCH_END";
    case Progress::Kind::kDone:
      return "DONE";
  }
  return "UNKNOWN";
}

json EventJson(const TrainEvent& e) {
  const Progress& p = e.progress;
  json j = {{"kind", KindName(p.kind)},
            {"epoch", p.epoch},
            {"epochs", p.epochs},
            {"step_in_epoch", p.step_in_epoch},
            {"steps_per_epoch", p.steps_per_epoch},
            {"global_step", p.global_step},
            {"images_per_sec", p.images_per_sec},
            {"elapsed_sec", p.elapsed_sec},
            {"eta_sec", e.eta_sec}};
  if (p.kind != Progress::Kind::kStarted) j["train"] = MetricsJson(p.train);
  if (p.has_test) j["test"] = MetricsJson(p.test);
  if (p.kind == Progress::Kind::kEpochEnd || p.kind == Progress::Kind::kDone) j["version"] = e.version.version;
  return j;
}

json StatusJson(const absl::Status& status) {
  return {{"code", absl::StatusCodeToString(status.code())}, {"message", std::string(status.message())}};
}

// An inference call: content type and JSON body, the model, then `run` (body, snapshot) -> answer.
template <typename Run>
httplib::Server::Handler Call(ServerCore* core, Run run) {
  return [core, run](const Request& req, Response& res) {
    int http = 0;
    absl::StatusOr<std::string> answer = [&]() -> absl::StatusOr<std::string> {
      VAE_ASSIGN_OR_RETURN(json body, ParseBody(req, &http));
      VAE_ASSIGN_OR_RETURN(const ModelRef ref, RefOf(req));
      VAE_ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> model, ResolveModel(core, ref));
      return run(body, model, req.matches[4].str());
    }();
    if (!answer.ok()) return WriteError(res, answer.status(), http);
    res.set_content(*answer, "application/json");
  };
}

// Answers 405 for a route that exists with other methods.
httplib::Server::Handler NotAllowed(const char* allowed) {
  return [allowed](const Request& req, Response& res) {
    res.set_header("Allow", allowed);
    WriteError(res,
               absl::UnimplementedError(
                   absl::StrCat("method ", req.method, " is not allowed on ", req.path, "; it takes ", allowed)),
               405);
  };
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Snapshot>> ResolveModel(ServerCore* core, const ModelRef& ref) {
  return core->Resolve(ref);
}

bool StartsTraining(absl::string_view method, absl::string_view path) {
  return method == "POST" && path == kTrainRoute;
}

HttpApi::HttpApi(ServerCore* core, int64_t max_body_bytes, std::string body_limit_flag)
    : core_(core), max_body_bytes_(max_body_bytes), body_limit_flag_(std::move(body_limit_flag)) {}

void HttpApi::Mount(HttpServer* http) const {
  using Method = HttpServer::Method;
  ServerCore* const core = core_;
  const InputRules& rules = core->inference().rules();
  const absl::Time no_deadline = absl::InfiniteFuture();

  // httplib's own refusals (no route, body too large, a request it cannot parse) come with an empty body: give them
  // the JSON error body. Answers the handlers wrote are left alone.
  const std::string too_large = absl::StrCat("the request body is over the limit of ", max_body_bytes_, " bytes (",
                                             body_limit_flag_, "); send fewer images");
  http->mux().set_error_handler(httplib::Server::HandlerWithResponse([too_large](const Request& req, Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    absl::Status status;
    switch (res.status) {
      case 404:
        status = absl::NotFoundError(absl::StrCat("no route ", req.method, " ", req.path,
                                                  "; the API is under /v1/models and /v1/train (README: HTTP API)"));
        break;
      case 413:
        status = absl::ResourceExhaustedError(too_large);
        break;
      case 400:
        status = absl::InvalidArgumentError("the HTTP request could not be parsed");
        break;
      default:
        status = absl::UnknownError(absl::StrCat("HTTP ", res.status));
    }
    const int code = res.status;
    HttpServer::SetError(status, res);
    res.status = code;
    return httplib::Server::HandlerResponse::Handled;
  }));

  http->Handle(
      Method::kPost, kCallRoute,
      Call(core,
           [core, &rules, no_deadline](const json& body, const std::shared_ptr<const Snapshot>& model,
                                       const std::string& op) -> absl::StatusOr<std::string> {
             const int64_t j = model->options.latent_dim;
             json fields;
             std::vector<std::pair<std::string, std::string>> tensors;
             if (op == "encode") {
               VAE_RETURN_IF_ERROR(CheckFields(body, {"images", "resize"}));
               VAE_ASSIGN_OR_RETURN(at::Tensor images, ImagesOf(body, *model, rules));
               // mu and sigma: 2 x J float32 per image, no image.
               VAE_RETURN_IF_ERROR(
                   rules.CheckOutputSize("encode", model->options, Rows(images), kImageFormatPng, 8 * j));
               VAE_ASSIGN_OR_RETURN(EncodeResult r, core->inference().Encode(*model, images, no_deadline));
               tensors = {{"mu", TensorText(r.mu)}, {"sigma", TensorText(r.sigma)}};
             } else if (op == "decode") {
               VAE_RETURN_IF_ERROR(CheckFields(body, {"z", "format"}));
               if (!body.contains("z"))
                 return absl::InvalidArgumentError("z is missing; expected nested arrays [N][J]");
               VAE_ASSIGN_OR_RETURN(at::Tensor z, NestedArrays::ToTensor(body["z"], "z"));
               VAE_ASSIGN_OR_RETURN(const int format, FormatField(body));
               VAE_RETURN_IF_ERROR(rules.CheckOutputSize("decode", model->options, Rows(z), format, 0));
               VAE_ASSIGN_OR_RETURN(DecodeResult r, core->inference().Decode(*model, z, no_deadline));
               VAE_RETURN_IF_ERROR(AddImages(r.images, format, &fields, &tensors));
             } else if (op == "sample") {
               VAE_RETURN_IF_ERROR(CheckFields(body, {"count", "seed", "temperature", "format"}));
               VAE_ASSIGN_OR_RETURN(const int64_t count, IntField(body, "count", 0));
               VAE_ASSIGN_OR_RETURN(const std::optional<uint64_t> seed, SeedField(body));
               VAE_ASSIGN_OR_RETURN(const double temperature, NumberField(body, "temperature", 0.0));
               VAE_ASSIGN_OR_RETURN(const int format, FormatField(body));
               VAE_RETURN_IF_ERROR(rules.CheckOutputSize("sample", model->options, count, format, 4 * j));
               VAE_ASSIGN_OR_RETURN(SampleResult r, core->inference().Sample(
                                                        *model, count, seed,
                                                        InputRules::TemperatureOrDefault(temperature), no_deadline));
               VAE_RETURN_IF_ERROR(AddImages(r.images, format, &fields, &tensors));
               tensors.emplace_back("z", TensorText(r.z));
               fields["seed"] = std::to_string(r.seed);
             } else {  // reconstruct
               VAE_RETURN_IF_ERROR(CheckFields(body, {"images", "resize", "format", "sample_z", "seed"}));
               VAE_ASSIGN_OR_RETURN(const int format, FormatField(body));
               VAE_ASSIGN_OR_RETURN(const bool sample_z, BoolField(body, "sample_z"));
               VAE_ASSIGN_OR_RETURN(const std::optional<uint64_t> seed, SeedField(body));
               VAE_ASSIGN_OR_RETURN(at::Tensor images, ImagesOf(body, *model, rules));
               // The images as asked, and each image's recon_nll and kl (float32).
               VAE_RETURN_IF_ERROR(rules.CheckOutputSize("reconstruct", model->options, Rows(images), format, 8));
               VAE_ASSIGN_OR_RETURN(ReconstructResult r, core->inference().Reconstruct(*model, images, sample_z,
                                                                                       seed.value_or(0), no_deadline));
               VAE_RETURN_IF_ERROR(AddImages(r.images, format, &fields, &tensors));
               tensors.emplace_back("recon_nll", TensorText(r.recon_nll));
               tensors.emplace_back("kl", TensorText(r.kl));
             }
             return Answer(*model, std::move(fields), tensors, rules);
           }));

  http->Handle(Method::kGet, kModelsRoute, [core](const Request&, Response& res) {
    // ListModels' answer, in proto3's JSON mapping: one mapping for both transports.
    absl::StatusOr<std::vector<ModelListing>> listings = core->repository().List("");
    if (!listings.ok()) return WriteError(res, listings.status());
    v1::ListModelsResponse list;
    for (const ModelListing& listing : *listings) ToProto(listing, list.add_models());
    list.set_default_model(core->repository().default_model());
    absl::StatusOr<std::string> text = ProtoJson(list);
    if (!text.ok()) return WriteError(res, text.status());
    res.set_content(*text, "application/json");
  });

  http->Handle(Method::kGet, kModelRoute, [core](const Request& req, Response& res) {
    absl::StatusOr<ModelRef> ref = RefOf(req);
    if (!ref.ok()) return WriteError(res, ref.status());
    auto model = ResolveModel(core, *ref);
    if (!model.ok()) return WriteError(res, model.status());
    // GetModelInfo's answer, in proto3's JSON mapping (64-bit integers as strings): one mapping for both transports.
    v1::ModelInfo info;
    ToProto(*core, **model, &info);
    absl::StatusOr<std::string> info_json = ProtoJson(info);
    if (!info_json.ok()) return WriteError(res, info_json.status());
    // TF Serving's model status shape, and the info.
    const int64_t version = (*model)->version.version;
    json answer = {{"model", VersionJson(**model)},
                   {"model_version_status", json::array({{{"version", std::to_string(version)},
                                                          {"state", "AVAILABLE"},
                                                          {"status", {{"error_code", "OK"}, {"error_message", ""}}}}})},
                   {"info", json::parse(*info_json)}};
    res.set_content(answer.dump(), "application/json");
  });

  http->Handle(Method::kGet, kTrainRoute, [core](const Request&, Response& res) {
    const std::shared_ptr<TrainingJob> job = core->training().Latest();
    if (job == nullptr) return res.set_content(R"({"job":null})", "application/json");
    const TrainingJob::View view = job->Observe();
    json history = json::array();
    for (const TrainEvent& e : view.history) history.push_back(EventJson(e));
    json answer = {{"job",
                    {{"id", job->id()},
                     {"dataset", job->dataset()},
                     {"running", !view.finished},
                     {"status", view.finished ? StatusJson(view.status) : json(nullptr)},
                     {"latest", view.history.empty() ? json(nullptr) : EventJson(view.history.back())},
                     {"history", std::move(history)}}}};
    res.set_content(answer.dump(), "application/json");
  });

  http->Handle(Method::kPost, kTrainRoute, [core](const Request& req, Response& res) {
    int http = 0;
    absl::StatusOr<std::string> answer = [&]() -> absl::StatusOr<std::string> {
      VAE_ASSIGN_OR_RETURN(json body, ParseBody(req, &http));
      VAE_RETURN_IF_ERROR(
          CheckFields(body, {"dataset", "epochs", "batch_size", "learning_rate", "seed", "resume", "preset",
                             "options_json", "log_every_steps", "max_train_images", "binarize"}));
      TrainSpec spec;  // its member initialisers are the defaults an absent field asks for, as in gRPC's Train
      VAE_ASSIGN_OR_RETURN(spec.dataset, StringField(body, "dataset"));
      VAE_ASSIGN_OR_RETURN(spec.epochs, IntField(body, "epochs", spec.epochs));
      VAE_ASSIGN_OR_RETURN(spec.batch_size, IntField(body, "batch_size", spec.batch_size));
      VAE_ASSIGN_OR_RETURN(spec.learning_rate, NumberField(body, "learning_rate", spec.learning_rate));
      VAE_ASSIGN_OR_RETURN(const std::optional<uint64_t> seed, SeedField(body));
      spec.seed = seed.value_or(spec.seed);
      VAE_ASSIGN_OR_RETURN(spec.resume, BoolField(body, "resume"));
      VAE_ASSIGN_OR_RETURN(spec.preset, StringField(body, "preset"));
      VAE_ASSIGN_OR_RETURN(spec.options_json, StringField(body, "options_json"));
      VAE_ASSIGN_OR_RETURN(spec.log_every_steps, IntField(body, "log_every_steps", spec.log_every_steps));
      VAE_ASSIGN_OR_RETURN(spec.max_train_images, IntField(body, "max_train_images", spec.max_train_images));
      VAE_ASSIGN_OR_RETURN(spec.binarize, BoolField(body, "binarize"));
      // Nobody reads the job's event queue; it stays bounded (STEPs merge) and GET /v1/train shows the progress.
      VAE_ASSIGN_OR_RETURN(std::shared_ptr<TrainingJob> job, core->training().Start(spec));
      return json{{"job", {{"id", job->id()}, {"dataset", job->dataset()}}}}.dump();
    }();
    if (!answer.ok()) return WriteError(res, answer.status(), http);
    res.status = 202;
    res.set_content(*answer, "application/json");
  });

  http->Handle(Method::kGet, "/", [](const Request&, Response& res) {
    // Everything the page needs is in it: nothing may load from elsewhere.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
                   "connect-src 'self'");
    res.set_content(std::string(web::kIndexHtml, web::kIndexHtmlSize), "text/html; charset=utf-8");
  });

  // The routes above with another method: 405, naming the methods they take.
  httplib::Server& mux = http->mux();
  for (const std::string& route : {kCallRoute}) {
    http->Handle(Method::kGet, route, NotAllowed("POST"));
    http->Handle(Method::kDelete, route, NotAllowed("POST"));
    mux.Put(route, NotAllowed("POST"));
  }
  for (const std::string& route : {std::string(kModelsRoute), kModelRoute, std::string("/")}) {
    http->Handle(Method::kPost, route, NotAllowed("GET"));
    http->Handle(Method::kDelete, route, NotAllowed("GET"));
    mux.Put(route, NotAllowed("GET"));
  }
  http->Handle(Method::kDelete, kTrainRoute, NotAllowed("GET, POST"));
  mux.Put(kTrainRoute, NotAllowed("GET, POST"));
}

}  // namespace vae::server
