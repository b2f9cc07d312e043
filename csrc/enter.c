/* cd_enter(): the switch of a forked worker into a unit's confinement. See enter.h.
 *
 * Everything the switch needs was opened and read by the parent (plan.py): after joining a mount
 * namespace or chrooting, paths of the parent's view are gone, so every fd exists before the first
 * switch. This file only performs system calls, checks each one, and names the failing step.
 *
 * Its phases in order, and why (each block below repeats its own reason, under the phase's
 * number; the steps it reports are enter.h's enum cd_step):
 *   1. anchor alive?      the plan's ns fds keep namespaces alive after the unit died: refuse then.
 *   2. cgroups            first, so everything after (page tables, keyrings) is charged to the
 *                         unit, and while we are still root of the initial user namespace (the
 *                         cgroup.procs files belong to it).
 *   3. environ, rlimits, umask, nice, scheduling policy, oom_score_adj, coredump filter,
 *      affinity, NUMA memory policy, ioprio, personality, timer slack, transparent huge pages:
 *                         raising a hard rlimit, lowering nice or oom_score_adj and a realtime
 *                         policy check capable(),
 *                         i.e. a capability in the INITIAL user namespace, which is lost once we
 *                         join a unit's user namespace (PrivateUsers=). So they come before setns.
 *   4. setns              non-user namespaces first (we hold CAP_SYS_ADMIN over all of them while in
 *                         the initial user ns), the user namespace last (see ns_order below).
 *   5. root, cwd          fchdir(root fd) + chroot(".") + fchdir(cwd fd): the anchor's exact dirs,
 *                         by fd, never by a path that may not exist in the new mount namespace.
 *   6. credentials        bounding set (needs CAP_SETPCAP, so while still root), securebits with
 *                         KEEP_CAPS, setgroups -> setresgid -> setresuid (groups before gid before
 *                         uid: each needs the privilege the next one drops), re-raise effective,
 *                         exact securebits, a fresh session keyring (KeyringMode=private), the
 *                         anchor's capsets, ambient set (cleared by the uid change, so after it),
 *                         dumpable (reset by the uid change, so after it); then read back.
 *   7. MDWE, no_new_privs after everything that needed privilege. MemoryDenyWriteExecute= is a
 *                         prctl flag on systemd >= 253 (PR_SET_MDWE), inherited by fork and
 *                         never cleared: set once, in the zygote.
 *   8. close plan fds     the worker's user code must never hold a handle on the parent's view.
 *   9. seccomp            last: the anchor's filters may forbid any of the calls above. Loading a
 *                         filter needs no_new_privs or CAP_SYS_ADMIN: an anchor with neither
 *                         (systemd 257: User= and SystemCallFilter= without NoNewPrivileges=; its
 *                         exec dropped the capability after the filters) is copied with
 *                         CAP_SYS_ADMIN held from phase 6 until the filters are in, then dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <linux/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/mempolicy.h>
#include <linux/ptrace.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>

#include "enter.h"

#ifndef PR_SET_MM
#define PR_SET_MM 35
#endif
#ifndef PR_SET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#define PR_GET_THP_DISABLE 42
#endif
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#define CD_CAP_SYS_ADMIN (1ull << 21)
#ifndef IOPRIO_WHO_PROCESS
#define IOPRIO_WHO_PROCESS 1
#endif

#define SECBIT_ALL_LOCKS (SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED | \
                          SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

/* Join order. Non-user namespaces first: while we are in the initial user namespace we hold
 * CAP_SYS_ADMIN over every namespace on the machine, whoever owns it; after joining a unit's user
 * namespace (PrivateUsers=) we would hold it only over namespaces that user namespace owns, and a
 * unit may share one of ours. setns(mnt) resets root and cwd, harmless since both are set by fd
 * later. pid and time only take effect for the worker's children (pid_for_children). The user
 * namespace last: it grants full capabilities inside it, which the chroot and the credential
 * steps below then use. This is util-linux nsenter's two-pass order, made explicit. */
