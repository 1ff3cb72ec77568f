// Growing int32 row matrices: H5Dset_extent + a hyperslab per append, a hyperslab per read.
#include "ranktune/io/h5_rows.h"

#include <utility>

namespace ranktune::h5 {
namespace {

struct Extent {
  hsize_t rows = 0;
  hsize_t width = 0;
};

Extent extent_of(hid_t dataset) {
  Dataspace space(RANKTUNE_H5_ID(H5Dget_space(dataset)));
  const int ndims = H5Sget_simple_extent_ndims(space.get());
  RANKTUNE_H5_CHECK(ndims);
  if (ndims != 2) throw H5Error("expected a 2-D dataset, found " + std::to_string(ndims) + "-D");
  hsize_t dims[2];
  RANKTUNE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
  return {dims[0], dims[1]};
}

// The file-side selection of rows [begin, begin + n) and a matching memory space.
std::pair<Dataspace, Dataspace> select_rows(hid_t dataset, hsize_t begin, hsize_t n, hsize_t width) {
  Dataspace file(RANKTUNE_H5_ID(H5Dget_space(dataset)));
  const hsize_t start[2] = {begin, 0}, count[2] = {n, width};
  RANKTUNE_H5_CHECK(H5Sselect_hyperslab(file.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
  Dataspace mem(RANKTUNE_H5_ID(H5Screate_simple(2, count, nullptr)));
  return {std::move(file), std::move(mem)};
}

}  // namespace

Dataset rows_create(hid_t loc, const std::string& name, std::int64_t width, std::int64_t chunk_rows) {
  if (width <= 0 || chunk_rows <= 0) throw H5Error("rows_create '" + name + "': width and chunk rows must be > 0");
  const hsize_t dims[2] = {0, static_cast<hsize_t>(width)};
  const hsize_t maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(width)};
  const hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows), static_cast<hsize_t>(width)};
  Dataspace space(RANKTUNE_H5_ID(H5Screate_simple(2, dims, maxdims)));
  Plist dcpl(RANKTUNE_H5_ID(H5Pcreate(H5P_DATASET_CREATE)));
  RANKTUNE_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0));  // identical content, identical bytes
  RANKTUNE_H5_CHECK(H5Pset_chunk(dcpl.get(), 2, chunk));
  RANKTUNE_H5_CHECK(H5Pset_fletcher32(dcpl.get()));
  return Dataset(
      RANKTUNE_H5_ID(H5Dcreate2(loc, name.c_str(), H5T_STD_I32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
}

void rows_append(hid_t dataset, const std::int32_t* data, std::int64_t n) {
  if (n <= 0) return;
  const Extent e = extent_of(dataset);
  const hsize_t grown[2] = {e.rows + static_cast<hsize_t>(n), e.width};
  RANKTUNE_H5_CHECK(H5Dset_extent(dataset, grown));
  auto [file, mem] = select_rows(dataset, e.rows, static_cast<hsize_t>(n), e.width);
  RANKTUNE_H5_CHECK(H5Dwrite(dataset, H5T_NATIVE_INT32, mem.get(), file.get(), H5P_DEFAULT, data));
}

void rows_seal(hid_t dataset) {
  const Extent e = extent_of(dataset);
  attr_write_string(dataset, "dtype", "int32");
  attr_write_ints(dataset, "shape", {static_cast<std::int64_t>(e.rows), static_cast<std::int64_t>(e.width)});
}

Dataset rows_open(hid_t loc, const std::string& name, std::int64_t& rows, std::int64_t& width) {
  Dataset ds(RANKTUNE_H5_ID(H5Dopen2(loc, name.c_str(), H5P_DEFAULT)));
  Type stored(RANKTUNE_H5_ID(H5Dget_type(ds.get())));
  const htri_t same = H5Tequal(stored.get(), H5T_STD_I32LE);
  RANKTUNE_H5_CHECK(same);
  if (!same) throw H5Error("dataset '" + name + "' is not int32 little-endian");
  const Extent e = extent_of(ds.get());
  rows = static_cast<std::int64_t>(e.rows);
  width = static_cast<std::int64_t>(e.width);
  return ds;
}

void rows_read(hid_t dataset, std::int64_t begin, std::int64_t n, std::int32_t* out) {
  if (n <= 0) return;
  const Extent e = extent_of(dataset);
  if (begin < 0 || static_cast<hsize_t>(begin + n) > e.rows)
    throw H5Error("rows [" + std::to_string(begin) + ", " + std::to_string(begin + n) + ") outside the " +
                  std::to_string(e.rows) + " rows stored");
  auto [file, mem] = select_rows(dataset, static_cast<hsize_t>(begin), static_cast<hsize_t>(n), e.width);
  RANKTUNE_H5_CHECK(H5Dread(dataset, H5T_NATIVE_INT32, mem.get(), file.get(), H5P_DEFAULT, out));
}

}  // namespace ranktune::h5
