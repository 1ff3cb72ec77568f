// HDF5 wrappers. Every object is created with time tracking off, so identical content gives identical bytes (and
// an identical checksum); automatic error printing is off, errors travel as H5Error carrying HDF5's error stack.
#include "ranktune/io/h5.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "ranktune/core/parallel_range.h"

namespace ranktune::h5 {
namespace {

constexpr const char* kTypesGroup = "_types";
constexpr const char* kBf16Path = "_types/bfloat16";

// HDF5 before 1.14.1 (Debian 12 ships 1.10.8) frees a file whose H5Fclose failed while flushing (disk full, EFBIG,
// EIO) but leaves its ID registered; the library's atexit teardown then closes that ID again and crashes
// (HDFGroup/hdf5 pull 2291). A run whose checkpoint save failed would train on and then die with SIGSEGV instead of
// its exit code. Every file here is closed by a checked file_close or its handle, so the teardown has nothing left to
// flush and is skipped. H5dont_atexit only works before the library initialises, hence a static initialiser, where a
// failure cannot be reported: it fails only when HDF5 was initialised earlier, which costs this protection and nothing
// else. tests/integration/train_save_failure.sh exits 0 only with it.
const herr_t kAtexitTeardownSkipped = H5dont_atexit();

// HDF5 keeps the error-printing switch per thread in thread-safe builds.
void quiet() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

// Runs fn; an H5Error escaping it is rethrown with `context: ` in front and the same hint.
template <class F>
auto with_context(const std::string& context, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const H5Error& e) {
    throw H5Error(context + ": " + e.what(), e.hint());
  }
}

Plist plist(hid_t cls) { return Plist(RANKTUNE_H5_ID(H5Pcreate(cls))); }

Plist no_times(hid_t cls) {
  Plist p = plist(cls);
  RANKTUNE_H5_CHECK(H5Pset_obj_track_times(p.get(), 0));
  return p;
}

Type copy_type(hid_t t) { return Type(RANKTUNE_H5_ID(H5Tcopy(t))); }

// A little-endian IEEE-style float of `bits` bits: sign at the top, then exponent, then mantissa.
Type float_type(std::size_t bits, std::size_t ebits, std::size_t mbits, std::size_t ebias) {
  Type t = copy_type(H5T_IEEE_F32LE);
  RANKTUNE_H5_CHECK(H5Tset_fields(t.get(), bits - 1, mbits, ebits, 0, mbits));
  RANKTUNE_H5_CHECK(H5Tset_offset(t.get(), 0));
  RANKTUNE_H5_CHECK(H5Tset_precision(t.get(), bits));
  RANKTUNE_H5_CHECK(H5Tset_size(t.get(), bits / 8));
  RANKTUNE_H5_CHECK(H5Tset_ebias(t.get(), ebias));
  return t;
}

Type bf16_type() { return float_type(16, 8, 7, 127); }
Type fp16_type() { return float_type(16, 5, 10, 15); }

Type vlen_utf8() {
  Type t = copy_type(H5T_C_S1);
  RANKTUNE_H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE));
  RANKTUNE_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8));
  return t;
}

std::string cstr(std::string_view s) { return std::string(s); }