static const int ns_order[] = {
    CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWCGROUP,
    CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWNS, CLONE_NEWUSER,
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void close_plan_fds(const struct cd_plan *p)
{
    for (int i = 0; i < p->n_cgroups; i++)
        if (p->cgroup_fds[i] >= 0)
            close(p->cgroup_fds[i]);
    for (int i = 0; i < p->n_ns; i++)
        if (p->ns[i].fd >= 0)
            close(p->ns[i].fd);
    if (p->root_fd >= 0)
        close(p->root_fd);
    if (p->cwd_fd >= 0)
        close(p->cwd_fd);
    if (p->anchor_pidfd >= 0)
        close(p->anchor_pidfd);
}

static int capget_self(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return (int)syscall(SYS_capget, &h, d);
}

static int capset_self(uint64_t eff, uint64_t perm, uint64_t inh)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {
        {(uint32_t)eff, (uint32_t)perm, (uint32_t)inh},
        {(uint32_t)(eff >> 32), (uint32_t)(perm >> 32), (uint32_t)(inh >> 32)},
    };
    return (int)syscall(SYS_capset, &h, d);
}

/* The decimal text of v, for writing to /proc files without stdio. */
static size_t fmt_int(char *buf, int v)
{
    char tmp[16];
    size_t n = 0, k = 0;
    unsigned int u = v < 0 ? (unsigned int)(-(long)v) : (unsigned int)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[k++] = '-';
    while (n)
        buf[k++] = tmp[--n];
    return k;
}

/* Write v, in decimal, to fd (a /proc file): 0, or -1 with errno set (EIO: a short write). */
static int write_int(int fd, int v)
{
    char buf[16];
    size_t n = fmt_int(buf, v);
    ssize_t w = write(fd, buf, n);
    if (w == (ssize_t)n)
        return 0;
    if (w >= 0)
        errno = EIO;
    return -1;
}

/* The policy a process takes: the anchor's, without its reset-on-fork flag for a zygote. */
static int sched_policy_to_take(const struct cd_plan *p)
{
    return p->defer_sched_reset ? p->sched_policy & ~SCHED_RESET_ON_FORK : p->sched_policy;
}

/* The current mm map of this process from /proc/self/stat (fields 26-28, 45-51), without stdio. */
static int read_mm_map(struct prctl_mm_map *m)
{
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *s = strrchr(buf, ')');  /* comm may contain spaces and parentheses */
    if (!s)
        goto bad;
    uint64_t v[52] = {0};
    int field = 2;
    for (s++; *s && field < 51;) {
        while (*s == ' ')
            s++;
        field++;
        uint64_t x = 0;
        int neg = *s == '-';
        if (neg)
            s++;
        while (*s >= '0' && *s <= '9')
            x = x * 10 + (uint64_t)(*s++ - '0');
        v[field] = neg ? 0 : x;
        while (*s && *s != ' ')
            s++;
    }
    if (field < 51)
        goto bad;
    memset(m, 0, sizeof *m);
    m->start_code = v[26];
    m->end_code = v[27];
    m->start_stack = v[28];
    m->start_data = v[45];
    m->end_data = v[46];
    m->start_brk = v[47];
    m->arg_start = v[48];
    m->arg_end = v[49];
    m->env_start = v[50];
    m->env_end = v[51];
    return 0;
bad:
    errno = EINVAL;
    return -1;
}

/* The anchor's filters, oldest first, so the stack ends up as the anchor's; each with the flags
 * (e.g. LOG) it was loaded with. On failure *failed is the index of the filter refused. */
static int install_filters(const struct cd_plan *p, int *failed)
{
    for (int i = 0; i < p->n_filters; i++) {
        struct sock_fprog prog = {p->filters[i].len, (struct sock_filter *)p->filters[i].insns};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, p->filters[i].flags, &prog) != 0) {
            *failed = i;
            return -1;
        }
    }
    return 0;
}

