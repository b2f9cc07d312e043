/* cd_pickle_check: see pickle_check.h. One linear pass; the opcodes and their arguments are
 * those of CPython's Lib/pickletools.py. Anything not listed is refused: a worker's pickle comes
 * from pickle.dumps(value, 5), whose pickler writes only these. */
#include "pickle_check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What the check knows of a stack item or memo entry. */
enum kind {
    K_MARK,          /* a MARK (the unpickler keeps marks apart from items) */
    K_PLAIN,         /* str, bytes, None, bool, an int below 2**61: a hash no worker chooses */
    K_HASHY,         /* a big int, a float, a tuple, a frozenset: a hash a worker can collide */
    K_LIST,          /* an empty list, to be filled by APPEND(S) */
    K_DICT,          /* an empty dict, to be filled by SETITEM(S) */
    K_SET,           /* an empty set, to be filled by ADDITEMS */
    K_GLOBAL,        /* a class or function found by name */
    K_OBJ,           /* what REDUCE/NEWOBJ of a K_GLOBAL made (hash: collidable) */
};

/* What a global's instances may receive ("b", "a", "s" in the caller's list). */
enum { F_BUILD = 1, F_APPEND = 2, F_SETITEM = 4 };

struct item {
    unsigned char kind;
    unsigned char flags;     /* of a K_GLOBAL or K_OBJ */
    unsigned int depth;      /* of tuple nesting */
    size_t str_off, str_len; /* a string's bytes in buf (str_len 0: not a string) */
};

struct items {
    struct item *v;
    size_t n, cap;
};

static int push(struct items *t, struct item it)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        struct item *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = it;
    return 0;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

/* An int from LONG1/LONG4's little-endian two's complement bytes: can its hash collide with
 * others at will? An int's hash is its value modulo 2**61 - 1, so only those at least that far
 * from zero can. */
static int is_big(const unsigned char *p, uint64_t n)
{
    if (n > 8)
        return 1;
    if (n == 0)
        return 0;
    uint64_t x = le(p, (int)n);
    if (p[n - 1] & 0x80) {
        if (n < 8)
            x |= ~(uint64_t)0 << (8 * n);   /* sign-extend */
        x = ~x + 1;                          /* magnitude */
    }
    return x >= ((uint64_t)1 << 61) - 1;
}

/* The argument length of opcodes with a fixed one; -1 for those read below; -2: refused. */
static int fixed_arg(unsigned char op)
{
    switch (op) {
    case 0x80: return 1;                          /* PROTO */
    case 0x95: return 8;                          /* FRAME */
    case '.': case 'N': case 0x88: case 0x89:     /* STOP NONE NEWTRUE NEWFALSE */
    case ']': case '}': case 0x8f: case ')':      /* EMPTY_LIST _DICT _SET _TUPLE */
    case '(': case 't': case 0x85: case 0x86: case 0x87:   /* MARK TUPLE TUPLE1-3 */
    case 'a': case 'e': case 's': case 'u':       /* APPEND(S) SETITEM(S) */
    case 0x90: case 0x91: case 0x94: case 0x93:   /* ADDITEMS FROZENSET MEMOIZE STACK_GLOBAL */
    case 'R': case 0x81: case 0x92: case 'b':     /* REDUCE NEWOBJ NEWOBJ_EX BUILD */
    case '0': case '1':                           /* POP POP_MARK */
        return 0;
    case 'K': case 'h': return 1;                 /* BININT1 BINGET */
    case 'M': return 2;                           /* BININT2 */
    case 'J': case 'j': return 4;                 /* BININT LONG_BINGET */
    case 'G': return 8;                           /* BINFLOAT */
    case 0x8a: case 0x8b:                         /* LONG1 LONG4 */
    case 0x8c: case 'X': case 0x8d:               /* SHORT_BINUNICODE BINUNICODE(8) */
    case 'C': case 'B': case 0x8e: case 0x96:     /* SHORT_BINBYTES BINBYTES(8) BYTEARRAY8 */
        return -1;
    default:
        return -2;
    }
}

/* The size of the length field of the length-prefixed opcodes. */
static int length_size(unsigned char op)
{
    switch (op) {
    case 0x8a: case 0x8c: case 'C': return 1;
    case 0x8b: case 'X': case 'B': return 4;
    default: return 8;                            /* BINUNICODE8 BINBYTES8 BYTEARRAY8 */
    }
}

/* The index of the topmost mark, or -1. */
static long find_mark(const struct items *s)
{
    for (size_t i = s->n; i > 0; i--)
        if (s->v[i - 1].kind == K_MARK)
            return (long)(i - 1);
    return -1;
}

/* Can a worker choose this item's hash (as a dict key or a set member)? */
static int collidable(const struct item *it)
{
    return it->kind != K_PLAIN;
}

