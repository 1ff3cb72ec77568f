// defines: the durable-commit steps every checkpoint file goes through: write NAME.tmp.<job id or pid>, fsync it,
// rename it over NAME, fsync the directory. A reader therefore sees either the old NAME or the complete new one,
// also after a crash or power loss. Errors are std::system_error naming the path and carrying errno.
#pragma once

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
