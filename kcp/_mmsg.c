/* kcp._mmsg: sendmmsg(2) and recvmmsg(2) for kcp.batch.DatagramIO, in C.
 *
 * The compiled build's native part of kcp.batch (setup.py builds it next to the mypyc modules;
 * without it kcp.batch calls the same system calls through ctypes). Two functions:
 *
 *   send(fd, items, start, stop, batch, slot, runs, cache, encode) -> (messages, sent, bytes, errno)
 *
 *     Packs items[start:stop] (each a (bytes, address) tuple) into at most `batch` messages, one
 *     datagram each, and hands them to one sendmmsg. The iovecs point at the bytes objects
 *     themselves: nothing is copied. Packing stops before a datagram longer than `slot` bytes (it
 *     goes through sendto: `messages` 0 when it is the first) and, with `runs`, before a datagram
 *     followed by another to the same address (a GSO run: kcp.batch packs those). `cache` maps an
 *     address to a tuple whose first item is its packed sockaddr (bytes); a miss calls
 *     `encode(address)`, which returns such a tuple (and may cache it). `sent` is sendmmsg's
 *     return value (-1 on error, with `errno`), `bytes` the sum of the sizes of the first `sent`
 *     messages.
 *
 *   recv(fd, batch, slot, cache, decode, out) -> (datagrams, bytes, errno)
 *
 *     One recvmmsg of at most `batch` datagrams of at most `slot` bytes; appends a (bytes,
 *     address) tuple per datagram to the list `out`. `cache` maps a packed sockaddr (bytes) to its
 *     address; a miss calls `decode(packed)`. `datagrams` is recvmmsg's return value (-1 on
 *     error, with `errno`), `bytes` their total size.
 *
 * Both hold the GIL (the socket is non-blocking: neither waits) and keep a reference to every
 * object whose memory a message points at until the system call returned.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define MAX_BATCH 1024
#define NAME_SIZE 128 /* sizeof(struct sockaddr_storage) */

/* receive buffers, grown on demand; the GIL serialises their use, and `receiving` refuses a
 * nested call (a decode() that would read a socket while the batch is being handed out) */
static char *rbuf = NULL;
static size_t rbuf_size = 0;
static char rnames[MAX_BATCH][NAME_SIZE];
static struct mmsghdr rmsgs[MAX_BATCH];
static struct iovec riov[MAX_BATCH];
static int receiving = 0;

static int
as_fd(PyObject *obj)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return -1;
    }
    return (int)v;
}

static int
check_batch(Py_ssize_t batch, Py_ssize_t slot)
{
    if (batch < 1 || batch > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "batch must be in 1..%d", MAX_BATCH);
        return -1;
    }
    if (slot < 1 || slot > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "slot must be in 1..1048576");
        return -1;
    }
    return 0;
}

static PyObject *
mmsg_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "send() takes 9 arguments");
        return NULL;
    }
    int fd = as_fd(args[0]);
    PyObject *items = args[1];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[3]);
    Py_ssize_t batch = PyLong_AsSsize_t(args[4]);
    Py_ssize_t slot = PyLong_AsSsize_t(args[5]);
    int runs = PyObject_IsTrue(args[6]);
    PyObject *cache = args[7];
    PyObject *encode = args[8];
    if (PyErr_Occurred() || runs < 0)
        return NULL;
    if (!PyList_Check(items) || !PyDict_Check(cache)) {
        PyErr_SetString(PyExc_TypeError, "send(): items must be a list and cache a dict");
        return NULL;
    }
    if (check_batch(batch, slot) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_IndexError, "send(): start/stop out of range");
        return NULL;
    }
    if (stop - start > batch)
        stop = start + batch;

    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    PyObject *held[2 * MAX_BATCH]; /* each message's item (its data) and sockaddr entry */
    Py_ssize_t nheld = 0;
    Py_ssize_t m = 0;
    PyObject *result = NULL;

    for (Py_ssize_t i = start; i < stop; i++) {
        /* encode() runs Python code: the list is read again each time, and each item is held
         * (with it its data and address) until sendmmsg returned */
        if (i >= PyList_GET_SIZE(items))
            break;
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "send(): each item must be a (bytes, address) tuple");
            goto done;
        }
        PyObject *data = PyTuple_GET_ITEM(item, 0);
        PyObject *addr = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t size = PyBytes_GET_SIZE(data);
        if (size > slot)
            break;
        Py_INCREF(item);
        held[nheld++] = item;
        if (runs && i + 1 < stop && i + 1 < PyList_GET_SIZE(items)) {
            PyObject *next = PyList_GET_ITEM(items, i + 1);
            if (PyTuple_Check(next) && PyTuple_GET_SIZE(next) == 2) {
                int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(next, 1), addr, Py_EQ);
                if (same < 0)
                    goto done;
                if (same)
                    break;
            }
        }
        PyObject *entry = PyDict_GetItemWithError(cache, addr); /* borrowed */
        if (entry != NULL) {
            Py_INCREF(entry);
        } else {
            if (PyErr_Occurred())
                goto done;
            entry = PyObject_CallOneArg(encode, addr);
            if (entry == NULL)
                goto done;
        }
        held[nheld++] = entry; /* keeps its packed sockaddr alive */
        PyObject *name = PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) >= 1 ? PyTuple_GET_ITEM(entry, 0) : NULL;
        if (name == NULL || !PyBytes_Check(name) || PyBytes_GET_SIZE(name) > NAME_SIZE) {
            PyErr_SetString(PyExc_TypeError, "send(): the cache and encode() must give (packed sockaddr, ...)");
            goto done;
        }
        iov[m].iov_base = PyBytes_AS_STRING(data);
        iov[m].iov_len = (size_t)size;
        memset(&msgs[m], 0, sizeof(msgs[m]));
        msgs[m].msg_hdr.msg_name = PyBytes_AS_STRING(name);
        msgs[m].msg_hdr.msg_namelen = (socklen_t)PyBytes_GET_SIZE(name);
        msgs[m].msg_hdr.msg_iov = &iov[m];
        msgs[m].msg_hdr.msg_iovlen = 1;
        m++;
    }
    {
        int sent = 0, err = 0;
        unsigned long long nbytes = 0;
        if (m > 0) {
            sent = sendmmsg(fd, msgs, (unsigned int)m, 0);
            if (sent < 0)
                err = errno;
            for (int k = 0; k < sent; k++)
                nbytes += iov[k].iov_len;
        }
        result = Py_BuildValue("(niKi)", m, sent, nbytes, err);
    }
