// Bytes <-> tensors, PNG in and out, and the one absl -> gRPC status conversion.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/server_options.h"
#include "server/tensor_codec.h"
#include "tests/server/server_test_util.h"
#include "tests/server/zero_png.h"

namespace vae::server {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::vae::testing::TinyOptions;
using ::vae::testing::ZeroPng;

// The server's default limit on encoded images for a 28 x 28 model (ServerOptions::max_image_pixels = 0).
const int64_t kPixels = MaxImagePixels(ServerOptions(), 28, 28);

v1::Tensor FloatTensor(std::vector<int64_t> shape, std::vector<float> values) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(v1::DATA_TYPE_FLOAT32);
  t.set_data(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

std::string Encoded(const cv::Mat& image, const std::string& extension, const std::vector<int>& params = {}) {
  std::vector<uchar> buffer;
  EXPECT_TRUE(cv::imencode(extension, image, buffer, params));
  return std::string(buffer.begin(), buffer.end());
}

std::string Png(const cv::Mat& image) { return Encoded(image, ".png"); }

TEST(TensorCodecTest, FloatAndUint8RoundTripBitwiseAndOwnTheirMemory) {
  v1::Tensor proto = FloatTensor({2, 3}, {0.0f, -1.5f, 3.25f, 1e-30f, 7.0f, 0.125f});
  auto tensor = TensorFromProto(proto, "z");
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_EQ(tensor->sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ(tensor->scalar_type(), at::kFloat);
  EXPECT_FLOAT_EQ((*tensor)[0][1].item<float>(), -1.5f);
  proto.mutable_data()->assign(proto.data().size(), '\0');  // the request buffer goes away
  EXPECT_FLOAT_EQ((*tensor)[1][0].item<float>(), 1e-30f);

  v1::Tensor back;
  TensorToProto(*tensor, &back);
  EXPECT_EQ(back.dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(back.shape(), ::testing::ElementsAre(2, 3));
  EXPECT_EQ(back.data(), FloatTensor({2, 3}, {0.0f, -1.5f, 3.25f, 1e-30f, 7.0f, 0.125f}).data());

  v1::Tensor bytes;
  bytes.add_shape(4);
  bytes.set_dtype(v1::DATA_TYPE_UINT8);
  bytes.set_data(std::string("\x00\x7f\x80\xff", 4));
  auto u8 = TensorFromProto(bytes, "images.tensor");
  ASSERT_TRUE(u8.ok());
  EXPECT_EQ(u8->scalar_type(), at::kByte);
  EXPECT_EQ((*u8)[3].item<uint8_t>(), 255);
}

TEST(TensorCodecTest, RejectsBadDtypesShapesAndLengths) {
  struct Case {
    v1::Tensor tensor;
    std::string message;
  };
  v1::Tensor unspecified = FloatTensor({1}, {1.0f});
  unspecified.set_dtype(v1::DATA_TYPE_UNSPECIFIED);
  v1::Tensor unknown = FloatTensor({1}, {1.0f});
  unknown.set_dtype(static_cast<v1::DataType>(7));
  v1::Tensor negative = FloatTensor({2, -1}, {});
  v1::Tensor overflow = FloatTensor({int64_t{1} << 32, int64_t{1} << 32}, {});
  v1::Tensor rank9 = FloatTensor({1, 1, 1, 1, 1, 1, 1, 1, 1}, {1.0f});
  v1::Tensor short_data = FloatTensor({1, 4}, {1.0f, 2.0f, 3.0f});
  const std::vector<Case> cases = {
      {unspecified, "z.dtype DATA_TYPE_UNSPECIFIED is not supported; expected DATA_TYPE_FLOAT32 or DATA_TYPE_UINT8"},
      {unknown, "z.dtype 7 is not supported"},
      {negative, "z.shape [2,-1] has a negative dimension"},
      {overflow, "z.shape [4294967296,4294967296] holds more than 1099511627776 elements"},
      {rank9, "z.shape has 9 dimensions; expected at most 8"},
      {short_data, "z.data is 12 bytes; expected 16 (shape [1,4] x 4 bytes of DATA_TYPE_FLOAT32)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.message);
    for (const auto& result : {TensorFromProto(c.tensor, "z"), TensorViewOfProto(c.tensor, "z")}) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(result.status().message(), HasSubstr(c.message));
    }
  }
}

TEST(TensorCodecTest, FloatImagesAreAViewOfTheRequestBytes) {
  v1::ImageBatch batch;
  *batch.mutable_tensor() = FloatTensor({2, 1, 1, 2}, {0.0f, 0.25f, 0.5f, 1.0f});
  auto images = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  ASSERT_TRUE(images.ok()) << images.status();
  // No copy: the tensor points at the message's bytes, with the values and shape TensorFromProto gives.
  EXPECT_EQ(images->data_ptr(), static_cast<const void*>(batch.tensor().data().data()));
  auto copy = TensorFromProto(batch.tensor(), "images.tensor");
  ASSERT_TRUE(copy.ok());
  EXPECT_NE(copy->data_ptr(), images->data_ptr());
  EXPECT_TRUE(at::equal(*images, *copy));
  EXPECT_EQ(images->sizes(), at::IntArrayRef({2, 1, 1, 2}));
}

TEST(TensorCodecTest, ImageBatchTensorsAndTheirChoice) {
  v1::ImageBatch batch;
  batch.mutable_tensor()->add_shape(1);
  batch.mutable_tensor()->add_shape(2);
  batch.mutable_tensor()->set_dtype(v1::DATA_TYPE_UINT8);
  batch.mutable_tensor()->set_data(std::string("\x00\xff", 2));
  auto images = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  ASSERT_TRUE(images.ok());
  EXPECT_EQ(images->scalar_type(), at::kFloat);  // uint8 / 255
  EXPECT_FLOAT_EQ((*images)[0][1].item<float>(), 1.0f);

  batch.add_encoded("png bytes");
  auto both = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.status().message(), HasSubstr("both images.tensor and images.encoded are set"));
  auto neither = ImagesFromProto(v1::ImageBatch(), TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(neither.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(neither.status().message(), HasSubstr("images is an empty batch"));
}

TEST(TensorCodecTest, DecodesGrayscalePngExactly) {
  cv::Mat gradient(28, 28, CV_8UC1);
  for (int r = 0; r < 28; ++r) {
    for (int c = 0; c < 28; ++c) gradient.at<uint8_t>(r, c) = static_cast<uint8_t>(9 * r + c);
  }
  v1::ImageBatch batch;
  batch.add_encoded(Png(gradient));
  batch.add_encoded(Png(255 - gradient));
  auto images = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->sizes(), at::IntArrayRef({2, 1, 28, 28}));
  // PNG is lossless: pixel (r, c) of image 0 is (9r + c) / 255.
  EXPECT_FLOAT_EQ((*images)[0][0][3][5].item<float>(), 32.0f / 255.0f);
  EXPECT_FLOAT_EQ((*images)[1][0][3][5].item<float>(), (255.0f - 32.0f) / 255.0f);
}

TEST(TensorCodecTest, ColorImagesArriveAsRgb) {
  VaeOptions rgb = TinyOptions();
  rgb.channels = 3;
  rgb.height = rgb.width = 8;
  const cv::Mat red(8, 8, CV_8UC3, cv::Scalar(0, 0, 255));  // OpenCV stores BGR: this is pure red
  v1::ImageBatch batch;
  batch.add_encoded(Png(red));
  auto images = ImagesFromProto(batch, rgb, InputRules(8, kPixels));
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_FLOAT_EQ((*images)[0][0].mean().item<float>(), 1.0f);  // R
  EXPECT_FLOAT_EQ((*images)[0][1].mean().item<float>(), 0.0f);  // G
  EXPECT_FLOAT_EQ((*images)[0][2].mean().item<float>(), 0.0f);  // B

  // And back: the PNG of an RGB tensor decodes (BGR) to the same red.
  auto pngs = EncodePngs(*images);
  ASSERT_TRUE(pngs.ok());
  const std::vector<uchar> buffer((*pngs)[0].begin(), (*pngs)[0].end());
  const cv::Mat decoded = cv::imdecode(buffer, cv::IMREAD_COLOR);
  EXPECT_EQ(decoded.at<cv::Vec3b>(4, 4), cv::Vec3b(0, 0, 255));
}

TEST(TensorCodecTest, EncodedImagesOfTheWrongSizeNeedResize) {
  v1::ImageBatch batch;
  batch.add_encoded(Png(cv::Mat(32, 30, CV_8UC1, cv::Scalar(51))));
  auto rejected = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(),
              HasSubstr("images.encoded[0] is 30x32 (WxH), the model expects 28x28; set images.resize"));
  batch.set_resize(true);
  auto resized = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  ASSERT_TRUE(resized.ok());
  EXPECT_EQ(resized->sizes(), at::IntArrayRef({1, 1, 28, 28}));
  EXPECT_NEAR(resized->mean().item<float>(), 0.2f, 1e-6);  // area interpolation of a flat 51/255 image
}

TEST(TensorCodecTest, UndecodableAndTooManyEncodedImages) {
  v1::ImageBatch batch;
  batch.add_encoded(Png(cv::Mat(28, 28, CV_8UC1, cv::Scalar(0))));
  // A valid header, then no image data.
  batch.add_encoded(Png(cv::Mat(28, 28, CV_8UC1, cv::Scalar(0))).substr(0, 40));
  auto garbage = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.status().message(), HasSubstr("images.encoded[1] (40 bytes) is not a decodable PNG or JPEG"));

  v1::ImageBatch many;
  for (int i = 0; i < 9; ++i) many.add_encoded("x");
  auto over = ImagesFromProto(many, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(over.status().message(), HasSubstr("images.encoded holds 9 images, over the limit of 8"));
}

TEST(TensorCodecTest, OnlyPngAndJpegReachADecoder) {
  const cv::Mat flat(28, 28, CV_8UC1, cv::Scalar(51));
  // OpenCV decodes all of these; the API promises PNG or JPEG, and every other decoder is attack surface.
  for (const std::string extension : {".bmp", ".pgm", ".tiff"}) {
    SCOPED_TRACE(extension);
    v1::ImageBatch batch;
    batch.add_encoded(Encoded(flat, extension));
    auto other = ImagesFromProto(batch, TinyOptions(), InputRules(8, kPixels));
    EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(other.status().message(),
                HasSubstr("images.encoded[0] is not a PNG or JPEG file (it starts with bytes "));
    EXPECT_THAT(std::string(other.status().message()), EndsWith("); only PNG and JPEG are accepted"));
  }
  v1::ImageBatch bmp;
  bmp.add_encoded(Encoded(flat, ".bmp"));
  EXPECT_THAT(ImagesFromProto(bmp, TinyOptions(), InputRules(8, kPixels)).status().message(),
              HasSubstr("bytes 424d"));  // "BM"

  v1::ImageBatch accepted;
  accepted.add_encoded(Png(flat));
  accepted.add_encoded(Encoded(flat, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 100}));
  auto images = ImagesFromProto(accepted, TinyOptions(), InputRules(8, kPixels));
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_NEAR((*images)[0].mean().item<float>(), 0.2f, 1e-6);        // 51 / 255, lossless
  EXPECT_NEAR((*images)[1].mean().item<float>(), 0.2f, 2.0f / 255);  // a flat image survives JPEG within 1-2 levels
}

TEST(TensorCodecTest, ImageHeaderDeclaresTheSizeWithoutDecoding) {
  const cv::Mat image(32, 30, CV_8UC3, cv::Scalar(10, 200, 30));  // 30 wide, 32 high
  struct Case {
    std::string name, bytes;
    ImageHeader::Format format;
  };
  const std::vector<Case> cases = {
      {"png", Png(image), ImageHeader::Format::kPng},
      {"baseline jpeg (SOF0 after APP0, DQT)", Encoded(image, ".jpg"), ImageHeader::Format::kJpeg},
      {"progressive jpeg (SOF2)", Encoded(image, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}),
       ImageHeader::Format::kJpeg},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto header = ReadImageHeader(c.bytes, "f");
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, c.format);
    EXPECT_EQ(header->width, 30);
    EXPECT_EQ(header->height, 32);
  }
  // A JPEG with a COM segment (length 0x03ea = 2 + 1000 bytes) holding a fake SOF0 of 32767 x 32767 before its real
  // frame header: walking the segments by their lengths finds the real one, as libjpeg does.
  const std::string jpeg = Encoded(image, ".jpg");
  std::string fake_sof("\xff\xc0\x00\x11\x08\x7f\xff\x7f\xff\x03", 10);
  fake_sof.resize(1000, '\0');
  const std::string commented = jpeg.substr(0, 2) + std::string("\xff\xfe\x03\xea", 4) + fake_sof + jpeg.substr(2);
  auto walked = ReadImageHeader(commented, "f");
  ASSERT_TRUE(walked.ok()) << walked.status();
  EXPECT_EQ(walked->width, 30);
  EXPECT_EQ(walked->height, 32);
  const cv::Mat decoded = cv::imdecode(std::vector<uchar>(commented.begin(), commented.end()), cv::IMREAD_COLOR);
  EXPECT_EQ(decoded.cols, 30);
  EXPECT_EQ(decoded.rows, 32);
  const size_t app0_end = 4 + (static_cast<uint8_t>(jpeg[4]) << 8 | static_cast<uint8_t>(jpeg[5]));

