/* cd_pickle_check: see pickle_check.h. One linear pass; the opcodes and their arguments are
 * those of CPython's Lib/pickletools.py. Anything not listed is refused: a worker's pickle comes
 * from pickle.dumps(value, 5), whose pickler writes only these. */
#include "pickle_check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A tag per stack item and memo entry: what the check needs to know of it. */
enum tag { T_VALUE, T_GLOBAL, T_BIG, T_MARK };

struct tags {
    unsigned char *v;
    size_t n, cap;
};

static int push(struct tags *t, unsigned char tag)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        unsigned char *v = realloc(t->v, cap);
        if (!v)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = tag;
    return 0;
}

/* The index of the topmost mark, or -1. */
static long find_mark(const struct tags *s)
{
    for (size_t i = s->n; i > 0; i--)
        if (s->v[i - 1] == T_MARK)
            return (long)(i - 1);
    return -1;
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
    int negative = p[n - 1] & 0x80;
    if (negative) {
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

/* Pops k items, none of them a mark (the unpickler keeps marks apart: an opcode cannot take an
 * item from below one). Returns whether any was big, or -1. */
static int pop_items(struct tags *s, size_t k)
{
    if (s->n < k)
        return -1;
    int any = 0;
    for (size_t i = s->n - k; i < s->n; i++) {
        if (s->v[i] == T_MARK)
            return -1;
        any |= s->v[i] == T_BIG;
    }
    s->n -= k;
    return any;
}

/* Pops the items above the topmost mark and the mark; counts big ones (every second one from
 * the first with `pairs`: the keys). Returns whether any was big, or -1 without a mark. */
static int pop_to_mark(struct tags *s, int pairs, size_t *big)
{
    long m = find_mark(s);
    if (m < 0)
        return -1;
    int any = 0;
    for (size_t i = (size_t)m + 1; i < s->n; i++) {
        if (s->v[i] == T_BIG && (!pairs || (i - (size_t)m - 1) % 2 == 0)) {
            any = 1;
            (*big)++;
        }
    }
    s->n = (size_t)m;
    return any;
}

int cd_pickle_check(const unsigned char *buf, size_t len, size_t max_big_keys, size_t *offset)
{
    struct tags stack = {0}, memo = {0};
    size_t pos = 0, big_keys = 0, scratch = 0;
    int verdict = CD_PICKLE_TRUNCATED;

#define POP(k, any) do { if (((any) = pop_items(&stack, (k))) < 0) { \
        verdict = CD_PICKLE_STACK; goto out; } } while (0)
#define PUSH(t) do { if (push(&stack, (t))) { verdict = CD_PICKLE_NOMEM; goto out; } } while (0)

    while (pos < len) {
        unsigned char op = buf[pos];
        *offset = pos;
        int arg = fixed_arg(op);
        const unsigned char *a = buf + pos + 1;
        uint64_t n = 0;
        if (arg == -2) {
            verdict = CD_PICKLE_OPCODE;
            goto out;
        }
        if (arg == -1) {                  /* a length, then that many bytes */
            int k = length_size(op);
            if (len - pos - 1 < (size_t)k)
                goto out;
            n = le(a, k);
            if (n > len - pos - 1 - (size_t)k)
                goto out;
            pos += 1 + (size_t)k + n;
        } else {
            if (len - pos - 1 < (size_t)arg)
                goto out;
            pos += 1 + (size_t)arg;
        }

        switch (op) {
        case 0x80: case 0x95:             /* PROTO FRAME: no stack effect */
            break;
        case '.':                         /* STOP */
            verdict = stack.n == 1 ? CD_PICKLE_OK : CD_PICKLE_STACK;
            goto out;
        case 0x8a: case 0x8b:             /* LONG1 LONG4 */
            PUSH(is_big(a + length_size(op), n) ? T_BIG : T_VALUE);
            break;
        case 'h': case 'j': {             /* BINGET LONG_BINGET */
            uint64_t i = le(a, op == 'h' ? 1 : 4);
            if (i >= memo.n) {
                verdict = CD_PICKLE_MEMO;
                goto out;
            }
            PUSH(memo.v[i]);
            break;
        }
        case '(':                         /* MARK */
            PUSH(T_MARK);
            break;
        case 0x94:                        /* MEMOIZE: the index is the memo's size */
            if (stack.n == 0 || stack.v[stack.n - 1] == T_MARK) {
                verdict = CD_PICKLE_STACK;
                goto out;
            }
            if (push(&memo, stack.v[stack.n - 1])) {
                verdict = CD_PICKLE_NOMEM;
                goto out;
            }
            break;
        case 't': {                       /* TUPLE */
            int any = pop_to_mark(&stack, 0, &scratch);
            if (any < 0) {
                verdict = CD_PICKLE_STACK;
                goto out;
            }
            PUSH(any ? T_BIG : T_VALUE);  /* a tuple's hash follows its items' */
            break;
        }
        case 0x85: case 0x86: case 0x87: {   /* TUPLE1-3 */
            int any;
            POP((size_t)(op - 0x84), any);
            PUSH(any ? T_BIG : T_VALUE);
            break;
        }
        case 'a': {                       /* APPEND: list, item */
            int any;
            POP(1, any);
            POP(1, any);                  /* the list stays: checked, then put back */
            stack.n += 1;
            break;
        }
        case 's': {                       /* SETITEM: dict, key, value */
            int any;
            POP(1, any);
            POP(1, any);
            big_keys += (size_t)any;
            POP(1, any);
            stack.n += 1;
            break;
        }
        case 'e': case 'u': case 0x90: case '1': {   /* APPENDS SETITEMS ADDITEMS POP_MARK */
            size_t *count = op == 'e' || op == '1' ? &scratch : &big_keys;
            if (pop_to_mark(&stack, op == 'u', count) < 0 || (op != '1' && stack.n == 0)) {
                verdict = CD_PICKLE_STACK;
                goto out;
            }
            break;
        }
        case 0x91:                        /* FROZENSET */
            if (pop_to_mark(&stack, 0, &big_keys) < 0) {
                verdict = CD_PICKLE_STACK;
                goto out;
            }
            PUSH(T_VALUE);
            break;
        case 0x93: {                      /* STACK_GLOBAL: module, name -> a class or function */
            int any;
            POP(2, any);
            PUSH(T_GLOBAL);
            break;
        }
        case 'R': case 0x81: case 0x92: { /* REDUCE NEWOBJ (NEWOBJ_EX, with kwargs) -> object */
            int any;
            POP(op == 0x92 ? 3 : 2, any);
            PUSH(T_VALUE);
            break;
        }
        case 'b': {                       /* BUILD: object, state -> object */
            int any;
            POP(1, any);
            if (stack.n == 0 || stack.v[stack.n - 1] != T_VALUE) {
                verdict = stack.n && stack.v[stack.n - 1] == T_GLOBAL ? CD_PICKLE_BUILD_CLASS
                                                                      : CD_PICKLE_STACK;
                goto out;
            }
            break;
        }
        case '0':                         /* POP: an item, or the topmost mark */
            if (stack.n == 0) {
                verdict = CD_PICKLE_STACK;
                goto out;
            }
            stack.n -= 1;
            break;
        default:                          /* the pushes of one plain value */
            PUSH(T_VALUE);
            break;
        }
        if (big_keys > max_big_keys) {
            verdict = CD_PICKLE_BIG_KEYS;
            goto out;
        }
    }
out:
#undef POP
#undef PUSH
    free(stack.v);
    free(memo.v);
    return verdict;
}
