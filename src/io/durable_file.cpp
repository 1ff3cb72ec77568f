// POSIX fsync/rename steps of a durable commit.
#include "ranktune/io/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) {
  throw std::system_error(errno, std::generic_category(), what + " '" + path.string() + "'");
}

void fsync_fd_of(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail("cannot open", path);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    fail("fsync failed for", path);
  }
  if (::close(fd) != 0) fail("close failed for", path);
}

}  // namespace

void dir_create(const std::string& dir, std::string_view what, std::string_view key) {
  const std::string hint = "check " + std::string(key);
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST)
      throw UsageError("cannot create " + std::string(what) + " directory " + prefix + ": " + std::strerror(errno),
                       hint);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw UsageError(std::string(what) + " directory " + dir + " is not a directory", hint);
}

void dir_require_writable(const std::string& dir, std::string_view what, std::string_view key, int rank) {
  dir_create(dir, what, key);
  const std::string probe = dir + "/.write_probe.rank" + std::to_string(rank) + "." +
                            std::to_string(static_cast<long>(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const bool wrote = fd >= 0 && ::write(fd, "x", 1) == 1;
  const int err = errno;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  if (!wrote)
    throw UsageError("cannot write in " + std::string(what) + " directory " + dir + ": " + std::strerror(err),
                     "check " + std::string(key));
}

void remove_tree(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const fs::file_status st = fs::symlink_status(path);
  if (!fs::exists(st)) return;
  if (fs::is_directory(st))
    for (const auto& entry : fs::directory_iterator(path)) remove_tree(entry.path());
  fs::remove(path);
}

std::string tmp_suffix() {
  const char* job = std::getenv("SLURM_JOB_ID");
  return ".tmp." + ((job && *job) ? std::string(job) : std::to_string(::getpid()));
}

void fsync_file(const std::filesystem::path& path) { fsync_fd_of(path, O_RDONLY); }

void fsync_dir(const std::filesystem::path& dir) {
  fsync_fd_of(dir.empty() ? std::filesystem::path(".") : dir, O_RDONLY | O_DIRECTORY);
}

WritebackStep WritebackSchedule::advance(std::uint64_t end) {
  WritebackStep step;
  if (end <= started_ || end - started_ < min_) return step;
  step.start = {started_, end - started_};
  started_ = end;
  if (started_ > lag_ && started_ - lag_ > waited_) {
    step.wait = {waited_, started_ - lag_ - waited_};
    waited_ = started_ - lag_;
  }
  return step;
}

#if defined(__linux__)

FileWriteback::FileWriteback(const std::filesystem::path& path, std::uint64_t min_bytes, std::uint64_t lag_bytes)
    : path_(path), schedule_(min_bytes, lag_bytes), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}

FileWriteback::~FileWriteback() {
  if (fd_ >= 0) ::close(fd_);
}

void FileWriteback::advance() {
  if (fd_ < 0) return;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return;
  const WritebackStep step = schedule_.advance(static_cast<std::uint64_t>(st.st_size));
  const auto apply = [&](const ByteRange& r, unsigned flags) {
    if (fd_ < 0 || r.length == 0) return;
    if (::sync_file_range(fd_, static_cast<off64_t>(r.offset), static_cast<off64_t>(r.length), flags) == 0) return;
    if (errno == EINVAL || errno == ENOSYS || errno == ESPIPE || errno == EOPNOTSUPP) {  // not for this file: skip
      ::close(fd_);
      fd_ = -1;
      return;
    }
    fail("write-back failed for", path_);
  };
  apply(step.start, SYNC_FILE_RANGE_WRITE);
  apply(step.wait, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

#else  // no sync_file_range: the final fsync writes everything back, as before

FileWriteback::FileWriteback(const std::filesystem::path& path, std::uint64_t min_bytes, std::uint64_t lag_bytes)
    : path_(path), schedule_(min_bytes, lag_bytes) {}
FileWriteback::~FileWriteback() = default;
void FileWriteback::advance() {}

#endif

void file_commit(const std::filesystem::path& tmp, const std::filesystem::path& final_path, const CommitHook& hook) {
  if (hook) hook(CommitStep::written);
  fsync_file(tmp);
  if (hook) hook(CommitStep::synced);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) fail("cannot rename '" + tmp.string() + "' to", final_path);
  if (hook) hook(CommitStep::renamed);
  fsync_dir(final_path.parent_path());
}

void file_write_atomic(const std::filesystem::path& final_path, std::string_view content, const CommitHook& hook) {
  const std::filesystem::path tmp = final_path.string() + tmp_suffix();
  try {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail("cannot create", tmp);
    const bool wrote = std::fwrite(content.data(), 1, content.size(), f) == content.size();
    const int err = errno;
    if (std::fclose(f) != 0 || !wrote) {
      if (!wrote) errno = err;
      fail("cannot write", tmp);
    }
    file_commit(tmp, final_path, hook);
  } catch (const std::exception&) {  // not a simulated crash (tests): those must leave the temp file behind
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace ranktune
