#include "common/file_util.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vae {
namespace {

// `what` failed for `path` with `err`. A full disk or quota, or a file over RLIMIT_FSIZE, is RESOURCE_EXHAUSTED: the
// caller can free space and retry.
absl::Status WriteError(const std::string& what, const std::string& path, int err, const std::string& dir,
                        int64_t written) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    return absl::ResourceExhaustedError(absl::StrCat(what, " ", path, ": ", std::strerror(err), " after ", written,
                                                     " bytes; ", FreeBytes(dir), " bytes free on the filesystem of ",
                                                     dir, "; nothing was written (the temp file is deleted)"));
  }
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

}  // namespace

int64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

bool IsAtomicWriteTempFile(absl::string_view file_name, absl::string_view prefix) {
  return absl::StartsWith(file_name, prefix) && absl::StrContains(file_name.substr(prefix.size()), ".tmp.");
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<absl::Status(const ByteSink& sink)>& write_body) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
  std::random_device rd;
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", rd());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return WriteError("cannot create a temp file for", path, errno, dir, 0);
  int64_t written = 0;
  int write_errno = 0;  // the first failed write's errno; nothing is written after it
  ByteSink sink = [&](const void* data, size_t size) {
    if (write_errno != 0) return false;
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        write_errno = errno;
        return false;
      }
      p += n;
      size -= static_cast<size_t>(n);
      written += n;
    }
    return true;
  };
  absl::Status status;
  try {
    status = write_body(sink);
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("writing ", path, " failed: ", e.what()));
  } catch (...) {
    status = absl::InternalError(absl::StrCat("writing ", path, " failed with an unknown exception"));
  }
  if (status.ok() && write_errno != 0) status = WriteError("cannot write", path, write_errno, dir, written);
  if (status.ok() && ::fsync(fd) != 0) status = WriteError("cannot fsync", path, errno, dir, written);
  if (::close(fd) != 0 && status.ok()) status = WriteError("cannot close", path, errno, dir, written);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = WriteError("cannot rename the temp file to", path, errno, dir, written);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  // Make the rename itself durable. Its failure is not reported: `path` already holds the complete new content.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  return WriteFileAtomically(path, [&](const ByteSink& sink) {
    sink(contents.data(), contents.size());
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("no such file: ", path));
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", ec.message()));
  if (static_cast<int64_t>(size) > max_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is ", size, " bytes, over the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", path));
  std::string data(size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return absl::InternalError(absl::StrCat("short read from ", path));
  }
  return data;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  constexpr int64_t kMaxTokenFileBytes = 4096;
  auto token = ReadFileToString(path, kMaxTokenFileBytes);
  if (absl::IsFailedPrecondition(token.status())) return absl::InvalidArgumentError(token.status().message());
  if (!token.ok()) return token.status();
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) token->pop_back();
  if (token->empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty; expected a token"));
  if (!IsValidToken(*token)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " holds characters a token cannot have (spaces, control or non-ASCII characters, or several lines)"));
  }
  return token;
}

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  while (size > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = static_cast<uint32_t>(::crc32(crc, p, n));
    p += n;
    size -= n;
  }
  return crc;
}

}  // namespace vae
