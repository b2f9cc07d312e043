/* anchor: the main process of a concurrentd unit.
 *
 *   anchor --owner-pid N [--owner-fifo PATH] [--state XXXXXXXXXX]
 *
 * systemd sets up the unit's confinement (namespaces, credentials, seccomp...) on this process;
 * concurrentd then copies it onto forked workers (csrc/enter.c). The anchor itself does nothing:
 * it lives as long as its owner (the pool's parent process, pid N in the anchor's pid view, which
 * is the caller's unless the unit has a pid namespace of its own) and exits when the owner dies,
 * so a crashed pool never leaves units behind. It exits 0 on SIGTERM (systemctl stop) and SIGINT.
 *
 * --owner-fifo: a FIFO the owner holds open for writing (and nobody else): when the owner dies,
 * its last writer is gone and the anchor's read end hangs up. For a unit with a pid namespace of
 * its own (PrivatePIDs=), where the owner's pid means nothing: the anchor is that namespace's
 * PID 1 and sees none of the owner's. Without it, an anchor that is PID 1 of its namespace and
 * cannot see pid N (started by hand, e.g. systemd-run, for a pool to join) cannot watch the
 * owner at all: it says so and lives until the unit is stopped.
 *
 * --state: a placeholder argument the anchor overwrites in place with "sb=XX,md=N,th=N": its
 * securebits in hex, its memory-deny-write-execute flags (prctl PR_GET_MDWE: MemoryDenyWriteExecute=,
 * which systemd >= 253 applies with PR_SET_MDWE; ",md=" is left out on a kernel without it, < 6.3)
 * and its transparent-huge-page setting (prctl PR_GET_THP_DISABLE: MemoryTHP=, systemd >= 260;
 * 0 none, 1 disabled, 3 disabled except where madvise()d). /proc/<pid>/cmdline shows it; the
 * kernel offers no other way to read another process's securebits, MDWE or THP flags.
 *
 * Built static (gcc -static, setup.py) so that it runs in any RootDirectory= with only itself
 * bound in. No stdio: a few hundred bytes of code and nothing to initialise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#ifndef PR_GET_THP_DISABLE
#define PR_GET_THP_DISABLE 42
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define EXIT_USAGE 2

static void say(const char *s)
{
    ssize_t n = write(2, s, strlen(s));
    (void)n;
}

static int parse_pid(const char *s)
{
    long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 4194304)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v > 0 ? (int)v : -1;
}

static void report_state(char *slot)
{
    static const char hex[] = "0123456789abcdef";
    size_t room = strlen(slot);
    unsigned int sb = (unsigned int)prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    char text[32] = "sb=";
    size_t k = 3;
    for (int shift = 28; shift >= 0; shift -= 4)
        if (k > 3 || (sb >> shift) || shift == 0)
            text[k++] = hex[(sb >> shift) & 15];
    int md = prctl(PR_GET_MDWE, 0, 0, 0, 0);
    if (md >= 0 && md <= 9) {
        memcpy(text + k, ",md=", 4);
        k += 4;
        text[k++] = (char)('0' + md);
    }
    int th = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
    if (th >= 0 && th <= 9) {   /* "sb=ffffffff,md=N,th=N": 21 bytes, the placeholder has 24 */
        memcpy(text + k, ",th=", 4);
        k += 4;
        text[k++] = (char)('0' + th);
    }
    if (k > room)
        return;  /* placeholder too short: leave it, the reader treats it as unknown */
    memcpy(slot, text, k);
    memset(slot + k, '\0', room - k);  /* cmdline then shows an empty argument after it */
}

int main(int argc, char **argv)
{
    int owner = -1;
    char *state = NULL, *fifo = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--owner-pid") && i + 1 < argc)
            owner = parse_pid(argv[++i]);
        else if (!strcmp(argv[i], "--state") && i + 1 < argc)
            state = argv[++i];
        else if (!strcmp(argv[i], "--owner-fifo") && i + 1 < argc)
            fifo = argv[++i];
        else {
            say("usage: anchor --owner-pid PID [--owner-fifo PATH] [--state PLACEHOLDER]\n");
            return EXIT_USAGE;
        }
    }
    if (owner < 0) {
        say("anchor: --owner-pid PID is required\n");
        return EXIT_USAGE;
    }
    if (state)
        report_state(state);

    /* SIGTERM and SIGINT through a signalfd: the poll below sees them as plain events, and no
     * handler can run at a bad moment. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);

    /* A pidfd becomes readable when the owner exits; unlike polling kill(pid, 0) it cannot be
     * fooled by the pid being reused. ESRCH: the owner is already gone (or not visible in our pid
     * view), so there is nothing to serve. */
    int pfd = -1, watch = 1;
    if (fifo) {
        /* Non-blocking: the owner opened it first, so no wait for a writer; POLLHUP once the
         * last writer (the owner) has closed it. */
        pfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (pfd < 0) {
            say("anchor: cannot open the owner's fifo\n");
            return 1;
        }
    } else {
        pfd = (int)syscall(SYS_pidfd_open, owner, 0);
        if (pfd < 0 && errno == ESRCH && getpid() == 1) {
            say("anchor: the owner's pid is not visible from this pid namespace (PrivatePIDs=): "
                "not watching it, the unit lives until it is stopped\n");
            watch = 0;
        } else if (pfd < 0 && errno == ESRCH) {
            say("anchor: owner process is gone\n");
            return 0;
        }
    }
    struct pollfd fds[2] = {{sfd, POLLIN, 0}, {pfd, POLLIN, 0}};
    for (;;) {
        /* Without a pidfd (filtered, or an old kernel) fall back to checking every second. */
        int n = poll(fds, watch ? 2 : 1, pfd < 0 && watch ? 1000 : -1);
        if (n < 0 && errno != EINTR)
            return 1;
        if (n > 0 && (fds[0].revents & POLLIN))
            return 0;
        if (n > 0 && (fds[1].revents & (POLLIN | POLLHUP)))
            return 0;
        if (pfd < 0 && watch && kill(owner, 0) != 0 && errno == ESRCH)
            return 0;
    }
}
