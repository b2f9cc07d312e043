#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>

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
