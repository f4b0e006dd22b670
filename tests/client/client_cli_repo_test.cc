// vae-client's model-repository side (#13): --model/--version/--label on the inference commands, the versions stored
// with latent codes and decode's check of them, and the models / label / delete commands. Hermetic: the real
// vae::cli::Run against an in-process fake vae.v1.VaeService on a free localhost port, which answers from a small
// repository it holds in memory and records every request it receives. The fake stands in for the server only;
// tests against the real vae-server are in client_cli_test.cc.
#include <gmock/gmock.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/file_util.h"
#include "tests/client/run_cli.h"
#include "tests/common/test_util.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int kSide = 4;       // the fake models take 1 x 4 x 4 images
constexpr int kLatent = 2;     // and have 2 latent dimensions
constexpr int kMaxBatch = 64;  // requests of more rows are split by vae-client

std::string ReadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path, int64_t{1} << 30);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// A repository of two models: mnist with versions 1, 2, 3 (latest -> 3, stable -> 2; default label latest) and
// fashion with version 1 (latest, stable -> 1; default label stable). Encode answers mu[i] = (version, i) so that a
// test sees which version answered each row; Decode answers images filled with version / 10.
class FakeVaeService final : public v1::VaeService::Service {
 public:
  struct Model {
    std::vector<int64_t> versions;
    std::map<std::string, int64_t> labels;
    std::string default_label;
  };

  FakeVaeService() {
    models_["mnist"] = {{1, 2, 3}, {{"latest", 3}, {"stable", 2}}, "latest"};
    models_["fashion"] = {{1}, {{"latest", 1}, {"stable", 1}}, "stable"};
  }

  // Every request received, in order, as "Method spec" lines ("Encode mnist/2/").
  std::vector<std::string> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override {
    v1::ModelVersion version;
    if (grpc::Status s = Resolve("GetModelInfo", request->model_spec(), &version); !s.ok()) return s;
    response->set_preset(version.model());
    for (int64_t d : {1, kSide, kSide}) response->add_input_shape(d);
    response->set_latent_dim(kLatent);
    response->set_max_batch(kMaxBatch);
    *response->mutable_version() = version;
    absl::MutexLock lock(&mu_);
    const Model& m = models_[version.model()];
    for (const auto& [label, v] : m.labels) {
      if (v == version.version()) response->add_labels(label);
    }
    response->set_default_label(m.default_label);
    return grpc::Status::OK;
  }

  grpc::Status Encode(grpc::ServerContext*, const v1::EncodeRequest* request, v1::EncodeResponse* response) override {
    if (grpc::Status s = Resolve("Encode", request->model_spec(), response->mutable_version()); !s.ok()) return s;
    const int64_t n = request->images().tensor().shape(0);
    std::vector<float> mu, sigma;
    for (int64_t i = 0; i < n; ++i) {
      mu.insert(mu.end(), {static_cast<float>(response->version().version()), static_cast<float>(i)});
      sigma.insert(sigma.end(), {1.0f, 1.0f});
    }
    *response->mutable_mu() = Floats({n, kLatent}, mu);
    *response->mutable_sigma() = Floats({n, kLatent}, sigma);
    return grpc::Status::OK;
  }

  grpc::Status Decode(grpc::ServerContext*, const v1::DecodeRequest* request, v1::DecodeResponse* response) override {
    if (grpc::Status s = Resolve("Decode", request->model_spec(), response->mutable_version()); !s.ok()) return s;
    const int64_t n = request->z().shape(0);
    *response->mutable_images() =
        Floats({n, 1, kSide, kSide},
               std::vector<float>(n * kSide * kSide, static_cast<float>(response->version().version()) / 10));
    return grpc::Status::OK;
  }

