// defines: log0() (rank 0 only), logr() (every rank, prefixed "[rank r/N host]"), log_error() (stderr, prefixed).
// Each returns a line object: stream into it, the line is written (and flushed) whole when it goes out of scope,
// so lines from different ranks never interleave mid-line.
#pragma once

#include <sstream>
#include <string>

namespace ranktune {

struct LogContext {
  int rank = 0;
  int world_size = 1;
  std::string host;
};

void log_set_context(LogContext ctx);
const LogContext& log_context();
std::string log_prefix();  // "[rank r/N host]"

class LogLine {
 public:
  enum class Sink { stdout_rank0, stdout_all, stderr_all };
  explicit LogLine(Sink sink);
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  ~LogLine();

  template <class T>
  LogLine& operator<<(const T& v) {
    if (active_) os_ << v;
    return *this;
  }

 private:
  Sink sink_;
  bool active_;
  std::ostringstream os_;
};

inline LogLine log0() { return LogLine(LogLine::Sink::stdout_rank0); }
inline LogLine logr() { return LogLine(LogLine::Sink::stdout_all); }
inline LogLine log_error() { return LogLine(LogLine::Sink::stderr_all); }

}  // namespace ranktune
