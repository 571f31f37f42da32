/* sipqualify.sip._speedups: per-transaction steps of the qualify hot path in C.
 *
 * Optional, built with the compiled modules (setup.py, SIPQUALIFY_MYPYC=1). Each function does
 * what a Python function does, which stays the reference and the fallback when this module is
 * not built (or SIPQUALIFY_CSIP=0); the tests run both and check that they agree.
 *
 * splice(pieces, ruri, text, raw, at, display, user, to_uri, cseq, date) -> (data, branch, Call-ID)
 *     sip/options.py's _splice: an OPTIONS request from its shape's constant pieces and the
 *     poke's parts, in one allocation (the Python version encodes four strings, formats the
 *     CSeq and the Date line and joins 21 pieces: ~2.7 us compiled by mypyc). `text` and `raw`
 *     are the randomness pool's hex digits as str and bytes: this reads `raw` only.
 *
 * answered(figures: bytes, rtt: float) -> bytes
 *     qualify/stats.py's _answered: a peer's latency statistics after one more answer, from
 *     and to their packed form (one bytes object made, where the Python version unpacks a
 *     tuple of nine boxed numbers and packs them again: ~2 us compiled). The same arithmetic
 *     in the same order on IEEE doubles (built with -ffp-contract=off: no fused multiply-add),
 *     so the figures are bit for bit the Python ones.
 *
 * peek(data: bytes) -> (status, branch, Call-ID, CSeq value as bytes) | None
 *     sip/fastpath.py's peek_response. Compiled by mypyc, it costs ~5 us per answer (a split, a
 *     partition per line, a tuple of names looked up in a dict, slices); this reads the same
 *     fields in one pass over the bytes, with no object made but the result.
 *
 * peek's rules, exactly those of fastpath.py (its docstring explains why each is there):
 *   - at most 8,192 bytes, ASCII, `SIP/2.0 NNN ` with NNN in 100-699, ending in an empty line;
 *   - split at LF, every line but the last ends with CR; every line between the status line and
 *     the empty line is `name:...` with a non-empty token name (RFC 3261 token), at most 256;
 *   - names compared as the parser's `canonical` does (any case, compact forms v i f t l); Via,
 *     From, To, Call-ID, CSeq present once each, Content-Length at most once and then `Name: 0`;
 *   - the Via: ` SIP/2.0/(UDP|TCP|TLS|WS|WSS) host[:port]` (host [A-Za-z0-9.-]+, port 1-65535
 *     without a leading zero), then `;branch=z9hG4bK` and 16 lower-case hex digits, then only
 *     `;name[=value]` parameters (token characters but `+`), none of them named branch;
 *   - Call-ID and CSeq values after exactly one space, with no space or tab at either end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MAX_FAST 8192
#define MAX_HEADERS 256

static const char TOKEN[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~";
static unsigned char is_tok[256];   /* a header name's characters (abnf.TOKEN) */
static unsigned char is_ptok[256];  /* a Via parameter's (fastpath._TOKEN: `+` left out) */
static unsigned char is_host[256];  /* [A-Za-z0-9.-] */

