// defines: file_text(path), a whole file's bytes as a string (empty when it cannot be read): what the tests compare
// manifests, `latest` and config.json files by.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace ranktune::test {

inline std::string file_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace ranktune::test