// The committed bfloat16 type of the file holding loc, created on first use.
Type bf16_committed(hid_t loc) {
  File file(RANKTUNE_H5_ID(H5Iget_file_id(loc)));
  if (exists(file.get(), kBf16Path)) return Type(RANKTUNE_H5_ID(H5Topen2(file.get(), kBf16Path, H5P_DEFAULT)));
  group_require(file.get(), kTypesGroup);
  Type t = bf16_type();
  RANKTUNE_H5_CHECK(H5Tcommit2(file.get(), kBf16Path, t.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  return t;
}

struct TypePair {
  Type file;
  Type mem;
};

// File and memory types of a stored dtype name. bf16 uses the committed type of the file holding loc_for_commit,
// or a transient copy when it is H5I_INVALID_HID (for comparisons on read).
TypePair types_of(std::string_view dtype, hid_t loc_for_commit) {
  if (dtype == "float32") return {copy_type(H5T_IEEE_F32LE), copy_type(H5T_NATIVE_FLOAT)};
  if (dtype == "float64") return {copy_type(H5T_IEEE_F64LE), copy_type(H5T_NATIVE_DOUBLE)};
  if (dtype == "float16") return {fp16_type(), fp16_type()};
  if (dtype == "bfloat16") return {loc_for_commit >= 0 ? bf16_committed(loc_for_commit) : bf16_type(), bf16_type()};
  if (dtype == "int8") return {copy_type(H5T_STD_I8LE), copy_type(H5T_NATIVE_INT8)};
  if (dtype == "int16") return {copy_type(H5T_STD_I16LE), copy_type(H5T_NATIVE_INT16)};
  if (dtype == "int32") return {copy_type(H5T_STD_I32LE), copy_type(H5T_NATIVE_INT32)};
  if (dtype == "int64") return {copy_type(H5T_STD_I64LE), copy_type(H5T_NATIVE_INT64)};
  if (dtype == "uint8" || dtype == "bool" || dtype == "bytes")
    return {copy_type(H5T_STD_U8LE), copy_type(H5T_NATIVE_UINT8)};
  throw H5Error("unknown stored dtype '" + std::string(dtype) + "'");
}

std::pair<std::string, std::string> split_parent(std::string_view path) {
  const auto slash = path.rfind('/');
  if (slash == std::string_view::npos) return {"", std::string(path)};
  return {std::string(path.substr(0, slash)), std::string(path.substr(slash + 1))};
}

std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, std::size_t elem, std::size_t target) {
  std::vector<hsize_t> c = dims;
  for (std::size_t i = 0; i < c.size(); ++i) {
    hsize_t inner = elem;
    for (std::size_t j = i + 1; j < c.size(); ++j) inner *= c[j];
    if (c[i] * inner <= target) break;
    if (inner <= target) {
      c[i] = std::max<hsize_t>(1, target / inner);
      break;
    }
    c[i] = 1;  // one slice along this dimension is still too big: cut the next one too
  }
  return c;
}

// Writes all of `data` (C order, `dims`) into ds. Slices hold whole chunks (a multiple of the chunk's leading extent),
// so every chunk is still written once, whole, in the same order as by one write: the file's bytes are the same.
// Between slices the writer pauses briefly: the thread-safe build's lock is not fair, and a thread waiting for it
// would otherwise rarely win it back from a writer that asks again at once.
void write_sliced(hid_t ds, hid_t mem_type, const std::vector<hsize_t>& dims, hsize_t chunk_rows, const void* data,
                  std::size_t elem, std::size_t slice_bytes, const std::function<void()>& after_write) {
  hsize_t row_bytes = elem;
  for (std::size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
  const hsize_t rows =
      slice_bytes == 0 || chunk_rows == 0 ? 0 : std::max<hsize_t>(1, slice_bytes / row_bytes / chunk_rows) * chunk_rows;
  if (rows == 0 || dims.empty() || rows >= dims[0]) {
    RANKTUNE_H5_CHECK(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    if (after_write) after_write();
    return;
  }
  Dataspace file_space(RANKTUNE_H5_ID(H5Dget_space(ds)));
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  for (hsize_t row = 0; row < dims[0]; row += rows) {
    if (row > 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
    start[0] = row;
    count[0] = std::min(rows, dims[0] - row);
    RANKTUNE_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    Dataspace mem_space(RANKTUNE_H5_ID(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)));
    RANKTUNE_H5_CHECK(H5Dwrite(ds, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT,
                               static_cast<const std::uint8_t*>(data) + row * row_bytes));
    if (after_write) after_write();
  }
}

// write_sliced's schedule with each chunk stored as HDF5's Fletcher32 filter would store it (see
// TensorWriteOptions::direct_chunks): the chunks of a slice are copied, zero-padded and checksummed on the intra-op
// threads into one buffer, then handed to H5Dwrite_chunk in order, so the library allocates them in the file in the
// order the filter pipeline would. `chunk_rows` rows of `row_bytes` make a chunk (the chunk holds whole rows).
// `buffer` receives a slice's chunks with their checksums (slice_bytes plus 4 bytes a chunk).
void write_direct(hid_t ds, hsize_t total_rows, std::size_t rank, hsize_t chunk_rows, std::size_t row_bytes,
                  const void* data, std::size_t slice_bytes, const std::function<void()>& after_write,
                  std::vector<std::uint8_t>& buffer) {
  const std::size_t chunk_bytes = chunk_rows * row_bytes, stored = chunk_bytes + 4;
  const hsize_t chunks = (total_rows + chunk_rows - 1) / chunk_rows;
  const hsize_t slice_rows = slice_bytes == 0 ? 0
                                              : std::max<hsize_t>(1, slice_bytes / row_bytes / chunk_rows) * chunk_rows;
  const hsize_t per_slice = slice_rows == 0 || slice_rows >= total_rows ? chunks : slice_rows / chunk_rows;
  if (buffer.size() < per_slice * stored) buffer.resize(per_slice * stored);
  std::uint8_t* const base = buffer.data();
  const auto* src = static_cast<const std::uint8_t*>(data);
  const std::size_t total_bytes = total_rows * row_bytes;
  std::vector<hsize_t> offset(rank, 0);
  for (hsize_t first = 0; first < chunks; first += per_slice) {
    if (first > 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
    const hsize_t n = std::min(per_slice, chunks - first);
    parallel_range(static_cast<std::int64_t>(n), 1, at::get_num_threads(), [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t j = b; j < e; ++j) {
        std::uint8_t* out = base + static_cast<std::size_t>(j) * stored;
        const std::size_t at = (first + static_cast<hsize_t>(j)) * chunk_bytes;
        const std::size_t have = std::min(chunk_bytes, total_bytes - at);
        std::memcpy(out, src + at, have);
        std::memset(out + have, 0, chunk_bytes - have);  // the edge chunk: the fill value (zero) past the data
        const std::uint32_t sum = fletcher32(out, chunk_bytes);
        for (int k = 0; k < 4; ++k) out[chunk_bytes + k] = static_cast<std::uint8_t>(sum >> (8 * k));
      }
    });
    for (hsize_t j = 0; j < n; ++j) {
      offset[0] = (first + j) * chunk_rows;
      RANKTUNE_H5_CHECK(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, offset.data(), stored, base + j * stored));
    }
    if (after_write) after_write();
  }
}

void dataset_write(hid_t loc, std::string_view path, std::string_view dtype, const std::vector<hsize_t>& dims,
                   const void* data, std::size_t elem, const TensorWriteOptions& opts) {
  const auto [parent, leaf] = split_parent(path);
  if (leaf.empty()) throw H5Error("empty dataset name in '" + std::string(path) + "'");
  Group group = parent.empty() ? Group(RANKTUNE_H5_ID(H5Gopen2(loc, ".", H5P_DEFAULT))) : group_require(loc, parent);
  TypePair types = types_of(dtype, loc);
  Dataspace space(dims.empty() ? RANKTUNE_H5_ID(H5Screate(H5S_SCALAR))
                               : RANKTUNE_H5_ID(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  hsize_t numel = 1;
  for (hsize_t d : dims) numel *= d;
  Plist dcpl = no_times(H5P_DATASET_CREATE);
  hsize_t chunk_rows = 0;   // the chunk's leading extent; 0: contiguous
  bool whole_rows = false;  // every chunk spans the trailing dimensions: a chunk is contiguous in `data`
  if (!dims.empty() && numel > 0) {
    const auto chunk = chunk_dims(dims, elem, std::max<std::size_t>(opts.chunk_bytes, elem));
    RANKTUNE_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()));
    if (opts.fletcher32) RANKTUNE_H5_CHECK(H5Pset_fletcher32(dcpl.get()));
    chunk_rows = chunk[0];
    whole_rows = std::equal(chunk.begin() + 1, chunk.end(), dims.begin() + 1);
  }
  Dataset ds(RANKTUNE_H5_ID(
      H5Dcreate2(group.get(), leaf.c_str(), types.file.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
  // Every stored type is little-endian, as the memory types on a little-endian host: the bytes go to the file as
  // they are.
  const bool direct = opts.direct_chunks && opts.fletcher32 && whole_rows && std::endian::native == std::endian::little;
  if (numel > 0 && direct) {
    std::vector<std::uint8_t> own;
    write_direct(ds.get(), dims[0], dims.size(), chunk_rows, static_cast<std::size_t>(numel / dims[0]) * elem, data,
                 opts.slice_bytes, opts.after_write, opts.scratch != nullptr ? *opts.scratch : own);
  } else if (numel > 0)
    write_sliced(ds.get(), types.mem.get(), dims, chunk_rows, data, elem, chunk_rows > 0 ? opts.slice_bytes : 0,
                 opts.after_write);
  attr_write_string(ds.get(), "dtype", dtype);
  std::vector<std::int64_t> shape(dims.begin(), dims.end());
  attr_write_ints(ds.get(), "shape", shape);
}

std::vector<hsize_t> dataspace_dims(hid_t ds) {
  Dataspace space(RANKTUNE_H5_ID(H5Dget_space(ds)));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  RANKTUNE_H5_CHECK(rank);
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) RANKTUNE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return dims;
}

// Opens the dataset and checks its type and dataspace against the `dtype`/`shape` attributes.
struct CheckedDataset {
  Dataset ds;
  std::string dtype;
  std::vector<std::int64_t> shape;
  TypePair types;
};

CheckedDataset dataset_open_checked(hid_t loc, std::string_view path) {
  Dataset ds(RANKTUNE_H5_ID(H5Dopen2(loc, cstr(path).c_str(), H5P_DEFAULT)));
  if (!attr_exists(ds.get(), "dtype") || !attr_exists(ds.get(), "shape"))
    throw H5Error("missing `dtype` or `shape` attribute");
  std::string dtype = attr_read_string(ds.get(), "dtype");
  std::vector<std::int64_t> shape = attr_read_ints(ds.get(), "shape");
  TypePair types = types_of(dtype, H5I_INVALID_HID);
  Type stored(RANKTUNE_H5_ID(H5Dget_type(ds.get())));
  const htri_t same = H5Tequal(stored.get(), types.file.get());
  RANKTUNE_H5_CHECK(same);
  if (!same) throw H5Error("the stored HDF5 type does not match the dtype attribute '" + dtype + "'");
  const auto dims = dataspace_dims(ds.get());
  if (!std::equal(dims.begin(), dims.end(), shape.begin(), shape.end(),
                  [](hsize_t d, std::int64_t s) { return s >= 0 && d == static_cast<hsize_t>(s); }))
    throw H5Error("the dataspace does not match the shape attribute");
  return {std::move(ds), std::move(dtype), std::move(shape), std::move(types)};
}

herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t* info, void* out) {
  if (info->type != H5L_TYPE_HARD) return 0;
  const hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  if (H5Iget_type(obj) == H5I_DATASET) static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  H5Oclose(obj);
  return 0;
}

herr_t collect_attr(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

Attribute attr_open(hid_t obj, std::string_view name) {
  return Attribute(RANKTUNE_H5_ID(H5Aopen(obj, cstr(name).c_str(), H5P_DEFAULT)));
}

Attribute attr_create(hid_t obj, std::string_view name, hid_t type, hid_t space) {
  const std::string n(name);
  const htri_t there = H5Aexists(obj, n.c_str());
  RANKTUNE_H5_CHECK(there);
  if (there) RANKTUNE_H5_CHECK(H5Adelete(obj, n.c_str()));
  return Attribute(RANKTUNE_H5_ID(H5Acreate2(obj, n.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
}

File file_with(const std::string& path, FileLocking locking, const std::function<hid_t(hid_t fapl)>& open,
               const char* verb) {
  quiet();
  try {
    Plist fapl = plist(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    const bool use = locking != FileLocking::off;
    const bool ignore_when_disabled = locking == FileLocking::best_effort;
    RANKTUNE_H5_CHECK(H5Pset_file_locking(fapl.get(), use, ignore_when_disabled));
#endif
    return File(RANKTUNE_H5_ID(open(fapl.get())));
  } catch (const H5Error& e) {
    const std::string what = std::string("cannot ") + verb + " HDF5 file '" + path + "': " + e.what();
    if (what.find("lock") != std::string::npos)
      throw H5Error(what,
                    "the filesystem refused an HDF5 file lock (NFS/Lustre without flock, or another process "
                    "holds the file): set HDF5_USE_FILE_LOCKING=FALSE in the environment, or "
                    "--checkpoint.file_locking=false / best-effort");
    throw H5Error(what);
  }
}

}  // namespace

namespace detail {

std::string error_stack() {
  std::vector<std::string> parts;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* err, void* data) -> herr_t {
        auto* out = static_cast<std::vector<std::string>*>(data);
        std::string desc = err->desc ? err->desc : "";
        if (desc.empty() && err->func_name) desc = err->func_name;
        if (!desc.empty() && std::find(out->begin(), out->end(), desc) == out->end()) out->push_back(desc);
        return 0;
      },
      &parts);
  H5Eclear2(H5E_DEFAULT);
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ": ") + p;
  return s.empty() ? "no HDF5 error message" : s;
}

hid_t check_id(hid_t id, const char* call, const char* file, int line) {
  if (id < 0) ranktune::detail::check_fail<H5Error>("HDF5", call, id, error_stack(), file, line);
  return id;
}

}  // namespace detail

bool library_threadsafe() {
  hbool_t yes = false;
  return H5is_library_threadsafe(&yes) >= 0 && yes;
}

FileLocking file_locking_parse(std::string_view text) {
  if (text == "best-effort") return FileLocking::best_effort;
  if (text == "true") return FileLocking::on;
  if (text == "false") return FileLocking::off;
  throw ConfigError("bad file locking value '" + std::string(text) + "': expected best-effort, true or false");
}

const char* file_locking_name(FileLocking locking) {
  switch (locking) {
    case FileLocking::best_effort: return "best-effort";
    case FileLocking::on: return "true";
    case FileLocking::off: return "false";
  }
  return "?";
}

File file_create(const std::string& path, FileLocking locking, std::uint64_t userblock) {
  return file_with(
      path, locking,
      [&](hid_t fapl) {
        Plist fcpl = no_times(H5P_FILE_CREATE);
        if (userblock > 0) RANKTUNE_H5_CHECK(H5Pset_userblock(fcpl.get(), userblock));
        return H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl);
      },
      "create");
}

File file_open(const std::string& path, FileLocking locking) {
  return file_with(
      path, locking, [&](hid_t fapl) { return H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl); }, "open");
}

File file_open_rw(const std::string& path, FileLocking locking) {
  return file_with(
      path, locking, [&](hid_t fapl) { return H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl); }, "open");
}

void file_close(File& file) {
  if (file) RANKTUNE_H5_CHECK(H5Fclose(file.release()));
}

std::string path_from_dotted(std::string_view dotted) {
  std::string out;
  std::size_t start = 0;
  while (true) {
    const auto dot = dotted.find('.', start);
    const auto part = dotted.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty() || part.find('/') != std::string_view::npos)
      throw H5Error("bad name '" + std::string(dotted) +
                    "': components separated by '.' must be non-empty and must not contain '/'");
    out += (out.empty() ? "" : "/") + std::string(part);
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

std::string dotted_from_path(std::string_view path) {
  std::string out(path);
  std::replace(out.begin(), out.end(), '/', '.');
  return out;
}

bool exists(hid_t loc, std::string_view path) {
  quiet();
  std::size_t pos = 0;
  while (true) {
    const auto slash = path.find('/', pos);
    const std::string prefix(path.substr(0, slash));
    const htri_t there = H5Lexists(loc, prefix.c_str(), H5P_DEFAULT);
    if (there <= 0) {
      H5Eclear2(H5E_DEFAULT);  // a dataset where a group was expected also means "no"
      return false;
    }
    if (slash == std::string_view::npos) return true;
    pos = slash + 1;
  }
}

Group group_require(hid_t loc, std::string_view path) {
  quiet();
  return with_context("group '" + std::string(path) + "'", [&] {
    Plist gcpl = no_times(H5P_GROUP_CREATE);
    Group g(RANKTUNE_H5_ID(H5Gopen2(loc, ".", H5P_DEFAULT)));
    std::size_t pos = 0;
    while (pos <= path.size()) {
      const auto slash = path.find('/', pos);
      const std::string part(path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos));
      if (part.empty()) throw H5Error("empty component");
      const htri_t there = H5Lexists(g.get(), part.c_str(), H5P_DEFAULT);
      RANKTUNE_H5_CHECK(there);
      g = there ? Group(RANKTUNE_H5_ID(H5Gopen2(g.get(), part.c_str(), H5P_DEFAULT)))
                : Group(RANKTUNE_H5_ID(H5Gcreate2(g.get(), part.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT)));
      if (slash == std::string_view::npos) break;
      pos = slash + 1;
    }
    return g;
  });
}

Group group_open(hid_t loc, std::string_view path) {
  quiet();
  return with_context("group '" + std::string(path) + "'",
                      [&] { return Group(RANKTUNE_H5_ID(H5Gopen2(loc, cstr(path).c_str(), H5P_DEFAULT))); });
}

std::vector<std::string> datasets_list(hid_t loc) {
  quiet();
  std::vector<std::string> out;
  RANKTUNE_H5_CHECK(H5Lvisit(loc, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &out));
  return out;
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: throw H5Error(std::string("tensors of dtype ") + c10::toString(dtype) + " cannot be stored");
  }
}