enum { H_OTHER = -1, H_VIA, H_FROM, H_TO, H_CALLID, H_CSEQ, H_CLEN, H_COUNT };

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* `p[0:n]` equals the lower-case `lit`, in any case */
static int
ieq(const unsigned char *p, Py_ssize_t n, const char *lit)
{
    Py_ssize_t i;
    if ((size_t)n != strlen(lit))
        return 0;
    for (i = 0; i < n; i++)
        if (lower(p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* Which of the wanted headers a (token) name is: headers.canonical, lower-cased */
static int
classify(const unsigned char *p, Py_ssize_t n)
{
    if (n == 1) {
        switch (lower(p[0])) {
        case 'v': return H_VIA;
        case 'f': return H_FROM;
        case 't': return H_TO;
        case 'i': return H_CALLID;
        case 'l': return H_CLEN;
        default: return H_OTHER;
        }
    }
    if (ieq(p, n, "via")) return H_VIA;
    if (ieq(p, n, "from")) return H_FROM;
    if (ieq(p, n, "to")) return H_TO;
    if (ieq(p, n, "call-id")) return H_CALLID;
    if (ieq(p, n, "cseq")) return H_CSEQ;
    if (ieq(p, n, "content-length")) return H_CLEN;
    return H_OTHER;
}

/* fastpath._VIA_HEAD, fullmatch: ` SIP/2.0/(UDP|TCP|TLS|WS|WSS) host(:port)?` */
static int
via_head_ok(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i, h, digits;
    long port;
    if (n < 9 || memcmp(p, " SIP/2.0/", 9) != 0)
        return 0;
    i = 9;
    if (n - i >= 4 && memcmp(p + i, "WSS ", 4) == 0)
        i += 4;
    else if (n - i >= 3 && memcmp(p + i, "WS ", 3) == 0)
        i += 3;
    else if (n - i >= 4 && (memcmp(p + i, "UDP ", 4) == 0 || memcmp(p + i, "TCP ", 4) == 0
                            || memcmp(p + i, "TLS ", 4) == 0))
        i += 4;
    else
        return 0;
    for (h = i; i < n && is_host[p[i]]; i++)
        ;
    if (i == h)
        return 0;
    if (i == n)
        return 1;
    if (p[i] != ':')
        return 0;
    i++;
    digits = n - i;  /* message._PORT_RE: 1-65535, no leading zero */
    if (digits < 1 || digits > 5 || p[i] == '0')
        return 0;
    for (port = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        port = port * 10 + (p[i] - '0');
    }
    return port <= 65535;
}

/* fastpath._VIA_PARAMS, fullmatch: (;name(=value)?)* with no name `branch` */
static int
via_params_ok(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0, s;
    while (i < n) {
        if (p[i] != ';')
            return 0;
        i++;
        if (n - i >= 7 && ieq(p + i, 6, "branch") && p[i + 6] == '=')
            return 0;
        for (s = i; i < n && is_ptok[p[i]]; i++)
            ;
        if (i == s)
            return 0;
        if (i < n && p[i] == '=') {
            i++;
            for (s = i; i < n && is_ptok[p[i]]; i++)
                ;
            if (i == s)
                return 0;
        }
    }
    return 1;
}

/* fastpath._value: where the value of `line` (CR-terminated, length n) from `at` is, or 0 */
static int
value_ok(const unsigned char *line, Py_ssize_t n, Py_ssize_t at)
{
    Py_ssize_t end = n - 1;  /* the CR */
    unsigned char first, last;
    if (at >= end || line[at - 1] != ' ')
        return 0;
    first = line[at];
    last = line[end - 1];
    return !(first == ' ' || first == '\t' || last == ' ' || last == '\t');
}

static PyObject *
peek(PyObject *self, PyObject *arg)
{
    const unsigned char *d, *end, *s, *e, *colon, *via, *at;
    const unsigned char *line_at[H_COUNT];
    Py_ssize_t line_len[H_COUNT], name_len[H_COUNT];
    Py_ssize_t n, i, headers = 0, via_n, tail_n;
    int status, h;
    PyObject *branch, *call_id, *cseq;
    static const char BRANCH[] = ";branch=z9hG4bK";  /* 15 bytes */

    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "peek() wants bytes");
        return NULL;
    }
    d = (const unsigned char *)PyBytes_AS_STRING(arg);
    n = PyBytes_GET_SIZE(arg);
    if (n > MAX_FAST || n < 12 || memcmp(d, "SIP/2.0 ", 8) != 0 || d[11] != ' '
        || memcmp(d + n - 4, "\r\n\r\n", 4) != 0)
        Py_RETURN_NONE;
    for (i = 0; i < n; i++)
        if (d[i] & 0x80)
            Py_RETURN_NONE;
    for (i = 8; i < 11; i++)
        if (d[i] < '0' || d[i] > '9')
            Py_RETURN_NONE;
    status = (d[8] - '0') * 100 + (d[9] - '0') * 10 + (d[10] - '0');
    if (status < 100 || status > 699)
        Py_RETURN_NONE;

    for (h = 0; h < H_COUNT; h++)
        line_at[h] = NULL;
    end = d + n;
    e = memchr(d, '\n', (size_t)n);  /* the status line's LF: there is one, at n - 1 at the latest */
    if (e[-1] != '\r')
        Py_RETURN_NONE;
    /* the lines between the status line and the empty one (`\r`, then nothing: the data end in
     * CRLF CRLF, so the last LF is at n - 1 and the one before it at n - 3) */
    for (s = e + 1; s < end - 2; s = e + 1) {
        e = memchr(s, '\n', (size_t)(end - s));
        colon = memchr(s, ':', (size_t)(e - s));
        if (colon == NULL || colon == s || e[-1] != '\r')
            Py_RETURN_NONE;
        if (++headers > MAX_HEADERS)
            Py_RETURN_NONE;
        for (at = s; at < colon; at++)
            if (!is_tok[*at])
                Py_RETURN_NONE;
        h = classify(s, colon - s);
        if (h == H_OTHER)
            continue;
        if (line_at[h] != NULL)
            Py_RETURN_NONE;  /* a repeated Via, Content-Length ...: the parser decides */
        line_at[h] = s;
        line_len[h] = e - s;  /* with its CR */
        name_len[h] = colon - s;
    }
    for (h = 0; h < H_CLEN; h++)
        if (line_at[h] == NULL)
            Py_RETURN_NONE;
    if (line_at[H_CLEN] != NULL
        && (line_len[H_CLEN] != name_len[H_CLEN] + 4
            || memcmp(line_at[H_CLEN] + name_len[H_CLEN], ": 0\r", 4) != 0))
        Py_RETURN_NONE;

    /* the Via: head, branch, parameters */
    via = line_at[H_VIA];
    via_n = line_len[H_VIA];
    for (i = 0; i + 15 <= via_n; i++)
        if (via[i] == ';' && memcmp(via + i, BRANCH, 15) == 0)
            break;
    if (i + 15 > via_n)
        Py_RETURN_NONE;
    tail_n = via_n - i - 15;  /* the hex digits, the parameters and the CR */
    if (tail_n < 17 || !via_head_ok(via + name_len[H_VIA] + 1, i - name_len[H_VIA] - 1))
        Py_RETURN_NONE;
    at = via + i + 15;
    for (i = 0; i < 16; i++)
        if (!((at[i] >= '0' && at[i] <= '9') || (at[i] >= 'a' && at[i] <= 'f')))
            Py_RETURN_NONE;
    if (tail_n > 17 && !via_params_ok(at + 16, tail_n - 17))
        Py_RETURN_NONE;
    if (!value_ok(line_at[H_CALLID], line_len[H_CALLID], name_len[H_CALLID] + 2)
        || !value_ok(line_at[H_CSEQ], line_len[H_CSEQ], name_len[H_CSEQ] + 2))
        Py_RETURN_NONE;

    branch = PyUnicode_New(23, 127);
    if (branch == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(branch), "z9hG4bK", 7);
    memcpy(PyUnicode_1BYTE_DATA(branch) + 7, at, 16);
    i = name_len[H_CALLID] + 2;
    call_id = PyUnicode_New(line_len[H_CALLID] - 1 - i, 127);
    if (call_id == NULL) {
        Py_DECREF(branch);
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(call_id), line_at[H_CALLID] + i, (size_t)(line_len[H_CALLID] - 1 - i));
    i = name_len[H_CSEQ] + 2;
    cseq = PyBytes_FromStringAndSize((const char *)line_at[H_CSEQ] + i, line_len[H_CSEQ] - 1 - i);
    if (cseq == NULL) {
        Py_DECREF(branch);
        Py_DECREF(call_id);
        return NULL;
    }
    return Py_BuildValue("(iNNN)", status, branch, call_id, cseq);
}

/* The UTF-8 of a str argument (cached by the str for ASCII ones: no copy) */
static const char *
utf8(PyObject *o, Py_ssize_t *n, const char *what)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "splice(): %s must be str", what);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(o, n);
}