  const std::vector<std::pair<std::string, std::string>> bad = {
      {std::string("\x89PNG\r\n\x1a\n", 8) + "garbage", "f is not a valid PNG file: no IHDR chunk"},
      {ZeroPng(0, 5), "f declares 0x5 (WxH) pixels; expected both > 0"},
      {jpeg.substr(0, 30), "f is not a valid JPEG file: the segment at byte"},
      {std::string("\xff\xd8\xff\xda\x00\x02", 6), "marker 0xda at byte 3 comes before the frame header"},
      // libjpeg would skip the stray byte with a warning; refusing it keeps the two walks the same.
      {jpeg.substr(0, app0_end) + "x" + jpeg.substr(app0_end),
       absl::StrCat("f is not a valid JPEG file: no marker at byte ", app0_end)},
      {"GIF89a", "f is not a PNG or JPEG file (it starts with bytes 474946383961)"},
  };
  for (const auto& [bytes, message] : bad) {
    SCOPED_TRACE(message);
    auto header = ReadImageHeader(bytes, "f");
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(header.status().message(), HasSubstr(message));
  }
}

TEST(TensorCodecTest, ImagesDeclaringTooManyPixelsAreRefusedBeforeDecoding) {
  // The default for a 28 x 28 model: 16 x 784 pixels is under the floor of 1024 x 1024.
  EXPECT_EQ(kPixels, 1024 * 1024);
  VaeOptions big = TinyOptions();
  big.height = big.width = 512;
  EXPECT_EQ(MaxImagePixels(ServerOptions(), big.height, big.width), 16 * 512 * 512);
  ServerOptions fixed;
  fixed.max_image_pixels = 1000;
  EXPECT_EQ(MaxImagePixels(fixed, 28, 28), 1000);

  // The bomb of issue #11: 389 KB declaring 20000 x 20000, a valid PNG that OpenCV would decode into 400 MB. Refused
  // from its header, even with resize set.
  v1::ImageBatch bomb;
  bomb.add_encoded(ZeroPng(20000, 20000));
  bomb.set_resize(true);
  EXPECT_LT(bomb.encoded(0).size(), 400u << 10);
  auto refused = ImagesFromProto(bomb, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(),
            "images.encoded[0] declares 20000x20000 (WxH) = 400000000 pixels, over the limit of 1048576 "
            "(--max_image_pixels); send a smaller image");

  // A PNG whose sides (32 bits each) multiply past int64: found by fuzz_image_decode as a signed overflow, after which
  // the negative product passed the limit and the header reached OpenCV. Refused by the limit, with the true product.
  std::string huge = Png(cv::Mat(2, 2, CV_8UC1, cv::Scalar(0)));
  const std::string sides("\xfe\x00\x00\x01\xd9\x00\x00\x01", 8);  // width 4261412865, height 3640655873
  huge.replace(16, 8, sides);                                      // IHDR data starts at byte 16
  v1::ImageBatch overflow;
  overflow.add_encoded(huge);
  overflow.set_resize(true);
  auto product = ImagesFromProto(overflow, TinyOptions(), InputRules(8, kPixels));
  EXPECT_EQ(product.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(product.status().message(),
              HasSubstr("declares 4261412865x3640655873 (WxH) = 15514337774240006145 pixels, over the limit"));

  // The limit is inclusive, per image, and applies to JPEG too.
  v1::ImageBatch batch;
  batch.set_resize(true);
  batch.add_encoded(Png(cv::Mat(40, 25, CV_8UC1, cv::Scalar(0))));              // 1000 pixels
  batch.add_encoded(Encoded(cv::Mat(40, 26, CV_8UC1, cv::Scalar(0)), ".jpg"));  // 1040 pixels
  auto over = ImagesFromProto(batch, TinyOptions(), InputRules(8, 1000));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(over.status().message(), HasSubstr("images.encoded[1] declares 26x40 (WxH) = 1040 pixels, over the "
                                                 "limit of 1000 (--max_image_pixels)"));
  batch.mutable_encoded()->RemoveLast();
  auto at_limit = ImagesFromProto(batch, TinyOptions(), InputRules(8, 1000));
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(at_limit->sizes(), at::IntArrayRef({1, 1, 28, 28}));
}

// The codec applies the rules it is handed, and the rules built from ServerOptions hold every input limit: the image
// limit derived per model when --max_image_pixels is 0, the batch limit, the message limit and the format field.
TEST(TensorCodecTest, InputRulesFromServerOptionsHoldEveryInputLimit) {
  ServerOptions options;
  options.max_batch = 2;
  options.max_message_mb = 3;
  const InputRules rules = InputRules::FromOptions(options);
  EXPECT_EQ(rules.max_batch(), 2);
  EXPECT_EQ(rules.max_image_pixels(TinyOptions()), kPixels);
  VaeOptions big = TinyOptions();
  big.height = big.width = 512;
  EXPECT_EQ(rules.max_image_pixels(big), 16 * 512 * 512);
  EXPECT_EQ(rules.max_message_bytes(), 3 << 20);

  v1::ImageBatch batch;
  batch.set_resize(true);
  batch.add_encoded(ZeroPng(1025, 1024));  // one row over the derived limit of a 28 x 28 model
  EXPECT_THAT(ImagesFromProto(batch, TinyOptions(), rules).status().message(),
              HasSubstr("= 1049600 pixels, over the limit of 1048576 (--max_image_pixels)"));
  EXPECT_TRUE(ImagesFromProto(batch, big, rules).ok());  // 16 x 512 x 512 for the larger model
  batch.add_encoded(ZeroPng(28, 28));
  batch.add_encoded(ZeroPng(28, 28));
  EXPECT_EQ(ImagesFromProto(batch, big, rules).status().message(),
            "images.encoded holds 3 images, over the limit of 2 (--max_batch)");

  EXPECT_TRUE(rules.CheckResponseBytes("r is", 3 << 20).ok());
  EXPECT_THAT(rules.CheckResponseBytes("r is", (3 << 20) + 1).message(),
              HasSubstr("r is 3145729 bytes, over the message limit of 3145728 bytes (3 MiB"));
  for (int format : {0, 1, 2, 3}) EXPECT_TRUE(InputRules::CheckImageFormat(format).ok()) << format;
  for (int format : {-1, 4}) {
    EXPECT_THAT(InputRules::CheckImageFormat(format).message(),
                HasSubstr(absl::StrCat("format: unknown value ", format)));
  }
}

TEST(TensorCodecTest, PngOutputRoundsToEightBits) {
  const at::Tensor images = at::tensor({0.0f, 0.5f, 1.0f, 0.2f}).reshape({1, 1, 2, 2});
  auto pngs = EncodePngs(images);
  ASSERT_TRUE(pngs.ok());
  ASSERT_EQ(pngs->size(), 1u);
  const std::vector<uchar> buffer((*pngs)[0].begin(), (*pngs)[0].end());
  const cv::Mat decoded = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(decoded.type(), CV_8UC1);
  EXPECT_EQ(decoded.at<uint8_t>(0, 0), 0);
  EXPECT_EQ(decoded.at<uint8_t>(0, 1), 128);  // 127.5, rounded half to even
  EXPECT_EQ(decoded.at<uint8_t>(1, 0), 255);
  EXPECT_EQ(decoded.at<uint8_t>(1, 1), 51);
}

TEST(GrpcStatusTest, KeepsTheCodeAndTruncatesLongMessages) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  for (int code = 1; code <= 16; ++code) {
    const grpc::Status s = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(code), "why"));
    EXPECT_EQ(static_cast<int>(s.error_code()), code);
    EXPECT_EQ(s.error_message(), "why");
  }
  const grpc::Status truncated = ToGrpcStatus(absl::InternalError(std::string(5000, 'x')));
  EXPECT_EQ(truncated.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(truncated.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_THAT(truncated.error_message(), EndsWith("...(truncated)"));
}

}  // namespace
}  // namespace vae::server
