#include "client/cli/inputs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/outputs.h"
#include "client/images.h"
#include "common/file_util.h"
#include "common/idx.h"
#include "common/status_macros.h"

namespace vae::cli {
namespace {

bool LooksLikeIdx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(head), 4);
  if (in.gcount() < 4) return false;
  const bool gzip = head[0] == 0x1f && head[1] == 0x8b;
  const bool idx = head[0] == 0 && head[1] == 0 && head[2] == 0x08;
  return gzip || idx;
}

}  // namespace

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
      return absl::InvalidArgumentError(absl::StrCat(name, " is ", SizeText(image.rows, image.cols),
                                                     "; the model takes ", SizeText(h, w),
                                                     " (drop --noresize to resize)"));
    }
    auto converted = client::ConvertForModel(image, c, h, w, &conversion);
    if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", converted.status().message()));
    if (report && conversion.resized) {
      err << "resized " << name << " from " << SizeText(conversion.from_height, conversion.from_width) << " to "
          << SizeText(h, w) << "\n";
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
        err << "resized the images of " << path << " from " << SizeText(ih, iw) << " to " << SizeText(h, w) << "\n";
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

}  // namespace vae::cli
