#define _GNU_SOURCE
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/sched.h>   /* struct clone_args, CLONE_INTO_CGROUP */

#include "sys.h"

int cd_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int cd_pidfd_open(int pid, unsigned int flags)
{
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

int cd_clone_into_cgroup(int cgroup_fd)
{
#ifndef SYS_clone3
#define SYS_clone3 435 /* the same number on every architecture */
#endif
    struct clone_args args;
    memset(&args, 0, sizeof args);
    /* exit_signal stays 0: with CLONE_PARENT the child ends with the caller's own exit signal
     * (clone3 refuses any other); stack 0: the child runs on its copy of the caller's stack. */
    args.flags = CLONE_INTO_CGROUP | CLONE_PARENT;
    args.cgroup = (unsigned int)cgroup_fd;
    return (int)syscall(SYS_clone3, &args, sizeof args);
}
