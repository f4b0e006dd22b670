#include "client/cli/outputs.h"

#include <algorithm>
#include <filesystem>
#include <opencv2/core.hpp>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/images.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace vae::cli {
namespace {

absl::Status WritePng(const std::string& path, const cv::Mat& image) {
  VAE_ASSIGN_OR_RETURN(const std::string png, client::EncodePng(image));
  return WriteFileAtomically(path, png);
}

}  // namespace

std::string SizeText(int height, int width) { return absl::StrCat(width, "x", height); }

bool IsFolderOutput(const std::string& path) {
  std::error_code ec;
  return absl::EndsWith(path, "/") || std::filesystem::is_directory(path, ec);
}

absl::Status CheckPngOutput(const std::string& path, bool folder_allowed) {
  if (path.empty()) return absl::InvalidArgumentError("--output is required");
  if (folder_allowed && IsFolderOutput(path)) return absl::OkStatus();
  if (!absl::EndsWithIgnoreCase(path, ".png")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--output=", path, ": expected a .png file", folder_allowed ? " or a folder ending in /" : ""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteImages(const at::Tensor& images, const std::string& output) {
  VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> mats, client::TensorToMats(images));
  if (IsFolderOutput(output)) {
    std::error_code ec;
    std::filesystem::create_directories(output, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", output, ": ", ec.message()));
    const int digits = std::max<int>(4, static_cast<int>(std::to_string(mats.size() - 1).size()));
    for (size_t i = 0; i < mats.size(); ++i) {
      const std::string path = (std::filesystem::path(output) / absl::StrFormat("%0*d.png", digits, i)).string();
      VAE_RETURN_IF_ERROR(WritePng(path, mats[i]));
    }
    return absl::StrCat(mats.size(), " PNG files (", SizeText(mats[0].rows, mats[0].cols), ") in ", output);
  }
  VAE_ASSIGN_OR_RETURN(cv::Mat grid, client::TileGrid(mats, client::GridColumns(static_cast<int>(mats.size()))));
  VAE_RETURN_IF_ERROR(WritePng(output, grid));
  return absl::StrCat(output, " (", SizeText(grid.rows, grid.cols), ", ", mats.size(), " images)");
}

std::string VersionName(const client::ModelVersion& v) {
  const int64_t number = v.version > 0 ? v.version : v.generation;
  return v.model.empty() ? absl::StrCat("version ", number) : absl::StrCat(v.model, " version ", number);
}

std::string VersionText(const client::ModelVersion& v) {
  return absl::StrCat(VersionName(v), " (", v.epochs_trained, " epoch", v.epochs_trained == 1 ? "" : "s", ", ",
                      v.global_step, " steps)");
}

std::string ByteSize(int64_t bytes) {
  if (bytes < 1000) return absl::StrCat(bytes, " B");
  const double b = static_cast<double>(bytes);
  if (bytes < 1000 * 1000) return absl::StrFormat("%.1f kB", b / 1e3);
  if (bytes < 1000 * 1000 * 1000) return absl::StrFormat("%.1f MB", b / 1e6);
  return absl::StrFormat("%.2f GB", b / 1e9);
}

client::Matrix ToMatrix(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  client::Matrix m;
  m.rows = c.size(0);
  m.cols = c.dim() > 1 ? c.size(1) : 1;
  m.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return m;
}

absl::Status WritePairs(const at::Tensor& originals, const at::Tensor& reconstructions, const std::string& output) {
  VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> left, client::TensorToMats(originals.to(at::kFloat).div(255.0)));
  VAE_ASSIGN_OR_RETURN(std::vector<cv::Mat> right, client::TensorToMats(reconstructions));
  if (left.size() != right.size()) {
    return absl::InternalError(
        absl::StrCat("the server returned ", right.size(), " reconstructions for ", left.size(), " images"));
  }
  std::vector<cv::Mat> cells;
  for (size_t i = 0; i < left.size(); ++i) {
    cells.push_back(left[i]);
    cells.push_back(right[i]);
  }
  VAE_ASSIGN_OR_RETURN(cv::Mat grid, client::TileGrid(cells, 2 * client::GridColumns(static_cast<int>(left.size()))));
  return WritePng(output, grid);
}

void AppendRows(const client::Matrix& part, client::Matrix* all) {
  all->cols = part.cols;
  all->rows += part.rows;
  all->values.insert(all->values.end(), part.values.begin(), part.values.end());
}

}  // namespace vae::cli
