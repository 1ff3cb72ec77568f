// defines: the durable-commit steps every checkpoint file goes through: write NAME.tmp.<job id or pid>, fsync it,
// rename it over NAME, fsync the directory. A reader therefore sees either the old NAME or the complete new one,
// also after a crash or power loss. Errors are std::system_error naming the path and carrying errno.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace ranktune {

// Removes path and everything below it (nothing if it does not exist). std::filesystem::remove_all cannot be used
// in anything linked with the LibTorch wheel: libtorch.so exports its own copy, whose weak reference to
// recursive_directory_iterator resolves to null and crashes.
void remove_tree(const std::filesystem::path& path);

// mkdir -p with POSIX calls (std::filesystem has the same LibTorch problem as remove_tree). `what` names the
// directory in messages ("output", "checkpoint") and `key` the setting that gave it: UsageError (exit 2)
// "cannot create <what> directory P: <errno text>" or "<what> directory D is not a directory", hint "check <key>".
void dir_create(const std::string& dir, std::string_view what, std::string_view key);
// dir_create, then writes and removes a probe file named for `rank`, so that a read-only mount fails at start
// rather than at the first save: "cannot write in <what> directory D: <errno text>".
void dir_require_writable(const std::string& dir, std::string_view what, std::string_view key, int rank);

// ".tmp.<SLURM_JOB_ID>" inside a Slurm job, ".tmp.<pid>" otherwise.
std::string tmp_suffix();

void fsync_file(const std::filesystem::path& path);
void fsync_dir(const std::filesystem::path& dir);

// Streaming write-back for a file being written through the page cache. Left alone, the kernel holds the dirty
// pages until the dirty limits or the final fsync and then writes them back at a fraction of what the disk takes
// (build VM: 0.3-0.5 GB/s against 1.8-2.5 GB/s with O_DIRECT); asked to write each range as soon as it is complete,
// and made to wait for the range written `lag_bytes` earlier, it streams at close to disk speed and the final fsync
// finds little left. The schedule alone, so that tests can hold it to its ranges.
struct ByteRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;  // 0: nothing to do
};
struct WritebackStep {
  ByteRange start;  // start writing these bytes back
  ByteRange wait;   // then wait until these are on the disk
};
class WritebackSchedule {
 public:
  // Starts write-back once at least min_bytes are new; keeps at most about lag_bytes + min_bytes in flight.
  WritebackSchedule(std::uint64_t min_bytes, std::uint64_t lag_bytes) : min_(min_bytes), lag_(lag_bytes) {}
  // The file now holds `end` bytes (a shorter file than before changes nothing).
  WritebackStep advance(std::uint64_t end);

 private:
  std::uint64_t min_, lag_;
  std::uint64_t started_ = 0;  // write-back was started for [0, started_)
  std::uint64_t waited_ = 0;   // [0, waited_) was on the disk at the last wait
};

// WritebackSchedule applied to a file through a second descriptor of its own (Linux sync_file_range; elsewhere it
// does nothing). The writer calls advance() after each large write. Nothing here replaces the fsync of file_commit:
// pages written again later (HDF5 rewrites its metadata at close) are simply dirty again. A write-back error throws
// std::system_error naming the path: the kernel reports it once, to this descriptor, and the fsync would not see it.
class FileWriteback {
 public:
  explicit FileWriteback(const std::filesystem::path& path, std::uint64_t min_bytes = std::uint64_t{8} << 20,
                         std::uint64_t lag_bytes = std::uint64_t{256} << 20);
  ~FileWriteback();
  FileWriteback(const FileWriteback&) = delete;
  FileWriteback& operator=(const FileWriteback&) = delete;
  void advance();

 private:
  std::filesystem::path path_;
  WritebackSchedule schedule_;
  int fd_ = -1;  // -1: not supported here (or by this file system), advance() does nothing
};

// The points between the steps, for fault-injection tests: `written` comes before the fsync of the temp file,
// `synced` before the rename, `renamed` before the fsync of the directory.
enum class CommitStep { written, synced, renamed };
using CommitHook = std::function<void(CommitStep)>;

// The temp file is complete and closed: fsync it, rename it to `final_path`, fsync the directory.
void file_commit(const std::filesystem::path& tmp, const std::filesystem::path& final_path,
                 const CommitHook& hook = {});
// Writes content to final_path + tmp_suffix(), then file_commit. The temp file is removed if a step fails with a
// std::exception.
void file_write_atomic(const std::filesystem::path& final_path, std::string_view content, const CommitHook& hook = {});

}  // namespace ranktune
