/*
 * Signals: process-wide state every context shares. A C handler only bumps a counter per
 * signal (handlers run later, from loop_once(), in loop context); if some loop is blocked in
 * a wait, it also writes one byte to a self-pipe that every wait watches.
 */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int sig_pending;            /* set by the handler, cleared when the pipe is drained */
static int sig_waiters;            /* contexts inside a wait, which a signal must interrupt */
static uint64_t sig_counts[NSIG];
static int sig_pipe[2] = {-1, -1};
static int sig_users[NSIG];        /* signal events on each signal, over all contexts */
static struct sigaction sig_saved[NSIG];

static void on_signal(int signum)
{
    int saved = errno;
    __atomic_add_fetch(&sig_counts[signum], 1, __ATOMIC_SEQ_CST);
    /* A loop that is running sees the counter at its next step; only a loop blocked in a
     * wait needs the pipe to wake it (saves a write and a read per signal). */
    if (__atomic_load_n(&sig_waiters, __ATOMIC_SEQ_CST) &&
        !__atomic_exchange_n(&sig_pending, 1, __ATOMIC_SEQ_CST) && sig_pipe[1] >= 0) {
        /* one byte per batch of signals is enough to end a wait */
        char b = (char)signum;
        ssize_t rc = write(sig_pipe[1], &b, 1);
        (void)rc;
    }
    errno = saved;
}

int signal_pipe_open(void)
{
    if (sig_pipe[0] >= 0)
        return 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* The read end, which waits watch once a context has signal events; -1 before any. */
int signal_pipe_fd(void)
{
    return sig_pipe[0];
}

/* Only when the handler said so: no syscall per loop step. The flag is cleared before the
 * pipe is read, so a signal arriving meanwhile writes a new byte and is not lost. */
void signal_pipe_drain(void)
{
    if (!__atomic_exchange_n(&sig_pending, 0, __ATOMIC_SEQ_CST))
        return;
    char buf[64];
    while (sig_pipe[0] >= 0 && read(sig_pipe[0], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
}

uint64_t signal_count(int signum)
{
    return __atomic_load_n(&sig_counts[signum], __ATOMIC_SEQ_CST);
}

/* One more signal event on signum: the first takes the signal from its previous handler
 * (Python's, usually). -1 with OSError. */
int signal_watch(int signum)
{
    if (sig_users[signum]++ > 0)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signum, &sa, &sig_saved[signum]) < 0) {
        sig_users[signum]--;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* One signal event fewer: after the last, the previous handler is back. */
void signal_unwatch(int signum)
{
    if (--sig_users[signum] == 0)
        sigaction(signum, &sig_saved[signum], NULL);
}

/* Around a wait a signal must end: while announced, a signal also writes to the pipe. */
void signal_wait_begin(void)
{
    __atomic_add_fetch(&sig_waiters, 1, __ATOMIC_SEQ_CST);
}

void signal_wait_end(void)
{
    __atomic_sub_fetch(&sig_waiters, 1, __ATOMIC_SEQ_CST);
}