  grpc::Status Sample(grpc::ServerContext*, const v1::SampleRequest* request, v1::SampleResponse* response) override {
    if (grpc::Status s = Resolve("Sample", request->model_spec(), response->mutable_version()); !s.ok()) return s;
    const int64_t n = request->count();
    *response->mutable_images() = Floats({n, 1, kSide, kSide}, std::vector<float>(n * kSide * kSide, 0.5f));
    *response->mutable_z() = Floats({n, kLatent}, std::vector<float>(n * kLatent, 0.0f));
    response->set_seed(request->seed());
    return grpc::Status::OK;
  }

  grpc::Status Reconstruct(grpc::ServerContext*, const v1::ReconstructRequest* request,
                           v1::ReconstructResponse* response) override {
    if (grpc::Status s = Resolve("Reconstruct", request->model_spec(), response->mutable_version()); !s.ok()) return s;
    const int64_t n = request->images().tensor().shape(0);
    *response->mutable_images() = Floats({n, 1, kSide, kSide}, std::vector<float>(n * kSide * kSide, 0.5f));
    for (int64_t i = 0; i < n; ++i) {
      response->add_recon_nll(1);
      response->add_kl(1);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(absl::StrCat("ListModels ", request->name()));
    response->set_default_model("mnist");
    for (const auto& [name, m] : models_) {
      if (!request->name().empty() && request->name() != name) continue;
      v1::ModelEntry* entry = response->add_models();
      entry->set_name(name);
      entry->set_preset(name);
      entry->set_options_json("{\"latent_dim\":2}");
      entry->set_parameter_count(1234);
      entry->set_default_label(m.default_label);
      entry->set_training(name == "fashion");
      for (const auto& [label, v] : m.labels) (*entry->mutable_labels())[label] = v;
      for (int64_t v : m.versions) {
        v1::VersionInfo* info = entry->add_versions();
        info->set_version(v);
        info->set_epochs_trained(v * 10);
        info->set_global_step(v * 4690);
        if (v != 2) {  // version 2 has no test metrics, to show "-"
          info->set_has_test_metrics(true);
          info->mutable_test()->set_loss(110.0 - v - 0.125);
        }
        info->set_create_time_unix_ms(1764572400000 + v * 3600 * 1000);  // 2025-12-01 07:00 UTC + v hours
        for (const auto& [label, lv] : m.labels) {
          if (lv == v) info->add_labels(label);
        }
        info->set_loaded(v == 3);
        info->set_size_bytes(v == 1 ? 812 : 2634000 * v);
      }
    }
    if (response->models().empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model " + request->name());
    return grpc::Status::OK;
  }

  grpc::Status SetLabel(grpc::ServerContext*, const v1::SetLabelRequest* request,
                        v1::SetLabelResponse* response) override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(absl::StrCat("SetLabel ", request->model(), "/", request->label(), "/", request->version(),
                                  request->make_default() ? " default" : ""));
    Model& m = models_[request->model()];
    if (std::find(m.versions.begin(), m.versions.end(), request->version()) == m.versions.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("model \"", request->model(), "\" has no version ", request->version()));
    }
    response->set_previous_version(m.labels.count(request->label()) ? m.labels[request->label()] : 0);
    m.labels[request->label()] = request->version();
    return grpc::Status::OK;
  }

