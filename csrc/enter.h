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

/* Steps, in the order cd_enter() first performs them (a few come back later: setgroups,
 * securebits, capset); the failing one is reported in result.step. Python names a failure after
 * these enumerators (concurrentd/_entry/enter.py reads them through cffi): their values are
 * only indices, never written down anywhere else. */
enum cd_step {
    CD_STEP_ANCHOR,        /* the anchor is still alive (poll on its pidfd) */
    CD_STEP_OOM_OPEN,      /* open /proc/self/oom_score_adj while /proc is ours */
    CD_STEP_CGROUP,        /* write "0" to cgroup.procs; arg = index in plan.cgroup_fds */
    CD_STEP_ENVIRON,       /* PR_SET_MM_MAP; arg: 0 reading /proc/self/stat, 1 the prctl */
    CD_STEP_RLIMIT,        /* arg = resource */
    CD_STEP_UMASK,
    CD_STEP_NICE,
    CD_STEP_SCHED,         /* sched_setscheduler: policy, priority, reset-on-fork */
    CD_STEP_OOM,
    CD_STEP_COREDUMP,      /* /proc/self/coredump_filter: CoredumpFilter= */
    CD_STEP_AFFINITY,
    CD_STEP_MEMPOLICY,     /* set_mempolicy: NUMAPolicy=, NUMAMask= */
    CD_STEP_IOPRIO,
    CD_STEP_PERSONALITY,
    CD_STEP_TIMERSLACK,
    CD_STEP_THP,           /* prctl(PR_SET_THP_DISABLE): MemoryTHP= (systemd >= 260) */
    CD_STEP_SETGROUPS,     /* arg: 0 in the unit's user ns, 1 before joining it (groups_early) */
    CD_STEP_SETNS,         /* arg = CLONE_NEW* of the namespace */
    CD_STEP_ROOT,          /* arg = enum cd_root_call */
    CD_STEP_BOUNDING,      /* arg = capability */
    CD_STEP_SECUREBITS,    /* arg: 0 before the uid change, 1 the anchor's exact bits */
    CD_STEP_SETRESGID,
    CD_STEP_SETRESUID,
    CD_STEP_CAPSET,        /* arg: 0 re-raise effective, 1 the anchor's sets */
    CD_STEP_KEYRING,
    CD_STEP_AMBIENT,       /* arg = capability */
    CD_STEP_DUMPABLE,
    CD_STEP_VERIFY,        /* arg = what was read back (enum cd_verify); errno 0 = differs */
    CD_STEP_MDWE,          /* prctl(PR_SET_MDWE): MemoryDenyWriteExecute= (systemd >= 253) */
    CD_STEP_NO_NEW_PRIVS,
    CD_STEP_CLOSE,
    CD_STEP_SECCOMP,       /* arg = index in plan.filters (install order) */
    CD_STEP_DROP_ADMIN,    /* after the filters: drop the CAP_SYS_ADMIN held to load them */
    CD_NSTEPS              /* not a step: how many there are (result.step_ns) */
};

/* CD_STEP_ROOT's arg: which of its three calls failed. */
enum cd_root_call {
    CD_ROOT_FCHDIR_ROOT,   /* fchdir(root_fd) */
    CD_ROOT_CHROOT,        /* chroot(".") */
    CD_ROOT_FCHDIR_CWD,    /* fchdir(cwd_fd) */
};

/* CD_STEP_VERIFY's arg: which value read back differs from the plan (or could not be read). */
enum cd_verify {
    CD_VERIFY_UID,
    CD_VERIFY_GID,
    CD_VERIFY_CAPS,
    CD_VERIFY_SECUREBITS,
    CD_VERIFY_NICE,
    CD_VERIFY_PERSONALITY,
    CD_VERIFY_TIMERSLACK,
    CD_VERIFY_NO_NEW_PRIVS,
    CD_VERIFY_GROUPS,
    CD_VERIFY_SCHED,
    CD_VERIFY_MEMPOLICY,
    CD_VERIFY_MDWE,
    CD_VERIFY_THP,
};

/* cd_seccomp_get_filters()'s *failed: the request that failed. */
enum cd_ptrace_call {
    CD_PTRACE_SEIZE,
    CD_PTRACE_INTERRUPT,
    CD_PTRACE_WAIT,        /* waitpid() for the stop */
    CD_PTRACE_GET_FILTER,  /* PTRACE_SECCOMP_GET_FILTER */
    CD_PTRACE_GET_METADATA,  /* PTRACE_SECCOMP_GET_METADATA */
    CD_PTRACE_BUFFER,      /* the caller's buffer is too small (errno E2BIG) */
};

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
    int thp;                              /* PR_GET_THP_DISABLE value; -1: leave alone (unknown) */
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
    int defer_seccomp;                    /* cd_enter() skips CD_STEP_SECCOMP and
                                             CD_STEP_DROP_ADMIN: cd_install_filters() later */
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

/* CD_STEP_SECCOMP and CD_STEP_DROP_ADMIN alone: install the plan's seccomp filters in the calling process (the child of a process
 * that entered with defer_seccomp), then drop CAP_SYS_ADMIN if held for them. Returns 0, or -1
 * with r->step = CD_STEP_SECCOMP, r->arg = the filter refused, r->err (or CD_STEP_DROP_ADMIN). */
int cd_install_filters(const struct cd_plan *p, struct cd_enter_result *r);

/* In a process that entered with hold_sys_admin, before any filter: set no_new_privs and drop
 * CAP_SYS_ADMIN (the anchor's exact sets), for filters that forbid capset after them. */
int cd_release_admin(const struct cd_plan *p, struct cd_enter_result *r);

/* In the parent: seize process `pid`, copy its seccomp filters, detach. Instructions go to `buf`
 * (capacity `cap` instructions, 8 bytes each), oldest filter first (the kernel's index 0);
 * lens[i] and flags[i] describe filter i. Returns the number of filters, or -1 with errno set
 * and *failed naming the request that failed (enum cd_ptrace_call). */
int cd_seccomp_get_filters(int pid, void *buf, size_t cap, unsigned int *lens,
                           unsigned int *flags, int max_filters, int *failed);

/* ioprio_get(IOPRIO_WHO_PROCESS, pid): glibc has no wrapper. */
int cd_ioprio_get(int pid);

#endif