/* The flags `module\0name` has in `list` (triples of NUL-terminated strings: flags, module,
 * name), or 0 if it is not there. */
static unsigned char flags_of(const char *list, size_t list_len, const unsigned char *buf,
                              const struct item *module, const struct item *name)
{
    const char *p = list, *end = list + list_len;
    while (p < end) {
        const char *f = p;
        const char *m = f + strnlen(f, (size_t)(end - f)) + 1;
        if (m >= end)
            break;
        size_t ml = strnlen(m, (size_t)(end - m));
        const char *n = m + ml + 1;
        if (n >= end)
            break;
        size_t nl = strnlen(n, (size_t)(end - n));
        if (ml == module->str_len && nl == name->str_len &&
            !memcmp(m, buf + module->str_off, ml) && !memcmp(n, buf + name->str_off, nl)) {
            unsigned char flags = 0;
            for (; *f; f++)
                flags |= *f == 'b' ? F_BUILD : *f == 'a' ? F_APPEND : *f == 's' ? F_SETITEM : 0;
            return flags;
        }
        p = n + nl + 1;
    }
    return 0;
}

/* May `target` receive this opcode's items (`flag`: F_APPEND or F_SETITEM; 0: ADDITEMS)? */
static int fillable(const struct item *target, unsigned char op)
{
    switch (op) {
    case 'a': case 'e':
        return target->kind == K_LIST || (target->kind == K_OBJ && target->flags & F_APPEND);
    case 's': case 'u':
        return target->kind == K_DICT || (target->kind == K_OBJ && target->flags & F_SETITEM);
    default:                               /* ADDITEMS */
        return target->kind == K_SET || (target->kind == K_OBJ && target->flags & F_APPEND);
    }
}

int cd_pickle_check(const unsigned char *buf, size_t len, const char *buildable,
                    size_t buildable_len, size_t max_keys, unsigned int max_depth,
                    size_t *offset)
{
    struct items stack = {0}, memo = {0};
    size_t pos = 0, keys = 0;
    int verdict = CD_PICKLE_TRUNCATED;

#define FAIL(v) do { verdict = (v); goto out; } while (0)
#define PUSH(it) do { if (push(&stack, (it))) FAIL(CD_PICKLE_NOMEM); } while (0)
/* The k topmost items, none of them a mark (an opcode cannot take an item from below one). */
#define TAKE(k) do { if (stack.n < (k)) FAIL(CD_PICKLE_STACK); \
        for (size_t i_ = stack.n - (k); i_ < stack.n; i_++) \
            if (stack.v[i_].kind == K_MARK) FAIL(CD_PICKLE_STACK); } while (0)
