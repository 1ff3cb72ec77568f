// defines: ranktune::h5, thin RAII wrappers over the serial HDF5 C API: RANKTUNE_H5_CHECK, unique handles, files
// with configurable locking, groups from dotted names, tensors of every dtype (bf16 as a committed custom float type
// that h5py reads as float32) with `dtype`/`shape` attributes, byte blobs, and UTF-8 / integer attributes.
// Raw H5* calls live here and in h5.cpp; checkpoints and token datasets are built on this API.
#pragma once

#include <ATen/core/Tensor.h>
#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ranktune/core/check.h"
#include "ranktune/core/error.h"

namespace ranktune::h5 {

// An HDF5 call failed. Callers that know the culprit (a checkpoint file of rank r, a dataset file) catch it and
// rethrow their own error naming it; uncaught it is an internal error.
class H5Error : public LibraryError {
 public:
  using LibraryError::LibraryError;
};

namespace detail {
template <class T>
bool ok(T rc) {
  return rc >= 0;
}
// The HDF5 error stack of this thread as one line (innermost cause last), then cleared.
std::string error_stack();
template <class T>
std::string error_string(T) {
  return error_stack();
}
hid_t check_id(hid_t id, const char* call, const char* file, int line);
}  // namespace detail

}  // namespace ranktune::h5

// For calls returning herr_t/htri_t: throws H5Error with the call, file:line and the HDF5 error stack.
#define RANKTUNE_H5_CHECK(call)                                                                      \
  RANKTUNE_CHECK_GEN("HDF5", call, ::ranktune::h5::detail::ok, ::ranktune::h5::detail::error_string, \
                     ::ranktune::h5::H5Error)
// For calls returning an hid_t: the same check, and the id is the value of the expression.
#define RANKTUNE_H5_ID(call) ::ranktune::h5::detail::check_id((call), #call, __FILE__, __LINE__)

