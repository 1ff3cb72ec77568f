// defines: ScratchDir, a fresh directory under the system temp dir that a test writes its files into and that goes,
// with everything in it, when the object does; and test_name(), the running test's name, for tags of fixtures whose
// tests must not see each other's leftovers. The MPI variant, one directory for all ranks, is shared_scratch_dir.h.
#pragma once

#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace ranktune::test {

// The running GoogleTest's name ("" outside a test); '/' of parameterised names becomes '_' to fit a file name.
inline std::string test_name() {
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? info->name() : "";
  for (char& c : name)
    if (c == '/') c = '_';
  return name;
}

class ScratchDir {
 public:
  // <temp dir>/ranktune_<tag>_<pid>: the pid keeps runs of the same test binary side by side apart; a leftover of a
  // killed run with the same pid is removed first.
  explicit ScratchDir(const std::string& tag) : path_(path_for(tag, ::getpid())) {
    remove(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { remove(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

  static std::filesystem::path path_for(const std::string& tag, std::int64_t pid) {
    return std::filesystem::temp_directory_path() / ("ranktune_" + tag + "_" + std::to_string(pid));
  }

  // Recursive delete without std::filesystem::remove_all: the copy of it that libtorch.so exports (and that wins
  // symbol resolution over libstdc++'s) crashes. Nothing happens if the path does not exist.
  static void remove(const std::filesystem::path& path) {
    ::nftw(
        path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace ranktune::test
