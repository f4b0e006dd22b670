// Bearer-token authentication (server/auth.h): the pure pieces (constant-time compare, token loading, validation),
// and VaeServer in-process with a full and a read-only token, called through a real channel: every VaeService method
// refuses a missing or wrong token, health and reflection stay open, the read-only token cannot Train, and the log of
// a refusal never holds the token.
#include <ATen/ATen.h>
#include <glog/logging.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/auth.h"
#include "server/server.h"
#include "server/tensor_codec.h"
#include "tests/common/test_util.h"
#include "tests/server/grpc_probe.h"
#include "tests/server/in_process_server.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::vae::testing::TempDir;

constexpr char kToken[] = "full-7f3a9c0e21b54d68";
constexpr char kReadonlyToken[] = "read-only-5be19d0c73aa";

TEST(ConstantTimeEqualsTest, TrueOnlyForTheSameBytes) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abd", "abc"));   // last byte differs
  EXPECT_FALSE(ConstantTimeEquals("xbc", "abc"));   // first byte differs
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));    // a prefix of the secret
  EXPECT_FALSE(ConstantTimeEquals("abcd", "abc"));  // the secret as a prefix
  EXPECT_FALSE(ConstantTimeEquals("", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  // A presented byte of 0 past the secret's end must not pass for "nothing there".
  EXPECT_FALSE(ConstantTimeEquals(absl::string_view("abc\0", 4), "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", absl::string_view("abc\0", 4)));
  // Bytes above 0x7f compare as bytes.
  EXPECT_TRUE(ConstantTimeEquals("\xff\x80", "\xff\x80"));
  EXPECT_FALSE(ConstantTimeEquals("\xff\x80", "\xff\x81"));
}

class EnvVar {  // sets (or unsets, for nullptr) an environment variable for the scope
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~EnvVar() {
    if (old_.has_value()) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(LoadTokenTest, ReadsTheFileLessItsTrailingNewline) {
  TempDir dir;
  std::ofstream(dir.file("unix")) << "tok-1\n";
  std::ofstream(dir.file("dos")) << "tok-2\r\n";
  std::ofstream(dir.file("bare")) << "tok-3";
  EnvVar env("VAE_TEST_TOKEN", "from-env");
  EXPECT_EQ(LoadToken(dir.file("unix"), "--auth_token_file", "VAE_TEST_TOKEN").value(), "tok-1");
  EXPECT_EQ(LoadToken(dir.file("dos"), "--auth_token_file", "VAE_TEST_TOKEN").value(), "tok-2");
  EXPECT_EQ(LoadToken(dir.file("bare"), "--auth_token_file", "VAE_TEST_TOKEN").value(), "tok-3");
}

TEST(LoadTokenTest, WithoutAFileTheEnvironmentOrNothing) {
  {
    EnvVar env("VAE_TEST_TOKEN", "from-env");
    EXPECT_EQ(LoadToken("", "--auth_token_file", "VAE_TEST_TOKEN").value(), "from-env");
  }
  EnvVar env("VAE_TEST_TOKEN", nullptr);
  EXPECT_EQ(LoadToken("", "--auth_token_file", "VAE_TEST_TOKEN").value(), "");
}

TEST(LoadTokenTest, AnEmptyMissingOrMultiLineFileIsAnErrorNamingTheFlag) {
  TempDir dir;
  std::ofstream(dir.file("empty")) << "";
  std::ofstream(dir.file("newline")) << "\n";
  std::ofstream(dir.file("two-lines")) << "secret-a\nsecret-b\n";
  for (const char* name : {"empty", "newline"}) {
    auto token = LoadToken(dir.file(name), "--auth_token_file", "VAE_TEST_TOKEN");
    EXPECT_EQ(token.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(token.status().message(), "--auth_token_file: " + dir.file(name) + " is empty; expected a token");
  }
  auto two = LoadToken(dir.file("two-lines"), "--auth_readonly_token_file", "VAE_TEST_TOKEN");
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("--auth_readonly_token_file: "));
  EXPECT_THAT(two.status().message(), HasSubstr("several lines"));
  EXPECT_THAT(two.status().message(), Not(HasSubstr("secret")));  // the path only, never the content
  auto missing = LoadToken(dir.file("nope"), "--auth_token_file", "VAE_TEST_TOKEN");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("--auth_token_file: no such file: " + dir.file("nope")));
}

TEST(ValidateTokensTest, RefusesPairsThatCannotBeServed) {
  EXPECT_TRUE(ValidateTokens("", "").ok());
  EXPECT_TRUE(ValidateTokens("a", "").ok());
  EXPECT_TRUE(ValidateTokens("a", "b").ok());
  const absl::Status readonly_alone = ValidateTokens("", "b");
  EXPECT_EQ(readonly_alone.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(readonly_alone.message(), HasSubstr("read-only token needs the full token"));
  EXPECT_THAT(ValidateTokens("same", "same").message(), HasSubstr("the same as the full token"));
  EXPECT_THAT(ValidateTokens("has space", "").message(), HasSubstr("$VAE_AUTH_TOKEN) holds characters"));
  EXPECT_THAT(ValidateTokens("a", "tab\t").message(), HasSubstr("$VAE_AUTH_READONLY_TOKEN) holds characters"));
}

TEST(VaeServerAuthOptionsTest, CreateRefusesAReadOnlyTokenAlone) {
  ServerOptions options;
  options.auth_readonly_token = "r";
  auto server = VaeServer::Create(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("auth: a read-only token needs the full token"));
}

TEST(AuthenticatorTest, DisabledAdmitsEverything) {
  const Authenticator off("", "");
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.CheckHeader(nullptr, "Train", Authenticator::Access::kTrain).ok());
}

TEST(AuthenticatorTest, TheSchemeIsCaseInsensitiveAndTheTokenIsNot) {
  const Authenticator auth(kToken, kReadonlyToken);
  auto check = [&](const std::string& header) {
    const absl::string_view value = header;
    return auth.CheckHeader(&value, "Encode", Authenticator::Access::kRead).code();
  };
  EXPECT_EQ(check(std::string("Bearer ") + kToken), absl::StatusCode::kOk);
  EXPECT_EQ(check(std::string("bearer ") + kToken), absl::StatusCode::kOk);
  EXPECT_EQ(check(std::string("BEARER  ") + kToken), absl::StatusCode::kOk);
  EXPECT_EQ(check(std::string("Bearer ") + kReadonlyToken), absl::StatusCode::kOk);
  std::string upper = kToken;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(check("Bearer " + upper), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(kToken), absl::StatusCode::kUnauthenticated);  // no scheme
  EXPECT_EQ(check(std::string("Basic ") + kToken), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check("Bearer "), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(""), absl::StatusCode::kUnauthenticated);
}

// Records every glog message (for the test that refusals are logged without the token).
class LogCapture : public google::LogSink {
 public:
  LogCapture() { google::AddLogSink(this); }
  ~LogCapture() override { google::RemoveLogSink(this); }
  using google::LogSink::send;
  void send(google::LogSeverity, const char*, const char*, int, const google::LogMessageTime&, const char* message,
            size_t message_len) override {
    absl::MutexLock lock(&mu_);
    lines_.emplace_back(message, message_len);
  }
  std::vector<std::string> lines() const {
    absl::MutexLock lock(&mu_);
    return lines_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_;
};

class AuthServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env_ = vae::testing::InProcessServer::Start([](ServerOptions& options) {
             options.auth_token = kToken;
             options.auth_readonly_token = kReadonlyToken;
           }).release();
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(env_, nullptr);
    stub_ = v1::VaeService::NewStub(env_->channel);
  }

  // A context carrying "authorization: <header>" (none when empty).
  static std::unique_ptr<grpc::ClientContext> Context(const std::string& header) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!header.empty()) context->AddMetadata("authorization", header);
    return context;
  }
  static std::string Bearer(const std::string& token) { return "Bearer " + token; }

  // Calls each unary method and the Train stream with `header`; returns their statuses in the order of kMethods.
  // Train asks for epochs = -1: a call that passes authentication then fails validation (INVALID_ARGUMENT) instead
  // of starting a job; SetLabel, DeleteVersion and DeleteModel name a model that does not exist (NOT_FOUND once
  // admitted), so nothing changes.
  std::vector<grpc::Status> CallEveryMethod(const std::string& header) {
    std::vector<grpc::Status> statuses;
    v1::ImageBatch images;
    TensorToProto(at::zeros({1, 1, 28, 28}, at::kByte), images.mutable_tensor());
    {
      v1::EncodeRequest request;
      *request.mutable_images() = images;
      v1::EncodeResponse response;
      statuses.push_back(stub_->Encode(Context(header).get(), request, &response));
    }
    {
      v1::DecodeRequest request;
      TensorToProto(at::zeros({1, 20}), request.mutable_z());
      v1::DecodeResponse response;
      statuses.push_back(stub_->Decode(Context(header).get(), request, &response));
    }
    {
      v1::SampleRequest request;
      request.set_count(1);
      request.set_seed(1);
      request.set_temperature(1.0f);
      v1::SampleResponse response;
      statuses.push_back(stub_->Sample(Context(header).get(), request, &response));
    }
    {
      v1::ReconstructRequest request;
      *request.mutable_images() = images;
      v1::ReconstructResponse response;
      statuses.push_back(stub_->Reconstruct(Context(header).get(), request, &response));
    }
    {
      v1::ModelInfo response;
      statuses.push_back(stub_->GetModelInfo(Context(header).get(), v1::GetModelInfoRequest(), &response));
    }
    {
      v1::ListModelsResponse response;
      statuses.push_back(stub_->ListModels(Context(header).get(), v1::ListModelsRequest(), &response));
    }
    {
      v1::SetLabelRequest request;
      request.set_model("nosuch");
      request.set_label("stable");
      request.set_version(1);
      v1::SetLabelResponse response;
      statuses.push_back(stub_->SetLabel(Context(header).get(), request, &response));
    }
    {
      v1::DeleteVersionRequest request;
      request.set_model("nosuch");
      request.set_version(1);
      v1::DeleteVersionResponse response;
      statuses.push_back(stub_->DeleteVersion(Context(header).get(), request, &response));
    }
    {
      v1::DeleteModelRequest request;
      request.set_model("nosuch");
      v1::DeleteModelResponse response;
      statuses.push_back(stub_->DeleteModel(Context(header).get(), request, &response));
    }
    {
      v1::TrainRequest request;
      request.set_dataset("mnist");
      request.set_epochs(-1);
      auto context = Context(header);
      auto reader = stub_->Train(context.get(), request);
      v1::TrainProgress progress;
      EXPECT_FALSE(reader->Read(&progress)) << "Train streamed a message";
      statuses.push_back(reader->Finish());
    }
    return statuses;
  }

  static constexpr const char* kMethods[] = {"Encode",   "Decode",        "Sample",      "Reconstruct", "GetModelInfo",
                                             "ListModels", "SetLabel", "DeleteVersion", "DeleteModel", "Train"};
  static constexpr size_t kReadMethods = 6;  // the first six; the others change the repository or train

  static vae::testing::InProcessServer* env_;
  std::unique_ptr<v1::VaeService::Stub> stub_;
};
vae::testing::InProcessServer* AuthServiceTest::env_ = nullptr;

