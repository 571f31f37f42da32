/* sipqualify.net._mmsg: batched UDP I/O for the qualify hot path (Linux recvmmsg/sendmmsg).
 *
 * Optional, built with the compiled modules (setup.py, SIPQUALIFY_MYPYC=1); net/udp.py uses it
 * when it imports and falls back to socket.recvmsg/sendto otherwise (the pure-Python path stays
 * and is tested). Python's socket module has no recvmmsg/sendmmsg, and its recvmsg builds per
 * datagram an ancillary list of tuples, a result tuple and an address formatted with sprintf:
 * about a tenth of the daemon's CPU at 10,000 transactions a second (docs/performance.md).
 *
 * recv_batch(fd, max, mono, offset, cache) -> list[(data, (host, port), t)]
 *     Up to `max` datagrams waiting on the non-blocking socket `fd`, in one system call. `t` is
 *     the kernel's receive time (SO_TIMESTAMPNS) mapped to the monotonic timeline
 *     (realtime - `offset`, at most `mono`), or `mono` without one. IPv4-mapped IPv6 sources come
 *     back as IPv4. Address tuples are kept in `cache` (a dict the caller owns and bounds).
 *     Raises OSError as socket.recvmsg does (BlockingIOError: nothing waiting;
 *     ConnectionRefusedError: an ICMP error is queued) when no datagram was read.
 *
 * send_batch(fd, family, items, start) -> int
 *     Sends items[start:] (each (data, (host, port))) with sendmmsg until one fails; returns how
 *     many went. Raises OSError (as socket.sendto does) when items[start] itself fails; the
 *     caller counts it and goes on with the next. A host that is not an address literal of
 *     `family` raises OSError(EINVAL).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define VLEN 64
#define SLOT 65536
#define CTRL 64

static char *rx_bufs;   /* VLEN slots of SLOT bytes, allocated on first use */
static char rx_ctrl[VLEN][CTRL];
static struct sockaddr_in6 rx_addr[VLEN];
static struct mmsghdr rx_msgs[VLEN];
static struct iovec rx_iov[VLEN];

/* The (host, port) tuple of a source address, from `cache` (keyed by the address bytes, the
 * port and, for IPv6, the zone) or made and put there. */
static PyObject *
make_addr(const struct sockaddr *sa, socklen_t salen, PyObject *cache)
{
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
    char raw[22];
    Py_ssize_t rawlen;
    PyObject *k, *v;
    int port;
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET) {
        memcpy(raw, &a4->sin_addr, 4);
        memcpy(raw + 4, &a4->sin_port, 2);
        rawlen = 6;
        port = ntohs(a4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(raw, &a6->sin6_addr, 16);
        memcpy(raw + 16, &a6->sin6_port, 2);
        memcpy(raw + 18, &a6->sin6_scope_id, 4);
        rawlen = 22;
        port = ntohs(a6->sin6_port);
    } else {
        return Py_BuildValue("(si)", "", 0);
    }
    k = PyBytes_FromStringAndSize(raw, rawlen);
    if (k == NULL)
        return NULL;
    v = PyDict_GetItemWithError(cache, k);
    if (v != NULL) {
        Py_DECREF(k);
        Py_INCREF(v);
        return v;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &a4->sin_addr, host, sizeof host);
    } else if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {  /* as IPv4, as norm_addr() gives it */
        struct in_addr v4;
        memcpy(&v4, &a6->sin6_addr.s6_addr[12], 4);
        inet_ntop(AF_INET, &v4, host, sizeof host);
    } else if (a6->sin6_scope_id == 0 ||
               getnameinfo(sa, salen, host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0) {
        inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof host);
    }  /* else link-local with its zone, `fe80::1%eth0`, as socket.recvmsg gives it */
    v = Py_BuildValue("(si)", host, port);
    if (v == NULL || PyDict_SetItem(cache, k, v) < 0) {
        Py_DECREF(k);
        Py_XDECREF(v);
        return NULL;
    }
    Py_DECREF(k);
    return v;
}

