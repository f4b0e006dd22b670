// Helpers shared by the test suites: the real-data directory and self-cleaning temp folders.
#ifndef VAE_TESTS_COMMON_TEST_UTIL_H_
#define VAE_TESTS_COMMON_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace vae::testing {

// The folder scripts/fetch-data.sh filled (VAE_DATA_DIR, set by CTest). Real-data tests fail without it: CI always
// fetches the data, so a missing folder is a broken set-up, not a reason to skip.
inline std::string DataDir() {
  const char* dir = std::getenv("VAE_DATA_DIR");
  if (dir == nullptr || !std::filesystem::exists(std::string(dir) + "/mnist")) {
    ADD_FAILURE() << "VAE_DATA_DIR is unset or has no mnist/: run scripts/fetch-data.sh DIR and set VAE_DATA_DIR=DIR";
    return "";
  }
  return dir;
}

// A fresh folder under the system temp dir, removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "vae-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  std::string path_;
};

}  // namespace vae::testing

#endif  // VAE_TESTS_COMMON_TEST_UTIL_H_