TEST_F(AuthServiceTest, EveryMethodRefusesACallWithoutAToken) {
  const std::vector<grpc::Status> statuses = CallEveryMethod("");
  ASSERT_EQ(statuses.size(), 10u);
  for (size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::UNAUTHENTICATED) << kMethods[i];
    EXPECT_THAT(statuses[i].error_message(), HasSubstr(std::string(kMethods[i]) + ": no authorization metadata"));
    EXPECT_THAT(statuses[i].error_message(), HasSubstr("Bearer <token>"));
  }
}

TEST_F(AuthServiceTest, EveryMethodRefusesAWrongOrMalformedToken) {
  for (const std::string& header :
       {Bearer("full-7f3a9c0e21b54d69"), Bearer(std::string(kToken) + "x"), std::string(kToken)}) {
    const std::vector<grpc::Status> statuses = CallEveryMethod(header);
    ASSERT_EQ(statuses.size(), 10u);
    for (size_t i = 0; i < statuses.size(); ++i) {
      EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::UNAUTHENTICATED) << kMethods[i] << " " << header;
      EXPECT_THAT(statuses[i].error_message(), HasSubstr(kMethods[i]));
      EXPECT_THAT(statuses[i].error_message(), Not(HasSubstr(kToken)));
    }
  }
}

