// defines: helpers shared by the model tests: fixture paths, a scratch directory, norm-wise relative error.
#pragma once

#include <ATen/ATen.h>
#include <ftw.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace ranktune::test {

inline std::string fixture(const std::string& rel) { return std::string(RANKTUNE_FIXTURES_DIR) + "/" + rel; }

// ||a - b|| / ||b|| in fp64.
inline double rel_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kCPU, at::kDouble);
  const at::Tensor y = b.detach().to(at::kCPU, at::kDouble);
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

// Recursive delete without std::filesystem::remove_all: the copy of it that libtorch.so exports (and that wins
// symbol resolution over libstdc++'s) crashes.
inline void remove_tree(const std::string& path) {
  ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

// A fresh directory removed when the object goes out of scope.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() /
              ("ranktune_" + tag + "_" + std::to_string(::getpid()))) {
    remove_tree(path_.string());
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { remove_tree(path_.string()); }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace ranktune::test
