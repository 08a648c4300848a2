/* kcprpc._msgsize: the walk of kcprpc.msgpack_size, in C.
 *
 * The compiled build's native part of kcprpc.msgpack_size (setup.py builds it next to the mypyc
 * modules; without it the module walks in Python, 80-440 ns per body byte against about 1 here).
 * It computes exactly what the Python walk computes, estimate for estimate and refusal for
 * refusal (tests/unit/test_msgpack_size_native.py compares the two on random bodies). Two
 * functions:
 *
 *   size(data, limit) -> int
 *
 *     decoded_size(data, limit) of a whole body (any object with the buffer protocol): the
 *     estimate, -1 once it exceeds `limit`, -2 for a body msgpack.unpackb refuses.
 *
 *   advance(data, base, end, size, limit, need, pos, total) -> (result, need, pos, total)
 *
 *     BodyWalk.advance: walks on through data[base + pos : end] of a body of `size` bytes that
 *     starts at data[base], from the walk's state (need, pos, total), and returns the result with
 *     the new state (the state is meaningful only when the result is not negative, except for the
 *     -2 of bytes after the value).
 *
 * The walk holds the GIL and allocates nothing; its cost is bounded by the body's length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* the run classes of one-byte values of one cost (the Python walk's _RUNS): 0 none */
static unsigned char run_class[256];
static const int64_t run_cost[4] = {0, 8, 40, 72};
/* wire size and decoded cost of the values whose size the first byte gives (_FIXED_SIZE/_COST) */
static unsigned char fixed_size[256];
static int64_t fixed_cost[256];
static int64_t fixmap_cost[16];
static int64_t fixarray_cost[16];

static int64_t
list_cost(int64_t n)
{
    return ((56 + 8 * n + 15) & ~(int64_t)15) + 8;
}

static int64_t
dict_cost(int64_t n)
{
    return n == 0 ? 72 : n == 1 ? 232 : n <= 6 ? 360 : 72 + 120 * n;
}

static int
is_ascii(const unsigned char *p, int64_t n)
{
    unsigned char acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc |= p[i];
    return acc < 0x80;
}

static int64_t
str_cost(const unsigned char *p, int64_t n)
{
    if (n < 2)
        return 8;
    if (is_ascii(p, n))
        return ((n + 64) & ~(int64_t)15) + 8;
    return ((4 * n + 95) & ~(int64_t)15) + 8;
}

static int64_t
bin_cost(int64_t n)
{
    return n < 2 ? 8 : ((n + 48) & ~(int64_t)15) + 8;
}

static void
init_tables(void)
{
    for (int b = 0; b < 0x80; b++) {
        fixed_size[b] = 1;
        fixed_cost[b] = 8;
        run_class[b] = 1;
    }
    for (int b = 0xE0; b < 0x100; b++) {
        fixed_size[b] = 1;
        fixed_cost[b] = b < 0xFB ? 40 : 8;
        run_class[b] = b < 0xFB ? 2 : 1;
    }
    static const int fixed[][3] = {
        {0xC0, 1, 8}, {0xC2, 1, 8}, {0xC3, 1, 8}, {0xCA, 5, 40}, {0xCB, 9, 40},
        {0xCC, 2, 8}, {0xCD, 3, 40}, {0xCE, 5, 40}, {0xCF, 9, 56}, {0xD0, 2, 40},
        {0xD1, 3, 40}, {0xD2, 5, 40}, {0xD3, 9, 56},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        fixed_size[fixed[i][0]] = (unsigned char)fixed[i][1];
        fixed_cost[fixed[i][0]] = fixed[i][2];
    }
    run_class[0xC0] = run_class[0xC2] = run_class[0xC3] = 1;
    run_class[0x80] = run_class[0x90] = 3;
    for (int n = 0; n < 16; n++) {
        fixmap_cost[n] = dict_cost(n);
        fixarray_cost[n] = list_cost(n);
    }
}