TEST_F(AuthServiceTest, TheFullTokenCallsEveryMethod) {
  const std::vector<grpc::Status> statuses = CallEveryMethod(Bearer(kToken));
  ASSERT_EQ(statuses.size(), 10u);
  for (size_t i = 0; i < kReadMethods; ++i) {
    EXPECT_TRUE(statuses[i].ok()) << kMethods[i] << ": " << statuses[i].error_message();
  }
  // The repository's admin calls got past authentication to the lookup of the model.
  for (size_t i = kReadMethods; i < 9; ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::NOT_FOUND) << kMethods[i];
    EXPECT_THAT(statuses[i].error_message(), HasSubstr("model 'nosuch' not found"));
  }
  // Train got past authentication to the request's validation.
  EXPECT_EQ(statuses[9].error_code(), grpc::StatusCode::INVALID_ARGUMENT) << statuses[9].error_message();
  EXPECT_THAT(statuses[9].error_message(), HasSubstr("epochs"));
}

TEST_F(AuthServiceTest, TheReadOnlyTokenCallsEverythingButTrainAndTheRepositoryAdminCalls) {
  const std::vector<grpc::Status> statuses = CallEveryMethod(Bearer(kReadonlyToken));
  ASSERT_EQ(statuses.size(), 10u);
  for (size_t i = 0; i < kReadMethods; ++i) {
    EXPECT_TRUE(statuses[i].ok()) << kMethods[i] << ": " << statuses[i].error_message();
  }
  for (size_t i = kReadMethods; i < 10; ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::PERMISSION_DENIED) << kMethods[i];
    EXPECT_THAT(statuses[i].error_message(),
                HasSubstr(std::string(kMethods[i]) + ": the token presented has the read-only role"));
  }
}