#define ITEM(k, d) ((struct item){ (k), 0, (d), 0, 0 })

    while (pos < len) {
        unsigned char op = buf[pos];
        *offset = pos;
        int arg = fixed_arg(op);
        const unsigned char *a = buf + pos + 1;
        uint64_t n = 0;
        size_t data = 0;              /* a length-prefixed argument's offset */
        if (arg == -2)
            FAIL(CD_PICKLE_OPCODE);
        if (arg == -1) {              /* a length, then that many bytes */
            int k = length_size(op);
            if (len - pos - 1 < (size_t)k)
                goto out;
            n = le(a, k);
            if (n > len - pos - 1 - (size_t)k)
                goto out;
            data = pos + 1 + (size_t)k;
            pos = data + n;
        } else {
            if (len - pos - 1 < (size_t)arg)
                goto out;
            pos += 1 + (size_t)arg;
        }

        switch (op) {
        case 0x80: case 0x95:             /* PROTO FRAME: no stack effect */
            break;
        case '.':                         /* STOP: the one item left is the result */
            verdict = stack.n == 1 && stack.v[0].kind != K_MARK ? CD_PICKLE_OK : CD_PICKLE_STACK;
            goto out;
        case 'N': case 0x88: case 0x89: case 'K': case 'M': case 'J':
        case 'C': case 'B': case 0x8e: case 0x96:   /* None, bools, small ints, bytes(array) */
            PUSH(ITEM(K_PLAIN, 0));
            break;
        case 0x8c: case 'X': case 0x8d: { /* str: keep where it is, for STACK_GLOBAL */
            struct item it = ITEM(K_PLAIN, 0);
            it.str_off = data;
            it.str_len = (size_t)n;
            PUSH(it);
            break;
        }
        case 0x8a: case 0x8b:             /* LONG1 LONG4 */
            PUSH(ITEM(is_big(buf + data, n) ? K_HASHY : K_PLAIN, 0));
            break;
        case 'G':                         /* BINFLOAT */
            PUSH(ITEM(K_HASHY, 0));
            break;
        case ']':                         /* EMPTY_LIST */
            PUSH(ITEM(K_LIST, 0));
            break;
        case '}':                         /* EMPTY_DICT */
            PUSH(ITEM(K_DICT, 0));
            break;
        case 0x8f:                        /* EMPTY_SET */
            PUSH(ITEM(K_SET, 0));
            break;
        case ')':                         /* EMPTY_TUPLE */
            PUSH(ITEM(K_PLAIN, 1));
            break;
        case 'h': case 'j': {             /* BINGET LONG_BINGET */
            uint64_t i = le(a, op == 'h' ? 1 : 4);
            if (i >= memo.n)
                FAIL(CD_PICKLE_MEMO);
            PUSH(memo.v[i]);
            break;
        }
        case '(':                         /* MARK */
            PUSH(ITEM(K_MARK, 0));
            break;
        case 0x94:                        /* MEMOIZE: the index is the memo's size */
            TAKE(1);
            if (push(&memo, stack.v[stack.n - 1]))
                FAIL(CD_PICKLE_NOMEM);
            break;
        case 't': case 0x85: case 0x86: case 0x87: case 0x91: {   /* TUPLE(1-3) FROZENSET */
            size_t from;
            if (op == 't' || op == 0x91) {
                long m = find_mark(&stack);
                if (m < 0)
                    FAIL(CD_PICKLE_STACK);
                from = (size_t)m + 1;
            } else {
                TAKE((size_t)(op - 0x84));
                from = stack.n - (size_t)(op - 0x84);
            }
            unsigned int depth = 0;
            for (size_t i = from; i < stack.n; i++) {
                if (stack.v[i].depth > depth)
                    depth = stack.v[i].depth;
                if (op == 0x91 && collidable(&stack.v[i]))
                    keys++;
            }
            if (depth + 1 > max_depth)
                FAIL(CD_PICKLE_DEPTH);
            stack.n = op == 't' || op == 0x91 ? from - 1 : from;
            PUSH(ITEM(K_HASHY, depth + 1));
            break;
        }
        case 'a': case 's': {             /* APPEND: list, item; SETITEM: dict, key, value */
            size_t k = op == 'a' ? 1 : 2;
            TAKE(k + 1);
            if (op == 's' && collidable(&stack.v[stack.n - 2]))
                keys++;
            stack.n -= k;
            if (!fillable(&stack.v[stack.n - 1], op))
                FAIL(CD_PICKLE_TARGET);
            break;
        }
        case 'e': case 'u': case 0x90: case '1': {   /* APPENDS SETITEMS ADDITEMS POP_MARK */
            long m = find_mark(&stack);
            if (m < 0)
                FAIL(CD_PICKLE_STACK);
            if (op == 'u' || op == 0x90)
                for (size_t i = (size_t)m + 1; i < stack.n; i += op == 'u' ? 2 : 1)
                    keys += (size_t)collidable(&stack.v[i]);
            stack.n = (size_t)m;
            if (op == '1')
                break;
            if (stack.n == 0)
                FAIL(CD_PICKLE_STACK);
            if (!fillable(&stack.v[stack.n - 1], op))
                FAIL(CD_PICKLE_TARGET);
            break;
        }
        case 0x93: {                      /* STACK_GLOBAL: module, name -> a class or function */
            TAKE(2);
            struct item *module = &stack.v[stack.n - 2], *name = &stack.v[stack.n - 1];
            if (!module->str_len || !name->str_len)
                FAIL(CD_PICKLE_STACK);
            struct item global = ITEM(K_GLOBAL, 0);
            global.flags = flags_of(buildable, buildable_len, buf, module, name);
            stack.n -= 2;
            PUSH(global);
            break;
        }
        case 'R': case 0x81: case 0x92: { /* REDUCE NEWOBJ (NEWOBJ_EX, with kwargs) -> object */
            size_t k = op == 0x92 ? 3 : 2;
            TAKE(k);
            struct item object = ITEM(K_OBJ, 0);
            if (stack.v[stack.n - k].kind != K_GLOBAL)
                FAIL(CD_PICKLE_STACK);
            object.flags = stack.v[stack.n - k].flags;   /* what the class's instances may take */
            stack.n -= k;
            PUSH(object);
            break;
        }
        case 'b':                         /* BUILD: object, state -> object */
            TAKE(2);
            if (stack.v[stack.n - 2].kind != K_OBJ || !(stack.v[stack.n - 2].flags & F_BUILD))
                FAIL(CD_PICKLE_BUILD);
            stack.n -= 1;
            break;
        case '0':                         /* POP: an item, or the topmost mark */
            if (stack.n == 0)
                FAIL(CD_PICKLE_STACK);
            stack.n -= 1;
            break;
        default:                          /* listed in fixed_arg, not handled: refused */
            FAIL(CD_PICKLE_OPCODE);
        }
        if (keys > max_keys)
            FAIL(CD_PICKLE_KEYS);
    }
out:
#undef FAIL
#undef PUSH
#undef TAKE
#undef ITEM
    free(stack.v);
    free(memo.v);
    return verdict;
}