at::ScalarType dtype_from_name(std::string_view name) {
  static const std::pair<const char*, at::ScalarType> table[] = {{"float32", at::kFloat}, {"float64", at::kDouble},
                                                                 {"float16", at::kHalf},  {"bfloat16", at::kBFloat16},
                                                                 {"int8", at::kChar},     {"int16", at::kShort},
                                                                 {"int32", at::kInt},     {"int64", at::kLong},
                                                                 {"uint8", at::kByte},    {"bool", at::kBool},
                                                                 {"bytes", at::kByte}};
  for (const auto& [n, t] : table)
    if (name == n) return t;
  throw H5Error("unknown stored dtype '" + std::string(name) + "'");
}

std::uint32_t fletcher32(const void* data, std::size_t n) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  const auto fold = [](std::uint32_t x) { return (x & 0xFFFFu) + (x >> 16); };
  std::uint32_t a = 0, b = 0;  // the running sum of the words, and the sum of those sums
  std::size_t words = n / 2;
  while (words > 0) {
    const std::size_t block = std::min<std::size_t>(words, 360);  // no 32-bit overflow within a block
    for (std::size_t i = 0; i < block; ++i, p += 2) {
      a += (std::uint32_t{p[0]} << 8) | p[1];
      b += a;
    }
    words -= block;
    a = fold(a);
    b = fold(b);
  }
  if (n % 2 != 0) {
    a += std::uint32_t{p[0]} << 8;
    b += a;
    a = fold(a);
    b = fold(b);
  }
  return (fold(b) << 16) | fold(a);
}