TEST_F(AuthServiceTest, HealthAndReflectionNeedNoToken) {
  EXPECT_EQ(vae::testing::HealthStatus(env_->channel, ""), 1);  // SERVING
  EXPECT_EQ(vae::testing::HealthStatus(env_->channel, "vae.v1.VaeService"), 1);
  EXPECT_THAT(vae::testing::ReflectionListServices(env_->channel), HasSubstr("vae.v1.VaeService"));
}

TEST_F(AuthServiceTest, RefusalsAreLoggedWithoutTheToken) {
  LogCapture log;
  const std::string wrong = "wrong-token-0123456789";
  v1::ModelInfo info;
  EXPECT_EQ(stub_->GetModelInfo(Context(Bearer(wrong)).get(), v1::GetModelInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(stub_->GetModelInfo(Context("").get(), v1::GetModelInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::TrainRequest request;
  request.set_dataset("mnist");
  auto context = Context(Bearer(kReadonlyToken));
  auto reader = stub_->Train(context.get(), request);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);

  std::vector<std::string> refusals;
  for (const std::string& line : log.lines()) {
    if (line.find("auth: refused") != std::string::npos) refusals.push_back(line);
    EXPECT_THAT(line, Not(HasSubstr(wrong)));
    EXPECT_THAT(line, Not(HasSubstr(kToken)));
    EXPECT_THAT(line, Not(HasSubstr(kReadonlyToken)));
  }
  ASSERT_EQ(refusals.size(), 3u);
  EXPECT_THAT(refusals[0], HasSubstr("UNAUTHENTICATED: GetModelInfo: wrong token"));
  EXPECT_THAT(refusals[0], HasSubstr("127.0.0.1"));  // the peer
  EXPECT_THAT(refusals[1], HasSubstr("UNAUTHENTICATED: GetModelInfo: no authorization metadata"));
  EXPECT_THAT(refusals[2], HasSubstr("PERMISSION_DENIED: Train: the token presented has the read-only role"));
}

}  // namespace
}  // namespace vae::server
