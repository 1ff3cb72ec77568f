// Line-buffered, rank-aware logging. The context is set once after MPI starts.
#include "ranktune/core/log.h"

#include <cstdio>

namespace ranktune {
namespace {
LogContext g_ctx;
}

void log_set_context(LogContext ctx) { g_ctx = std::move(ctx); }
const LogContext& log_context() { return g_ctx; }

std::string log_prefix() {
  std::ostringstream os;
  os << "[rank " << g_ctx.rank << '/' << g_ctx.world_size;
  if (!g_ctx.host.empty()) os << ' ' << g_ctx.host;
  os << ']';
  return os.str();
}

LogLine::LogLine(Sink sink) : sink_(sink), active_(sink != Sink::stdout_rank0 || g_ctx.rank == 0) {
  if (active_ && sink_ != Sink::stdout_rank0) os_ << log_prefix() << ' ';
}

LogLine::~LogLine() {
  if (!active_) return;
  os_ << '\n';
  const std::string s = os_.str();
  FILE* f = sink_ == Sink::stderr_all ? stderr : stdout;
  std::fwrite(s.data(), 1, s.size(), f);
  std::fflush(f);
}

}  // namespace ranktune