static PyObject *
splice(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* pieces: (hostport, p0 ... p10); the request is
     * p0 ruri p1 B p2 display p3 user p4 T p5 to p6 user p7 C p8 cseq p9 [Date: date CRLF] p10
     * with B, T, C the branch's, tag's and Call-ID's hex digits, raw[at:at+16], [+16:+24], [+24:+56] */
    PyObject *pieces, *hostport, *p[11], *data, *branch, *call_id;
    const char *ruri, *display, *user, *to, *date, *raw, *hp;
    Py_ssize_t ruri_n, display_n, user_n, to_n, date_n, raw_n, hp_n, at, total, k;
    long long cseq;
    char num[24];
    int num_n;
    char *w;

    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "splice() takes 10 arguments");
        return NULL;
    }
    pieces = args[0];
    if (!PyTuple_Check(pieces) || PyTuple_GET_SIZE(pieces) != 12 || !PyUnicode_Check(PyTuple_GET_ITEM(pieces, 0))) {
        PyErr_SetString(PyExc_TypeError, "splice(): pieces must be (hostport, 11 bytes)");
        return NULL;
    }
    hostport = PyTuple_GET_ITEM(pieces, 0);
    for (k = 0; k < 11; k++) {
        p[k] = PyTuple_GET_ITEM(pieces, k + 1);
        if (!PyBytes_Check(p[k])) {
            PyErr_SetString(PyExc_TypeError, "splice(): pieces must be (hostport, 11 bytes)");
            return NULL;
        }
    }
    if ((ruri = utf8(args[1], &ruri_n, "ruri")) == NULL)
        return NULL;
    if (!PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "splice(): raw must be bytes");
        return NULL;
    }
    raw = PyBytes_AS_STRING(args[3]);
    raw_n = PyBytes_GET_SIZE(args[3]);
    at = PyLong_AsSsize_t(args[4]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (at < 0 || at + 56 > raw_n) {
        PyErr_SetString(PyExc_ValueError, "splice(): 56 digits from `at` are not in raw");
        return NULL;
    }
    for (k = at; k < at + 56; k++)
        if (raw[k] & 0x80) {  /* they make ASCII strings below */
            PyErr_SetString(PyExc_ValueError, "splice(): raw is not ASCII");
            return NULL;
        }
    if ((display = utf8(args[5], &display_n, "display")) == NULL || (user = utf8(args[6], &user_n, "user")) == NULL)
        return NULL;
    to = ruri;  /* `to_uri.encode() if to_uri else ruri_b` */
    to_n = ruri_n;
    if (args[7] != Py_None) {
        const char *t;
        Py_ssize_t t_n;
        if ((t = utf8(args[7], &t_n, "to_uri")) == NULL)
            return NULL;
        if (t_n > 0) {
            to = t;
            to_n = t_n;
        }
    }
    cseq = PyLong_AsLongLong(args[8]);
    if (cseq == -1 && PyErr_Occurred())
        return NULL;
    num_n = snprintf(num, sizeof num, "%lld", cseq);
    if ((date = utf8(args[9], &date_n, "date")) == NULL)
        return NULL;

    total = ruri_n + 56 + display_n + 2 * user_n + to_n + num_n + (date_n ? date_n + 8 : 0);
    for (k = 0; k < 11; k++)
        total += PyBytes_GET_SIZE(p[k]);
    data = PyBytes_FromStringAndSize(NULL, total);
    if (data == NULL)
        return NULL;
    w = PyBytes_AS_STRING(data);
#define PUT(src, len) do { memcpy(w, (src), (size_t)(len)); w += (len); } while (0)
#define PIECE(k) PUT(PyBytes_AS_STRING(p[k]), PyBytes_GET_SIZE(p[k]))
    PIECE(0); PUT(ruri, ruri_n);
    PIECE(1); PUT(raw + at, 16);
    PIECE(2); PUT(display, display_n);
    PIECE(3); PUT(user, user_n);
    PIECE(4); PUT(raw + at + 16, 8);
    PIECE(5); PUT(to, to_n);
    PIECE(6); PUT(user, user_n);
    PIECE(7); PUT(raw + at + 24, 32);
    PIECE(8); PUT(num, num_n);
    PIECE(9);
    if (date_n) {
        PUT("Date: ", 6);
        PUT(date, date_n);
        PUT("\r\n", 2);
    }
    PIECE(10);
#undef PIECE
#undef PUT

    branch = PyUnicode_New(23, 127);  /* "z9hG4bK" + the 16 digits */
    if (branch == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(branch), "z9hG4bK", 7);
    memcpy(PyUnicode_1BYTE_DATA(branch) + 7, raw + at, 16);
    /* the 32 digits, "@" and our host:port */
    if (PyUnicode_IS_ASCII(hostport)) {
        hp = (const char *)PyUnicode_1BYTE_DATA(hostport);
        hp_n = PyUnicode_GET_LENGTH(hostport);
        call_id = PyUnicode_New(33 + hp_n, 127);
        if (call_id != NULL) {
            memcpy(PyUnicode_1BYTE_DATA(call_id), raw + at + 24, 32);
            PyUnicode_1BYTE_DATA(call_id)[32] = '@';
            memcpy(PyUnicode_1BYTE_DATA(call_id) + 33, hp, (size_t)hp_n);
        }
    } else {
        PyObject *digits = PyUnicode_DecodeASCII(raw + at + 24, 32, "strict");
        call_id = digits ? PyUnicode_FromFormat("%U@%U", digits, hostport) : NULL;
        Py_XDECREF(digits);
    }
    if (call_id == NULL) {
        Py_DECREF(data);
        Py_DECREF(branch);
        return NULL;
    }
    return Py_BuildValue("(NNN)", data, branch, call_id);
}

