// defines: SafetensorsFile (a memory-mapped .safetensors file whose header is validated before any tensor is handed
// out) and safetensors_save (the writer; same byte layout as the python safetensors library).
// A damaged file is a CheckpointError naming the file and the tensor: a truncated download or a lying header must never
// turn into garbage weights or a crash.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ranktune {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte range in the data section
  std::uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header: dtypes, shapes against byte sizes, offsets inside the file, no overlap
  // or gap. Throws CheckpointError.
  explicit SafetensorsFile(std::string path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in data order
  const SafetensorsEntry* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor over the mapping (copy-on-write private pages: writing into it never changes the file). It keeps the
  // mapping alive. Throws CheckpointError if the name is absent.
  at::Tensor tensor(std::string_view name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes the tensors (any device; copied to CPU, contiguous) to `path` through a temporary file, fsync and rename.
// Tensors are laid out like the python library does: by dtype width, widest first, then by name.
void safetensors_save(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// "BF16", "F32", ... as the format names them.
const char* safetensors_dtype_name(at::ScalarType t);

}  // namespace ranktune
