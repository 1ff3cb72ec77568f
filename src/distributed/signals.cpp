// Stop requests by signal: the handler stores the request in a sig_atomic_t and does nothing else (no allocation,
// no I/O, no MPI: none of those is async-signal-safe). Both signals are blocked while either handler runs, so the
// "keep the most urgent" comparison cannot be interleaved with the other handler. An unheld SIGTERM restores the
// default action and re-raises: the signal is delivered, and kills, as soon as the handler returns.
#include "ranktune/distributed/signals.h"

#include <pthread.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#include "ranktune/core/check.h"
#include "ranktune/core/error.h"
#include "ranktune/distributed/host_collectives.h"

namespace ranktune {
namespace {

volatile std::sig_atomic_t g_request = 0;
volatile std::sig_atomic_t g_hold_term = 0;

extern "C" void on_stop_signal(int sig) {
  if (sig == SIGTERM && !g_hold_term) {
    std::signal(SIGTERM, SIG_DFL);
    std::raise(SIGTERM);
    return;
  }
  const std::sig_atomic_t r = sig == SIGTERM ? static_cast<std::sig_atomic_t>(StopRequest::save_best_effort)
                                             : static_cast<std::sig_atomic_t>(StopRequest::checkpoint_and_exit);
  if (r > g_request) g_request = r;
}

bool posix_ok(int rc) { return rc == 0; }
std::string posix_error(int) { return std::strerror(errno); }
std::string posix_error_number(int rc) { return std::strerror(rc); }  // pthread calls return the errno value

const char* signal_of(StopRequest r) {
  switch (r) {
    case StopRequest::checkpoint_and_exit: return "SIGUSR1";
    case StopRequest::save_best_effort: return "SIGTERM";
    case StopRequest::none: break;
  }
  return "no signal";
}

}  // namespace

const char* stop_request_name(StopRequest r) noexcept {
  switch (r) {
    case StopRequest::none: return "none";
    case StopRequest::checkpoint_and_exit: return "checkpoint and exit";
    case StopRequest::save_best_effort: return "best-effort save and exit";
  }
  return "unknown";
}

void signals_install() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;  // a signal must not turn a checkpoint write or an MPI poll into EINTR
  RANKTUNE_CHECK_GEN("libc", sigemptyset(&sa.sa_mask), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaddset(&sa.sa_mask, SIGUSR1), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaddset(&sa.sa_mask, SIGTERM), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaction(SIGUSR1, &sa, nullptr), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaction(SIGTERM, &sa, nullptr), posix_ok, posix_error, LibraryError);
  // Only now that the handlers are in place: the launcher (bin/ranktune) blocked SIGUSR1 while this program loaded,
  // and one that arrived meanwhile is pending; it is delivered on this call's return. Only this thread's mask changes:
  // threads that libraries started while the program loaded keep SIGUSR1 blocked, so it comes to this thread (or to
  // a thread started later).
  sigset_t stop;
  RANKTUNE_CHECK_GEN("libc", sigemptyset(&stop), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaddset(&stop, SIGUSR1), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", sigaddset(&stop, SIGTERM), posix_ok, posix_error, LibraryError);
  RANKTUNE_CHECK_GEN("libc", pthread_sigmask(SIG_UNBLOCK, &stop, nullptr), posix_ok, posix_error_number, LibraryError);
}

void signals_hold_term(bool hold) noexcept { g_hold_term = hold ? 1 : 0; }

StopRequest signals_pending() noexcept { return static_cast<StopRequest>(g_request); }

void signals_clear() noexcept { g_request = 0; }

StopAgreement signals_agree(const MpiEnv& env) {
  // StopRequest values grow with urgency, so the worst outcome is the most urgent request.
  const host::Outcome most_urgent = host::worst(env, static_cast<int>(g_request), "");
  if (most_urgent.code == 0) return {};
  return {static_cast<StopRequest>(most_urgent.code), most_urgent.rank};
}

std::string stop_agreement_describe(const StopAgreement& a) {
  if (a.request == StopRequest::none) return "no stop requested";
  return std::string(signal_of(a.request)) + " on rank " + std::to_string(a.rank) + ": " + stop_request_name(a.request);
}

}  // namespace ranktune
