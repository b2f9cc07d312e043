/* A check of a pickle from a worker, before the owner unpickles it (concurrentd/_results.py). */
#ifndef CONCURRENTD_PICKLE_CHECK_H
#define CONCURRENTD_PICKLE_CHECK_H

#include <stddef.h>

/* What cd_pickle_check found; each names the first offending opcode's offset. */
enum cd_pickle_verdict {
    CD_PICKLE_OK = 0,
    CD_PICKLE_OPCODE = 1,       /* an opcode protocol 5's pickler never writes */
    CD_PICKLE_TRUNCATED = 2,    /* an opcode's argument runs past the end, or no STOP */
    CD_PICKLE_STACK = 3,        /* an opcode finds too few items, or the wrong kind, on the stack */
    CD_PICKLE_BUILD = 4,        /* BUILD on what its type's own pickle never sets state on */
    CD_PICKLE_KEYS = 5,         /* too many keys or members whose hashes a worker can collide */
    CD_PICKLE_MEMO = 6,         /* a memo read beyond what was memoized */
    CD_PICKLE_NOMEM = 7,        /* the check itself ran out of memory */
    CD_PICKLE_DEPTH = 8,        /* tuples nested deeper than any pickler writes */
    CD_PICKLE_TARGET = 9,       /* items added to a class or a value rather than a container */
};

/* Walks the opcodes of buf[0..len) as the unpickler will, keeping what it needs to know of each
 * stack item and memo entry, and refuses what a pickle made by protocol 5's own pickler never
 * holds but an attacker's can:
 *   - the opcodes that set an arbitrary memo index (the unpickler allocates up to it);
 *   - BUILD (setting an object's state), APPEND(S) and SETITEM(S) except on the containers
 *     they fill (a list, a dict, a set) and on instances of the globals `buildable` names
 *     ("flags\0module\0name\0" triples; flags: b BUILD, a APPEND(S)/ADDITEMS, s SETITEM(S)):
 *     on a class they would set its attributes or call its methods; on a stdlib value they
 *     would bypass the checks its constructor's arguments passed, or call its own methods
 *     (a list's SETITEM with a slice key is an insertion of the list into itself);
 *   - REDUCE/NEWOBJ of anything but a global;
 *   - more than max_keys dict keys and set members whose hash a worker can make collide (all
 *     but strings, bytes, None, booleans and ints below 2**61 in magnitude), each insert of
 *     which may then cost a scan of all the others;
 *   - tuples nested more than max_depth deep (hashing one recurses in C without a limit).
 * Returns a cd_pickle_verdict; *offset is the offending opcode's offset. */
int cd_pickle_check(const unsigned char *buf, size_t len, const char *buildable,
                    size_t buildable_len, size_t max_keys, unsigned int max_depth,
                    size_t *offset);

#endif
