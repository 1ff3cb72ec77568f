// Stop requests by signal at 1, 2 and 4 ranks: one rank is signalled, every rank reaches the same decision at the
// step boundary (signals_agree), and the handler leaves the process running.
#include <gtest/gtest.h>
#include <mpi.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <thread>
#include <vector>

#include "ranktune/distributed/mpi_env.h"
#include "ranktune/distributed/signals.h"

namespace ranktune {
namespace {

class Signals : public testing::Test {
 protected:
  void SetUp() override {
    signals_install();
    signals_hold_term(true);  // the tests raise SIGTERM in this process
    signals_clear();
    MPI_Barrier(env_.world());
  }
  void TearDown() override {
    MPI_Barrier(env_.world());  // nobody clears before every rank has agreed
    signals_hold_term(false);
    signals_clear();
  }
  int last() const { return env_.size() - 1; }
  MpiEnv env_{nullptr, nullptr};
};

TEST_F(Signals, NoSignalMeansNoStop) {
  const StopAgreement a = signals_agree(env_);
  EXPECT_EQ(a.request, StopRequest::none);
  EXPECT_EQ(a.rank, -1);
  EXPECT_EQ(stop_agreement_describe(a), "no stop requested");
}

TEST_F(Signals, Usr1OnOneRankStopsEveryRank) {
  if (env_.rank() == last()) {
    ASSERT_EQ(std::raise(SIGUSR1), 0);  // the process survives: the default action would have killed it
    EXPECT_EQ(signals_pending(), StopRequest::checkpoint_and_exit);
  } else {
    EXPECT_EQ(signals_pending(), StopRequest::none);
  }
  const StopAgreement a = signals_agree(env_);
  EXPECT_EQ(a.request, StopRequest::checkpoint_and_exit);
  EXPECT_EQ(a.rank, last());
  EXPECT_EQ(stop_agreement_describe(a), "SIGUSR1 on rank " + std::to_string(last()) + ": checkpoint and exit");
}

TEST_F(Signals, TheRequestStaysUntilCleared) {
  if (env_.rank() == 0) std::raise(SIGUSR1);
  EXPECT_EQ(signals_agree(env_).request, StopRequest::checkpoint_and_exit);
  EXPECT_EQ(signals_agree(env_).request, StopRequest::checkpoint_and_exit);  // every later boundary agrees too
}

TEST_F(Signals, TermOutranksUsr1WhateverTheOrder) {
  if (env_.rank() == last()) std::raise(SIGUSR1);
  if (env_.rank() == 0) std::raise(SIGTERM);
  if (env_.rank() == 0) std::raise(SIGUSR1);  // a later, weaker signal does not downgrade the request
  if (env_.rank() == 0) EXPECT_EQ(signals_pending(), StopRequest::save_best_effort);
  const StopAgreement a = signals_agree(env_);
  EXPECT_EQ(a.request, StopRequest::save_best_effort);
  EXPECT_EQ(a.rank, 0);
}

TEST_F(Signals, LowestSignalledRankIsNamed) {
  if (env_.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  if (env_.rank() >= 1) std::raise(SIGUSR1);
  const StopAgreement a = signals_agree(env_);
  EXPECT_EQ(a.request, StopRequest::checkpoint_and_exit);
  EXPECT_EQ(a.rank, 1);
}

// As Slurm and mpirun do it: another process sends the signal, at an instant the receiver does not choose.
TEST_F(Signals, SignalFromAnotherProcessIsSeenAtTheNextBoundary) {
  std::vector<int> pids(static_cast<std::size_t>(env_.size()));
  int mine = static_cast<int>(getpid());
  MPI_Allgather(&mine, 1, MPI_INT, pids.data(), 1, MPI_INT, env_.world());
  if (env_.rank() == 0) ASSERT_EQ(kill(pids[static_cast<std::size_t>(last())], SIGUSR1), 0);
  if (env_.rank() == last()) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (signals_pending() == StopRequest::none && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const StopAgreement a = signals_agree(env_);
  EXPECT_EQ(a.request, StopRequest::checkpoint_and_exit);
  EXPECT_EQ(a.rank, last());
}

// SIGTERM is deferred only while held; otherwise it terminates as usual. Checked in a child process (no MPI there).
int child_fate(bool hold) {
  const pid_t pid = fork();
  if (pid == 0) {
    signals_install();
    signals_hold_term(hold);
    std::raise(SIGTERM);
    _exit(signals_pending() == StopRequest::save_best_effort ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

TEST_F(Signals, UnheldTermTerminatesHeldTermIsRecorded) {
  const int unheld = child_fate(false);
  EXPECT_TRUE(WIFSIGNALED(unheld) && WTERMSIG(unheld) == SIGTERM) << "status " << unheld;
  const int held = child_fate(true);
  EXPECT_TRUE(WIFEXITED(held) && WEXITSTATUS(held) == 0) << "status " << held;
}

// The launcher bin/ranktune execs the program with SIGUSR1 blocked, so that one sent while LibTorch loads waits;
// signals_install must then unblock it and record it. In a child process set up as after that execve: the default
// action (which kills), SIGUSR1 blocked and already pending.
TEST_F(Signals, Usr1PendingBehindTheLaunchersMaskIsRecorded) {
  const pid_t pid = fork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGUSR1, &dfl, nullptr);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, nullptr);
    kill(getpid(), SIGUSR1);
    signals_install();
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, nullptr, &now);
    _exit(signals_pending() != StopRequest::checkpoint_and_exit ? 1 : sigismember(&now, SIGUSR1) ? 2 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_NE(WEXITSTATUS(status), 1) << "the pending SIGUSR1 was not recorded";
  EXPECT_NE(WEXITSTATUS(status), 2) << "SIGUSR1 is still blocked after signals_install";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(Signals, HandlersRestartSyscallsAndBlockEachOther) {
  for (int sig : {SIGUSR1, SIGTERM}) {
    struct sigaction sa {};
    ASSERT_EQ(sigaction(sig, nullptr, &sa), 0);
    EXPECT_NE(sa.sa_handler, SIG_DFL);
    EXPECT_NE(sa.sa_flags & SA_RESTART, 0);
    EXPECT_EQ(sigismember(&sa.sa_mask, SIGUSR1), 1);
    EXPECT_EQ(sigismember(&sa.sa_mask, SIGTERM), 1);
  }
}

}  // namespace
}  // namespace ranktune