/* The capabilities held until the filters are in: the anchor's, plus CAP_SYS_ADMIN if needed. */
static uint64_t held(const struct cd_plan *p, uint64_t set)
{
    return p->hold_sys_admin ? set | CD_CAP_SYS_ADMIN : set;
}

/* After the filters: the anchor's exact sets (capset only lowers here), read back. */
static int drop_admin(const struct cd_plan *p)
{
    if (!p->hold_sys_admin)
        return 0;
    if (capset_self(p->cap_effective, p->cap_permitted, p->cap_inheritable) != 0)
        return -1;
    struct __user_cap_data_struct d[2];
    if (capget_self(d) != 0)
        return -1;
    if ((d[0].effective | ((uint64_t)d[1].effective << 32)) != p->cap_effective ||
        (d[0].permitted | ((uint64_t)d[1].permitted << 32)) != p->cap_permitted) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

/* The 64-bit set of one kind (effective, permitted, inheritable) from capget's two halves. */
#define CAP_SET(d, kind) ((d)[0].kind | ((uint64_t)(d)[1].kind << 32))

/* Whether the process's supplementary groups are exactly the plan's, in any order. */
static int groups_match(const struct cd_plan *p, int *ok)
{
    gid_t g[256];
    int ng = getgroups(256, g);
    if (ng < 0)
        return -1;
    *ok = ng == p->n_groups;
    for (int i = 0; *ok && i < ng; i++) {
        int found = 0;
        for (int j = 0; j < p->n_groups; j++)
            found |= g[i] == p->groups[j];
        *ok = found;
    }
    return 0;
}

/* Read back what the kernel may have silently adjusted, or what cannot report an error (nice),
 * after the credential steps: 0 when every value is the plan's, else -1 with *what naming the
 * value (enum cd_verify) and errno set by the failed read, or 0 when the value differs. */
static int verify(const struct cd_plan *p, int *what)
{
/* Value `w` could not be read: errno is the failed call's. */
#define UNREADABLE(w) do { *what = (w); return -1; } while (0)
/* Value `w` was read and is not the plan's: errno 0 says so. */
#define DIFFERS(w) do { errno = 0; *what = (w); return -1; } while (0)

    /* The ids: all three of each, as the anchor has them. */
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) != 0)
        UNREADABLE(CD_VERIFY_UID);
    if (ru != p->uid[0] || eu != p->uid[1] || su != p->uid[2])
        DIFFERS(CD_VERIFY_UID);
    if (getresgid(&rg, &eg, &sg) != 0)
        UNREADABLE(CD_VERIFY_GID);
    if (rg != p->gid[0] || eg != p->gid[1] || sg != p->gid[2])
        DIFFERS(CD_VERIFY_GID);

    /* The groups: setgroups() may have been refused in a unit user namespace (EPERM, ignored by
     * its step) when they were set before joining it. */
    int ok;
    if (groups_match(p, &ok) != 0)
        UNREADABLE(CD_VERIFY_GROUPS);
    if (!ok)
        DIFFERS(CD_VERIFY_GROUPS);

    /* The capability sets, with CAP_SYS_ADMIN if it is held for the filters. */
    struct __user_cap_data_struct d[2];
    if (capget_self(d) != 0)
        UNREADABLE(CD_VERIFY_CAPS);
    if (CAP_SET(d, effective) != held(p, p->cap_effective) ||
        CAP_SET(d, permitted) != held(p, p->cap_permitted) ||
        CAP_SET(d, inheritable) != p->cap_inheritable)
        DIFFERS(CD_VERIFY_CAPS);
    if ((unsigned int)prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) != p->securebits)
        DIFFERS(CD_VERIFY_SECUREBITS);

    /* Nice: getpriority() returns -1 both for an error and for nice -1, only errno tells. */
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (errno)
        UNREADABLE(CD_VERIFY_NICE);
    if (nice != p->nice)
        DIFFERS(CD_VERIFY_NICE);

    /* The scheduling policy as this process takes it (see sched_policy_to_take). */
    int policy = sched_getscheduler(0);
    struct sched_param sp;
    if (policy < 0 || sched_getparam(0, &sp) != 0)
        UNREADABLE(CD_VERIFY_SCHED);
    if (policy != sched_policy_to_take(p) || sp.sched_priority != p->sched_priority)
        DIFFERS(CD_VERIFY_SCHED);

    /* The NUMA memory policy's mode and flags, where the kernel has NUMA. */
    if (p->mempolicy >= 0) {
        int mode;
        if (syscall(SYS_get_mempolicy, &mode, NULL, 0, NULL, 0) != 0)
            UNREADABLE(CD_VERIFY_MEMPOLICY);
        if (mode != p->mempolicy)
            DIFFERS(CD_VERIFY_MEMPOLICY);
    }

    /* personality() and the timer slack report no error for a value they do not take; the THP
     * setting is read back as the anchor reported it. */
    if ((unsigned long)personality(0xffffffff) != p->personality)
        DIFFERS(CD_VERIFY_PERSONALITY);
    if (p->timer_slack && (unsigned long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != p->timer_slack)
        DIFFERS(CD_VERIFY_TIMERSLACK);
    if (p->thp >= 0 && prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != p->thp)
        DIFFERS(CD_VERIFY_THP);
    return 0;
#undef UNREADABLE
#undef DIFFERS
}

