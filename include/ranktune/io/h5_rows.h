// defines: int32 row matrices in HDF5 ([rows, width] datasets that grow along rows): created chunked with
// Fletcher32, appended to a block of rows at a time, read back by row range (one hyperslab per read).
// Token datasets are built on these; raw H5* calls stay in the io layer's wrappers.
#pragma once

#include <cstdint>
#include <string>

#include "ranktune/io/h5.h"

namespace ranktune::h5 {

// A new [0, width] int32 dataset at `name` under loc, unlimited along rows, chunks of chunk_rows rows with
// Fletcher32 each. Its `dtype`/`shape` attributes are written by rows_seal once the row count is final.
Dataset rows_create(hid_t loc, const std::string& name, std::int64_t width, std::int64_t chunk_rows);
// Appends n rows (n x width values, row-major) at the end.
void rows_append(hid_t dataset, const std::int32_t* data, std::int64_t n);
// Writes the `dtype` ("int32") and `shape` attributes from the current extent.
void rows_seal(hid_t dataset);

// Opens an int32 2-D dataset; {rows, width} from its dataspace. H5Error if it is not one.
Dataset rows_open(hid_t loc, const std::string& name, std::int64_t& rows, std::int64_t& width);
// Reads rows [begin, begin + n) into out (n x width values). HDF5 verifies each chunk's Fletcher32 on the way.
void rows_read(hid_t dataset, std::int64_t begin, std::int64_t n, std::int32_t* out);

}  // namespace ranktune::h5