namespace ranktune::h5 {

// Owns one HDF5 id and closes it with Close; move-only, like unique_ptr.
template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }
  void reset() {
    if (id_ >= 0) Close(id_);  // destructors cannot report; file_close() is the checked close
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Type = Handle<H5Tclose>;
using Plist = Handle<H5Pclose>;
using Attribute = Handle<H5Aclose>;

// Whether this HDF5 library was built thread-safe (--enable-threadsafe: one global lock around every API call).
// Without it, two threads must never call HDF5 at the same time.
bool library_threadsafe();

// --- files -------------------------------------------------------------------------------------------------------

// best_effort: lock, but carry on where the filesystem has no locks (NFS/Lustre without flock); on: lock or fail;
// off: never lock. HDF5_USE_FILE_LOCKING in the environment overrides all three (HDF5's own rule).
enum class FileLocking { best_effort, on, off };
FileLocking file_locking_parse(std::string_view text);  // "best-effort" | "true" | "false"; ConfigError otherwise
const char* file_locking_name(FileLocking locking);

// Creates (truncating) or opens read-only. A failure names the path; a locking failure adds a hint naming
// HDF5_USE_FILE_LOCKING. userblock > 0 (a power of two >= 512) leaves that many bytes before the HDF5 data for the
// caller to fill after closing (HDF5 and h5py skip them): token datasets keep their checksum there.
File file_create(const std::string& path, FileLocking locking, std::uint64_t userblock = 0);
File file_open(const std::string& path, FileLocking locking);
// Opens an existing file for reading and writing (to add attributes to a file whose data is written).
File file_open_rw(const std::string& path, FileLocking locking);
// Checked close: the last flush happens here, so a full disk shows up here and not in a destructor.
void file_close(File& file);

// --- names and groups --------------------------------------------------------------------------------------------

// "model.layers.0.attn.wq.weight" -> "model/layers/0/attn/wq/weight". Empty components and '/' inside a component
// are refused (H5Error naming the name).
std::string path_from_dotted(std::string_view dotted);
std::string dotted_from_path(std::string_view path);

// True when every component of the relative path exists below loc.
bool exists(hid_t loc, std::string_view path);
// Opens the group at path, creating it and any missing parents.
Group group_require(hid_t loc, std::string_view path);
Group group_open(hid_t loc, std::string_view path);

// Every dataset below loc (recursively), as relative slash paths in name order. Committed types are not listed.
std::vector<std::string> datasets_list(hid_t loc);

// --- tensors and blobs -------------------------------------------------------------------------------------------

struct TensorWriteOptions {
  std::size_t chunk_bytes = std::size_t{1} << 20;  // target chunk size; each chunk carries its own Fletcher32
  bool fletcher32 = true;
  // A thread-safe HDF5 holds one lock for the whole of a call: a dataset above this size is written in slices of
  // whole chunk rows of its leading dimension, about this big, so that another thread's HDF5 calls (the training
  // thread's dataset reads during a background checkpoint write) wait for one slice, not for the whole tensor. The
  // file's bytes do not depend on it. 0: one write.
  std::size_t slice_bytes = std::size_t{64} << 20;
  // Called after each H5Dwrite (each slice): checkpoint files start their write-back there (FileWriteback).
  std::function<void()> after_write;
  // With Fletcher32 and chunks that hold whole rows, write each chunk as the filter would store it (the data, padded
  // with zeros to a whole chunk at the edge, then its checksum) through H5Dwrite_chunk, checksums and copies spread
  // over the rank's intra-op threads: every chunk stored byte for byte as the filter pipeline stores it (only the
  // chunk index may sit elsewhere in the file); `false`: that pipeline, on one thread, the reference of the tests.
  bool direct_chunks = true;
  // The direct writer's buffer (a slice's chunks with their checksums), kept by the caller across the datasets of a
  // file so that each does not fault in fresh pages; null: one buffer per dataset.
  std::vector<std::uint8_t>* scratch = nullptr;
};

// The checksum HDF5's Fletcher32 filter appends to a chunk (stored little-endian after the chunk's bytes): Fletcher's
// checksum over the chunk as big-endian 16-bit words (an odd last byte as the high byte of a word), both sums folded
// into 16 bits every 360 words.
std::uint32_t fletcher32(const void* data, std::size_t n);

// Stored dtypes: float32 float64 float16 bfloat16 int8 int16 int32 int64 uint8 bool. The `dtype` attribute holds
// that name ("bytes" for a blob), `shape` the int64 dimensions ([] for a 0-d tensor). Tensors with at least one
// element and one dimension are chunked with Fletcher32; 0-d and empty tensors are contiguous (nothing to chunk).
const char* dtype_name(at::ScalarType dtype);
at::ScalarType dtype_from_name(std::string_view name);  // H5Error for an unknown name

// Writes a new dataset at path (parents created). CUDA tensors are copied to the host first.
void tensor_write(hid_t loc, std::string_view path, const at::Tensor& tensor, const TensorWriteOptions& opts = {});
// Reads it back bit-exact (bf16 and fp16 as raw bits, NaN payloads included). Checks that the HDF5 type and
// dataspace agree with the `dtype`/`shape` attributes; Fletcher32 is verified by HDF5 on the way.
at::Tensor tensor_read(hid_t loc, std::string_view path);

struct TensorInfo {
  std::string dtype;  // the `dtype` attribute, "bytes" for a blob
  std::vector<std::int64_t> shape;
  std::uint64_t bytes = 0;  // payload size in memory
  bool chunked = false;
  bool fletcher32 = false;
};
TensorInfo tensor_info(hid_t loc, std::string_view path);

// An opaque byte string (an RNG state, a serialized cursor) as a 1-D uint8 dataset with dtype "bytes".
void bytes_write(hid_t loc, std::string_view path, const void* data, std::size_t size,
                 const TensorWriteOptions& opts = {});
std::vector<std::uint8_t> bytes_read(hid_t loc, std::string_view path);

// --- attributes --------------------------------------------------------------------------------------------------

// Strings are variable-length UTF-8 (h5py returns str); integers are int64 scalars or 1-D arrays. Writing replaces
// an existing attribute of that name.
void attr_write_string(hid_t obj, std::string_view name, std::string_view value);
void attr_write_int(hid_t obj, std::string_view name, std::int64_t value);
void attr_write_ints(hid_t obj, std::string_view name, const std::vector<std::int64_t>& values);
std::string attr_read_string(hid_t obj, std::string_view name);
std::int64_t attr_read_int(hid_t obj, std::string_view name);
std::vector<std::int64_t> attr_read_ints(hid_t obj, std::string_view name);
bool attr_exists(hid_t obj, std::string_view name);

enum class AttrKind { string, integer, integers, other };
AttrKind attr_kind(hid_t obj, std::string_view name);
std::vector<std::string> attr_names(hid_t obj);

}  // namespace ranktune::h5