static PyObject *
recv_batch(PyObject *self, PyObject *args)
{
    int fd, max, n, i;
    double mono, offset;
    PyObject *cache, *out;
    if (!PyArg_ParseTuple(args, "iiddO!", &fd, &max, &mono, &offset, &PyDict_Type, &cache))
        return NULL;
    if (max > VLEN)
        max = VLEN;
    if (max < 1)
        return PyList_New(0);
    if (rx_bufs == NULL) {
        rx_bufs = PyMem_RawMalloc((size_t)VLEN * SLOT);
        if (rx_bufs == NULL)
            return PyErr_NoMemory();
    }
    for (i = 0; i < max; i++) {
        rx_iov[i].iov_base = rx_bufs + (size_t)i * SLOT;
        rx_iov[i].iov_len = SLOT;
        memset(&rx_msgs[i].msg_hdr, 0, sizeof rx_msgs[i].msg_hdr);
        rx_msgs[i].msg_hdr.msg_name = &rx_addr[i];
        rx_msgs[i].msg_hdr.msg_namelen = sizeof rx_addr[i];
        rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
        rx_msgs[i].msg_hdr.msg_iovlen = 1;
        rx_msgs[i].msg_hdr.msg_control = rx_ctrl[i];
        rx_msgs[i].msg_hdr.msg_controllen = CTRL;
        rx_msgs[i].msg_len = 0;
    }
    n = recvmmsg(fd, rx_msgs, (unsigned int)max, MSG_DONTWAIT, NULL);  /* the GIL held: see send_batch */
    if (n < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        struct msghdr *h = &rx_msgs[i].msg_hdr;
        struct cmsghdr *c;
        double t = mono;
        PyObject *data, *addr, *tf, *item;
        for (c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                double k = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - offset;
                if (k < t)
                    t = k;
            }
        }
        data = PyBytes_FromStringAndSize(rx_iov[i].iov_base, rx_msgs[i].msg_len);
        if (data == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        addr = make_addr((struct sockaddr *)h->msg_name, h->msg_namelen, cache);
        if (addr == NULL) {
            Py_DECREF(data);
            Py_DECREF(out);
            return NULL;
        }
        tf = PyFloat_FromDouble(t);
        if (tf == NULL) {
            Py_DECREF(data);
            Py_DECREF(addr);
            Py_DECREF(out);
            return NULL;
        }
        item = PyTuple_New(3);
        if (item == NULL) {
            Py_DECREF(data);
            Py_DECREF(addr);
            Py_DECREF(tf);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(item, 0, data);
        PyTuple_SET_ITEM(item, 1, addr);
        PyTuple_SET_ITEM(item, 2, tf);
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static struct mmsghdr tx_msgs[VLEN];
static struct iovec tx_iov[VLEN];
static struct sockaddr_in6 tx_addr[VLEN];

/* items[i] -> tx slot j; -1 with an exception set on a malformed item */
static int
fill_tx(int family, PyObject *item, int j)
{
    PyObject *data, *dest, *hosto, *porto;
    const char *host;
    long port;
    char *buf;
    Py_ssize_t len;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2) {
        PyErr_SetString(PyExc_TypeError, "send_batch: items are (data, (host, port))");
        return -1;
    }
    data = PyTuple_GET_ITEM(item, 0);
    dest = PyTuple_GET_ITEM(item, 1);
    if (!PyBytes_Check(data) || !PyTuple_Check(dest) || PyTuple_GET_SIZE(dest) < 2) {
        PyErr_SetString(PyExc_TypeError, "send_batch: items are (bytes, (host, port))");
        return -1;
    }
    hosto = PyTuple_GET_ITEM(dest, 0);
    porto = PyTuple_GET_ITEM(dest, 1);
    host = PyUnicode_AsUTF8(hosto);
    if (host == NULL)
        return -1;
    port = PyLong_AsLong(porto);
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_OverflowError, "send_batch: port must be 0-65535");
        return -1;
    }
    if (PyBytes_AsStringAndSize(data, &buf, &len) < 0)
        return -1;
    memset(&tx_addr[j], 0, sizeof tx_addr[j]);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&tx_addr[j];
        a->sin_family = AF_INET;
        a->sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            errno = EINVAL;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        tx_msgs[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *a = &tx_addr[j];
        char h[INET6_ADDRSTRLEN + 2];
        size_t hl = strlen(host);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((unsigned short)port);
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof h) {
            memcpy(h, host + 1, hl - 2);
            h[hl - 2] = 0;
            host = h;
        }
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            errno = EINVAL;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        tx_msgs[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    }
    tx_iov[j].iov_base = buf;
    tx_iov[j].iov_len = (size_t)len;
    tx_msgs[j].msg_hdr.msg_name = &tx_addr[j];
    tx_msgs[j].msg_hdr.msg_iov = &tx_iov[j];
    tx_msgs[j].msg_hdr.msg_iovlen = 1;
    tx_msgs[j].msg_hdr.msg_control = NULL;
    tx_msgs[j].msg_hdr.msg_controllen = 0;
    tx_msgs[j].msg_hdr.msg_flags = 0;
    tx_msgs[j].msg_len = 0;
    return 0;
}

/* The GIL is held throughout (the calls do not block: MSG_DONTWAIT), so the static buffers are
 * never used by two threads at once, and the items' bytes cannot go away under sendmmsg. */
static PyObject *
send_batch(PyObject *self, PyObject *args)
{
    int fd, family, n, j, r;
    Py_ssize_t start, total, i;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iiO!n", &fd, &family, &PyList_Type, &items, &start))
        return NULL;
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "send_batch: family must be AF_INET or AF_INET6");
        return NULL;
    }
    total = PyList_GET_SIZE(items);
    if (start < 0 || start > total) {
        PyErr_SetString(PyExc_IndexError, "send_batch: start out of range");
        return NULL;
    }
    i = start;
    while (i < total) {
        n = (int)((total - i) < VLEN ? (total - i) : VLEN);
        for (j = 0; j < n; j++) {
            if (fill_tx(family, PyList_GET_ITEM(items, i + j), j) < 0)
                break;
        }
        if (j < n) {  /* items[i + j] is malformed: raised when it is the first, else sent up to it */
            if (j == 0 && i == start)
                return NULL;
            PyErr_Clear();
            n = j;
            if (n == 0)
                break;
        }
        r = sendmmsg(fd, tx_msgs, (unsigned int)n, MSG_DONTWAIT);
        if (r <= 0) {
            if (i == start) {
                if (r == 0)
                    errno = EAGAIN;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            break;  /* items[i] failed: the caller's next call starts there and sees why */
        }
        i += r;
        if (r < n)
            break;
    }
    return PyLong_FromSsize_t(i - start);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, "recv_batch(fd, max, mono, offset, cache) -> list of (data, addr, t)"},
    {"send_batch", send_batch, METH_VARARGS, "send_batch(fd, family, items, start) -> int sent"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mmsg", "Batched UDP I/O (recvmmsg/sendmmsg) for sipqualify's hot path.", -1, methods,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "VLEN", VLEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