void tensor_write(hid_t loc, std::string_view path, const at::Tensor& tensor, const TensorWriteOptions& opts) {
  quiet();
  with_context("dataset '" + std::string(path) + "'", [&] {
    const char* dtype = dtype_name(tensor.scalar_type());
    at::Tensor host = tensor.is_cpu() ? tensor.contiguous() : tensor.to(at::kCPU).contiguous();
    if (host.scalar_type() == at::kBool) host = host.to(at::kByte);
    std::vector<hsize_t> dims(host.sizes().begin(), host.sizes().end());
    dataset_write(loc, path, dtype, dims, host.data_ptr(), static_cast<std::size_t>(host.element_size()), opts);
  });
}

at::Tensor tensor_read(hid_t loc, std::string_view path) {
  quiet();
  return with_context("dataset '" + std::string(path) + "'", [&] {
    CheckedDataset c = dataset_open_checked(loc, path);
    const at::ScalarType want = dtype_from_name(c.dtype);
    at::Tensor t = at::empty(c.shape, at::TensorOptions().dtype(want == at::kBool ? at::kByte : want));
    if (t.numel() > 0)
      RANKTUNE_H5_CHECK(H5Dread(c.ds.get(), c.types.mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()));
    return want == at::kBool ? t.ne(0) : t;
  });
}

