/* Thin system-call wrappers that glibc lacks or that Python's os module lacks on 3.10. */
#ifndef CONCURRENTD_SYS_H
#define CONCURRENTD_SYS_H

/* pivot_root(2) has no glibc wrapper. Returns 0, or -1 with errno set. */
int cd_pivot_root(const char *new_root, const char *put_old);

/* pidfd_open(2) has no glibc wrapper before 2.36. Returns an fd, or -1 with errno set. */
int cd_pidfd_open(int pid, unsigned int flags);

/* A copy of the calling process, as fork(2), created directly in the cgroup (v2) open at
 * cgroup_fd (clone3 with CLONE_INTO_CGROUP, Linux >= 5.7) and made a child of the caller's
 * parent (CLONE_PARENT). Unlike writing a pid to cgroup.procs, which waits for an RCU grace
 * period (10-30 ms) unless another migration just ran, the kernel places it as it creates it.
 * It is a raw system call, not libc's fork(): no atfork handlers run and libc's cached thread
 * id stays the caller's, so the caller must be single-threaded, and the child should not rely
 * on pthread mutexes shared with other processes. Returns the child's pid in the caller, 0 in
 * the child, or -1 with errno set (ENOSYS, EINVAL before 5.7; EOPNOTSUPP for a v1 cgroup...). */
int cd_clone_into_cgroup(int cgroup_fd);

#endif
