/* Thin system-call wrappers that glibc lacks or that Python's os module lacks on 3.10. */
#ifndef CONCURRENTD_SYS_H
#define CONCURRENTD_SYS_H

/* pivot_root(2) has no glibc wrapper. Returns 0, or -1 with errno set. */
int cd_pivot_root(const char *new_root, const char *put_old);

/* pidfd_open(2) has no glibc wrapper before 2.36. Returns an fd, or -1 with errno set. */
int cd_pidfd_open(int pid, unsigned int flags);

#endif