TensorInfo tensor_info(hid_t loc, std::string_view path) {
  quiet();
  return with_context("dataset '" + std::string(path) + "'", [&] {
    CheckedDataset c = dataset_open_checked(loc, path);
    TensorInfo info;
    info.dtype = c.dtype;
    info.shape = c.shape;
    std::uint64_t n = 1;
    for (auto d : c.shape) n *= static_cast<std::uint64_t>(d);
    info.bytes = n * H5Tget_size(c.types.mem.get());
    Plist dcpl(RANKTUNE_H5_ID(H5Dget_create_plist(c.ds.get())));
    info.chunked = H5Pget_layout(dcpl.get()) == H5D_CHUNKED;
    const int nfilters = H5Pget_nfilters(dcpl.get());
    RANKTUNE_H5_CHECK(nfilters);
    for (int i = 0; i < nfilters; ++i) {
      unsigned flags = 0;
      std::size_t nelem = 0;
      const H5Z_filter_t f =
          H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &nelem, nullptr, 0, nullptr, nullptr);
      if (f == H5Z_FILTER_FLETCHER32) info.fletcher32 = true;
    }
    return info;
  });
}

void bytes_write(hid_t loc, std::string_view path, const void* data, std::size_t size, const TensorWriteOptions& opts) {
  quiet();
  with_context("blob '" + std::string(path) + "'",
               [&] { dataset_write(loc, path, "bytes", {static_cast<hsize_t>(size)}, data, 1, opts); });
}

