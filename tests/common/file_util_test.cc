// WriteFileAtomically under failure: a full disk (file size limit), a body that throws, a process killed mid-write.
#include "common/file_util.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/common/disk_limits.h"
#include "tests/common/test_util.h"
#include "tests/model/status_matchers.h"

namespace vae {
namespace {

using ::vae::testing::FileNames;
using ::vae::testing::FileSizeLimit;
using ::vae::testing::HasCodeAndWords;
using ::vae::testing::TempDir;

int64_t OpenFds() {
  return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator());
}

TEST(WriteFileAtomicallyTest, FullDiskIsResourceExhaustedAndKeepsTheOldContent) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  absl::Status status;
  {
    // 64 KiB allowed, 1 MiB written: the write fails with EFBIG, as it would with ENOSPC on a full disk.
    FileSizeLimit limit(64 << 10);
    status = WriteFileAtomically(path, std::string(1 << 20, 'x'));
  }
  EXPECT_TRUE(HasCodeAndWords(status, absl::StatusCode::kResourceExhausted,
                              {path, "File too large", "after 65536 bytes", "bytes free on the filesystem of"}));
  EXPECT_EQ(*ReadFileToString(path), "old");
  EXPECT_EQ(FileNames(dir.path()), std::vector<std::string>{"out.bin"});  // the temp file is gone
}

TEST(WriteFileAtomicallyTest, ABodyThatThrowsLeavesNoTempFileAndNoOpenDescriptor) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  const int64_t fds = OpenFds();
  const absl::Status status = WriteFileAtomically(path, [](const ByteSink& sink) -> absl::Status {
    sink("partial", 7);
    throw std::runtime_error("serializer broke");
  });
  EXPECT_TRUE(HasCodeAndWords(status, absl::StatusCode::kInternal, {path, "serializer broke"}));
  EXPECT_TRUE(FileNames(dir.path()).empty());
  EXPECT_EQ(OpenFds(), fds);
}

TEST(WriteFileAtomicallyTest, AWriterKilledMidWriteLeavesOnlyATempFileThatIsRecognised) {
  TempDir dir;
  const std::string path = dir.file("ckpt-000000000002.vae");
  ASSERT_TRUE(WriteFileAtomically(path, "complete").ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // kill -9 in the middle of the body: no destructor, no cleanup runs.
    (void)WriteFileAtomically(path, [](const ByteSink& sink) -> absl::Status {
      sink("torn", 4);
      ::raise(SIGKILL);
      return absl::OkStatus();
    });
    _exit(0);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
  EXPECT_EQ(*ReadFileToString(path), "complete");  // the target is never torn
  std::vector<std::string> temps;
  for (const auto& name : FileNames(dir.path())) {
    if (name != "ckpt-000000000002.vae") temps.push_back(name);
  }
  ASSERT_EQ(temps.size(), 1u);
  EXPECT_TRUE(IsAtomicWriteTempFile(temps[0], "ckpt-")) << temps[0];
  EXPECT_FALSE(IsAtomicWriteTempFile("ckpt-000000000002.vae", "ckpt-"));
  EXPECT_FALSE(IsAtomicWriteTempFile(temps[0], "model-"));
}

}  // namespace
}  // namespace vae