static int64_t
be(const unsigned char *p, int w)
{
    int64_t v = 0;
    for (int i = 0; i < w; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The walk (BodyWalk.advance, statement for statement). `d` is the buffer, positions are
 * absolute; *need, *pos and *total are the walk's state, updated only where the Python walk
 * stores it. */
static int64_t
walk(const unsigned char *d, Py_ssize_t base, Py_ssize_t end, Py_ssize_t size, int64_t limit,
     int64_t *need_io, int64_t *pos_io, int64_t *total_io)
{
    int64_t pos = base + *pos_io;
    int64_t stop = (int64_t)base + size;
    int64_t e = end > stop ? stop : end;
    int64_t need = *need_io;
    int64_t total = *total_io;
    while (need) {
        if (pos >= e)
            break;
        unsigned char b = d[pos];
        int cls = run_class[b];
        if (cls && pos + 1 < e && run_class[d[pos + 1]] == cls) {
            int64_t lim = pos + need < e ? pos + need : e;
            int64_t k = pos + 1;
            while (k < lim && run_class[d[k]] == cls)
                k++;
            k -= pos;
            pos += k;
            need -= k;
            total += run_cost[cls] * k;
            if (total > limit)
                return -1;
            continue;
        }
        int s = fixed_size[b];
        if (s) {
            if (pos + s > e)
                break;
            pos += s;
            total += fixed_cost[b];
            need -= 1;
        }
        else if (b < 0x90) { /* fixmap */
            int k = b & 0x0F;
            need += 2 * k - 1;
            total += fixmap_cost[k];
            pos += 1;
        }
        else if (b < 0xA0) { /* fixarray */
            int k = b & 0x0F;
            need += k - 1;
            total += fixarray_cost[k];
            pos += 1;
        }
        else if (b < 0xC0) { /* fixstr */
            int64_t k = b & 0x1F;
            if (pos + 1 + k > e) {
                if (pos + 1 + k > stop)
                    return -2;
                break;
            }
            pos += 1;
            total += str_cost(d + pos, k);
            pos += k;
            need -= 1;
        }
        else if (b >= 0xDC && b <= 0xDF) { /* array 16/32, map 16/32 */
            int w = (b == 0xDC || b == 0xDE) ? 2 : 4;
            if (pos + 1 + w > e) {
                if (pos + 1 + w > stop)
                    return -2;
                break;
            }
            int64_t k = be(d + pos + 1, w);
            pos += 1 + w;
            if (b <= 0xDD) {
                need += k - 1;
                total += list_cost(k);
            }
            else {
                need += 2 * k - 1;
                total += dict_cost(k);
            }
        }
        else if ((b >= 0xD9 && b <= 0xDB) || (b >= 0xC4 && b <= 0xC6)) { /* str, bin 8/16/32 */
            int w = 1 << (b >= 0xD9 ? b - 0xD9 : b - 0xC4);
            if (pos + 1 + w > e) {
                if (pos + 1 + w > stop)
                    return -2;
                break;
            }
            int64_t k = be(d + pos + 1, w);
            if (pos + 1 + w + k > e) {
                if (pos + 1 + w + k > stop)
                    return -2;
                break;
            }
            pos += 1 + w;
            total += b >= 0xD9 ? str_cost(d + pos, k) : bin_cost(k);
            pos += k;
            need -= 1;
        }
        else /* 0xc1 (never used) and the ext types */
            return -2;
        if (need > stop - pos) /* more values announced than bytes left: truncated */
            return -2;
        if (total > limit)
            return -1;
    }
    *pos_io = pos - base;
    *need_io = need;
    *total_io = total;
    if (!need && pos != stop)
        return -2; /* bytes after the value */
    return total;
}

/* a limit as an int64: huge ones are clamped (no estimate comes near 2**62) */
static int
as_limit(PyObject *obj, int64_t *out)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    const int64_t cap = (int64_t)1 << 62;
    if (overflow > 0 || v > cap)
        v = cap;
    else if (overflow < 0 || v < -cap)
        v = -cap;
    *out = v;
    return 0;
}

static PyObject *
msgsize_size(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "size(data, limit) takes 2 arguments");
        return NULL;
    }
    int64_t limit;
    if (as_limit(args[1], &limit) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int64_t need = 1, pos = 0, total = 0;
    int64_t r = walk((const unsigned char *)view.buf, 0, view.len, view.len, limit, &need, &pos, &total);
    PyBuffer_Release(&view);
    if (r >= 0 && need)
        r = -2; /* the body ended inside a value */
    return PyLong_FromLongLong(r);
}

static PyObject *
msgsize_advance(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "advance(data, base, end, size, limit, need, pos, total) takes 8 arguments");
        return NULL;
    }
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t size = PyLong_AsSsize_t(args[3]);
    int64_t limit;
    long long need = PyLong_AsLongLong(args[5]);
    long long pos = PyLong_AsLongLong(args[6]);
    long long total = PyLong_AsLongLong(args[7]);
    if (PyErr_Occurred() || as_limit(args[4], &limit) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    /* the body may run on past the buffer (the rest has not arrived): the walk reads only below end */
    if (base < 0 || size < 0 || pos < 0 || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "advance: the walk's positions are outside the buffer");
        return NULL;
    }
    int64_t n = need, p = pos, t = total;
    int64_t r = walk((const unsigned char *)view.buf, base, end, size, limit, &n, &p, &t);
    PyBuffer_Release(&view);
    return Py_BuildValue("(LLLL)", (long long)r, (long long)n, (long long)p, (long long)t);
}

static PyMethodDef methods[] = {
    {"size", (PyCFunction)(void (*)(void))msgsize_size, METH_FASTCALL,
     "size(data, limit) -> int: the decoded estimate of a whole msgpack body (-1: over limit, -2: refused)"},
    {"advance", (PyCFunction)(void (*)(void))msgsize_advance, METH_FASTCALL,
     "advance(data, base, end, size, limit, need, pos, total) -> (result, need, pos, total)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kcprpc._msgsize",
    "The walk of kcprpc.msgpack_size in C (the compiled build's).", -1, methods,
};

PyMODINIT_FUNC
PyInit__msgsize(void)
{
    init_tables();
    return PyModule_Create(&module);
}