std::vector<std::uint8_t> bytes_read(hid_t loc, std::string_view path) {
  quiet();
  return with_context("blob '" + std::string(path) + "'", [&] {
    CheckedDataset c = dataset_open_checked(loc, path);
    if (c.dtype != "bytes" || c.shape.size() != 1) throw H5Error("not a blob (dtype '" + c.dtype + "')");
    std::vector<std::uint8_t> out(static_cast<std::size_t>(c.shape[0]));
    if (!out.empty())
      RANKTUNE_H5_CHECK(H5Dread(c.ds.get(), c.types.mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()));
    return out;
  });
}

void attr_write_string(hid_t obj, std::string_view name, std::string_view value) {
  quiet();
  with_context("attribute '" + std::string(name) + "'", [&] {
    if (value.find('\0') != std::string_view::npos) throw H5Error("string values cannot contain NUL bytes");
    Type t = vlen_utf8();
    Dataspace space(RANKTUNE_H5_ID(H5Screate(H5S_SCALAR)));
    Attribute a = attr_create(obj, name, t.get(), space.get());
    const std::string copy(value);
    const char* p = copy.c_str();
    RANKTUNE_H5_CHECK(H5Awrite(a.get(), t.get(), &p));
  });
}

void attr_write_int(hid_t obj, std::string_view name, std::int64_t value) {
  quiet();
  with_context("attribute '" + std::string(name) + "'", [&] {
    Dataspace space(RANKTUNE_H5_ID(H5Screate(H5S_SCALAR)));
    Attribute a = attr_create(obj, name, H5T_STD_I64LE, space.get());
    RANKTUNE_H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, &value));
  });
}

