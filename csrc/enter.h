/* Entering a unit: move a freshly forked worker into the confinement of a unit's main process.
 *
 * The parent reads everything about the anchor (the unit's main process) once, into a
 * struct cd_plan (concurrentd/_entry/plan.py). The forked child then calls cd_enter(), which
 * performs the whole switch with no Python in between. Nothing here allocates or formats: after a
 * fork of a possibly multithreaded parent only async-signal-safe work is allowed, so a failure is
 * reported as (step, arg, errno) and turned into a message by the parent side in Python.
 */
#ifndef CONCURRENTD_ENTER_H
#define CONCURRENTD_ENTER_H

#include <stddef.h>
#include <stdint.h>

#define CD_MAX_NS 8
#define CD_MAX_CGROUPS 24
#define CD_MAX_RLIMITS 16
#define CD_MAX_FILTERS 64

/* Steps, in the order cd_enter() performs them; the failing one is reported in result.step. */
#define CD_STEP_ANCHOR 0       /* the anchor is still alive (poll on its pidfd) */
#define CD_STEP_OOM_OPEN 1     /* open /proc/self/oom_score_adj while /proc is ours */
#define CD_STEP_CGROUP 2       /* write "0" to cgroup.procs; arg = index in plan.cgroup_fds */
#define CD_STEP_ENVIRON 3      /* PR_SET_MM_ENV_START/END */
#define CD_STEP_RLIMIT 4       /* arg = resource */
#define CD_STEP_UMASK 5
#define CD_STEP_NICE 6
#define CD_STEP_SCHED 7        /* sched_setscheduler: policy, priority, reset-on-fork */
#define CD_STEP_OOM 8
#define CD_STEP_COREDUMP 9     /* /proc/self/coredump_filter: CoredumpFilter= */
#define CD_STEP_AFFINITY 10
#define CD_STEP_MEMPOLICY 11   /* set_mempolicy: NUMAPolicy=, NUMAMask= */
#define CD_STEP_IOPRIO 12
#define CD_STEP_PERSONALITY 13
#define CD_STEP_TIMERSLACK 14
#define CD_STEP_SETNS 15       /* arg = CLONE_NEW* of the namespace */
#define CD_STEP_ROOT 16        /* arg: 0 fchdir(root), 1 chroot, 2 fchdir(cwd) */
#define CD_STEP_BOUNDING 17    /* arg = capability */
#define CD_STEP_SECUREBITS 18  /* arg: 0 before the uid change, 1 the anchor's exact bits */
#define CD_STEP_SETGROUPS 19
#define CD_STEP_SETRESGID 20
#define CD_STEP_SETRESUID 21
#define CD_STEP_KEYRING 22
#define CD_STEP_CAPSET 23      /* arg: 0 re-raise effective, 1 the anchor's sets */
#define CD_STEP_AMBIENT 24     /* arg = capability */
#define CD_STEP_DUMPABLE 25
#define CD_STEP_NO_NEW_PRIVS 26
#define CD_STEP_CLOSE 27
#define CD_STEP_SECCOMP 28     /* arg = index in plan.filters (install order) */
#define CD_STEP_VERIFY 29      /* arg = what was read back (CD_VERIFY_*); errno 0 = differs */
#define CD_STEP_MDWE 30        /* prctl(PR_SET_MDWE): MemoryDenyWriteExecute= (systemd >= 253) */
#define CD_STEP_DROP_ADMIN 31  /* after the filters: drop the CAP_SYS_ADMIN held to load them */
#define CD_NSTEPS 32

#define CD_VERIFY_UID 0
#define CD_VERIFY_GID 1
#define CD_VERIFY_CAPS 2
#define CD_VERIFY_SECUREBITS 3
#define CD_VERIFY_NICE 4
#define CD_VERIFY_PERSONALITY 5
#define CD_VERIFY_TIMERSLACK 6
#define CD_VERIFY_NO_NEW_PRIVS 7
#define CD_VERIFY_GROUPS 8
#define CD_VERIFY_SCHED 9
#define CD_VERIFY_MEMPOLICY 10
#define CD_VERIFY_MDWE 11

struct cd_ns {
    int fd;      /* O_CLOEXEC fd on /proc/<anchor>/ns/<name> */
    int nstype;  /* CLONE_NEW*: setns() then refuses an fd of another kind */
};

struct cd_rlim {
    int resource;
    uint64_t cur;
    uint64_t max;
};

struct cd_filter {
    unsigned int flags;      /* SECCOMP_FILTER_FLAG_* the anchor's filter was loaded with */
    unsigned short len;      /* number of BPF instructions */
    const void *insns;       /* struct sock_filter[len] */
};

