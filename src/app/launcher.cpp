// bin/ranktune, the launcher: blocks SIGUSR1, then execs bin/ranktune-main (the program, main.cpp) found next to
// itself, with the same arguments and environment. Why: ranktune-main maps LibTorch and runs its static initialisers
// (0.3 s here, seconds from a network filesystem) before its main can install a handler, and SIGUSR1's default
// action kills: Slurm's "checkpoint and requeue" would fail the job instead. A blocked signal stays pending, and both
// the mask and the pending set survive execve, so a SIGUSR1 sent meanwhile is delivered, and honoured, when
// signals_install (distributed/signals.cpp) unblocks it after installing the handler. This file uses libc only and
// links nothing else, so it reaches the sigprocmask within about a millisecond of exec (docs/slurm.md).
// SIGTERM and SIGINT stay unblocked: during start-up there is nothing to save and they end the process at once.
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

// The shell's "command not found" (also what the dynamic loader returns when a library is missing):
// docs/exit-codes.md.
constexpr int kExitNotInstalled = 127;
constexpr char kProgram[] = "ranktune-main";

int refuse(const char* what, const char* path, int err) {
  std::fprintf(stderr, "ranktune: error: %s %s: %s  [exit %d: incomplete installation]\n", what, path,
               std::strerror(err), kExitNotInstalled);
  std::fprintf(stderr,
               "ranktune: hint: bin/ranktune starts bin/%s from its own directory; rebuild (ninja ranktune) or "
               "reinstall (cmake --install) so that both are there\n",
               kProgram);
  return kExitNotInstalled;
}

}  // namespace

int main(int, char** argv) {
  sigset_t held;
  sigemptyset(&held);
  sigaddset(&held, SIGUSR1);
  sigprocmask(SIG_BLOCK, &held, nullptr);  // first: a SIGUSR1 before this line still kills

  // The real file, not argv[0]: a symlink on PATH (or a relative argv[0]) points elsewhere than bin/.
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return refuse("cannot find its own directory through", "/proc/self/exe", errno);
  path[n] = '\0';
  char* slash = std::strrchr(path, '/');
  if (slash == nullptr || static_cast<std::size_t>(path + sizeof path - (slash + 1)) < sizeof kProgram)
    return refuse("cannot name the program next to", path, ENAMETOOLONG);
  std::memcpy(slash + 1, kProgram, sizeof kProgram);
  execv(path, argv);  // argv[0] stays "ranktune": ps, pgrep -f and the logs see the command the user typed
  return refuse("cannot start", path, errno);
}