/* qualify/stats.py: _FIGURES ("=7d2q": native order, no padding), ALPHA, EST_WARMUP */
#define FIGURES_SIZE (7 * 8 + 2 * 8)
#define ALPHA 0.9
#define EST_WARMUP 10

static PyObject *
answered(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    double avg, m2, est, dev, jitter, last, reported, rtt, d;
    long long n, polls;
    const char *r;
    char *w;
    PyObject *out;

    if (nargs != 2 || !PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != FIGURES_SIZE) {
        PyErr_SetString(PyExc_TypeError, "answered() takes the packed figures (72 bytes) and an RTT");
        return NULL;
    }
    rtt = PyFloat_AsDouble(args[1]);
    if (rtt == -1.0 && PyErr_Occurred())
        return NULL;
    r = PyBytes_AS_STRING(args[0]);
    memcpy(&avg, r, 8);
    memcpy(&m2, r + 8, 8);
    memcpy(&est, r + 16, 8);
    memcpy(&dev, r + 24, 8);
    memcpy(&jitter, r + 32, 8);
    memcpy(&last, r + 40, 8);
    memcpy(&reported, r + 48, 8);
    memcpy(&n, r + 56, 8);
    memcpy(&polls, r + 64, 8);
    n += 1;
    d = rtt - avg;
    avg += d / (double)n;
    m2 += d * (rtt - avg);
    if (n <= EST_WARMUP)
        est = avg;
    else
        est = est * ALPHA + rtt * (1.0 - ALPHA);
    dev = dev * ALPHA + fabs(rtt - est) * (1.0 - ALPHA);
    if (last == last)  /* not NaN: a previous RTT */
        jitter += (fabs(rtt - last) - jitter) / 16.0;
    polls += 1;
    out = PyBytes_FromStringAndSize(NULL, FIGURES_SIZE);
    if (out == NULL)
        return NULL;
    w = PyBytes_AS_STRING(out);
    memcpy(w, &avg, 8);
    memcpy(w + 8, &m2, 8);
    memcpy(w + 16, &est, 8);
    memcpy(w + 24, &dev, 8);
    memcpy(w + 32, &jitter, 8);
    memcpy(w + 40, &rtt, 8);
    memcpy(w + 48, &reported, 8);
    memcpy(w + 56, &n, 8);
    memcpy(w + 64, &polls, 8);
    return out;
}

static PyMethodDef methods[] = {
    {"answered", (PyCFunction)(void (*)(void))answered, METH_FASTCALL,
     "answered(figures, rtt) -> figures: qualify/stats.py's _answered"},
    {"splice", (PyCFunction)(void (*)(void))splice, METH_FASTCALL,
     "splice(pieces, ruri, text, raw, at, display, user, to_uri, cseq, date) -> (data, branch, Call-ID): sip/options.py's _splice"},
    {"peek", peek, METH_O, "peek(data) -> (status, branch, Call-ID, CSeq bytes) | None: sip/fastpath.py's peek_response"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipqualify.sip._speedups",
    "Per-transaction steps of the qualify hot path in C (sip/fastpath.py, sip/options.py, qualify/stats.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    const char *c;
    for (c = TOKEN; *c; c++) {
        is_tok[(unsigned char)*c] = 1;
        is_ptok[(unsigned char)*c] = *c != '+';
    }
    for (c = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"; *c; c++)
        is_host[(unsigned char)*c] = 1;
    return PyModule_Create(&module);
}