void attr_write_ints(hid_t obj, std::string_view name, const std::vector<std::int64_t>& values) {
  quiet();
  with_context("attribute '" + std::string(name) + "'", [&] {
    const hsize_t n = values.size();
    Dataspace space(RANKTUNE_H5_ID(H5Screate_simple(1, &n, nullptr)));
    Attribute a = attr_create(obj, name, H5T_STD_I64LE, space.get());
    if (n) RANKTUNE_H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, values.data()));
  });
}

std::string attr_read_string(hid_t obj, std::string_view name) {
  quiet();
  return with_context("attribute '" + std::string(name) + "'", [&] {
    Attribute a = attr_open(obj, name);
    Type stored(RANKTUNE_H5_ID(H5Aget_type(a.get())));
    if (H5Tget_class(stored.get()) != H5T_STRING) throw H5Error("not a string");
    const htri_t variable = H5Tis_variable_str(stored.get());
    RANKTUNE_H5_CHECK(variable);
    Type mem = copy_type(H5T_C_S1);
    RANKTUNE_H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(stored.get())));
    if (variable) {
      RANKTUNE_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
      char* p = nullptr;
      RANKTUNE_H5_CHECK(H5Aread(a.get(), mem.get(), &p));
      std::string out = p ? p : "";
      H5free_memory(p);
      return out;
    }
    const std::size_t n = H5Tget_size(stored.get());
    RANKTUNE_H5_CHECK(H5Tset_size(mem.get(), n));
    std::string out(n, '\0');
    RANKTUNE_H5_CHECK(H5Aread(a.get(), mem.get(), out.data()));
    out.resize(std::min(out.find('\0'), out.size()));
    return out;
  });
}

