// Real "disk full" conditions for tests: a small tmpfs mounted on a temp folder, and a per-process file size limit;
// and what a folder holds.
// Torch-free.
#ifndef VAE_TESTS_COMMON_DISK_LIMITS_H_
#define VAE_TESTS_COMMON_DISK_LIMITS_H_

#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/test_util.h"

namespace vae::testing {

// The names of the entries of `dir`, sorted.
inline std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A tmpfs of `bytes` mounted on a fresh temp folder, unmounted and removed by the destructor. Mounting needs
// CAP_SYS_ADMIN: Mount returns null with the reason in `why_not` where the kernel refuses (an unprivileged
// container), so the caller can skip with that reason.
class TmpfsMount {
 public:
  static std::unique_ptr<TmpfsMount> Mount(int64_t bytes, std::string* why_not) {
    std::unique_ptr<TmpfsMount> m(new TmpfsMount());
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", m->dir_.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      *why_not = "mount -t tmpfs -o " + options + " " + m->dir_.path() + " failed: " + std::strerror(errno);
      return nullptr;
    }
    m->mounted_ = true;
    return m;
  }
  ~TmpfsMount() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  const std::string& path() const { return dir_.path(); }
  std::string file(const std::string& name) const { return dir_.file(name); }

  // Writes `path` with zeros until the filesystem has at most `leave` bytes free (tmpfs counts whole pages).
  static void FillUntilFree(const std::string& path, int64_t leave) {
    std::ofstream out(path, std::ios::binary);
    const std::string block(4096, '\0');
    while (out && Free(path) > leave) out.write(block.data(), block.size()), out.flush();
  }
  static int64_t Free(const std::string& path) {
    std::error_code ec;
    const auto space = std::filesystem::space(std::filesystem::path(path).parent_path(), ec);
    return ec ? -1 : static_cast<int64_t>(space.available);
  }

 private:
  TmpfsMount() = default;
  TempDir dir_;
  bool mounted_ = false;
};

// While alive, this process may not write files larger than `bytes` (RLIMIT_FSIZE): a write past it fails with
// EFBIG, as on a full disk, in any environment. SIGXFSZ, which would kill the process, is ignored meanwhile.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
};

}  // namespace vae::testing

#endif  // VAE_TESTS_COMMON_DISK_LIMITS_H_