struct cd_plan {
    int anchor_pidfd;                     /* -1: do not check */
    int n_cgroups;
    int cgroup_fds[CD_MAX_CGROUPS];       /* O_WRONLY cgroup.procs, one per hierarchy to join */
    int n_ns;
    struct cd_ns ns[CD_MAX_NS];           /* in join order; the user namespace, if any, last */
    int root_fd;                          /* O_PATH on /proc/<anchor>/root */
    int cwd_fd;                           /* O_PATH on /proc/<anchor>/cwd */
    const char *env_block;                /* "K=V\0K=V\0": the anchor's /proc/<pid>/environ */
    size_t env_len;                       /* 0: leave /proc/self/environ alone */
    char *const *envp;                    /* NULL-terminated, into env_block: libc's environ */
    int n_rlimits;
    struct cd_rlim rlimits[CD_MAX_RLIMITS];
    unsigned int umask;
    int nice;
    int sched_policy;                     /* sched_getscheduler(): SCHED_RESET_ON_FORK included */
    int sched_priority;
    int defer_sched_reset;                /* apply the policy without SCHED_RESET_ON_FORK (a
                                             zygote: its forks then keep the policy, and each
                                             adds the flag itself) */
    int oom_score_adj;
    int coredump_filter;                  /* -1: skip */
    int mempolicy;                        /* set_mempolicy() mode | flags; -1: skip (no NUMA) */
    unsigned long mempolicy_nodes[16];    /* its nodemask: up to 1024 nodes */
    size_t affinity_size;                 /* bytes of the cpu_set_t at affinity; 0: skip */
    const void *affinity;
    int ioprio;                           /* -1: skip */
    unsigned long personality;
    unsigned long timer_slack;            /* 0: skip */
    int last_cap;                         /* /proc/sys/kernel/cap_last_cap */
    uint64_t cap_bounding, cap_permitted, cap_effective, cap_inheritable, cap_ambient;
    unsigned int securebits;
    int no_new_privs;
    int mdwe;                             /* PR_SET_MDWE flags; -1: leave alone (unknown) */
    int hold_sys_admin;                   /* keep CAP_SYS_ADMIN until the filters are loaded:
                                             the anchor has filters, neither no_new_privs nor
                                             CAP_SYS_ADMIN (systemd loaded them before its exec
                                             dropped it); dropped right after them */
    int dumpable;
    int new_session_keyring;              /* join a fresh anonymous session keyring */
    unsigned int uid[3];                  /* real, effective, saved; as seen in the anchor's user ns */
    unsigned int gid[3];
    int n_groups;
    const unsigned int *groups;
    const unsigned int *groups_early;     /* NULL, or the groups as initial-user-ns ids: set before setns(user) */
    int n_filters;
    struct cd_filter filters[CD_MAX_FILTERS];  /* install order: the anchor's oldest first */
    int defer_seccomp;                    /* cd_enter() skips step 9: cd_install_filters() later */
    int timing;                           /* fill result.step_ns */
};

struct cd_enter_result {
    int step;
    int arg;
    int err;
    uint64_t step_ns[CD_NSTEPS];          /* per-step time when plan.timing; else zeros */
};

/* In a freshly forked, single-threaded child: become a process of the anchor's unit.
 * Returns 0, or -1 with r->step, r->arg, r->err describing the first failure. The plan's fds are
 * closed either way. */
int cd_enter(const struct cd_plan *p, struct cd_enter_result *r);

/* Step 9 alone: install the plan's seccomp filters in the calling process (the child of a process
 * that entered with defer_seccomp), then drop CAP_SYS_ADMIN if held for them. Returns 0, or -1
 * with r->step = CD_STEP_SECCOMP, r->arg = the filter refused, r->err (or CD_STEP_DROP_ADMIN). */
int cd_install_filters(const struct cd_plan *p, struct cd_enter_result *r);

/* In a process that entered with hold_sys_admin, before any filter: set no_new_privs and drop
 * CAP_SYS_ADMIN (the anchor's exact sets), for filters that forbid capset after them. */
int cd_release_admin(const struct cd_plan *p, struct cd_enter_result *r);

/* In the parent: seize process `pid`, copy its seccomp filters, detach. Instructions go to `buf`
 * (capacity `cap` instructions, 8 bytes each), oldest filter first (the kernel's index 0); lens[i] and flags[i] describe
 * filter i. Returns the number of filters, or -1 with errno set and *failed naming the ptrace
 * request (0 seize, 1 interrupt, 2 wait, 3 get filter, 4 get metadata, 5 buffer too small). */
int cd_seccomp_get_filters(int pid, void *buf, size_t cap, unsigned int *lens,
                           unsigned int *flags, int max_filters, int *failed);

/* ioprio_get(IOPRIO_WHO_PROCESS, pid): glibc has no wrapper. */
int cd_ioprio_get(int pid);

#endif
