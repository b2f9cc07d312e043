/* A check of a pickle from a worker, before the owner unpickles it (concurrentd/_results.py). */
#ifndef CONCURRENTD_PICKLE_CHECK_H
#define CONCURRENTD_PICKLE_CHECK_H

#include <stddef.h>

/* What cd_pickle_check found; each names the first offending opcode's offset. */
enum cd_pickle_verdict {
    CD_PICKLE_OK = 0,
    CD_PICKLE_OPCODE = 1,       /* an opcode protocol 5's pickler never writes */
    CD_PICKLE_TRUNCATED = 2,    /* an opcode's argument runs past the end, or no STOP */
    CD_PICKLE_STACK = 3,        /* an opcode finds too few items, or no mark, on the stack */
    CD_PICKLE_BUILD_CLASS = 4,  /* BUILD on a class or function: it would set its attributes */
    CD_PICKLE_BIG_KEYS = 5,     /* too many huge ints as set members or dict keys */
    CD_PICKLE_MEMO = 6,         /* a memo read beyond what was memoized */
    CD_PICKLE_NOMEM = 7,        /* the check itself ran out of memory */
};

/* Walks the opcodes of buf[0..len) as the unpickler will, keeping a tag per stack item and memo
 * entry, and refuses what a pickle made by protocol 5's own pickler never holds but an attacker's
 * can: the opcodes that set an arbitrary memo index (the unpickler allocates up to it), BUILD on
 * a class or function found by name, and more than max_big_keys ints whose hashes an attacker
 * can make collide as keys of one load (each insert then costs a scan of all the others).
 * Returns a cd_pickle_verdict; *offset is the opcode's offset. */
int cd_pickle_check(const unsigned char *buf, size_t len, size_t max_big_keys, size_t *offset);

#endif