std::vector<std::int64_t> attr_read_ints(hid_t obj, std::string_view name) {
  quiet();
  return with_context("attribute '" + std::string(name) + "'", [&] {
    Attribute a = attr_open(obj, name);
    Type stored(RANKTUNE_H5_ID(H5Aget_type(a.get())));
    if (H5Tget_class(stored.get()) != H5T_INTEGER) throw H5Error("not an integer");
    Dataspace space(RANKTUNE_H5_ID(H5Aget_space(a.get())));
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    RANKTUNE_H5_CHECK(n);
    std::vector<std::int64_t> out(static_cast<std::size_t>(n));
    if (n) RANKTUNE_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, out.data()));
    return out;
  });
}

std::int64_t attr_read_int(hid_t obj, std::string_view name) {
  const auto v = attr_read_ints(obj, name);
  if (v.size() != 1) throw H5Error("attribute '" + std::string(name) + "': not a single integer");
  return v.front();
}

bool attr_exists(hid_t obj, std::string_view name) {
  quiet();
  const htri_t there = H5Aexists(obj, cstr(name).c_str());
  RANKTUNE_H5_CHECK(there);
  return there > 0;
}

AttrKind attr_kind(hid_t obj, std::string_view name) {
  quiet();
  Attribute a = attr_open(obj, name);
  Type stored(RANKTUNE_H5_ID(H5Aget_type(a.get())));
  Dataspace space(RANKTUNE_H5_ID(H5Aget_space(a.get())));
  const H5S_class_t shape = H5Sget_simple_extent_type(space.get());
  switch (H5Tget_class(stored.get())) {
    case H5T_STRING: return shape == H5S_SCALAR ? AttrKind::string : AttrKind::other;
    case H5T_INTEGER:
      if (shape == H5S_SCALAR) return AttrKind::integer;
      return H5Sget_simple_extent_ndims(space.get()) == 1 ? AttrKind::integers : AttrKind::other;
    default: return AttrKind::other;
  }
}

std::vector<std::string> attr_names(hid_t obj) {
  quiet();
  std::vector<std::string> out;
  hsize_t idx = 0;
  RANKTUNE_H5_CHECK(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &out));
  return out;
}

}  // namespace ranktune::h5