  grpc::Status DeleteVersion(grpc::ServerContext*, const v1::DeleteVersionRequest* request,
                             v1::DeleteVersionResponse* response) override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(
        absl::StrCat("DeleteVersion ", request->model(), "/", request->version(), request->force() ? " force" : ""));
    if (!request->force() && request->version() == 2) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "version 2 of \"mnist\" is labelled stable");
    }
    if (request->force() && request->version() == 2) response->add_removed_labels("stable");
    return grpc::Status::OK;
  }

  grpc::Status DeleteModel(grpc::ServerContext*, const v1::DeleteModelRequest* request,
                           v1::DeleteModelResponse* response) override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(absl::StrCat("DeleteModel ", request->model(), request->force() ? " force" : ""));
    response->set_versions_deleted(static_cast<int64_t>(models_[request->model()].versions.size()));
    return grpc::Status::OK;
  }

  grpc::Status Train(grpc::ServerContext*, const v1::TrainRequest* request,
                     grpc::ServerWriter<v1::TrainProgress>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      calls_.push_back(absl::StrCat("Train ", request->model(), " promote ", request->promote_label()));
    }
    v1::TrainProgress p;
    p.set_kind(v1::TrainProgress::DONE);
    p.set_job_id("job-1");
    p.set_epoch(1);
    p.set_epochs(1);
    p.mutable_version()->set_model(request->model());
    p.mutable_version()->set_version(4);
    p.set_label_moved(request->promote_label() == "stable");
    writer->Write(p);
    return grpc::Status::OK;
  }

 private:
  static v1::Tensor Floats(std::vector<int64_t> shape, const std::vector<float>& values) {
    v1::Tensor t;
    for (int64_t d : shape) t.add_shape(d);
    t.set_dtype(v1::DATA_TYPE_FLOAT32);
    t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
    return t;
  }

  // The version a spec names, as the real server resolves it; records the call.
  grpc::Status Resolve(const std::string& method, const v1::ModelSpec& spec, v1::ModelVersion* out) {
    absl::MutexLock lock(&mu_);
    calls_.push_back(absl::StrCat(method, " ", spec.name(), "/", spec.version(), "/", spec.label()));
    const std::string name = spec.name().empty() ? "mnist" : spec.name();
    auto model = models_.find(name);
    if (model == models_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model \"" + name + "\"");
    int64_t version = spec.version();
    if (version == 0) {
      const std::string label = spec.label().empty() ? model->second.default_label : spec.label();
      auto it = model->second.labels.find(label);
      if (it == model->second.labels.end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "model \"" + name + "\" has no label \"" + label + "\"");
      }
      version = it->second;
    }
    const std::vector<int64_t>& versions = model->second.versions;
    if (std::find(versions.begin(), versions.end(), version) == versions.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("model \"", name, "\" has no version ", version));
    }
    out->set_model(name);
    out->set_version(version);
    out->set_generation(version);
    out->set_epochs_trained(version * 10);
    out->set_global_step(version * 4690);
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

class CliRepoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::string ServerFlag() const { return "--server=127.0.0.1:" + std::to_string(port_); }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  CliRun Run(std::vector<std::string> args) {
    args.push_back(ServerFlag());
    return RunInProcess(args);
  }

  // An idx file of `n` 4x4 images.
  std::string Images(int n) {
    std::string bytes = {0, 0, 8, 3};
    for (uint32_t d : {static_cast<uint32_t>(n), uint32_t{kSide}, uint32_t{kSide}}) {
      for (int shift : {24, 16, 8, 0}) bytes += static_cast<char>((d >> shift) & 0xff);
    }
    bytes.append(static_cast<size_t>(n) * kSide * kSide, '\x40');
    const std::string path = dir_.file("images-idx3-ubyte");
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // Codes of `version` of mnist, as encode wrote them.
  std::string EncodedBy(int version, const std::string& name) {
    const CliRun r = Run({"encode", Images(3), "--output=" + dir_.file(name), "--version=" + std::to_string(version)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return dir_.file(name);
  }

  FakeVaeService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  TempDir dir_;
};

TEST_F(CliRepoTest, EncodePinsTheVersionItResolvedForEveryChunkAndStoresIt) {
  // 100 images at --max_batch 64: two Encode requests, both pinned to the version the label named at the start.
  const CliRun r = Run({"encode", Images(100), "--limit=0", "--label=stable", "--output=" + dir_.file("z.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("GetModelInfo /0/stable", "Encode mnist/2/", "Encode mnist/2/"));
  EXPECT_THAT(r.out, HasSubstr(", model mnist version 2 (20 epochs, 9380 steps)\n"));
  const nlohmann::json j = nlohmann::json::parse(ReadFile(dir_.file("z.json")));
  EXPECT_EQ(j["version"]["model"], "mnist");
  EXPECT_EQ(j["version"]["version"], 2);
  ASSERT_EQ(j["mu"].size(), 100u);
  EXPECT_EQ(j["mu"][99][0], 2.0);  // the fake's mu[i] = (version, row in its request)
  EXPECT_EQ(j["mu"][99][1], 35.0);
}

TEST_F(CliRepoTest, EncodeStoresTheVersionInEveryFormat) {
  ASSERT_EQ(Run({"encode", Images(2), "--model=fashion", "--output=" + dir_.file("z.csv")}).exit_code, 0);
  const CliRun npy = Run({"encode", Images(2), "--version", "1", "--output=" + dir_.file("z.npy")});
  ASSERT_EQ(npy.exit_code, 0) << npy.err;
  EXPECT_THAT(npy.out, StartsWith("wrote " + dir_.file("z.npy") + ", " + dir_.file("z_sigma.npy") + " and " +
                                  dir_.file("z_version.json") + ": mu and sigma of 2 images"));
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("GetModelInfo fashion/0/", "Encode fashion/1/",
                                                       "GetModelInfo /1/", "Encode mnist/1/"));
  const std::vector<std::string> csv = absl::StrSplit(ReadFile(dir_.file("z.csv")), '\n', absl::SkipEmpty());
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[0], "input,mu_0,mu_1,sigma_0,sigma_1,model,version");
  EXPECT_THAT(csv[2], ::testing::EndsWith(",1,1,1,1,fashion,1"));
  const nlohmann::json sidecar = nlohmann::json::parse(ReadFile(dir_.file("z_version.json")));
  EXPECT_EQ(sidecar["version"]["model"], "mnist");
  EXPECT_EQ(sidecar["version"]["version"], 1);
  EXPECT_EQ(sidecar["inputs"].size(), 2u);
}

TEST_F(CliRepoTest, DecodeUsesTheVersionTheCodesName) {
  for (const char* name : {"z.json", "z.csv", "z.npy"}) {
    SCOPED_TRACE(name);
    const std::string codes = EncodedBy(1, name);
    const size_t before = service_.calls().size();
    const CliRun r = Run({"decode", "--input=" + codes, "--output=" + dir_.file("d.png")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_THAT(r.out,
                ::testing::EndsWith(" decoded from " + codes + ", model mnist version 1 (10 epochs, 4690 steps)\n"));
    const std::vector<std::string> calls = service_.calls();
    EXPECT_THAT(std::vector<std::string>(calls.begin() + before, calls.end()),
                ::testing::ElementsAre("GetModelInfo mnist/1/", "Decode mnist/1/"));
  }
}

TEST_F(CliRepoTest, DecodeRefusesAnotherVersionThanTheCodesNameUnlessForced) {
  const std::string codes = EncodedBy(1, "z.json");
  const size_t before = service_.calls().size();
  // The default label (latest) is version 3: refused before any Decode, and nothing is written.
  const CliRun refused = Run({"decode", "--input=" + codes, "--output=" + dir_.file("d.png"), "--label=latest"});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_EQ(refused.err, "vae-client decode: " + codes +
                             " holds codes of mnist version 1; --label=latest is mnist version 3: codes of different "
                             "versions live in different latent spaces (drop --model, --version and --label to decode "
                             "with the codes' own version, or pass --force)\n");
  EXPECT_EQ(refused.out, "");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("d.png")));
  std::vector<std::string> calls = service_.calls();
  EXPECT_THAT(std::vector<std::string>(calls.begin() + before, calls.end()),
              ::testing::ElementsAre("GetModelInfo mnist/0/latest"));

  const CliRun other_version = Run({"decode", "--input=" + codes, "--output=" + dir_.file("d.png"), "--version=2"});
  EXPECT_EQ(other_version.exit_code, 2);
  EXPECT_THAT(other_version.err, HasSubstr(" holds codes of mnist version 1; --version=2 is mnist version 2: "));

  // Forced: decoded with the version the flags name, with a note.
  const CliRun forced =
      Run({"decode", "--input=" + codes, "--output=" + dir_.file("d.png"), "--label=latest", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(forced.err, "note: " + codes +
                            " holds codes of mnist version 1; --label=latest is mnist version 3; decoding with it "
                            "anyway (--force)\n");
  calls = service_.calls();
  EXPECT_EQ(calls.back(), "Decode mnist/3/");

  // The flags naming the codes' own version are fine.
  EXPECT_EQ(Run({"decode", "--input=" + codes, "--output=" + dir_.file("e.png"), "--version=1"}).exit_code, 0);
}

TEST_F(CliRepoTest, DecodeFlagsWithoutAModelNameAVersionOfTheCodesModel) {
  // Codes of fashion version 1 (its stable); the default model is mnist, whose stable is version 2. --label=stable
  // means fashion's stable: the codes' own version, so they decode.
  const CliRun encoded = Run({"encode", Images(2), "--model=fashion", "--output=" + dir_.file("f.json")});
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  const CliRun r =
      Run({"decode", "--input=" + dir_.file("f.json"), "--output=" + dir_.file("d.png"), "--label=stable"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(service_.calls().back(), "Decode fashion/1/");
}

TEST_F(CliRepoTest, DecodeOfCodesWithoutAVersionUsesTheFlagsOrTheDefault) {
  std::ofstream(dir_.file("z.json")) << R"({"z": [[0.5, 1.5]]})";
  const CliRun r = Run({"decode", "--input=" + dir_.file("z.json"), "--output=" + dir_.file("d.png")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Resolved once (the default label, latest = 3), then pinned.
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("GetModelInfo /0/", "Decode mnist/3/"));
}

TEST_F(CliRepoTest, AnUnknownVersionIsTheServersNotFound) {
  const CliRun r = Run({"sample", "--version=9", "--output=" + dir_.file("s.png")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "vae-server at " + Address() + ": NOT_FOUND: model \"mnist\" has no version 9\n");
}

TEST_F(CliRepoTest, SampleReconstructAndInfoSendTheSpec) {
  ASSERT_EQ(
      Run({"sample", "--count=2", "--model=fashion", "--label=stable", "--output=" + dir_.file("s.png")}).exit_code, 0);
  ASSERT_EQ(Run({"reconstruct", Images(2), "--version=2", "--output=" + dir_.file("r.png")}).exit_code, 0);
  const CliRun info = Run({"info", "--label=stable"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("Sample fashion/0/stable", "GetModelInfo /2/",
                                                       "Reconstruct mnist/2/", "GetModelInfo /0/stable"));
  EXPECT_THAT(info.out, HasSubstr("model          mnist\n"));
  EXPECT_THAT(info.out, HasSubstr("weights        mnist version 2 (20 epochs, 9380 steps)\n"));
  EXPECT_THAT(info.out, HasSubstr("labels         stable\n"));
  EXPECT_THAT(info.out, HasSubstr("default label  latest\n"));
  const nlohmann::json j = nlohmann::json::parse(Run({"info", "--json", "--version=3"}).out);
  EXPECT_EQ(j["model"], "mnist");
  EXPECT_EQ(j["version"]["version"], 3);
  EXPECT_EQ(j["labels"], nlohmann::json::array({"latest"}));
  EXPECT_EQ(j["default_label"], "latest");
}

TEST_F(CliRepoTest, ModelsPrintsTheRepositoryAsAnAlignedTable) {
  const CliRun r = Run({"models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "MODEL               VERSION  LABELS          EPOCHS  TEST LOSS  LOADED    SIZE  CREATED (UTC)\n"
            "fashion (training)        1  latest,stable*      10     108.88  no       812 B  2025-12-01 08:00:00\n"
            "mnist                     1  -                   10     108.88  no       812 B  2025-12-01 08:00:00\n"
            "mnist                     2  stable              20          -  no      5.3 MB  2025-12-01 09:00:00\n"
            "mnist                     3  latest*             30     106.88  yes     7.9 MB  2025-12-01 10:00:00\n"
            "* the model's default label (requests without --version or --label use it); default model: mnist\n");
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("ListModels "));
}

TEST_F(CliRepoTest, ModelsJsonHoldsEveryField) {
  const CliRun r = Run({"models", "mnist", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("ListModels mnist"));
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["default_model"], "mnist");
  ASSERT_EQ(j["models"].size(), 1u);
  const nlohmann::json& m = j["models"][0];
  EXPECT_EQ(m["name"], "mnist");
  EXPECT_EQ(m["default_label"], "latest");
  EXPECT_EQ(m["labels"]["stable"], 2);
  EXPECT_EQ(m["options"]["latent_dim"], 2);
  EXPECT_EQ(m["training"], false);
  ASSERT_EQ(m["versions"].size(), 3u);
  const nlohmann::json& v3 = m["versions"][2];
  EXPECT_EQ(v3["version"], 3);
  EXPECT_EQ(v3["epochs_trained"], 30);
  EXPECT_EQ(v3["global_step"], 14070);
  EXPECT_EQ(v3["test"]["loss"], 106.875);
  EXPECT_EQ(v3["train"], nullptr);
  EXPECT_EQ(v3["created"], "2025-12-01T10:00:00+00:00");
  EXPECT_EQ(v3["created_unix_ms"], 1764583200000);
  EXPECT_EQ(v3["labels"], nlohmann::json::array({"latest"}));
  EXPECT_EQ(v3["loaded"], true);
  EXPECT_EQ(v3["size_bytes"], 7902000);
  EXPECT_EQ(m["versions"][1]["test"], nullptr);
  // A missing model is the server's NOT_FOUND.
  const CliRun missing = Run({"models", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "vae-server at " + Address() + ": NOT_FOUND: no model nope\n");
}

TEST_F(CliRepoTest, LabelMovesALabelAndSaysWhereItWas) {
  const CliRun moved = Run({"label", "mnist", "stable", "3", "--default"});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_EQ(moved.out, "mnist: label stable -> version 3 (was version 2); stable is now the default label\n");
  const CliRun fresh = Run({"label", "mnist", "canary", "1"});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_EQ(fresh.out, "mnist: label canary -> version 1 (new)\n");
  const CliRun missing = Run({"label", "mnist", "stable", "9"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "vae-server at " + Address() + ": NOT_FOUND: model \"mnist\" has no version 9\n");
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("SetLabel mnist/stable/3 default", "SetLabel mnist/canary/1",
                                                       "SetLabel mnist/stable/9"));
}

TEST_F(CliRepoTest, DeleteVersionAndModel) {
  const CliRun labelled = Run({"delete", "mnist", "2"});
  EXPECT_EQ(labelled.exit_code, 1);
  EXPECT_EQ(labelled.err,
            "vae-server at " + Address() + ": FAILED_PRECONDITION: version 2 of \"mnist\" is labelled stable\n");
  const CliRun forced = Run({"delete", "mnist", "2", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(forced.out, "deleted mnist version 2 and its labels stable\n");
  const CliRun plain = Run({"delete", "mnist", "1"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, "deleted mnist version 1\n");
  const CliRun model = Run({"delete", "fashion"});
  ASSERT_EQ(model.exit_code, 0) << model.err;
  EXPECT_EQ(model.out, "deleted model fashion (1 version)\n");
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("DeleteVersion mnist/2", "DeleteVersion mnist/2 force",
                                                       "DeleteVersion mnist/1", "DeleteModel fashion"));
}

TEST_F(CliRepoTest, TrainSendsModelAndPromoteLabelAndSaysWhetherTheLabelMoved) {
  const CliRun moved = Run({"train", "--model=fashion", "--promote_label=stable", "--dataset=fashion-mnist"});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_THAT(moved.out, ::testing::EndsWith("label stable now names fashion version 4\n"));
  const CliRun kept = Run({"train", "--model=fashion", "--promote_label=canary", "--dataset=fashion-mnist"});
  ASSERT_EQ(kept.exit_code, 0) << kept.err;
  EXPECT_THAT(kept.out, ::testing::EndsWith(
                            "label canary not moved: fashion version 4 does not beat the test loss of the version it "
                            "names\n"));
  EXPECT_THAT(service_.calls(), ::testing::ElementsAre("GetModelInfo /0/", "Train fashion promote stable",
                                                       "GetModelInfo /0/", "Train fashion promote canary"));
}

// --- usage errors: before any call ----------------------------------------------------------------------------------

TEST(CliRepoUsageTest, ConflictingOrMalformedArgumentsAreUsageErrors) {
  ExpectUsageErrors({
      {{"sample", "--version=2", "--label=stable", "--output=s.png"},
       "vae-client sample: --version=2 and --label=stable: give one of them (see vae-client sample --help)\n"},
      {{"info", "--version=-1"},
       "vae-client info: --version=-1: expected a version number >= 1 (see vae-client info --help)\n"},
      {{"encode", "a.png", "--version=x", "--output=z.json"},
       "vae-client encode: --version=x: Illegal value 'x' specified for flag 'version' (see vae-client encode "
       "--help)\n"},
      {{"label", "mnist", "stable"},
       "vae-client label: expected MODEL LABEL VERSION, got 2 arguments (see vae-client label --help)\n"},
      {{"label", "mnist", "stable", "two"},
       "vae-client label: VERSION \"two\": expected a version number >= 1 (see vae-client label --help)\n"},
      {{"delete"}, "vae-client delete: expected MODEL [VERSION], got 0 arguments (see vae-client delete --help)\n"},
      {{"delete", "mnist", "0"},
       "vae-client delete: VERSION \"0\": expected a version number >= 1 (see vae-client delete --help)\n"},
      {{"models", "a", "b"}, "vae-client models: unexpected argument \"b\" (see vae-client models --help)\n"},
      {{"health", "--model=mnist"},
       "vae-client health: --model does not apply to health (see vae-client health --help)\n"},
      {{"label", "mnist", "stable", "1", "--force"},
       "vae-client label: --force does not apply to label (see vae-client label --help)\n"},
  });
}

TEST(CliRepoUsageTest, VersionAloneStillPrintsTheProgramsVersion) {
  const CliRun r = RunInProcess({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "vae-client 0.1.0\n");
}

TEST(CliRepoUsageTest, HelpListsTheRepositoryCommandsAndFlags) {
  const CliRun main_help = RunInProcess({"--help"});
  for (const char* command : {"models", "label", "delete"}) {
    EXPECT_THAT(main_help.out, HasSubstr(std::string("\n  ") + command + " ")) << command;
  }
  EXPECT_THAT(main_help.out, HasSubstr("Store the version with any latent code you keep"));
  const std::map<std::string, std::vector<std::string>> flags = {
      {"info", {"model", "version", "label", "json"}},
      {"encode", {"model", "version", "label"}},
      {"decode", {"model", "version", "label", "force"}},
      {"sample", {"model", "version", "label"}},
      {"reconstruct", {"model", "version", "label"}},
      {"train", {"model", "promote_label"}},
      {"models", {"json"}},
      {"label", {"default"}},
      {"delete", {"force"}},
  };
  for (const auto& [command, names] : flags) {
    const CliRun help = RunInProcess({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command;
    for (const std::string& name : names) EXPECT_THAT(help.out, HasSubstr("\n  --" + name + " ")) << command;
  }
}

}  // namespace
}  // namespace vae::testing