int cd_install_filters(const struct cd_plan *p, struct cd_enter_result *r)
{
    memset(r, 0, sizeof *r);
    if (install_filters(p, &r->arg) != 0) {
        r->err = errno;
        r->step = CD_STEP_SECCOMP;
        return -1;
    }
    if (drop_admin(p) != 0) {
        r->err = errno;
        r->step = CD_STEP_DROP_ADMIN;
        return -1;
    }
    return 0;
}

int cd_release_admin(const struct cd_plan *p, struct cd_enter_result *r)
{
    memset(r, 0, sizeof *r);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        r->err = errno;
        r->step = CD_STEP_NO_NEW_PRIVS;
        return -1;
    }
    if (drop_admin(p) != 0) {
        r->err = errno;
        r->step = CD_STEP_DROP_ADMIN;
        return -1;
    }
    return 0;
}

int cd_enter(const struct cd_plan *p, struct cd_enter_result *r)
{
    int oom_fd = -1, step = 0, arg = 0, fds_closed = 0;
    uint64_t t = 0;
    memset(r, 0, sizeof *r);

/* Time the step just finished (when asked), then name the next one. */
#define STEP(s)                                                  \
    do {                                                         \
        if (p->timing) {                                         \
            uint64_t t2 = now_ns();                              \
            if (t)                                               \
                r->step_ns[step] += t2 - t;                      \
            t = t2;                                              \
        }                                                        \
        step = (s);                                              \
        arg = 0;                                                 \
    } while (0)
#define FAIL(a)         \
    do {                \
        arg = (a);      \
        goto fail;      \
    } while (0)

    /* 1. The plan's fds keep the unit's namespaces alive after its anchor died; entering them
     *    then would put the worker in a zombie sandbox no longer limited by a live unit. */
    STEP(CD_STEP_ANCHOR);
    if (p->anchor_pidfd >= 0) {
        struct pollfd pfd = {p->anchor_pidfd, POLLIN, 0};
        int n = poll(&pfd, 1, 0);
        if (n < 0)
            FAIL(0);
        if (n > 0) {  /* a pidfd becomes readable when its process exits */
            errno = ESRCH;
            FAIL(0);
        }
    }

    /* /proc/self still is our /proc: after chroot or setns(mnt) it may be absent (RootDirectory=
     * without MountAPIVFS=). Opened here, written at CD_STEP_OOM. */
    STEP(CD_STEP_OOM_OPEN);
    oom_fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom_fd < 0)
        FAIL(0);

    /* 2. Cgroups first: the memory, pids and cpu limits of the unit apply from here on, and the
     *    cgroup.procs files belong to root of the initial user namespace, which we still are.
     *    "0" means the writing process itself, valid in v1 and v2. */
    STEP(CD_STEP_CGROUP);
    for (int i = 0; i < p->n_cgroups; i++)
        if (write(p->cgroup_fds[i], "0", 1) != 1)
            FAIL(i);

    /* 3. The anchor's environment as /proc/self/environ (what ps, and other processes of the
     *    unit's user, can read): the parent's, with its secrets, must not stay there. libc's
     *    environ points at the same block (Python's os.environ is replaced by enter.py). PR_SET_MM_MAP (made for
     *    unprivileged checkpoint/restore) replaces the whole map and, unlike PR_SET_MM_ENV_*,
     *    needs no CAP_SYS_RESOURCE; the other fields are the current ones, from /proc/self/stat.
     *    The old block is then zeroed: nothing refers to it any more. */
    STEP(CD_STEP_ENVIRON);
    if (p->envp) {
        /* The parent's variables set at run time (setenv) are strings of libc's heap, outside
         * the block below: zeroed too, before libc forgets them. */
        for (char **e = environ; e && *e; e++)
            memset(*e, 0, strlen(*e));
        environ = (char **)p->envp;  /* libc's view: the same strings, no setenv per variable */
    }
    if (p->env_len) {
        struct prctl_mm_map m;
        if (read_mm_map(&m) != 0)
            FAIL(0);
        unsigned long old_start = m.env_start, old_end = m.env_end;
        m.brk = (uint64_t)syscall(SYS_brk, 0);
        m.env_start = (uint64_t)(unsigned long)p->env_block;
        m.env_end = m.env_start + p->env_len;
        m.exe_fd = (uint32_t)-1;
        if (prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&m, sizeof m, 0) != 0)
            FAIL(1);
        if (old_end > old_start)
            memset((void *)old_start, 0, old_end - old_start);
    }

    /* Resource limits: raising a hard limit above ours needs CAP_SYS_RESOURCE (initial ns). */
    STEP(CD_STEP_RLIMIT);
    for (int i = 0; i < p->n_rlimits; i++) {
        struct rlimit rl = {(rlim_t)p->rlimits[i].cur, (rlim_t)p->rlimits[i].max};
        if (setrlimit(p->rlimits[i].resource, &rl) != 0)
            FAIL(p->rlimits[i].resource);
    }

    STEP(CD_STEP_UMASK);
    umask(p->umask);  /* cannot fail */

    /* Lowering nice (Nice=-5) needs CAP_SYS_NICE. getpriority() cannot tell -1 from an error,
     * so success is checked by reading back in the verify step. */
    STEP(CD_STEP_NICE);
    if (setpriority(PRIO_PROCESS, 0, p->nice) != 0)
        FAIL(0);

    /* CPUSchedulingPolicy=, CPUSchedulingPriority=, CPUSchedulingResetOnFork=: a realtime
     * policy needs CAP_SYS_NICE. With reset-on-fork, the kernel gives a fork the default policy
     * and no negative nice: a zygote takes the policy without the flag, so that the workers it
     * forks keep what the unit's process has, and each of them adds the flag to itself. */
    STEP(CD_STEP_SCHED);
    {
        struct sched_param sp = {.sched_priority = p->sched_priority};
        if (sched_setscheduler(0, sched_policy_to_take(p), &sp) != 0)
            FAIL(0);
    }

    /* Lowering oom_score_adj needs CAP_SYS_RESOURCE. */
    STEP(CD_STEP_OOM);
    if (write_int(oom_fd, p->oom_score_adj) != 0)
        FAIL(0);
    close(oom_fd);
    oom_fd = -1;

    /* CoredumpFilter=: what a core dump of the process may contain. /proc is still ours. */
    STEP(CD_STEP_COREDUMP);
    if (p->coredump_filter >= 0) {
        int fd = open("/proc/self/coredump_filter", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            FAIL(0);
        int rc = write_int(fd, p->coredump_filter);   /* the kernel reads base 0: decimal */
        int saved = errno;
        close(fd);
        if (rc != 0) {
            errno = saved;
            FAIL(1);
        }
    }

    STEP(CD_STEP_AFFINITY);
    if (p->affinity_size && sched_setaffinity(0, p->affinity_size, (const cpu_set_t *)p->affinity) != 0)
        FAIL(0);

    /* NUMAPolicy=, NUMAMask=: inherited across fork like the rest, so set even when it is the
     * default (the owner's own policy may not be). default and local take no nodes. */
    STEP(CD_STEP_MEMPOLICY);
    if (p->mempolicy >= 0) {
        int mode = p->mempolicy & ~MPOL_MODE_FLAGS;
        int nodes = mode != MPOL_DEFAULT && mode != MPOL_LOCAL;
        if (syscall(SYS_set_mempolicy, p->mempolicy, nodes ? p->mempolicy_nodes : NULL,
                    nodes ? 8 * sizeof p->mempolicy_nodes + 1 : 0) != 0)
            FAIL(0);
    }

    /* The realtime I/O class needs CAP_SYS_ADMIN or CAP_SYS_NICE. */
    STEP(CD_STEP_IOPRIO);
    if (p->ioprio >= 0 && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, p->ioprio) != 0)
        FAIL(0);

    STEP(CD_STEP_PERSONALITY);
    if (personality(p->personality) == -1)
        FAIL(0);

    STEP(CD_STEP_TIMERSLACK);
    if (p->timer_slack && prctl(PR_SET_TIMERSLACK, p->timer_slack, 0, 0, 0) != 0)
        FAIL(0);

    /* Transparent huge pages (MemoryTHP=): the anchor's setting, whatever the owner's was (the
     * zygote inherited the owner's). PR_GET_THP_DISABLE gives 1 | the flags it was set with. */
    STEP(CD_STEP_THP);
    if (p->thp >= 0 && prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != p->thp &&
        prctl(PR_SET_THP_DISABLE, p->thp & 1, p->thp & PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0) != 0)
        FAIL(0);

    /* Supplementary groups of a unit with its own user namespace (PrivateUsers=): systemd writes
     * "deny" to its setgroups file, so inside it setgroups() fails; set them now, as ids of the
     * initial user namespace, while we may. */
    STEP(CD_STEP_SETGROUPS);
    if (p->groups_early && setgroups((size_t)p->n_groups, (const gid_t *)p->groups_early) != 0)
        FAIL(1);

    /* 4. Namespaces, in ns_order (see its comment). */
    STEP(CD_STEP_SETNS);
    for (size_t k = 0; k < sizeof ns_order / sizeof ns_order[0]; k++)
        for (int i = 0; i < p->n_ns; i++)
            if (p->ns[i].nstype == ns_order[k] && setns(p->ns[i].fd, p->ns[i].nstype) != 0)
                FAIL(p->ns[i].nstype);

    /* 5. The anchor's root (RootDirectory=, or the mount namespace's /) and working directory,
     *    both by fd: chroot(".") after fchdir is the only way to chroot to a directory that has no
     *    path in our view. The cwd fd comes last so that it, not the new root, is the cwd. */
    STEP(CD_STEP_ROOT);
    if (p->root_fd >= 0) {
        if (fchdir(p->root_fd) != 0)
            FAIL(CD_ROOT_FCHDIR_ROOT);
        if (chroot(".") != 0)
            FAIL(CD_ROOT_CHROOT);
    }
    if (p->cwd_fd >= 0 && fchdir(p->cwd_fd) != 0)
        FAIL(CD_ROOT_FCHDIR_CWD);

    /* 6. Credentials. The bounding set first: dropping needs CAP_SETPCAP, which we still hold. */
    STEP(CD_STEP_BOUNDING);
    for (int c = 0; c <= p->last_cap; c++)
        /* no PR_CAPBSET_READ first: dropping an absent capability succeeds, one call saved */
        if (!(p->cap_bounding & (1ull << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0)
            FAIL(c);

    /* KEEP_CAPS so that setresuid(0 -> nobody) keeps the permitted set: we still need
     * CAP_SETPCAP to set the exact securebits and to shape the capability sets afterwards. The
     * lock bits wait until then, or they would freeze KEEP_CAPS. */
    STEP(CD_STEP_SECUREBITS);
    if (prctl(PR_SET_SECUREBITS, (p->securebits & ~SECBIT_ALL_LOCKS) | SECBIT_KEEP_CAPS, 0, 0, 0) != 0)
        FAIL(0);

    /* Groups before gid before uid: each needs CAP_SETGID/CAP_SETUID, which setresuid drops from
     * the effective set. A unit user namespace may deny setgroups (/proc/<pid>/setgroups "deny");
     * then they were set before joining it (groups_early), which the verify step checks. */
    STEP(CD_STEP_SETGROUPS);
    if (setgroups((size_t)p->n_groups, (const gid_t *)p->groups) != 0 && errno != EPERM)
        FAIL(0);
    STEP(CD_STEP_SETRESGID);
    if (setresgid(p->gid[0], p->gid[1], p->gid[2]) != 0)
        FAIL(0);
    STEP(CD_STEP_SETRESUID);
    if (setresuid(p->uid[0], p->uid[1], p->uid[2]) != 0)
        FAIL(0);

    /* The uid change cleared the effective set; raise it from the kept permitted set again. */
    STEP(CD_STEP_CAPSET);
    {
        struct __user_cap_data_struct d[2];
        if (capget_self(d) != 0)
            FAIL(0);
        uint64_t perm = d[0].permitted | ((uint64_t)d[1].permitted << 32);
        uint64_t inh = d[0].inheritable | ((uint64_t)d[1].inheritable << 32);
        if (capset_self(perm, perm, inh) != 0)
            FAIL(0);
    }

    /* The anchor's exact securebits, locks included (needs CAP_SETPCAP, effective again). */
    STEP(CD_STEP_SECUREBITS);
    if ((unsigned int)prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) != p->securebits &&
        prctl(PR_SET_SECUREBITS, p->securebits, 0, 0, 0) != 0)
        FAIL(1);

    /* systemd gives each system service a fresh session keyring (KeyringMode=private): the worker
     * must not keep a handle on the parent's keys. After the uid change so the worker owns it. */
    STEP(CD_STEP_KEYRING);
    if (p->new_session_keyring && syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, (char *)0) < 0)
        FAIL(0);

    /* The anchor's sets (and CAP_SYS_ADMIN, held for the filters if need be). Only lowering from
     * here: capset never needs a capability for that. */
    STEP(CD_STEP_CAPSET);
    if (capset_self(held(p, p->cap_effective), held(p, p->cap_permitted), p->cap_inheritable) != 0)
        FAIL(1);

    /* Ambient capabilities (AmbientCapabilities=): the uid change cleared them; each raise needs
     * the capability in both permitted and inheritable, set just above. */
    STEP(CD_STEP_AMBIENT);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        FAIL(-1);
    for (int c = 0; c <= p->last_cap; c++)
        if ((p->cap_ambient & (1ull << c)) &&
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
            FAIL(c);

    /* Dumpable as the plan says (concurrentd's plans say 0: a zygote or worker must never be
     * dumpable with the unit's uid, not even until its caller could say so: another unit of the
     * same user could take its fds). */
    STEP(CD_STEP_DUMPABLE);
    if (prctl(PR_SET_DUMPABLE, p->dumpable, 0, 0, 0) != 0)
        FAIL(0);

    /* Read back what the kernel may have silently adjusted or what cannot report an error. */
    STEP(CD_STEP_VERIFY);
    if (verify(p, &arg) != 0)
        FAIL(arg);

    /* 7. MemoryDenyWriteExecute= (systemd >= 253): a W+X mapping, or making one executable, fails
     *    from here on. Inherited by fork, never cleared; needs no privilege. Read back: a flag the
     *    kernel does not know, or a process that already has others, would differ. */
    STEP(CD_STEP_MDWE);
    if (p->mdwe > 0) {
        int now = prctl(PR_GET_MDWE, 0, 0, 0, 0);
        if (now != p->mdwe && prctl(PR_SET_MDWE, p->mdwe, 0, 0, 0) != 0)
            FAIL(0);
        if (prctl(PR_GET_MDWE, 0, 0, 0, 0) != p->mdwe) {
            errno = 0;
            STEP(CD_STEP_VERIFY);
            FAIL(CD_VERIFY_MDWE);
        }
    }

    /* After every step that needed privilege; before seccomp, which may require it when the
     * worker holds no CAP_SYS_ADMIN (as systemd does). */
    STEP(CD_STEP_NO_NEW_PRIVS);
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        FAIL(0);

    /* 8. The plan's fds are O_CLOEXEC but a worker does not exec: close them, so user code never
     *    holds the parent's root, namespaces or cgroup files. */
    STEP(CD_STEP_CLOSE);
    close_plan_fds(p);
    fds_closed = 1;

    /* 9. Seccomp last: a filter may forbid setns, capset, prctl... Unless the caller installs
     *    the filters later itself (cd_install_filters, e.g. in each child of an entered zygote). */
    STEP(CD_STEP_SECCOMP);
    if (!p->defer_seccomp && install_filters(p, &arg) != 0)
        FAIL(arg);
    STEP(CD_STEP_DROP_ADMIN);
    if (!p->defer_seccomp && drop_admin(p) != 0)
        FAIL(0);
    STEP(CD_NSTEPS);  /* closes the timing of the last step */
    return 0;

fail:
    r->err = errno;
    r->step = step;
    r->arg = arg;
    if (oom_fd >= 0)
        close(oom_fd);
    if (!fds_closed)  /* closed either way, as enter.h promises */
        close_plan_fds(p);
    errno = r->err;
    return -1;
#undef STEP
#undef FAIL
}

