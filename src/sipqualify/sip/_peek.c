/* sipqualify.sip._peek: the response fast path (sip/fastpath.py peek_response) in C.
 *
 * Optional, built with the compiled modules (setup.py, SIPQUALIFY_MYPYC=1); sip/fastpath.py
 * uses it when it imports (PEEK) and falls back to its own peek_response otherwise, which stays
 * the reference: tests/sip/test_fastpath.py runs every case on both and checks on mutated
 * answers that they return the same thing. Compiled by mypyc, peek_response costs ~5.6 us per
 * answer (a split, a partition per line, a tuple of names looked up in a dict, slices); this
 * reads the same fields in one pass over the bytes, with no object made but the result.
 *
 * peek(data: bytes) -> (status, branch, Call-ID, CSeq value as bytes) | None
 *
 * The rules, exactly those of fastpath.py (its docstring explains why each is there):
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

static PyMethodDef methods[] = {
    {"peek", peek, METH_O, "peek(data) -> (status, branch, Call-ID, CSeq bytes) | None: sip/fastpath.py's peek_response"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipqualify.sip._peek", "The response fast path in C (sip/fastpath.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__peek(void)
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