done:
    for (Py_ssize_t k = 0; k < nheld; k++)
        Py_DECREF(held[k]);
    return result;
}

static PyObject *
mmsg_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "recv() takes 6 arguments");
        return NULL;
    }
    int fd = as_fd(args[0]);
    Py_ssize_t batch = PyLong_AsSsize_t(args[1]);
    Py_ssize_t slot = PyLong_AsSsize_t(args[2]);
    PyObject *cache = args[3];
    PyObject *decode = args[4];
    PyObject *out = args[5];
    if (PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(cache) || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "recv(): cache must be a dict and out a list");
        return NULL;
    }
    if (check_batch(batch, slot) < 0)
        return NULL;
    if (receiving) {
        PyErr_SetString(PyExc_RuntimeError, "recv() called from inside recv()");
        return NULL;
    }
    size_t need = (size_t)batch * (size_t)slot;
    if (rbuf_size < need) {
        char *grown = PyMem_RawRealloc(rbuf, need);
        if (grown == NULL)
            return PyErr_NoMemory();
        rbuf = grown;
        rbuf_size = need;
    }
    for (Py_ssize_t i = 0; i < batch; i++) {
        riov[i].iov_base = rbuf + (size_t)i * (size_t)slot;
        riov[i].iov_len = (size_t)slot;
        memset(&rmsgs[i], 0, sizeof(rmsgs[i]));
        rmsgs[i].msg_hdr.msg_name = rnames[i];
        rmsgs[i].msg_hdr.msg_namelen = NAME_SIZE;
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(fd, rmsgs, (unsigned int)batch, 0, NULL);
    if (got < 0)
        return Py_BuildValue("(iKi)", got, 0ULL, errno);
    unsigned long long nbytes = 0;
    PyObject *result = NULL;
    receiving = 1;
    for (int i = 0; i < got; i++) {
        socklen_t namelen = rmsgs[i].msg_hdr.msg_namelen;
        if (namelen > NAME_SIZE)
            namelen = NAME_SIZE;
        PyObject *key = PyBytes_FromStringAndSize(rnames[i], (Py_ssize_t)namelen);
        if (key == NULL)
            goto done;
        PyObject *addr = PyDict_GetItemWithError(cache, key); /* borrowed */
        if (addr != NULL) {
            Py_INCREF(addr);
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            goto done;
        } else {
            addr = PyObject_CallOneArg(decode, key);
            if (addr == NULL) {
                Py_DECREF(key);
                goto done;
            }
        }
        Py_DECREF(key);
        size_t len = rmsgs[i].msg_len;
        if (len > (size_t)slot)
            len = (size_t)slot;
        PyObject *data = PyBytes_FromStringAndSize(riov[i].iov_base, (Py_ssize_t)len);
        if (data == NULL) {
            Py_DECREF(addr);
            goto done;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(addr);
            Py_DECREF(data);
            goto done;
        }
        PyTuple_SET_ITEM(pair, 0, data);
        PyTuple_SET_ITEM(pair, 1, addr);
        int rc = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (rc < 0)
            goto done;
        nbytes += len;
    }
    result = Py_BuildValue("(iKi)", got, nbytes, 0);
done:
    receiving = 0;
    return result;
}

static PyMethodDef mmsg_methods[] = {
    {"send", (PyCFunction)(void (*)(void))mmsg_send, METH_FASTCALL,
     "send(fd, items, start, stop, batch, slot, runs, cache, encode) -> (messages, sent, bytes, errno)"},
    {"recv", (PyCFunction)(void (*)(void))mmsg_recv, METH_FASTCALL,
     "recv(fd, batch, slot, cache, decode, out) -> (datagrams, bytes, errno)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mmsg_module = {
    PyModuleDef_HEAD_INIT, "kcp._mmsg", "sendmmsg(2) and recvmmsg(2) for kcp.batch.", -1, mmsg_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *m = PyModule_Create(&mmsg_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