int cd_seccomp_get_filters(int pid, void *buf, size_t cap, unsigned int *lens,
                           unsigned int *flags, int max_filters, int *failed)
{
    int status, n = 0, err = 0;
    size_t used = 0;

    /* SEIZE does not stop the process and sends it no signal; INTERRUPT stops it in a ptrace
     * stop that DETACH resumes, transparently restarting whatever it was blocked in. */
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
        *failed = CD_PTRACE_SEIZE;
        return -1;
    }
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) {
        err = errno;
        *failed = CD_PTRACE_INTERRUPT;
        goto out;
    }
    if (waitpid(pid, &status, __WALL) != pid) {
        err = errno;
        *failed = CD_PTRACE_WAIT;
        goto out;
    }
    for (;;) {
        long len = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, (void *)(long)n, 0);
        if (len < 0) {
            /* ENOENT after the last filter; EINVAL if the process has no filter at all */
            if ((errno == ENOENT && n > 0) || (errno == EINVAL && n == 0))
                break;
            err = errno;
            *failed = CD_PTRACE_GET_FILTER;
            goto out;
        }
        if (n >= max_filters || used + (size_t)len > cap) {
            err = E2BIG;
            *failed = CD_PTRACE_BUFFER;
            goto out;
        }
        if (ptrace(PTRACE_SECCOMP_GET_FILTER, pid, (void *)(long)n,
                   (char *)buf + used * sizeof(struct sock_filter)) != len) {
            err = errno;
            *failed = CD_PTRACE_GET_FILTER;
            goto out;
        }
        struct seccomp_metadata md = {(uint64_t)n, 0};
        if (ptrace(PTRACE_SECCOMP_GET_METADATA, pid, (void *)sizeof md, &md) < 0) {
            err = errno;
            *failed = CD_PTRACE_GET_METADATA;
            goto out;
        }
        lens[n] = (unsigned int)len;
        flags[n] = (unsigned int)md.flags;
        used += (size_t)len;
        n++;
    }
out:
    ptrace(PTRACE_DETACH, pid, 0, 0);
    if (err) {
        errno = err;
        return -1;
    }
    return n;
}

int cd_ioprio_get(int pid)
{
    return (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid);
}
