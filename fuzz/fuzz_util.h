// Helpers shared by the fuzz targets. FUZZ_CHECK states a property every input must keep; a failure aborts, which
// libFuzzer reports as a crash and saves the input. ScratchFile feeds parsers that only read paths.
#ifndef VAE_FUZZ_FUZZ_UTIL_H_
#define VAE_FUZZ_FUZZ_UTIL_H_

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace vae::fuzz {

// One file in the temp folder, private to this process, rewritten for each input and removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name) {
    std::string pattern = (std::filesystem::temp_directory_path() / ("vae-fuzz-" + name + "-XXXXXX")).string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) {
      std::perror("vae-fuzz: mkstemp");
      std::abort();
    }
    ::close(fd);
    path_ = pattern;
  }
  ~ScratchFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  // Replaces the file's content with `bytes`.
  const std::string& Write(const std::string& bytes) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    FUZZ_CHECK(out.good());
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace vae::fuzz

#endif  // VAE_FUZZ_FUZZ_UTIL_H_
