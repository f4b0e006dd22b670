// The real vae-server binary's limits and bad-input answers, as a client over a real channel sees them: the
// --max_image_pixels and --max_message_mb flags reach the server, and bytes that are not a request get
// INVALID_ARGUMENT. One server for the whole suite (no training: a fresh model is enough). Torch-free.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"
#include "tests/server/grpc_probe.h"
#include "tests/server/zero_png.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae {
namespace {

using ::testing::HasSubstr;
using ::vae::testing::ServerProcess;
using ::vae::testing::TempDir;
using ::vae::testing::ZeroPng;

class LimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new TempDir();
    server_ = ServerProcess::Start(VAE_SERVER_BINARY, {"--model_dir=" + model_dir_->path(), "--device=cpu",
                                                       "--max_image_pixels=1000", "--max_message_mb=1"})
                  .release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_dir_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->NewStub();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "server log:\n" << server_->log();
  }
  static std::unique_ptr<grpc::ClientContext> Context() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return c;
  }
  grpc::Status Encode(const std::string& file, v1::EncodeResponse* response) {
    v1::EncodeRequest request;
    request.mutable_images()->add_encoded(file);
    request.mutable_images()->set_resize(true);
    return stub_->Encode(Context().get(), request, response);
  }

  static TempDir* model_dir_;
  static ServerProcess* server_;
  std::unique_ptr<v1::VaeService::Stub> stub_;
};
TempDir* LimitsTest::model_dir_ = nullptr;
ServerProcess* LimitsTest::server_ = nullptr;

TEST_F(LimitsTest, ImagePixelFlagIsTheLimit) {
  v1::EncodeResponse response;
  ASSERT_TRUE(Encode(ZeroPng(25, 40), &response).ok());  // 1000 pixels, resized to 28 x 28
  EXPECT_THAT(response.mu().shape(), ::testing::ElementsAre(1, 20));
  const grpc::Status over = Encode(ZeroPng(26, 40), &response);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(over.error_message(), HasSubstr("declares 26x40 (WxH) = 1040 pixels, over the limit of 1000 "
                                              "(--max_image_pixels)"));
  const grpc::Status bomb = Encode(ZeroPng(20000, 20000), &response);
  EXPECT_EQ(bomb.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bomb.error_message(), HasSubstr("declares 20000x20000 (WxH) = 400000000 pixels"));
  EXPECT_TRUE(server_->running());
}

TEST_F(LimitsTest, MessageFlagBoundsTheAnswerBeforeTheWork) {
  // 330 images of 784 float32 and their 20-float z: 1061280 bytes, over --max_message_mb=1.
  v1::SampleRequest request;
  request.set_count(330);
  v1::SampleResponse response;
  const grpc::Status s = stub_->Sample(Context().get(), request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("would be at least 1061280 bytes, over the message limit of 1048576 "
                                           "bytes (1 MiB, the server's --max_message_mb)"));
  request.set_count(300);
  EXPECT_TRUE(stub_->Sample(Context().get(), request, &response).ok());
}

TEST_F(LimitsTest, UnparseableBytesAreInvalidArgument) {
  std::string response;
  const grpc::Status s =
      vae::testing::CallRaw(server_->channel(), "/vae.v1.VaeService/Encode", std::string("\xff\xff\xff", 3), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "the request (3 bytes) could not be parsed as vae.v1.EncodeRequest");
  const grpc::Status t =
      vae::testing::CallRaw(server_->channel(), "/vae.v1.VaeService/Train", std::string("\xff\xff\xff", 3), &response);
  EXPECT_EQ(t.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(t.error_message(), "the request (3 bytes) could not be parsed as vae.v1.TrainRequest");
  v1::ModelInfo info;
  EXPECT_TRUE(stub_->GetModelInfo(Context().get(), v1::GetModelInfoRequest(), &info).ok());
}

}  // namespace
}  // namespace vae
