// defines: DataError, the error for a dataset, JSONL record, tokenizer file or text the data layer cannot use.
// A usage error (exit 2): the fix is in the user's input; messages name the file (and line) at fault.
#pragma once

#include "ranktune/core/error.h"

namespace ranktune {

class DataError : public Error {
 public:
  explicit DataError(const std::string& what, std::string hint = {}) : Error(ExitCode::usage, what, std::move(hint)) {}
};

}  // namespace ranktune
