/*
 * scalyproxy._scan: the hot path of the codec and of the structure check, in C.
 *
 * scan_document(buf) / scan_run(buf) walk BSON bytes without building any
 * Python object and answer one question: is this strictly valid BSON with no
 * key repeated within a document, at any depth?  "Strictly valid" means what
 * pymongo's C decoder accepts with strict UTF-8 (every decodeErrors case of the
 * bson-corpus is refused), so a document this scanner accepts decodes, and the
 * proxy and the server read it the same way.  Array element names are not
 * compared (arrays are read by position).
 *
 * fast_view(data) builds the CommandView of an ordinary OP_MSG (no checksum,
 * no unknown required flag, a body then kind-1 sections) in one call, every
 * section scanned; it returns None for anything else, and the Python codec then
 * takes its careful path, which explains what is wrong.
 *
 * The scanner never reads outside the buffer: every length is checked against
 * the bytes that remain before it is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SCAN_OK = 0, SCAN_DUPLICATE = 1, SCAN_INVALID = 2, SCAN_TOO_DEEP = 3, SCAN_NO_MEMORY = 4 };

/* Deeper documents are left to the Python path (which decodes them with
 * pymongo and its recursion limit). Drivers never send anything close. */
#define MAX_DEPTH 100
/* Keys of one document compared pairwise up to this many; beyond it they are
 * sorted on the heap. */
#define INLINE_KEYS 32

static inline int32_t read_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return (int32_t)v;
}

/* Python's strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c < 0xC2) {
            return 0;
        } else if (c < 0xE0) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c < 0xF0) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0; /* overlong */
            if (c == 0xED && c1 >= 0xA0) return 0; /* surrogate */
            i += 3;
        } else if (c < 0xF5) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xF4 && c1 >= 0x90) return 0; /* past U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* A NUL-terminated UTF-8 string in [p, end): its length without the NUL, or -1. */
static Py_ssize_t cstring(const uint8_t *p, const uint8_t *end) {
    const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
    if (nul == NULL) return -1;
    Py_ssize_t n = nul - p;
    return utf8_valid(p, n) ? n : -1;
}

/* A BSON string (int32 size including the NUL, bytes, NUL) at p, before end:
 * its total size (4 + size), or -1. */
static Py_ssize_t bson_string(const uint8_t *p, const uint8_t *end) {
    if (end - p < 5) return -1;
    int32_t size = read_i32(p);
    if (size < 1 || size > end - p - 4) return -1;
    if (p[4 + size - 1] != 0) return -1;
    if (!utf8_valid(p + 4, size - 1)) return -1;
    return 4 + (Py_ssize_t)size;
}

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Key;

static int key_order(const void *a, const void *b) {
    const Key *x = a, *y = b;
    Py_ssize_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, (size_t)n);
    if (c) return c;
    return (x->n > y->n) - (x->n < y->n);
}

typedef struct {
    Key local[INLINE_KEYS];
    Key *heap;
    Py_ssize_t count, capacity;
} KeySet;

/* Add a key; SCAN_DUPLICATE when it was there already (pairwise while small). */
static int keyset_add(KeySet *set, const uint8_t *p, Py_ssize_t n) {
    if (set->count < INLINE_KEYS) {
        for (Py_ssize_t i = 0; i < set->count; i++) {
            if (set->local[i].n == n && memcmp(set->local[i].p, p, (size_t)n) == 0) return SCAN_DUPLICATE;
        }
        set->local[set->count].p = p;
        set->local[set->count].n = n;
        set->count++;
        return SCAN_OK;
    }
    if (set->heap == NULL || set->count == set->capacity) {
        Py_ssize_t capacity = set->capacity ? set->capacity * 2 : INLINE_KEYS * 4;
        Key *grown = PyMem_Realloc(set->heap, (size_t)capacity * sizeof(Key));
        if (grown == NULL) return SCAN_NO_MEMORY;
        if (set->heap == NULL) memcpy(grown, set->local, sizeof(set->local));
        set->heap = grown;
        set->capacity = capacity;
    }
    set->heap[set->count].p = p;
    set->heap[set->count].n = n;
    set->count++;
    return SCAN_OK;
}

/* After the last key: sort the heap keys and look for neighbours that are equal. */
static int keyset_finish(KeySet *set) {
    int result = SCAN_OK;
    if (set->heap != NULL) {
        qsort(set->heap, (size_t)set->count, sizeof(Key), key_order);
        for (Py_ssize_t i = 1; i < set->count; i++) {
            if (key_order(&set->heap[i - 1], &set->heap[i]) == 0) {
                result = SCAN_DUPLICATE;
                break;
            }
        }
        PyMem_Free(set->heap);
        set->heap = NULL;
    }
    return result;
}

static int scan_doc(const uint8_t *doc, Py_ssize_t available, int is_array, int depth);

/* The size of the value of type `type` at p (before end), recursing into
 * documents; negative: -(SCAN_* code). */
static Py_ssize_t value_size(uint8_t type, const uint8_t *p, const uint8_t *end, int depth) {
    Py_ssize_t room = end - p, n;
    int32_t size;
    switch (type) {
    case 0x01: /* double */
    case 0x09: /* datetime */
    case 0x11: /* timestamp */
    case 0x12: /* int64 */
        return room >= 8 ? 8 : -SCAN_INVALID;
    case 0x02: /* string */
    case 0x0D: /* JavaScript code */
    case 0x0E: /* symbol */
        n = bson_string(p, end);
        return n >= 0 ? n : -SCAN_INVALID;
    case 0x03: /* document */
    case 0x04: /* array */
    {
        if (room < 5) return -SCAN_INVALID;
        int r = scan_doc(p, room, type == 0x04, depth + 1);
        return r == SCAN_OK ? (Py_ssize_t)read_i32(p) : -r;
    }
    case 0x05: /* binary: int32 size, subtype, bytes */
        if (room < 5) return -SCAN_INVALID;
        size = read_i32(p);
        if (size < 0 || size > room - 5) return -SCAN_INVALID;
        if (p[4] == 0x02) { /* old binary: an inner int32 size of the rest */
            if (size < 4 || read_i32(p + 5) != size - 4) return -SCAN_INVALID;
        }
        return 5 + (Py_ssize_t)size;
    case 0x06: /* undefined */
    case 0x0A: /* null */
    case 0x7F: /* max key */
    case 0xFF: /* min key */
        return 0;
    case 0x07: /* ObjectId */
        return room >= 12 ? 12 : -SCAN_INVALID;
    case 0x08: /* boolean */
        return room >= 1 && p[0] <= 1 ? 1 : -SCAN_INVALID;
    case 0x0B: /* regex: pattern and options, two cstrings */
    {
        Py_ssize_t a = cstring(p, end);
        if (a < 0) return -SCAN_INVALID;
        Py_ssize_t b = cstring(p + a + 1, end);
        if (b < 0) return -SCAN_INVALID;
        return a + 1 + b + 1;
    }
    case 0x0C: /* DBPointer: string, ObjectId */
        n = bson_string(p, end);
        if (n < 0 || room - n < 12) return -SCAN_INVALID;
        return n + 12;
    case 0x0F: /* code with scope: int32 total, string, document */
    {
        if (room < 14) return -SCAN_INVALID;
        size = read_i32(p);
        if (size < 14 || size > room) return -SCAN_INVALID;
        const uint8_t *stop = p + size;
        n = bson_string(p + 4, stop);
        if (n < 0) return -SCAN_INVALID;
        const uint8_t *scope = p + 4 + n;
        if (stop - scope < 5 || read_i32(scope) != stop - scope) return -SCAN_INVALID;
        int r = scan_doc(scope, stop - scope, 0, depth + 1);
        return r == SCAN_OK ? (Py_ssize_t)size : -r;
    }
    case 0x10: /* int32 */
        return room >= 4 ? 4 : -SCAN_INVALID;
    case 0x13: /* decimal128 */
        return room >= 16 ? 16 : -SCAN_INVALID;
    default:
        return -SCAN_INVALID;
    }
}

/* One document at doc, with `available` bytes from doc to the end of its container. */
static int scan_doc(const uint8_t *doc, Py_ssize_t available, int is_array, int depth) {
    if (depth > MAX_DEPTH) return SCAN_TOO_DEEP;
    if (available < 5) return SCAN_INVALID;
    int32_t size = read_i32(doc);
    if (size < 5 || size > available || doc[size - 1] != 0) return SCAN_INVALID;
    const uint8_t *p = doc + 4, *end = doc + size - 1; /* end: the terminating NUL */
    KeySet keys;
    keys.heap = NULL;
    keys.count = keys.capacity = 0;
    int result = SCAN_OK;
    while (p < end) {
        uint8_t type = *p++;
        const uint8_t *key = p;
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        if (nul == NULL) {
            result = SCAN_INVALID;
            break;
        }
        Py_ssize_t key_len = nul - key;
        if (!is_array) { /* array keys are read by nobody (pymongo skips them too) */
            if (!utf8_valid(key, key_len)) {
                result = SCAN_INVALID;
                break;
            }
            result = keyset_add(&keys, key, key_len);
            if (result != SCAN_OK) break;
        }
        p = nul + 1;
        Py_ssize_t n = value_size(type, p, end, depth);
        if (n < 0) {
            result = (int)-n;
            break;
        }
        p += n;
    }
    if (result == SCAN_OK && p != end) result = SCAN_INVALID; /* cannot happen: values stop at end */
    int finished = keyset_finish(&keys);
    return result != SCAN_OK ? result : finished;
}

/* Documents filling [p, p + n) exactly; *count receives how many. */
static int scan_documents(const uint8_t *p, Py_ssize_t n, Py_ssize_t *count) {
    const uint8_t *end = p + n;
    Py_ssize_t docs = 0;
    while (p < end) {
        int r = scan_doc(p, end - p, 0, 0);
        if (r != SCAN_OK) return r;
        p += read_i32(p);
        docs++;
    }
    *count = docs;
    return SCAN_OK;
}

static PyObject *result_object(int r) {
    switch (r) {
    case SCAN_OK:
        return PyUnicode_FromString("ok");
    case SCAN_DUPLICATE:
        return PyUnicode_FromString("duplicate");
    case SCAN_TOO_DEEP:
        return PyUnicode_FromString("too_deep");
    case SCAN_NO_MEMORY:
        return PyErr_NoMemory();
    default:
        return PyUnicode_FromString("invalid");
    }
}

PyDoc_STRVAR(scan_document_doc,
             "scan_document(buf) -> str\n\n"
             "'ok' when buf is exactly one strictly valid BSON document with no key repeated\n"
             "in any document; otherwise 'duplicate', 'invalid' or 'too_deep' (over 100 levels).");

static PyObject *scan_document(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int r;
    if (view.len < 5 || read_i32(view.buf) != view.len) {
        r = SCAN_INVALID;
    } else {
        r = scan_doc(view.buf, view.len, 0, 0);
    }
    PyBuffer_Release(&view);
    return result_object(r);
}

PyDoc_STRVAR(scan_run_doc,
             "scan_run(buf) -> (str, int)\n\n"
             "Like scan_document for a run of documents filling buf exactly (an OP_MSG kind-1\n"
             "payload): the answer and, when 'ok', how many documents there are.");

static PyObject *scan_run(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t count = 0;
    int r = scan_documents(view.buf, view.len, &count);
    PyBuffer_Release(&view);
    PyObject *answer = result_object(r);
    if (answer == NULL) return NULL;
    return Py_BuildValue("(Nn)", answer, r == SCAN_OK ? count : (Py_ssize_t)0);
}

/* -- fast_view ------------------------------------------------------------------ */

typedef struct {
    PyObject *view_type;    /* CommandView */
    PyObject *no_sequences; /* NO_SEQUENCES */
    PyObject *sequences;    /* LazySequences(message, spans, checked) */
    PyObject *decode;       /* bson._bson_to_dict */
    PyObject *options;      /* DECODE_OPTIONS */
    PyObject *careful;      /* the Python path: careful(frame, max_message_size) */
    PyObject *default_max;  /* its default max_message_size */
    PyObject *max_key;      /* "max_message_size" */
    PyObject *op_msg;       /* 2013 */
    PyObject *db_key;       /* "$db" */
} ViewState;

static ViewState state;

PyDoc_STRVAR(configure_doc,
             "configure(view_type, no_sequences, sequences_type, decode, options, careful, default_max)\n\n"
             "Give fast_view the Python objects it builds views with (called once by\n"
             "scalyproxy.wire.command).");

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *view_type, *no_sequences, *sequences, *decode, *options, *careful, *default_max;
    if (!PyArg_ParseTuple(args, "O!OOOOOO!", &PyType_Type, &view_type, &no_sequences, &sequences, &decode,
                          &options, &careful, &PyLong_Type, &default_max))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)view_type, &PyTuple_Type) ||
        ((PyTypeObject *)view_type)->tp_itemsize != PyTuple_Type.tp_itemsize ||
        ((PyTypeObject *)view_type)->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "view_type must be a tuple subclass without extra fields");
        return NULL;
    }
    Py_INCREF(view_type);
    Py_INCREF(no_sequences);
    Py_INCREF(sequences);
    Py_INCREF(decode);
    Py_INCREF(options);
    Py_INCREF(careful);
    Py_INCREF(default_max);
    Py_XSETREF(state.view_type, view_type);
    Py_XSETREF(state.no_sequences, no_sequences);
    Py_XSETREF(state.sequences, sequences);
    Py_XSETREF(state.decode, decode);
    Py_XSETREF(state.options, options);
    Py_XSETREF(state.careful, careful);
    Py_XSETREF(state.default_max, default_max);
    Py_RETURN_NONE;
}

#define VIEW_FIELDS 10
#define HEADER 16
#define BODY_AT (HEADER + 5)
#define MAX_SEQUENCES 8
#define FLAG_MORE_TO_COME 2u

typedef struct {
    const uint8_t *ident;
    Py_ssize_t ident_len;
    Py_ssize_t start, stop;
} Span;

/* The layout of an ordinary OP_MSG (see fast_view), every section scanned: 1, or 0
 * when anything is unusual and the careful Python path must look. */
static int parse_message(const uint8_t *m, Py_ssize_t len, int32_t *body_size_out, Span *found, int *nseq_out) {
    int nseq = 0;
    if (len < BODY_AT + 5 || read_i32(m) != len || read_i32(m + 12) != 2013) return 0;
    uint32_t flags = (uint32_t)read_i32(m + 16);
    if (flags & 0xFFFFu & ~FLAG_MORE_TO_COME) return 0;
    if (m[20] != 0) return 0;
    int32_t body_size = read_i32(m + BODY_AT);
    if (body_size < 6 || body_size > len - BODY_AT) return 0; /* 6: a body has a first key */
    if (scan_doc(m + BODY_AT, body_size, 0, 0) != SCAN_OK) return 0;
    Py_ssize_t pos = BODY_AT + body_size;
    while (pos < len) {
        if (m[pos] != 1 || nseq == MAX_SEQUENCES || len - pos < 6) return 0;
        int32_t size = read_i32(m + pos + 1);
        if (size < 5 || size > len - pos - 1) return 0;
        const uint8_t *ident = m + pos + 5, *stop = m + pos + 1 + size;
        const uint8_t *nul = memchr(ident, 0, (size_t)(stop - ident));
        if (nul == NULL || nul == ident) return 0;
        Py_ssize_t ident_len = nul - ident;
        if (memchr(ident, '.', (size_t)ident_len) != NULL || !utf8_valid(ident, ident_len)) return 0;
        for (int i = 0; i < nseq; i++) {
            if (found[i].ident_len == ident_len && memcmp(found[i].ident, ident, (size_t)ident_len) == 0) return 0;
        }
        Py_ssize_t count;
        if (scan_documents(nul + 1, stop - nul - 1, &count) != SCAN_OK) return 0;
        found[nseq].ident = ident;
        found[nseq].ident_len = ident_len;
        found[nseq].start = nul + 1 - m;
        found[nseq].stop = stop - m;
        nseq++;
        pos = stop - m;
    }
    *body_size_out = body_size;
    *nseq_out = nseq;
    return 1;
}

PyDoc_STRVAR(fast_view_doc,
             "fast_view(data) -> CommandView | None\n\n"
             "The view of an ordinary OP_MSG in one call, or None: anything unusual (a\n"
             "checksum, another opcode, a flag, a malformed or repeated part, a dotted\n"
             "sequence identifier) is left to the careful Python path.");

static PyObject *fast_view(PyObject *module, PyObject *data) {
    if (state.view_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "scalyproxy._scan.configure() was not called");
        return NULL;
    }
    Py_buffer buffer;
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *m = buffer.buf;
    Py_ssize_t len = buffer.len;
    PyObject *body_bytes = NULL, *body = NULL, *sequences = NULL, *spans = NULL, *view = NULL;
    Span found[MAX_SEQUENCES];
    int nseq = 0;

    int32_t body_size;
    if (!parse_message(m, len, &body_size, found, &nseq)) goto fallback;
    uint32_t flags = (uint32_t)read_i32(m + 16);

    body_bytes = PyBytes_FromStringAndSize((const char *)m + BODY_AT, body_size);
    if (body_bytes == NULL) goto error;
    PyObject *decode_args[2] = {body_bytes, state.options};
    body = PyObject_Vectorcall(state.decode, decode_args, 2, NULL);
    if (body == NULL) {
        /* cannot happen after a clean scan; the careful path reports it */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) goto error;
        PyErr_Clear();
        goto fallback;
    }
    if (!PyDict_CheckExact(body)) goto fallback;
    Py_ssize_t iter = 0;
    PyObject *name, *ignored;
    if (!PyDict_Next(body, &iter, &name, &ignored)) goto fallback;
    PyObject *db = PyDict_GetItemWithError(body, state.db_key);
    if (db == NULL) {
        if (PyErr_Occurred()) goto error;
        goto fallback;
    }
    if (!PyUnicode_CheckExact(db) || PyUnicode_GET_LENGTH(db) == 0) goto fallback;

    if (nseq == 0) {
        sequences = Py_NewRef(state.no_sequences);
    } else {
        spans = PyDict_New();
        if (spans == NULL) goto error;
        for (int i = 0; i < nseq; i++) {
            PyObject *ident = PyUnicode_DecodeUTF8((const char *)found[i].ident, found[i].ident_len, "strict");
            if (ident == NULL) goto error;
            int collides = PyDict_Contains(body, ident); /* a sequence may not name a body field */
            PyObject *span = collides ? NULL : Py_BuildValue("(nn)", found[i].start, found[i].stop);
            int failed = collides != 0 || span == NULL || PyDict_SetItem(spans, ident, span) < 0;
            Py_DECREF(ident);
            Py_XDECREF(span);
            if (collides > 0) goto fallback;
            if (failed) goto error;
        }
        sequences = PyObject_CallFunctionObjArgs(state.sequences, data, spans, Py_True, NULL);
        if (sequences == NULL) goto error;
    }

    view = ((PyTypeObject *)state.view_type)->tp_alloc((PyTypeObject *)state.view_type, VIEW_FIELDS);
    if (view == NULL) goto error;
    PyObject *request_id = PyLong_FromLong(read_i32(m + 4));
    PyObject *flag_bits = PyLong_FromUnsignedLong(flags);
    if (request_id == NULL || flag_bits == NULL) {
        Py_XDECREF(request_id);
        Py_XDECREF(flag_bits);
        goto error;
    }
    PyTuple_SET_ITEM(view, 0, Py_NewRef(name));
    PyTuple_SET_ITEM(view, 1, Py_NewRef(db));
    PyTuple_SET_ITEM(view, 2, body);
    body = NULL;
    PyTuple_SET_ITEM(view, 3, sequences);
    sequences = NULL;
    PyTuple_SET_ITEM(view, 4, request_id);
    PyTuple_SET_ITEM(view, 5, Py_NewRef(state.op_msg));
    PyTuple_SET_ITEM(view, 6, flag_bits);
    PyTuple_SET_ITEM(view, 7, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(view, 8, Py_NewRef(Py_False));
    PyTuple_SET_ITEM(view, 9, Py_NewRef(data));
    Py_DECREF(body_bytes);
    Py_XDECREF(spans);
    PyBuffer_Release(&buffer);
    return view;

fallback:
    if (PyErr_Occurred()) goto error;
    Py_XDECREF(body_bytes);
    Py_XDECREF(body);
    Py_XDECREF(sequences);
    Py_XDECREF(spans);
    PyBuffer_Release(&buffer);
    Py_RETURN_NONE;
error:
    Py_XDECREF(body_bytes);
    Py_XDECREF(body);
    Py_XDECREF(sequences);
    Py_XDECREF(spans);
    Py_XDECREF(view);
    PyBuffer_Release(&buffer);
    return NULL;
}

PyDoc_STRVAR(command_view_doc,
             "command_view(frame, *, max_message_size=48000000) -> CommandView\n\n"
             "fast_view(frame.data), or the careful Python path when that returns None.");

static PyObject *command_view(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *max_size = state.default_max;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs != 1 || nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "command_view(frame, *, max_message_size=...)");
        return NULL;
    }
    if (nkw == 1) {
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(kwnames, 0), state.max_key, Py_EQ);
        if (same < 0) return NULL;
        if (!same) {
            PyErr_Format(PyExc_TypeError, "command_view() got an unexpected keyword argument %R",
                         PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        max_size = args[1];
    }
    PyObject *frame = args[0];
    if (PyTuple_Check(frame) && PyTuple_GET_SIZE(frame) == 2) {
        PyObject *view = fast_view(module, PyTuple_GET_ITEM(frame, 1));
        if (view != Py_None) return view; /* a view, or NULL with the error set */
        Py_DECREF(view);
    }
    PyObject *careful_args[2] = {frame, max_size};
    return PyObject_Vectorcall(state.careful, careful_args, 2, NULL);
}

/* -- compiled structures ----------------------------------------------------------
 *
 * A collection's declared structure, compiled from the description that
 * scalyproxy.policy.schema builds, checked against raw documents the scanner
 * has accepted. The answer is only ever "certainly valid" or "let Python
 * decide": any doubt (a '$'-prefixed key, as a DBRef would have; more than 64
 * required fields; depth) goes to the Python check on the decoded document,
 * which names what is wrong. Valid documents never build a Python object here.
 */

enum { KIND_ANY = 0, KIND_SCALAR = 1, KIND_ARRAY = 2, KIND_OBJECT = 3 };
#define MAX_REQUIRED 64

struct SNode;
typedef struct {
    char *name;
    Py_ssize_t len;
    int required_bit; /* -1: optional */
    struct SNode *node;
} SField;

typedef struct SNode {
    int kind;
    uint8_t accepts[256]; /* scalar: the BSON types it takes; array/object: null when nullable */
    int additional;
    Py_ssize_t nfields;
    SField *fields;
    uint64_t required_mask;
    struct SNode *items;
} SNode;

static void snode_free(SNode *n) {
    if (n == NULL) return;
    for (Py_ssize_t i = 0; i < n->nfields; i++) {
        PyMem_Free(n->fields[i].name);
        snode_free(n->fields[i].node);
    }
    PyMem_Free(n->fields);
    snode_free(n->items);
    PyMem_Free(n);
}

static SNode *snode_build(PyObject *desc, int depth) {
    if (depth > MAX_DEPTH || !PyTuple_Check(desc) || PyTuple_GET_SIZE(desc) < 1) {
        PyErr_SetString(PyExc_ValueError, "bad structure description");
        return NULL;
    }
    SNode *n = PyMem_Calloc(1, sizeof(SNode));
    if (n == NULL) return (SNode *)PyErr_NoMemory();
    const char *kind = PyUnicode_Check(PyTuple_GET_ITEM(desc, 0)) ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(desc, 0)) : NULL;
    Py_ssize_t size = PyTuple_GET_SIZE(desc);
    if (kind == NULL) goto bad;
    if (strcmp(kind, "any") == 0 && size == 1) {
        n->kind = KIND_ANY;
        return n;
    }
    if (strcmp(kind, "scalar") == 0 && size == 2 && PyBytes_Check(PyTuple_GET_ITEM(desc, 1))) {
        n->kind = KIND_SCALAR;
        PyObject *types = PyTuple_GET_ITEM(desc, 1);
        for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(types); i++) n->accepts[(uint8_t)PyBytes_AS_STRING(types)[i]] = 1;
        return n;
    }
    int nullable;
    if (strcmp(kind, "array") == 0 && size == 3) {
        n->kind = KIND_ARRAY;
        if ((nullable = PyObject_IsTrue(PyTuple_GET_ITEM(desc, 1))) < 0) goto bad;
        n->accepts[0x0A] = n->accepts[0x06] = (uint8_t)nullable;
        n->items = snode_build(PyTuple_GET_ITEM(desc, 2), depth + 1);
        if (n->items == NULL) goto fail;
        return n;
    }
    if (strcmp(kind, "object") == 0 && size == 4 && PyTuple_Check(PyTuple_GET_ITEM(desc, 3))) {
        n->kind = KIND_OBJECT;
        if ((nullable = PyObject_IsTrue(PyTuple_GET_ITEM(desc, 1))) < 0) goto bad;
        n->accepts[0x0A] = n->accepts[0x06] = (uint8_t)nullable;
        if ((n->additional = PyObject_IsTrue(PyTuple_GET_ITEM(desc, 2))) < 0) goto bad;
        PyObject *fields = PyTuple_GET_ITEM(desc, 3);
        Py_ssize_t count = PyTuple_GET_SIZE(fields);
        n->fields = PyMem_Calloc((size_t)(count ? count : 1), sizeof(SField));
        if (n->fields == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        int bits = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *f = PyTuple_GET_ITEM(fields, i);
            if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(f, 0))) goto bad;
            PyObject *name = PyTuple_GET_ITEM(f, 0);
            int required = PyObject_IsTrue(PyTuple_GET_ITEM(f, 1));
            if (required < 0) goto bad;
            SField *field = &n->fields[i];
            n->nfields = i + 1;
            field->len = PyBytes_GET_SIZE(name);
            field->name = PyMem_Malloc((size_t)field->len + 1);
            if (field->name == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            memcpy(field->name, PyBytes_AS_STRING(name), (size_t)field->len + 1);
            field->required_bit = -1;
            if (required) {
                if (bits == MAX_REQUIRED) goto bad; /* the Python side never compiles these */
                field->required_bit = bits;
                n->required_mask |= (uint64_t)1 << bits;
                bits++;
            }
            field->node = snode_build(PyTuple_GET_ITEM(f, 2), depth + 1);
            if (field->node == NULL) goto fail;
        }
        return n;
    }
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad structure description");
fail:
    snode_free(n);
    return NULL;
}

/* The size of a value the scanner has accepted (bounds still checked): -1 if it does not fit. */
static Py_ssize_t skip_value(uint8_t type, const uint8_t *p, const uint8_t *end) {
    Py_ssize_t room = end - p;
    switch (type) {
    case 0x01: case 0x09: case 0x11: case 0x12:
        return room >= 8 ? 8 : -1;
    case 0x02: case 0x0D: case 0x0E:
        return room >= 4 && read_i32(p) >= 1 && read_i32(p) <= room - 4 ? 4 + (Py_ssize_t)read_i32(p) : -1;
    case 0x03: case 0x04: case 0x0F:
        return room >= 5 && read_i32(p) >= 5 && read_i32(p) <= room ? (Py_ssize_t)read_i32(p) : -1;
    case 0x05:
        return room >= 5 && read_i32(p) >= 0 && read_i32(p) <= room - 5 ? 5 + (Py_ssize_t)read_i32(p) : -1;
    case 0x06: case 0x0A: case 0x7F: case 0xFF:
        return 0;
    case 0x07:
        return room >= 12 ? 12 : -1;
    case 0x08:
        return room >= 1 ? 1 : -1;
    case 0x0B: {
        const uint8_t *a = memchr(p, 0, (size_t)room);
        if (a == NULL) return -1;
        const uint8_t *b = memchr(a + 1, 0, (size_t)(end - a - 1));
        return b == NULL ? -1 : b + 1 - p;
    }
    case 0x0C:
        return room >= 4 && read_i32(p) >= 1 && read_i32(p) <= room - 16 ? 16 + (Py_ssize_t)read_i32(p) : -1;
    case 0x10:
        return room >= 4 ? 4 : -1;
    case 0x13:
        return room >= 16 ? 16 : -1;
    default:
        return -1;
    }
}

typedef struct {
    uint8_t type;
    const uint8_t *key;
    Py_ssize_t key_len;
    const uint8_t *value;
    Py_ssize_t size;
} Elem;

/* The first NUL byte of [p, end), or end. Keys are short: eight bytes at a time with no call (memchr's
 * setup costs more than a key), the first NUL the lowest byte flagged (little-endian; exact: a flag
 * in error only ever follows a true zero byte). */
static inline const uint8_t *find_nul(const uint8_t *p, const uint8_t *end) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t zero = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
        if (zero) return p + (__builtin_ctzll(zero) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != 0) p++;
    return p;
}

/* The next element of a scanned document's elements [*pp, end): 1, 0 at the end, -1 if malformed. */
static int next_elem(const uint8_t **pp, const uint8_t *end, Elem *e) {
    const uint8_t *p = *pp;
    if (p >= end) return 0;
    e->type = *p++;
    const uint8_t *nul = find_nul(p, end);
    if (nul == end) return -1;
    e->key = p;
    e->key_len = nul - p;
    e->value = nul + 1;
    e->size = skip_value(e->type, e->value, end);
    if (e->size < 0) return -1;
    *pp = e->value + e->size;
    return 1;
}

static int value_fits(const SNode *n, uint8_t type, const uint8_t *p, const uint8_t *end, int depth);

/* The declared field of an object node with this name, or NULL. */
static const SField *field_named(const SNode *n, const uint8_t *name, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < n->nfields; i++) {
        if (n->fields[i].len == len && memcmp(n->fields[i].name, name, (size_t)len) == 0) return &n->fields[i];
    }
    return NULL;
}

/* The elements of the document at doc (its size checked against end). */
static int object_fits(const SNode *n, const uint8_t *doc, const uint8_t *limit, int depth) {
    if (depth > MAX_DEPTH || limit - doc < 5) return 0;
    int32_t size = read_i32(doc);
    if (size < 5 || size > limit - doc) return 0;
    const uint8_t *p = doc + 4, *end = doc + size - 1;
    uint64_t seen = 0;
    Elem e;
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if (e.key_len > 0 && e.key[0] == '$') return 0; /* a DBRef decodes as one object: Python decides */
        const SField *field = field_named(n, e.key, e.key_len);
        if (field == NULL) {
            if (!n->additional) return 0;
        } else {
            if (!value_fits(field->node, e.type, e.value, e.value + e.size, depth + 1)) return 0;
            if (field->required_bit >= 0) seen |= (uint64_t)1 << field->required_bit;
        }
    }
    return more == 0 && seen == n->required_mask;
}

static int value_fits(const SNode *n, uint8_t type, const uint8_t *p, const uint8_t *end, int depth) {
    switch (n->kind) {
    case KIND_ANY:
        return 1;
    case KIND_SCALAR:
        return n->accepts[type];
    case KIND_ARRAY: {
        if (type != 0x04) return n->accepts[type];
        if (depth > MAX_DEPTH || end - p < 5) return 0;
        int32_t size = read_i32(p);
        if (size < 5 || size > end - p) return 0;
        const uint8_t *q = p + 4, *stop = p + size - 1;
        Elem e;
        int more;
        while ((more = next_elem(&q, stop, &e)) > 0) {
            if (!value_fits(n->items, e.type, e.value, e.value + e.size, depth + 1)) return 0;
        }
        return more == 0;
    }
    default: /* KIND_OBJECT */
        if (type != 0x03) return n->accepts[type];
        return object_fits(n, p, end, depth);
    }
}

static void schema_capsule_free(PyObject *capsule) {
    snode_free(PyCapsule_GetPointer(capsule, "scalyproxy.schema"));
}

PyDoc_STRVAR(compile_schema_doc,
             "compile_schema(description) -> capsule\n\n"
             "A structure for schema_unconfirmed(); the description is built by\n"
             "scalyproxy.policy.schema (nested tuples: ('any',), ('scalar', type_bytes),\n"
             "('array', nullable, item), ('object', nullable, additional, ((name, required, node), ...))).");

static PyObject *compile_schema(PyObject *module, PyObject *desc) {
    SNode *root = snode_build(desc, 0);
    if (root == NULL) return NULL;
    if (root->kind != KIND_OBJECT) {
        snode_free(root);
        PyErr_SetString(PyExc_ValueError, "a structure's root must be an object");
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(root, "scalyproxy.schema", schema_capsule_free);
    if (capsule == NULL) snode_free(root);
    return capsule;
}

PyDoc_STRVAR(schema_unconfirmed_doc,
             "schema_unconfirmed(schema, run) -> list[int]\n\n"
             "The positions of the documents of a scanned run that the compiled structure\n"
             "cannot confirm (invalid, or in doubt); the others certainly match it.");

static PyObject *schema_unconfirmed(PyObject *module, PyObject *args) {
    PyObject *capsule, *data;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &data)) return NULL;
    SNode *root = PyCapsule_GetPointer(capsule, "scalyproxy.schema");
    if (root == NULL) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyList_New(0);
    const uint8_t *p = view.buf, *end = p + view.len;
    Py_ssize_t index = 0;
    while (out != NULL && p < end) {
        if (end - p < 5) break;
        int32_t size = read_i32(p);
        if (size < 5 || size > end - p) break;
        if (!object_fits(root, p, end, 0)) {
            PyObject *position = PyLong_FromSsize_t(index);
            if (position == NULL || PyList_Append(out, position) < 0) Py_CLEAR(out);
            Py_XDECREF(position);
        }
        p += size;
        index++;
    }
    PyBuffer_Release(&view);
    if (out != NULL && p != end) { /* not a scanned run: confirm nothing */
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, "schema_unconfirmed() needs a run of whole documents");
        return NULL;
    }
    return out;
}

/* -- commands read on their bytes ----------------------------------------------------
 *
 * Helpers of fast_decide (below): the fields of a scanned document, the shard
 * key in a query, the rules of one table entry.
 */

/* Short byte strings equal: a loop, inlined (memcmp is a call for a length not known here). */
static inline int same_bytes(const uint8_t *a, const uint8_t *b, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != b[i]) return 0;
    }
    return 1;
}

static inline int key_is(const Elem *e, const char *name, Py_ssize_t n) {
    return e->key_len == n && same_bytes(e->key, (const uint8_t *)name, n);
}

/* Values that fix a field by plain equality as the engine reads them
 * (policy.targeting.is_literal): scalars only; a document or an array goes to Python. */
static const uint8_t LITERAL[256] = {
    [0x01] = 1, [0x02] = 1, [0x05] = 1, [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0A] = 1,
    [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x7F] = 1, [0xFF] = 1,
};

/* Every key path is a field of the document (doc: its whole bytes); with
 * literal, each holds a literal. A '$' field anywhere at the top (a DBRef, an
 * operator) leaves the answer to Python. */
static int has_keys(const uint8_t *doc, Py_ssize_t size, PyObject *keys, int literal) {
    if (size < 5) return 0;
    const uint8_t *end = doc + size - 1;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys);
    uint64_t seen = 0;
    if (nkeys > 64) return 0;
    const uint8_t *p = doc + 4;
    Elem e;
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if (e.key_len > 0 && e.key[0] == '$') return 0;
        for (Py_ssize_t i = 0; i < nkeys; i++) {
            PyObject *k = PyTuple_GET_ITEM(keys, i);
            if (PyBytes_GET_SIZE(k) == e.key_len && memcmp(PyBytes_AS_STRING(k), e.key, (size_t)e.key_len) == 0) {
                if (literal && !LITERAL[e.type]) return 0;
                seen |= (uint64_t)1 << i;
                break;
            }
        }
    }
    if (more < 0) return 0;
    return seen == (nkeys == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nkeys) - 1));
}

typedef struct {
    const char *name;
    Py_ssize_t len;
} Name;
#define NAME(s) {s, sizeof(s) - 1}

/* The position of a key in a list of names, or -1. */
static int name_index(const Name *names, int count, const uint8_t *key, Py_ssize_t len) {
    for (int i = 0; i < count; i++) {
        if (names[i].len == len && memcmp(names[i].name, key, (size_t)len) == 0) return i;
    }
    return -1;
}

/* What one command is checked against: the collection's rules, from its table entry. */
typedef struct {
    PyObject *keys;    /* the shard-key paths, a tuple of bytes */
    int key_write;     /* inserted documents must carry every key path */
    const SNode *root; /* the compiled structure, or NULL when it is not checked */
    int any_sort;      /* a sort needs no index (unindexed_query is off) */
} Rules;

/* Whether writing path changes a shard-key field: the same path, a parent or a
 * child of it (policy.targeting.touches; byte prefixes ending at a '.' are
 * character prefixes in UTF-8). */
static int touches_key(const uint8_t *path, Py_ssize_t n, PyObject *keys) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(keys); i++) {
        PyObject *k = PyTuple_GET_ITEM(keys, i);
        const uint8_t *kp = (const uint8_t *)PyBytes_AS_STRING(k);
        Py_ssize_t kn = PyBytes_GET_SIZE(k);
        Py_ssize_t shorter = kn < n ? kn : n;
        if (memcmp(kp, path, (size_t)shorter) != 0) continue;
        if (kn == n || (kn > n && kp[n] == '.') || (n > kn && path[kn] == '.')) return 1;
    }
    return 0;
}

/* -- update operators against a compiled structure ---------------------------------
 *
 * What scalyproxy.policy.schema.UpdateChecker.check finds no error in, read on
 * the bytes of an operator update: 1 only where the Python check certainly
 * reports nothing, 0 where it would report something or the C code is unsure
 * (a $rename, whose check compares declared shapes; a step Python reads as an
 * array index and C does not; a '$' key, as a DBRef has).
 */

enum {
    OP_SET, OP_SET_ON_INSERT, OP_UNSET, OP_INC, OP_MUL, OP_MIN, OP_MAX, OP_PUSH, OP_ADD_TO_SET,
    OP_PULL, OP_PULL_ALL, OP_POP, OP_CURRENT_DATE, OP_BIT, OP_RENAME, OP_COUNT
};

static const Name OPERATORS[OP_COUNT] = {
    NAME("$set"), NAME("$setOnInsert"), NAME("$unset"), NAME("$inc"), NAME("$mul"),
    NAME("$min"), NAME("$max"), NAME("$push"), NAME("$addToSet"), NAME("$pull"),
    NAME("$pullAll"), NAME("$pop"), NAME("$currentDate"), NAME("$bit"), NAME("$rename"),
};

/* $push / $addToSet modifiers; $each first. */
static const Name PUSH_MODIFIERS[] = {NAME("$each"), NAME("$slice"), NAME("$sort"), NAME("$position")};

/* The BSON types of the numeric aliases in the order $inc and $mul widen them:
 * int, long, double, decimal (policy.schema._NUMERIC_RANK). */
static const uint8_t NUMERIC[4] = {0x10, 0x12, 0x01, 0x13};

static int numeric_rank(uint8_t type) {
    for (int i = 0; i < 4; i++) {
        if (NUMERIC[i] == type) return i;
    }
    return -1;
}

/* Any value is fine below this node (Node.unstructured): any, or a scalar
 * union that takes an object or an array. */
static int unstructured(const SNode *n) {
    return n->kind == KIND_ANY || (n->kind == KIND_SCALAR && (n->accepts[0x03] || n->accepts[0x04]));
}

/* A step that addresses an array element: an index, "$" or "$[...]" (ASCII digits
 * only: str.isdigit() takes other digits too, and those are left to Python). */
static int array_step(const uint8_t *s, Py_ssize_t n) {
    if (n == 0) return 0;
    if (s[0] == '$') return n == 1 || s[1] == '[';
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
    }
    return 1;
}

typedef struct {
    const SNode *node; /* where the path lands; NULL: anything goes there */
    int parent_kind;   /* KIND_OBJECT or KIND_ARRAY for a declared parent, else -1 */
    int required;      /* the last step is a required field of its parent object */
} Target;

/* Follow a dotted update path as policy.schema.resolve does: 1 with *t filled,
 * 0 where Python reports the path (or C is unsure). The root's implicit _id is a
 * field of type any in the compiled structure: the same answers as Python's None. */
static int resolve(const SNode *root, const uint8_t *path, Py_ssize_t len, Target *t) {
    const SNode *node = root;
    const uint8_t *p = path, *end = path + len;
    t->parent_kind = -1;
    t->required = 0;
    for (;;) {
        const uint8_t *dot = memchr(p, '.', (size_t)(end - p));
        Py_ssize_t n = (dot != NULL ? dot : end) - p;
        if (node == NULL || unstructured(node)) {
            t->parent_kind = -1; /* an unstructured parent: nothing to check */
            t->required = 0;
            node = NULL;
            break;
        }
        if (node->kind == KIND_ARRAY) {
            if (!array_step(p, n)) return 0;
            node = node->items;
            t->parent_kind = KIND_ARRAY;
            t->required = 0;
        } else if (node->kind == KIND_OBJECT) {
            if (n == 0 || p[0] == '$') return 0;
            const SField *field = field_named(node, p, n);
            if (field == NULL && !node->additional) return 0;
            t->parent_kind = KIND_OBJECT;
            t->required = field != NULL && field->required_bit >= 0;
            node = field != NULL ? field->node : NULL;
        } else {
            return 0; /* a scalar has no fields */
        }
        if (dot == NULL) break;
        p = dot + 1;
    }
    t->node = node;
    return 1;
}

static inline int fits(const SNode *n, const Elem *e) {
    return value_fits(n, e->type, e->value, e->value + e->size, 1);
}

/* $inc / $mul: a number, into a numeric field whose every widened result it accepts. */
static int arith_fits(const SNode *n, const Elem *e) {
    int got = numeric_rank(e->type);
    if (got < 0) return 0;
    if (n == NULL || n->kind == KIND_ANY) return 1;
    if (n->kind != KIND_SCALAR || !n->accepts[NUMERIC[got]]) return 0;
    for (int t = 0; t < 4; t++) {
        if (n->accepts[NUMERIC[t]] && !n->accepts[NUMERIC[t > got ? t : got]]) return 0;
    }
    return 1;
}

/* $min / $max: a numeric or date field, and the value fits it. */
static int min_max_fits(const SNode *n, const Elem *e) {
    if (n == NULL || n->kind == KIND_ANY) return 1;
    if (n->kind != KIND_SCALAR) return 0;
    const uint8_t *a = n->accepts;
    if (!(a[0x10] || a[0x12] || a[0x01] || a[0x13] || a[0x09])) return 0;
    return fits(n, e);
}

/* $push / $addToSet into an array of items: the value fits the items, or with
 * modifiers ({$each: [...], $slice, $sort, $position}) each of $each does. */
static int push_fits(const SNode *items, const Elem *e) {
    if (e->type != 0x03) return fits(items, e);
    const uint8_t *p = e->value + 4, *end = e->value + e->size - 1;
    Elem m, each = {0};
    int more, modifiers = 0;
    while ((more = next_elem(&p, end, &m)) > 0) {
        if (m.key_len > 0 && m.key[0] == '$') modifiers = 1;
    }
    if (more < 0) return 0;
    if (!modifiers) return fits(items, e);
    p = e->value + 4;
    while ((more = next_elem(&p, end, &m)) > 0) {
        int which = name_index(PUSH_MODIFIERS, 4, m.key, m.key_len);
        if (which < 0) return 0; /* another '$' key (a DBRef's $ref): Python decides */
        if (which == 0) each = m;
    }
    if (more < 0 || each.key == NULL || each.type != 0x04) return 0;
    p = each.value + 4;
    end = each.value + each.size - 1;
    while ((more = next_elem(&p, end, &m)) > 0) {
        if (!fits(items, &m)) return 0;
    }
    return more == 0;
}

/* $currentDate: true (a date) or {$type: "date" | "timestamp"} into a field that takes it. */
static int current_date_fits(const SNode *n, const Elem *e) {
    if (n == NULL || n->kind == KIND_ANY) return 1;
    if (n->kind != KIND_SCALAR) return 0;
    uint8_t wanted = 0x09;
    if (e->type == 0x03) {
        const uint8_t *p = e->value + 4, *end = e->value + e->size - 1;
        Elem t;
        if (next_elem(&p, end, &t) != 1 || p != end || !key_is(&t, "$type", 5) || t.type != 0x02) return 0;
        if (t.size == 14 && memcmp(t.value + 4, "timestamp", 10) == 0) wanted = 0x11;
    }
    return n->accepts[wanted];
}

/* $bit: an int or long field (nullable), nothing else. */
static int bit_fits(const SNode *n) {
    if (n == NULL || n->kind == KIND_ANY) return 1;
    if (n->kind != KIND_SCALAR || !(n->accepts[0x10] || n->accepts[0x12])) return 0;
    for (int t = 0; t < 256; t++) {
        if (n->accepts[t] && t != 0x10 && t != 0x12 && t != 0x0A && t != 0x06) return 0;
    }
    return 1;
}

/* One path (a's key) and value (a's value) of operator op, against the structure. */
static int operator_fits(int op, const SNode *root, const Elem *a) {
    Target t;
    if (!resolve(root, a->key, a->key_len, &t)) return 0;
    const SNode *n = t.node;
    switch (op) {
    case OP_SET:
    case OP_SET_ON_INSERT:
        return n == NULL || fits(n, a);
    case OP_UNSET: /* not a required field; an array element becomes null */
        if (t.parent_kind == KIND_OBJECT) return !t.required;
        if (t.parent_kind == KIND_ARRAY && n != NULL) return value_fits(n, 0x0A, a->value, a->value, 1);
        return 1;
    case OP_INC:
    case OP_MUL:
        return arith_fits(n, a);
    case OP_MIN:
    case OP_MAX:
        return min_max_fits(n, a);
    case OP_PUSH:
    case OP_ADD_TO_SET:
        if (n == NULL || unstructured(n)) return 1;
        return n->kind == KIND_ARRAY && push_fits(n->items, a);
    case OP_PULL:
    case OP_PULL_ALL:
    case OP_POP:
        return n == NULL || unstructured(n) || n->kind == KIND_ARRAY;
    case OP_CURRENT_DATE:
        return current_date_fits(n, a);
    case OP_BIT:
        return bit_fits(n);
    default:
        return 0;
    }
}

/* An operator update (an update statement's u, findAndModify's update): every
 * operator known and given a document of paths; no path (nor $rename target)
 * touching a shard-key field; and with a structure, every path and value
 * confirmed by it ($rename then goes to Python). */
static int operators_ok(const Elem *u, const Rules *r) {
    if (u->key == NULL || u->type != 0x03) return 0;
    const uint8_t *p = u->value + 4, *end = u->value + u->size - 1;
    Elem e, a;
    int more, count = 0;
    while ((more = next_elem(&p, end, &e)) > 0) {
        int op = name_index(OPERATORS, OP_COUNT, e.key, e.key_len);
        if (op < 0 || e.type != 0x03 || (op == OP_RENAME && r->root != NULL)) return 0;
        const uint8_t *q = e.value + 4, *stop = e.value + e.size - 1;
        int args;
        while ((args = next_elem(&q, stop, &a)) > 0) {
            if (a.key_len == 0 || a.key[0] == '$' || touches_key(a.key, a.key_len, r->keys)) return 0;
            if (op == OP_RENAME) {
                if (a.type != 0x02 || touches_key(a.value + 4, read_i32(a.value) - 1, r->keys)) return 0;
            } else if (r->root != NULL && !operator_fits(op, r->root, &a)) {
                return 0;
            }
        }
        if (args < 0) return 0;
        count++;
    }
    return more == 0 && count > 0;
}

/* -- fast_decide ---------------------------------------------------------------
 *
 * The common targeted commands decided on their bytes. The table, built by
 * scalyproxy.policy.fastpath from the compiled policy, maps a declared namespace
 * to an entry: one verdict slot per command of COMMANDS (None where the Python
 * engine must always look), then the shard-key paths as bytes, whether inserted
 * documents must carry them, the compiled structure or None, and whether any
 * sort is allowed. The answer is the engine's own "allowed" verdict, or None:
 * only a command the Python engine would certainly allow without a warning is
 * answered here, everything else (a missing or ranged key, a collation, an
 * unusual field, any doubt) goes to the engine, which explains what is wrong.
 * tests/unit/policy/test_fastpath.py checks that against the engine on
 * generated commands, and the codec fuzzer on every message it reaches.
 */

enum {
    ENTRY_FIND, ENTRY_INSERT, ENTRY_UPDATE, ENTRY_DELETE, ENTRY_FIND_AND_MODIFY, ENTRY_COUNT, ENTRY_DISTINCT,
    ENTRY_AGGREGATE, ENTRY_KEYS, ENTRY_KEY_WRITE, ENTRY_SCHEMA, ENTRY_ANY_SORT, ENTRY_SIZE
};

/* The commands with a verdict slot, in entry order (canonical names only: an
 * alias goes to the engine, whose metrics then name it as sent). */
static const Name COMMANDS[ENTRY_KEYS] = {
    NAME("find"), NAME("insert"), NAME("update"), NAME("delete"),
    NAME("findAndModify"), NAME("count"), NAME("distinct"), NAME("aggregate"),
};

/* The body fields a decision reads. */
enum { F_DB, F_FILTER, F_QUERY, F_DOCUMENTS, F_UPDATES, F_DELETES, F_UPDATE, F_REMOVE, F_PIPELINE, F_SORT, F_COLLATION, F_COUNT };

/* Which of them a body element is, or -1 (by length first: most body keys are none of them). */
static int body_field(const Elem *e) {
    switch (e->key_len) {
    case 3:
        return key_is(e, "$db", 3) ? F_DB : -1;
    case 4:
        return key_is(e, "sort", 4) ? F_SORT : -1;
    case 5:
        return key_is(e, "query", 5) ? F_QUERY : -1;
    case 6:
        return key_is(e, "filter", 6) ? F_FILTER : key_is(e, "update", 6) ? F_UPDATE : key_is(e, "remove", 6) ? F_REMOVE : -1;
    case 7:
        return key_is(e, "updates", 7) ? F_UPDATES : key_is(e, "deletes", 7) ? F_DELETES : -1;
    case 8:
        return key_is(e, "pipeline", 8) ? F_PIPELINE : -1;
    case 9:
        return key_is(e, "documents", 9) ? F_DOCUMENTS : key_is(e, "collation", 9) ? F_COLLATION : -1;
    default:
        return -1;
    }
}

/* Aggregation stages that read no other collection and write nothing. */
enum { STAGE_MATCH, STAGE_SORT };
static const Name STAGES[] = {
    NAME("$match"), NAME("$sort"), NAME("$project"), NAME("$addFields"), NAME("$set"), NAME("$unset"),
    NAME("$limit"), NAME("$skip"), NAME("$group"), NAME("$count"), NAME("$unwind"), NAME("$replaceRoot"),
    NAME("$replaceWith"), NAME("$sortByCount"), NAME("$bucket"), NAME("$bucketAuto"), NAME("$sample"),
};
#define STAGE_COUNT ((int)(sizeof(STAGES) / sizeof(STAGES[0])))

/* A query (q of a statement, filter, query, a first $match) that gives the full
 * shard key by scalar equality: the engine's targeting finds every key field
 * fixed in both modes, the upsert check finds each by equality, and the
 * shard-key index serves it. */
static int targeted(const Elem *q, const Rules *r) {
    return q->key != NULL && q->type == 0x03 && PyTuple_GET_SIZE(r->keys) > 0 &&
           has_keys(q->value, q->size, r->keys, 1);
}

static inline int is_true(const Elem *e) {
    return e->key != NULL && e->type == 0x08 && e->value[0] == 1;
}

typedef int (*StatementCheck)(const uint8_t *doc, Py_ssize_t size, const Rules *r);

/* One inserted document: the shard key present (key_write) and the structure confirmed (root). */
static int insert_ok(const uint8_t *doc, Py_ssize_t size, const Rules *r) {
    if (r->key_write && !has_keys(doc, size, r->keys, 0)) return 0;
    return r->root == NULL || object_fits(r->root, doc, doc + size, 0);
}

/* One update (with_u) or delete statement: q targeted, no collation, no '$'
 * field (a DBRef decodes as no statement at all); an update's u an operator
 * update the checks confirm. Other fields (multi, limit, arrayFilters, hint,
 * upsert: the key in q by equality passes its check) the engine does not read. */
static int statement_ok(const uint8_t *doc, Py_ssize_t size, const Rules *r, int with_u) {
    const uint8_t *p = doc + 4, *end = doc + size - 1;
    Elem e, q = {0}, u = {0};
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if (e.key_len > 0 && e.key[0] == '$') return 0;
        if (key_is(&e, "q", 1)) q = e;
        else if (key_is(&e, "u", 1)) u = e;
        else if (key_is(&e, "collation", 9)) return 0;
    }
    if (more < 0 || !targeted(&q, r)) return 0;
    return !with_u || operators_ok(&u, r);
}

static int update_ok(const uint8_t *doc, Py_ssize_t size, const Rules *r) {
    return statement_ok(doc, size, r, 1);
}

static int delete_ok(const uint8_t *doc, Py_ssize_t size, const Rules *r) {
    return statement_ok(doc, size, r, 0);
}

/* The statements of a write, each passing check: a non-empty body array of
 * documents and no section, or (the field absent from the body) exactly one
 * kind-1 section of that name. */
static int each_statement(const uint8_t *m, const Elem *in_body, const Span *found, int nseq, const char *ident,
                          Py_ssize_t ident_len, StatementCheck check, const Rules *r) {
    Elem e;
    int more;
    if (in_body->key != NULL) {
        if (nseq != 0 || in_body->type != 0x04 || in_body->size <= 5) return 0;
        const uint8_t *q = in_body->value + 4, *stop = in_body->value + in_body->size - 1;
        while ((more = next_elem(&q, stop, &e)) > 0) {
            if (e.type != 0x03 || !check(e.value, e.size, r)) return 0;
        }
        return more == 0;
    }
    if (nseq != 1 || found[0].ident_len != ident_len || memcmp(found[0].ident, ident, (size_t)ident_len) != 0) return 0;
    const uint8_t *q = m + found[0].start, *stop = m + found[0].stop;
    if (q == stop) return 0;
    while (q < stop) {
        Py_ssize_t size = read_i32(q); /* scanned: whole documents */
        if (size < 5 || size > stop - q || !check(q, size, r)) return 0;
        q += size;
    }
    return 1;
}

/* An aggregation whose first stage is a targeted $match, every stage one of
 * STAGES, and a second-stage $sort only where any sort is allowed. */
static int pipeline_ok(const Elem *pipeline, const Rules *r) {
    if (pipeline->key == NULL || pipeline->type != 0x04) return 0;
    const uint8_t *p = pipeline->value + 4, *end = pipeline->value + pipeline->size - 1;
    Elem stage, spec;
    int more, i = 0;
    while ((more = next_elem(&p, end, &stage)) > 0) {
        if (stage.type != 0x03) return 0;
        const uint8_t *q = stage.value + 4, *stop = stage.value + stage.size - 1;
        if (next_elem(&q, stop, &spec) != 1 || q != stop) return 0; /* one stage name */
        int which = name_index(STAGES, STAGE_COUNT, spec.key, spec.key_len);
        if (which < 0) return 0;
        if (i == 0 && (which != STAGE_MATCH || !targeted(&spec, r))) return 0;
        if (i == 1 && which == STAGE_SORT && !r->any_sort) return 0;
        i++;
    }
    return more == 0 && i > 0;
}

/* Whether the engine certainly allows command cmd (its slot is set) without a warning. */
static int command_ok(int cmd, const uint8_t *m, const Elem *f, const Span *found, int nseq, const Rules *r) {
    if (cmd == ENTRY_INSERT) return each_statement(m, &f[F_DOCUMENTS], found, nseq, "documents", 9, insert_ok, r);
    if (f[F_COLLATION].key != NULL) return 0;
    int sort_ok = f[F_SORT].key == NULL || r->any_sort;
    switch (cmd) {
    case ENTRY_UPDATE:
        return each_statement(m, &f[F_UPDATES], found, nseq, "updates", 7, update_ok, r);
    case ENTRY_DELETE:
        return each_statement(m, &f[F_DELETES], found, nseq, "deletes", 7, delete_ok, r);
    default:
        break;
    }
    if (nseq != 0) return 0;
    switch (cmd) {
    case ENTRY_FIND:
        return sort_ok && f[F_DOCUMENTS].key == NULL && targeted(&f[F_FILTER], r);
    case ENTRY_FIND_AND_MODIFY:
        return sort_ok && targeted(&f[F_QUERY], r) && (is_true(&f[F_REMOVE]) || operators_ok(&f[F_UPDATE], r));
    case ENTRY_COUNT:
    case ENTRY_DISTINCT:
        return targeted(&f[F_QUERY], r);
    case ENTRY_AGGREGATE:
        return pipeline_ok(&f[F_PIPELINE], r);
    default:
        return 0;
    }
}

#define NS_BUFFER 512

PyDoc_STRVAR(fast_decide_doc,
             "fast_decide(data, table) -> Verdict | None\n\n"
             "The engine's allowed verdict for an ordinary OP_MSG find, count, distinct,\n"
             "aggregate, update, delete or findAndModify by the full shard key, or insert\n"
             "whose documents carry it and match the structure; None when the Python\n"
             "engine must decide (see scalyproxy.policy.fastpath).");

/* The entry's rules, checked (a malformed table is a TypeError); 0 with the error set.
 * The structure is read only for the commands that check documents or updates. */
static int entry_rules(PyObject *entry, int cmd, Rules *r) {
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != ENTRY_SIZE ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, ENTRY_KEYS))) {
        PyErr_SetString(PyExc_TypeError, "fast_decide: a malformed table entry");
        return 0;
    }
    PyObject *keys = PyTuple_GET_ITEM(entry, ENTRY_KEYS);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(keys); i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "fast_decide: shard-key paths must be bytes");
            return 0;
        }
    }
    r->keys = keys;
    r->key_write = PyTuple_GET_ITEM(entry, ENTRY_KEY_WRITE) == Py_True;
    r->any_sort = PyTuple_GET_ITEM(entry, ENTRY_ANY_SORT) == Py_True;
    r->root = NULL;
    PyObject *schema = PyTuple_GET_ITEM(entry, ENTRY_SCHEMA);
    int checks_structure = cmd == ENTRY_INSERT || cmd == ENTRY_UPDATE || cmd == ENTRY_FIND_AND_MODIFY;
    if (checks_structure && schema != Py_None) {
        r->root = PyCapsule_GetPointer(schema, "scalyproxy.schema");
        if (r->root == NULL) return 0;
    }
    return 1;
}

static PyObject *decide_message(const uint8_t *m, Py_ssize_t len, PyObject *table) {
    Span found[MAX_SEQUENCES];
    int nseq = 0;
    int32_t body_size;
    if (!parse_message(m, len, &body_size, found, &nseq)) Py_RETURN_NONE;

    const uint8_t *p = m + BODY_AT + 4, *end = m + BODY_AT + body_size - 1;
    Elem first, e, f[F_COUNT];
    if (next_elem(&p, end, &first) != 1 || first.type != 0x02 || first.size <= 5) Py_RETURN_NONE;
    int cmd = name_index(COMMANDS, ENTRY_KEYS, first.key, first.key_len);
    if (cmd < 0) Py_RETURN_NONE;
    for (int i = 0; i < F_COUNT; i++) f[i].key = NULL; /* absent */
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        int which = body_field(&e);
        if (which >= 0) f[which] = e;
    }
    const Elem *db = &f[F_DB];
    if (more < 0 || db->key == NULL || db->type != 0x02 || db->size <= 5) Py_RETURN_NONE;

    /* the namespace: "<$db>.<collection>" (both strings were scanned: valid UTF-8, NUL-terminated) */
    char buffer[NS_BUFFER];
    Py_ssize_t db_len = read_i32(db->value) - 1, coll_len = read_i32(first.value) - 1;
    if (db_len + 1 + coll_len > NS_BUFFER) Py_RETURN_NONE;
    if (memchr(db->value + 4, 0, (size_t)db_len) || memchr(first.value + 4, 0, (size_t)coll_len)) Py_RETURN_NONE;
    memcpy(buffer, db->value + 4, (size_t)db_len);
    buffer[db_len] = '.';
    memcpy(buffer + db_len + 1, first.value + 4, (size_t)coll_len);
    PyObject *ns = PyUnicode_DecodeUTF8(buffer, db_len + 1 + coll_len, "strict");
    if (ns == NULL) return NULL;
    PyObject *entry = PyDict_GetItemWithError(table, ns);
    Py_DECREF(ns);
    if (entry == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Rules rules;
    if (!entry_rules(entry, cmd, &rules)) return NULL;
    PyObject *verdict = PyTuple_GET_ITEM(entry, cmd);
    if (verdict == Py_None || !command_ok(cmd, m, f, found, nseq, &rules)) Py_RETURN_NONE;
    return Py_NewRef(verdict);
}

static PyObject *fast_decide(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fast_decide(data, table: dict)");
        return NULL;
    }
    PyObject *data = args[0], *table = args[1];
    if (PyDict_GET_SIZE(table) == 0) Py_RETURN_NONE;
    if (PyBytes_CheckExact(data))
        return decide_message((const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), table);
    Py_buffer buffer; /* a framed message: a bytearray or a memoryview */
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *verdict = decide_message(buffer.buf, buffer.len, table);
    PyBuffer_Release(&buffer);
    return verdict;
}

/* -- shape_hash --------------------------------------------------------------------
 *
 * The shape id of a find or an insert, from its bytes: the 64-bit hash that
 * scalyproxy.evidence.skeleton.hash_json gives the command's skeleton (see there
 * for what a skeleton keeps and how it is hashed), computed without building a
 * Python object, so that the relay's fast path finds a profiled shape from the
 * bytes fast_decide has just read. It answers None for whatever it does not
 * reproduce exactly (another command, a "$ref" key, $expr, a comment that is not
 * a string, an update, nesting deeper than SHAPE_MAX_DEPTH...): the caller then
 * builds the skeleton in Python. Bounds are checked on every read (the message
 * need not have been scanned). tests/unit/evidence/test_shape_hash.py checks the
 * two against each other on generated commands.
 */

#define FNV_OFFSET 0xCBF29CE484222325ULL
#define FNV_PRIME 0x100000001B3ULL
#define SHAPE_MAX_DEPTH 32
enum { SH_OK = 0, SH_NONE = 1, SH_ERROR = 2 };

static inline void fnv_feed(uint64_t *h, const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t v = *h;
    for (size_t i = 0; i < n; i++) v = (v ^ p[i]) * FNV_PRIME;
    *h = v;
}

static inline void fnv_byte(uint64_t *h, uint8_t b) { *h = (*h ^ b) * FNV_PRIME; }

static inline void fnv_u64(uint64_t *h, uint64_t v) { /* its 8 little-endian bytes */
    uint64_t x = *h;
    for (int i = 0; i < 8; i++) x = (x ^ (uint8_t)(v >> (8 * i))) * FNV_PRIME;
    *h = x;
}

static inline uint64_t fnv_finish(uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The hash state of one skeleton node. By default FNV-1a with the finish above: the public
 * shape id of the profile (shape_hash), the same in every process and in Python's hash_json.
 * During a shape_key call, SipHash-1-3 under that call's secret key instead: the key of the
 * engine's verdict cache, which no client can make collide with another shape (it does not know
 * the key, and sees no hash), as FNV could be made to. hs_secret is set by shape_key for the
 * length of the call, under the GIL (nothing here releases it or re-enters). */
typedef struct {
    uint64_t v0, v1, v2, v3; /* FNV: its state in v0 */
    uint64_t tail;           /* SipHash: bytes not yet compressed, little-endian */
    uint64_t len;            /* SipHash: bytes fed */
} Hs;

static const uint64_t *hs_secret = NULL;

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(h)                                                                                          \
    do {                                                                                                      \
        (h)->v0 += (h)->v1; (h)->v1 = SIP_ROTL((h)->v1, 13); (h)->v1 ^= (h)->v0; (h)->v0 = SIP_ROTL((h)->v0, 32); \
        (h)->v2 += (h)->v3; (h)->v3 = SIP_ROTL((h)->v3, 16); (h)->v3 ^= (h)->v2;                                  \
        (h)->v0 += (h)->v3; (h)->v3 = SIP_ROTL((h)->v3, 21); (h)->v3 ^= (h)->v0;                                  \
        (h)->v2 += (h)->v1; (h)->v1 = SIP_ROTL((h)->v1, 17); (h)->v1 ^= (h)->v2; (h)->v2 = SIP_ROTL((h)->v2, 32); \
    } while (0)

static inline void hs_init(Hs *h) {
    if (hs_secret == NULL) {
        h->v0 = FNV_OFFSET;
        return;
    }
    h->v0 = hs_secret[0] ^ 0x736F6D6570736575ULL;
    h->v1 = hs_secret[1] ^ 0x646F72616E646F6DULL;
    h->v2 = hs_secret[0] ^ 0x6C7967656E657261ULL;
    h->v3 = hs_secret[1] ^ 0x7465646279746573ULL;
    h->tail = 0;
    h->len = 0;
}

static inline void hs_byte(Hs *h, uint8_t b) {
    if (hs_secret == NULL) {
        fnv_byte(&h->v0, b);
        return;
    }
    h->tail |= (uint64_t)b << (8 * (h->len & 7));
    if ((++h->len & 7) == 0) {
        h->v3 ^= h->tail;
        SIP_ROUND(h);
        h->v0 ^= h->tail;
        h->tail = 0;
    }
}

static inline void hs_feed(Hs *h, const void *data, size_t n) {
    const uint8_t *p = data;
    if (hs_secret == NULL) {
        fnv_feed(&h->v0, data, n);
        return;
    }
    for (size_t i = 0; i < n; i++) hs_byte(h, p[i]);
}

static inline void hs_u64(Hs *h, uint64_t v) {
    if (hs_secret == NULL) {
        fnv_u64(&h->v0, v);
        return;
    }
    if ((h->len & 7) == 0) { /* aligned: one SipHash block */
        h->v3 ^= v;
        SIP_ROUND(h);
        h->v0 ^= v;
        h->len += 8;
        return;
    }
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    hs_feed(h, b, 8);
}

static inline uint64_t hs_finish(Hs *h) {
    if (hs_secret == NULL) return fnv_finish(h->v0);
    uint64_t b = h->len << 56 | h->tail;
    h->v3 ^= b;
    SIP_ROUND(h);
    h->v0 ^= b;
    h->v2 ^= 0xFF;
    SIP_ROUND(h);
    SIP_ROUND(h);
    SIP_ROUND(h);
    return h->v0 ^ h->v1 ^ h->v2 ^ h->v3;
}

/* A key or a verbatim string as the skeleton writes it: a "\" before a leading "<" or "\". */
static inline int needs_escape(const uint8_t *s, Py_ssize_t n) { return n > 0 && (s[0] == '<' || s[0] == '\\'); }

static inline void feed_key(Hs *h, const uint8_t *key, Py_ssize_t n) {
    if (needs_escape(key, n)) hs_byte(h, '\\');
    hs_feed(h, key, (size_t)n);
    hs_byte(h, 0);
}

static uint64_t tag_hash(const char *name) {
    Hs h;
    hs_init(&h);
    hs_byte(&h, 'T');
    hs_feed(&h, name, strlen(name));
    hs_byte(&h, 0);
    return hs_finish(&h);
}

/* skeleton.tag_of of the value pymongo decodes from each BSON type (NULL: not a leaf). */
static const char *leaf_name(uint8_t type) {
    switch (type) {
    case 0x01: return "double";
    case 0x02: case 0x0E: return "string";
    case 0x05: return "binData";
    case 0x06: case 0x0A: return "null";
    case 0x07: return "objectId";
    case 0x08: return "bool";
    case 0x09: return "date";
    case 0x0B: return "regex";
    case 0x0C: return "dbref";
    case 0x0D: case 0x0F: return "javascript";
    case 0x10: return "int";
    case 0x11: return "timestamp";
    case 0x12: return "long";
    case 0x13: return "decimal";
    case 0x7F: return "maxKey";
    case 0xFF: return "minKey";
    default: return NULL;
    }
}

/* The hashes of the leaf placeholders, computed once (shape_hash_init). */
static uint64_t LEAF_HASH[256];
static uint8_t IS_LEAF[256];
static uint64_t MARKER_HASH, DOUBLE_TAG_HASH;

static void shape_hash_init(void) {
    for (int t = 0; t < 256; t++) {
        const char *name = leaf_name((uint8_t)t);
        IS_LEAF[t] = name != NULL;
        LEAF_HASH[t] = name != NULL ? tag_hash(name) : 0;
    }
    MARKER_HASH = tag_hash("marker");
    DOUBLE_TAG_HASH = tag_hash("double");
}

/* A growable list of (hash, count or position) pairs. */
typedef struct {
    uint64_t local[2 * 16];
    uint64_t *items;
    Py_ssize_t n, cap;
} Pairs;

static void pairs_init(Pairs *v) {
    v->items = v->local;
    v->n = 0;
    v->cap = 16;
}

static void pairs_free(Pairs *v) {
    if (v->items != v->local) PyMem_Free(v->items);
}

static int pairs_add(Pairs *v, uint64_t a, uint64_t b) {
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap * 2;
        uint64_t *grown = PyMem_Malloc((size_t)cap * 2 * sizeof(uint64_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return SH_ERROR;
        }
        memcpy(grown, v->items, (size_t)v->n * 2 * sizeof(uint64_t));
        pairs_free(v);
        v->items = grown;
        v->cap = cap;
    }
    v->items[2 * v->n] = a;
    v->items[2 * v->n + 1] = b;
    v->n++;
    return SH_OK;
}

static int pair_order(const void *a, const void *b) { /* by hash, then by the second value */
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

static int pair_second_order(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* qsort, or for a few items an insertion sort (no call per comparison through libc's merge
 * sort and its copies). Every order sorted here is total on the items (no two compare equal
 * unless interchangeable), so both give the same result. */
#define SMALL_SORT 16
static inline void sort_items(void *base, size_t n, size_t size, int (*order)(const void *, const void *)) {
    if (n > SMALL_SORT || size > 32) {
        qsort(base, n, size, order);
        return;
    }
    uint8_t *items = base, held[32];
    for (size_t i = 1; i < n; i++) {
        size_t j = i;
        if (order(items + (j - 1) * size, items + j * size) <= 0) continue;
        memcpy(held, items + i * size, size);
        while (j > 0 && order(items + (j - 1) * size, held) > 0) {
            memcpy(items + j * size, items + (j - 1) * size, size);
            j--;
        }
        memcpy(items + j * size, held, size);
    }
}

enum { LIST_SET, LIST_COUNTED, LIST_SEQ };

/* The list node of skeleton._hash_list from (element hash, position) pairs (v is reordered):
 * distinct hashes in hash order (set), with their counts (counted), or with their counts in
 * order of first appearance (seq). */
static uint64_t list_hash(Pairs *v, int kind) {
    Hs h;
    hs_init(&h);
    hs_byte(&h, kind == LIST_SET ? 'U' : kind == LIST_COUNTED ? 'C' : 'O');
    sort_items(v->items, (size_t)v->n, 2 * sizeof(uint64_t), pair_order);
    Py_ssize_t groups = 0, i = 0;
    while (i < v->n) { /* group g goes to slot g <= i: nothing still to read is overwritten */
        uint64_t hash = v->items[2 * i], first = v->items[2 * i + 1];
        Py_ssize_t j = i;
        while (j < v->n && v->items[2 * j] == hash) j++;
        v->items[2 * groups] = hash;
        v->items[2 * groups + 1] = first << 32 | (uint64_t)(j - i); /* positions and counts < 2^32 */
        groups++;
        i = j;
    }
    if (kind == LIST_SEQ) sort_items(v->items, (size_t)groups, 2 * sizeof(uint64_t), pair_second_order);
    for (Py_ssize_t g = 0; g < groups; g++) {
        hs_u64(&h, v->items[2 * g]);
        if (kind != LIST_SET) hs_u64(&h, v->items[2 * g + 1] & 0xFFFFFFFFu);
    }
    hs_byte(&h, 'E');
    return hs_finish(&h);
}

typedef struct {
    const uint8_t *key;
    Py_ssize_t len;
} TopKey;

/* One scalar of a query path (skeleton.path_ranks): where its value is (its identity), and its
 * rank among the path's values in its type family (0: the path holds one value; -1: NaN). */
typedef struct {
    const uint8_t *value;
    uint8_t type;
    uint8_t path;
    int32_t rank;
} Leaf;

#define QUERY_PATHS 32
#define QUERY_LEAVES 256

/* The field paths of one query and their values, ranked. */
typedef struct {
    TopKey paths[QUERY_PATHS];
    int counts[QUERY_PATHS];
    int npaths;
    Leaf leaves[QUERY_LEAVES];
    int nleaves;
} QueryLeaves;

typedef struct {
    const uint8_t *marker;
    Py_ssize_t marker_len;
    const QueryLeaves *query; /* the query being hashed (its leaves sorted by value), or NULL */
    int path_level;           /* the keys being read are the query's field paths */
    int ranked;               /* hashing a value on a path whose values are ranked */
} ShapeCtx;

/* Whether a key is in a list of names ended by {NULL, 0}. */
static int in_list(const Elem *e, const Name *names) {
    for (; names->name != NULL; names++) {
        if (names->len == e->key_len && same_bytes((const uint8_t *)names->name, e->key, e->key_len)) return 1;
    }
    return 0;
}

/* Each context of skeleton._Builder is one function: the hash of a value found there. */
typedef int (*ValueHash)(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);
/* A context that depends on the key: the hash of one element of a document (index: its position). */
typedef int (*ElemHash)(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out);

/* The elements of the document or array at v: [*first, *end) after its size is checked. */
static int doc_span(const uint8_t *v, Py_ssize_t size, const uint8_t **first, const uint8_t **end) {
    if (size < 5 || read_i32(v) != size || v[size - 1] != 0) return 0;
    *first = v + 4;
    *end = v + size - 1;
    return 1;
}

static inline int is_dollar_ref(const Elem *e) { return key_is(e, "$ref", 4); }

static inline int starts_with_dollar(const Elem *e) { return e->key_len > 0 && e->key[0] == '$'; }

/* "$expr", or a non-empty "let" document: skeleton._compares_across ranks the whole command (Python). */
static inline int compares_across(const Elem *e) {
    return key_is(e, "$expr", 5) || (key_is(e, "let", 3) && e->type == 0x03 && e->size > 5);
}

/* A document node: its keys (escaped) in order, each value hashed by `each`. */
static int sh_keyed(ShapeCtx *c, const uint8_t *v, Py_ssize_t size, int depth, ElemHash each, uint64_t *out) {
    const uint8_t *p, *end;
    if (depth > SHAPE_MAX_DEPTH || !doc_span(v, size, &p, &end)) return SH_NONE;
    uint64_t child;
    Hs h;
    hs_init(&h);
    hs_byte(&h, 'D');
    Elem e;
    int more, r;
    Py_ssize_t index = 0;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if (is_dollar_ref(&e) || compares_across(&e)) return SH_NONE; /* a DBRef once decoded; ranks */
        if ((r = each(c, &e, index++, depth + 1, &child)) != SH_OK) return r;
        feed_key(&h, e.key, e.key_len);
        hs_u64(&h, child);
    }
    if (more < 0) return SH_NONE;
    hs_byte(&h, 'E');
    *out = hs_finish(&h);
    return SH_OK;
}

/* An array as an ordered list (kind < 0), a set, a counted list or a "<seq>" of its elements. */
static int sh_array_with(ShapeCtx *c, const uint8_t *v, Py_ssize_t size, int depth, ValueHash each, int kind,
                         uint64_t *out) {
    const uint8_t *p, *end;
    if (depth > SHAPE_MAX_DEPTH || !doc_span(v, size, &p, &end)) return SH_NONE;
    Pairs items;
    pairs_init(&items);
    Elem e;
    int more, r = SH_OK;
    uint64_t child, position = 0;
    Hs h;
    hs_init(&h);
    hs_byte(&h, 'A');
    while ((more = next_elem(&p, end, &e)) > 0) {
        if ((r = each(c, e.type, e.value, e.size, depth + 1, &child)) != SH_OK) break;
        if (kind < 0) hs_u64(&h, child);
        else if ((r = pairs_add(&items, child, position++)) != SH_OK) break;
    }
    if (r == SH_OK && more < 0) r = SH_NONE;
    if (r == SH_OK) {
        if (kind < 0) {
            hs_byte(&h, 'E');
            *out = hs_finish(&h);
        } else {
            *out = list_hash(&items, kind);
        }
    }
    pairs_free(&items);
    return r;
}

/* A run of whole documents (a kind-1 section) as the "<seq>" list of their hashes by `each`. */
static int sh_run(ShapeCtx *c, const uint8_t *p, const uint8_t *stop, ValueHash each, uint64_t *out) {
    Pairs items;
    pairs_init(&items);
    int r = SH_OK;
    uint64_t child, position = 0;
    while (r == SH_OK && p < stop) {
        Py_ssize_t size = stop - p < 5 ? -1 : read_i32(p);
        if (size < 5 || size > stop - p) {
            r = SH_NONE;
            break;
        }
        if ((r = each(c, 0x03, p, size, 3, &child)) == SH_OK) r = pairs_add(&items, child, position++);
        p += size;
    }
    if (r == SH_OK) *out = list_hash(&items, LIST_SEQ);
    pairs_free(&items);
    return r;
}

static int sh_leaf(uint8_t type, uint64_t *out) {
    if (!IS_LEAF[type]) return SH_NONE;
    *out = LEAF_HASH[type];
    return SH_OK;
}

static int sh_data(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

static int elem_data(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    return sh_data(c, e->type, e->value, e->size, depth, out);
}

static int sh_ranked_leaf(ShapeCtx *c, uint8_t type, const uint8_t *v, uint64_t *out);

/* Values: every leaf a placeholder, arrays as sets (skeleton._Builder.data); on a ranked
 * query path, leaves with their rank and arrays in order. */
static int sh_data(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type == 0x03) return sh_keyed(c, v, size, depth, elem_data, out);
    if (type == 0x04) return sh_array_with(c, v, size, depth, sh_data, c->ranked ? -1 : LIST_SET, out);
    return c->ranked ? sh_ranked_leaf(c, type, v, out) : sh_leaf(type, out);
}

static int sh_verbatim(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

static int elem_verbatim(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    return sh_verbatim(c, e->type, e->value, e->size, depth, out);
}

/* A string as skeleton.hash_json hashes a verbatim one ("\" before a leading "<" or "\"). */
static int sh_string(const uint8_t *v, Py_ssize_t size, uint64_t *out) {
    Py_ssize_t n = size - 5; /* without the size and the NUL */
    if (n < 0) return SH_NONE;
    int escaped = needs_escape(v + 4, n);
    uint32_t length = (uint32_t)(n + escaped);
    uint8_t b[4] = {(uint8_t)length, (uint8_t)(length >> 8), (uint8_t)(length >> 16), (uint8_t)(length >> 24)};
    Hs h;
    hs_init(&h);
    hs_byte(&h, 's');
    hs_feed(&h, b, 4);
    if (escaped) hs_byte(&h, '\\');
    hs_feed(&h, v + 4, (size_t)n);
    *out = hs_finish(&h);
    return SH_OK;
}

/* Names, flags and specs: kept as written (skeleton._Builder.verbatim). */
static int sh_verbatim(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    Hs h;
    hs_init(&h);
    switch (type) {
    case 0x03:
        return sh_keyed(c, v, size, depth, elem_verbatim, out);
    case 0x04:
        return sh_array_with(c, v, size, depth, sh_verbatim, -1, out);
    case 0x02: case 0x0E:
        return sh_string(v, size, out);
    case 0x10:
        hs_byte(&h, 'i');
        hs_feed(&h, v, 4);
        break;
    case 0x12: {
        char text[40];
        uint64_t u = (uint64_t)(uint32_t)read_i32(v) | (uint64_t)(uint32_t)read_i32(v + 4) << 32;
        snprintf(text, sizeof text, "long=%lld", (long long)(int64_t)u);
        *out = tag_hash(text);
        return SH_OK;
    }
    case 0x01: {
        uint64_t bits = (uint64_t)(uint32_t)read_i32(v) | (uint64_t)(uint32_t)read_i32(v + 4) << 32;
        if ((bits & 0x7FF0000000000000ULL) == 0x7FF0000000000000ULL) { /* inf or NaN */
            *out = DOUBLE_TAG_HASH;
            return SH_OK;
        }
        hs_byte(&h, 'd');
        hs_feed(&h, v, 8);
        break;
    }
    case 0x08:
        hs_byte(&h, 'b');
        hs_byte(&h, v[0] ? 1 : 0);
        break;
    case 0x0A: case 0x06:
        hs_byte(&h, 'n');
        break;
    default:
        return sh_leaf(type, out);
    }
    *out = hs_finish(&h);
    return SH_OK;
}

static int sh_names(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

static int elem_names(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    return sh_names(c, e->type, e->value, e->size, depth, out);
}

/* Stage specs made of names: strings kept, other values placeholders. */
static int sh_names(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type == 0x03) return sh_keyed(c, v, size, depth, elem_names, out);
    if (type == 0x04) return sh_array_with(c, v, size, depth, sh_names, -1, out);
    if (type == 0x02 || type == 0x0E) return sh_string(v, size, out);
    return sh_leaf(type, out);
}

static int sh_expr(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

static int elem_expr(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    if (key_is(e, "$literal", 8)) return sh_data(c, e->type, e->value, e->size, depth, out);
    return sh_expr(c, e->type, e->value, e->size, depth, out);
}

/* Aggregation expressions: field paths ("$a") kept, literals placeholders. */
static int sh_expr(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type == 0x03) return sh_keyed(c, v, size, depth, elem_expr, out);
    if (type == 0x04) return sh_array_with(c, v, size, depth, sh_expr, -1, out);
    if ((type == 0x02 || type == 0x0E) && size > 5 && v[4] == '$') return sh_string(v, size, out);
    return sh_leaf(type, out);
}

static int sh_filter(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);
static int sh_field(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

/* An operator document ({$gt: 1, $in: [...]}): skeleton._Builder.operators. */
static int elem_operator(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    int list_op = key_is(e, "$in", 3) || key_is(e, "$nin", 4) || key_is(e, "$all", 4);
    if (list_op && e->type == 0x04) return sh_array_with(c, e->value, e->size, depth + 1, sh_data, LIST_COUNTED, out);
    if (key_is(e, "$exists", 7) && e->type == 0x08) return sh_verbatim(c, e->type, e->value, e->size, depth, out);
    if (key_is(e, "$not", 4)) return sh_field(c, e->type, e->value, e->size, depth, out);
    if (key_is(e, "$elemMatch", 10)) return sh_filter(c, e->type, e->value, e->size, depth, out);
    return sh_data(c, e->type, e->value, e->size, depth, out);
}

static int sh_field(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type == 0x03 && size > 6 && v[5] == '$') return sh_keyed(c, v, size, depth, elem_operator, out);
    return sh_data(c, type, v, size, depth, out);
}

static int path_index(const QueryLeaves *q, const uint8_t *key, Py_ssize_t len);

static int elem_filter(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    int logical = key_is(e, "$and", 4) || key_is(e, "$or", 3) || key_is(e, "$nor", 4);
    if (logical && e->type == 0x04) return sh_array_with(c, e->value, e->size, depth, sh_filter, -1, out);
    if (starts_with_dollar(e)) return sh_data(c, e->type, e->value, e->size, depth, out);
    if (!c->path_level || c->query == NULL) return sh_field(c, e->type, e->value, e->size, depth, out);
    int i = path_index(c->query, e->key, e->key_len); /* a field path of the query: ranked or not */
    c->ranked = i >= 0 && c->query->counts[i] > 1;
    c->path_level = 0;
    int r = sh_field(c, e->type, e->value, e->size, depth, out);
    c->ranked = 0;
    c->path_level = 1;
    return r;
}

/* A query: skeleton._Builder.filter (inside a query: its $and/$or/$nor branches, $elemMatch). */
static int sh_filter(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type != 0x03) return sh_data(c, type, v, size, depth, out);
    return sh_keyed(c, v, size, depth, elem_filter, out);
}

/* -- the values of a query path, ranked (skeleton.path_ranks, Ranks) -- */

static int path_index(const QueryLeaves *q, const uint8_t *key, Py_ssize_t len) {
    for (int i = 0; i < q->npaths; i++) {
        if (q->paths[i].len == len && memcmp(q->paths[i].key, key, (size_t)len) == 0) return i;
    }
    return -1;
}

/* Every scalar of a value (documents and arrays opened) as a leaf of path `path`. */
static int collect_leaves(QueryLeaves *q, int path, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth) {
    if (type != 0x03 && type != 0x04) {
        if (q->nleaves == QUERY_LEAVES) return 0;
        q->leaves[q->nleaves++] = (Leaf){v, type, (uint8_t)path, 0};
        q->counts[path]++;
        return 1;
    }
    const uint8_t *p, *end;
    if (depth > SHAPE_MAX_DEPTH || !doc_span(v, size, &p, &end)) return 0;
    Elem e;
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if (!collect_leaves(q, path, e.type, e.value, e.size, depth + 1)) return 0;
    }
    return more == 0;
}

/* The field paths of a query (its $and/$or/$nor branches included) and their values. */
static int collect_paths(QueryLeaves *q, const uint8_t *v, Py_ssize_t size, int depth) {
    const uint8_t *p, *end;
    if (depth > SHAPE_MAX_DEPTH || !doc_span(v, size, &p, &end)) return 0;
    Elem e;
    int more;
    while ((more = next_elem(&p, end, &e)) > 0) {
        int logical = key_is(&e, "$and", 4) || key_is(&e, "$or", 3) || key_is(&e, "$nor", 4);
        if (logical && e.type == 0x04) {
            const uint8_t *b, *stop;
            if (!doc_span(e.value, e.size, &b, &stop)) return 0;
            Elem branch;
            while (next_elem(&b, stop, &branch) > 0) {
                if (branch.type == 0x03 && !collect_paths(q, branch.value, branch.size, depth + 1)) return 0;
            }
            continue;
        }
        if (starts_with_dollar(&e)) continue;
        int i = path_index(q, e.key, e.key_len);
        if (i < 0) {
            if (q->npaths == QUERY_PATHS) return 0;
            i = q->npaths++;
            q->paths[i] = (TopKey){e.key, e.key_len};
            q->counts[i] = 0;
        }
        if (!collect_leaves(q, i, e.type, e.value, e.size, depth + 1)) return 0;
    }
    return more == 0;
}

enum { FAM_NONE = -1, FAM_NUMBER, FAM_STRING, FAM_OID, FAM_BOOL, FAM_DATE, FAM_TIMESTAMP, FAM_NULL, FAM_MIN, FAM_MAX };

/* The family values are compared within (bounds.rank); FAM_NONE: a type ranked only in Python. */
static int family(uint8_t type) {
    switch (type) {
    case 0x01: case 0x10: case 0x12: return FAM_NUMBER;
    case 0x02: case 0x0E: return FAM_STRING;
    case 0x07: return FAM_OID;
    case 0x08: return FAM_BOOL;
    case 0x09: return FAM_DATE;
    case 0x11: return FAM_TIMESTAMP;
    case 0x0A: case 0x06: return FAM_NULL;
    case 0xFF: return FAM_MIN;
    case 0x7F: return FAM_MAX;
    default: return FAM_NONE;
    }
}

static inline int64_t read_i64(const uint8_t *p) {
    return (int64_t)((uint64_t)(uint32_t)read_i32(p) | (uint64_t)(uint32_t)read_i32(p + 4) << 32);
}

static inline double read_f64(const uint8_t *p) {
    double d;
    uint64_t bits = (uint64_t)read_i64(p);
    memcpy(&d, &bits, 8);
    return d;
}

static inline int is_nan_leaf(const Leaf *l) { return l->type == 0x01 && read_f64(l->value) != read_f64(l->value); }

/* An integer against a double, exactly (as Python compares them). */
static int int_vs_double(int64_t i, double d) {
    if (d >= 9223372036854775808.0) return -1;
    if (d < -9223372036854775808.0) return 1;
    int64_t t = (int64_t)d; /* toward zero; exact as a double */
    if (i != t) return i < t ? -1 : 1;
    double fraction = d - (double)t;
    return fraction > 0 ? -1 : fraction < 0 ? 1 : 0;
}

static int number_order(const Leaf *a, const Leaf *b) {
    int a_double = a->type == 0x01, b_double = b->type == 0x01;
    if (a_double && b_double) {
        double x = read_f64(a->value), y = read_f64(b->value);
        return (x > y) - (x < y);
    }
    if (!a_double && !b_double) {
        int64_t x = a->type == 0x10 ? read_i32(a->value) : read_i64(a->value);
        int64_t y = b->type == 0x10 ? read_i32(b->value) : read_i64(b->value);
        return (x > y) - (x < y);
    }
    if (a_double) return -int_vs_double(b->type == 0x10 ? read_i32(b->value) : read_i64(b->value), read_f64(a->value));
    return int_vs_double(a->type == 0x10 ? read_i32(a->value) : read_i64(a->value), read_f64(b->value));
}

/* BSON order within a family (bounds.canon): what ranks compare. */
static int value_order(const Leaf *a, const Leaf *b) {
    switch (family(a->type)) {
    case FAM_NUMBER:
        return number_order(a, b);
    case FAM_STRING: {
        Py_ssize_t n = read_i32(a->value) - 1, m = read_i32(b->value) - 1, k = n < m ? n : m;
        int d = memcmp(a->value + 4, b->value + 4, (size_t)k);
        return d ? (d > 0) - (d < 0) : (n > m) - (n < m);
    }
    case FAM_OID: {
        int d = memcmp(a->value, b->value, 12);
        return (d > 0) - (d < 0);
    }
    case FAM_BOOL:
        return (a->value[0] != 0) - (b->value[0] != 0);
    case FAM_DATE: {
        int64_t x = read_i64(a->value), y = read_i64(b->value);
        return (x > y) - (x < y);
    }
    case FAM_TIMESTAMP: {
        uint64_t x = (uint64_t)read_i64(a->value), y = (uint64_t)read_i64(b->value);
        return (x > y) - (x < y);
    }
    default: /* null, MinKey, MaxKey: one value each */
        return 0;
    }
}

static int leaf_order(const void *x, const void *y) {
    const Leaf *a = *(const Leaf *const *)x, *b = *(const Leaf *const *)y;
    if (a->path != b->path) return (a->path > b->path) - (a->path < b->path);
    int fa = family(a->type), fb = family(b->type);
    if (fa != fb) return (fa > fb) - (fa < fb);
    return value_order(a, b);
}

static int leaf_by_value(const void *x, const void *y) {
    const Leaf *a = x, *b = y;
    return (a->value > b->value) - (a->value < b->value);
}

/* Rank the values of each path that holds two or more (dense, per family, NaN apart);
 * 0 when a value's type is ranked only in Python. Then sort the leaves by where they are. */
static int rank_leaves(QueryLeaves *q) {
    const Leaf *order[QUERY_LEAVES];
    int n = 0, ranked = 0;
    for (int i = 0; i < q->nleaves; i++) {
        Leaf *l = &q->leaves[i];
        if (q->counts[l->path] < 2) continue;
        ranked = 1;
        if (family(l->type) == FAM_NONE) return 0;
        if (is_nan_leaf(l)) {
            l->rank = -1;
            continue;
        }
        order[n++] = l;
    }
    sort_items(order, (size_t)n, sizeof order[0], leaf_order);
    int rank = 0;
    for (int i = 0; i < n; i++) {
        const Leaf *prev = i ? order[i - 1] : NULL;
        if (prev == NULL || prev->path != order[i]->path || family(prev->type) != family(order[i]->type)) rank = 1;
        else if (value_order(prev, order[i]) != 0) rank++;
        ((Leaf *)order[i])->rank = rank;
    }
    /* sorted for sh_ranked_leaf's bsearch, which only a path of two values or more reaches */
    if (ranked) sort_items(q->leaves, (size_t)q->nleaves, sizeof(Leaf), leaf_by_value);
    return 1;
}

/* A leaf on a ranked path: "<type#rank>" (skeleton.Ranks.tag). */
static int sh_ranked_leaf(ShapeCtx *c, uint8_t type, const uint8_t *v, uint64_t *out) {
    if (!IS_LEAF[type] || c->query == NULL) return SH_NONE;
    Leaf key = {v, type, 0, 0};
    const Leaf *found = bsearch(&key, c->query->leaves, (size_t)c->query->nleaves, sizeof(Leaf), leaf_by_value);
    if (found == NULL || found->rank == 0) return SH_NONE;
    char text[48];
    if (found->rank < 0) snprintf(text, sizeof text, "%s#nan", leaf_name(type));
    else snprintf(text, sizeof text, "%s#%d", leaf_name(type), (int)found->rank);
    *out = tag_hash(text);
    return SH_OK;
}

/* A query at its root (a filter, a statement's q, a $match): its values on one path ranked. */
static int sh_query(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type != 0x03) return sh_filter(c, type, v, size, depth, out);
    QueryLeaves q; /* about 7 KB: a query never holds another, so one at a time */
    q.npaths = q.nleaves = 0;
    if (!collect_paths(&q, v, size, depth) || !rank_leaves(&q)) return SH_NONE;
    ShapeCtx inner = *c;
    inner.query = &q;
    inner.path_level = 1;
    inner.ranked = 0;
    return sh_filter(&inner, type, v, size, depth, out);
}

/* -- aggregation pipelines -- */

static int sh_pipeline(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out);

static int elem_pipeline(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    return sh_pipeline(c, e->type, e->value, e->size, depth, out);
}

static int elem_expr_plain(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    return sh_expr(c, e->type, e->value, e->size, depth, out);
}

static int elem_projection(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    if (e->type == 0x08 || e->type == 0x10 || e->type == 0x01 || e->type == 0x12)
        return sh_verbatim(c, e->type, e->value, e->size, depth, out);
    return sh_expr(c, e->type, e->value, e->size, depth, out);
}

static const Name NAME_STAGES[] = {
    NAME("$geoNear"), NAME("$lookup"), NAME("$graphLookup"), NAME("$unionWith"), NAME("$out"), NAME("$merge"),
    NAME("$unset"), {NULL, 0}};

static int elem_name_spec(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    if (key_is(e, "query", 5) || key_is(e, "restrictSearchWithMatch", 23))
        return sh_query(c, e->type, e->value, e->size, depth, out);
    if (key_is(e, "pipeline", 8) || (key_is(e, "whenMatched", 11) && e->type == 0x04))
        return sh_pipeline(c, e->type, e->value, e->size, depth, out);
    if (key_is(e, "let", 3) || key_is(e, "startWith", 9)) return sh_expr(c, e->type, e->value, e->size, depth, out);
    if (key_is(e, "near", 4)) return sh_data(c, e->type, e->value, e->size, depth, out);
    return sh_names(c, e->type, e->value, e->size, depth, out);
}

/* One stage's spec: skeleton._Builder.stage_spec (e: the stage's element, its key the stage name). */
static int elem_stage(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    uint8_t t = e->type;
    if (key_is(e, "$match", 6)) return sh_query(c, t, e->value, e->size, depth, out);
    if (key_is(e, "$sort", 5)) return sh_verbatim(c, t, e->value, e->size, depth, out);
    if (key_is(e, "$facet", 6) && t == 0x03) return sh_keyed(c, e->value, e->size, depth, elem_pipeline, out);
    if ((key_is(e, "$set", 4) || key_is(e, "$addFields", 10)) && t == 0x03)
        return sh_keyed(c, e->value, e->size, depth, elem_expr_plain, out);
    if (key_is(e, "$project", 8) && t == 0x03) return sh_keyed(c, e->value, e->size, depth, elem_projection, out);
    if (in_list(e, NAME_STAGES)) {
        if (t == 0x03) return sh_keyed(c, e->value, e->size, depth, elem_name_spec, out);
        return sh_names(c, t, e->value, e->size, depth, out);
    }
    return sh_expr(c, t, e->value, e->size, depth, out);
}

static int sh_stage(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type != 0x03) return sh_data(c, type, v, size, depth, out);
    return sh_keyed(c, v, size, depth, elem_stage, out);
}

static int sh_pipeline(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type != 0x04) return sh_data(c, type, v, size, depth, out);
    return sh_array_with(c, v, size, depth + 1, sh_stage, -1, out);
}

/* -- writes -- */

/* A non-empty document whose first key does not start with "$": a replacement (Python numbers its values). */
static int is_replacement(uint8_t type, const uint8_t *v, Py_ssize_t size) {
    return type == 0x03 && size > 6 && v[5] != '$';
}

static int elem_update_op(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    if (e->type == 0x03 && (key_is(e, "$rename", 7) || key_is(e, "$currentDate", 12)))
        return sh_verbatim(c, e->type, e->value, e->size, depth, out);
    return sh_data(c, e->type, e->value, e->size, depth, out);
}

/* An update: a pipeline, operators; a replacement is left to Python. */
static int sh_update(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type == 0x04) return sh_pipeline(c, type, v, size, depth, out);
    if (type != 0x03) return sh_leaf(type, out);
    if (is_replacement(type, v, size)) return SH_NONE;
    return sh_keyed(c, v, size, depth, elem_update_op, out);
}

static const Name STATEMENT_VERBATIM[] = {
    NAME("$db"), NAME("sort"), NAME("collation"), NAME("hint"), NAME("upsert"), NAME("multi"), NAME("remove"),
    NAME("new"), NAME("ordered"), NAME("to"), NAME("toCollection"), NAME("collection"), NAME("key"), NAME("out"),
    NAME("bypassDocumentValidation"), NAME("limit"), {NULL, 0}};

static int elem_statement(ShapeCtx *c, const Elem *e, Py_ssize_t index, int depth, uint64_t *out) {
    const uint8_t *v = e->value;
    if (index == 0 && (key_is(e, "insert", 6) || key_is(e, "update", 6) || key_is(e, "delete", 6)))
        return sh_verbatim(c, e->type, v, e->size, depth, out);
    if (key_is(e, "q", 1) || key_is(e, "filter", 6)) return sh_query(c, e->type, v, e->size, depth, out);
    if (key_is(e, "u", 1) || key_is(e, "updateMods", 10)) return sh_update(c, e->type, v, e->size, depth, out);
    if (in_list(e, STATEMENT_VERBATIM)) return sh_verbatim(c, e->type, v, e->size, depth, out);
    return sh_data(c, e->type, v, e->size, depth, out);
}

/* One update, delete or bulkWrite op (sh_update leaves a replacement to Python). */
static int sh_statement(ShapeCtx *c, uint8_t type, const uint8_t *v, Py_ssize_t size, int depth, uint64_t *out) {
    if (type != 0x03) return sh_data(c, type, v, size, depth, out);
    return sh_keyed(c, v, size, depth, elem_statement, out);
}

/* -- the command -- */

/* skeleton.DROPPED; skeleton.VERBATIM_KEYS is STATEMENT_VERBATIM without "limit". */
static const Name DROPPED_KEYS[] = {
    NAME("lsid"), NAME("txnNumber"), NAME("autocommit"), NAME("startTransaction"), NAME("$clusterTime"),
    NAME("signature"), NAME("$readPreference"), NAME("readConcern"), NAME("writeConcern"), NAME("maxTimeMS"),
    NAME("apiVersion"), NAME("apiStrict"), NAME("apiDeprecationErrors"), NAME("batchSize"), NAME("$audit"),
    NAME("$client"), {NULL, 0}};
static int is_verbatim_top(const Elem *e) { return in_list(e, STATEMENT_VERBATIM) && !key_is(e, "limit", 5); }

static int contains(const uint8_t *s, Py_ssize_t n, const uint8_t *token, Py_ssize_t t) {
    if (t == 0) return 1;
    for (Py_ssize_t i = 0; i + t <= n; i++) {
        if (s[i] == token[0] && memcmp(s + i, token, (size_t)t) == 0) return 1;
    }
    return 0;
}

typedef struct {
    const uint8_t *key;
    Py_ssize_t key_len;
    uint64_t hash;
} TopField;

static int top_order(const void *a, const void *b) {
    const TopField *x = a, *y = b;
    Py_ssize_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    for (Py_ssize_t i = 0; i < n; i++) { /* memcmp's order, without the call */
        if (x->key[i] != y->key[i]) return x->key[i] < y->key[i] ? -1 : 1;
    }
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* A top-level field or a kind-1 section (a list of documents) by its name: skeleton._Builder.top_field. */
static int sh_top_value(ShapeCtx *c, const Elem *e, uint64_t *out) {
    uint8_t t = e->type;
    const uint8_t *v = e->value;
    if (is_verbatim_top(e)) return sh_verbatim(c, t, v, e->size, 1, out);
    if (key_is(e, "filter", 6) || key_is(e, "query", 5)) return sh_query(c, t, v, e->size, 1, out);
    if (key_is(e, "update", 6)) return sh_update(c, t, v, e->size, 1, out);
    if (t == 0x04 && (key_is(e, "updates", 7) || key_is(e, "deletes", 7) || key_is(e, "ops", 3)))
        return sh_array_with(c, v, e->size, 2, sh_statement, LIST_SEQ, out);
    if (t == 0x04 && key_is(e, "documents", 9)) return sh_array_with(c, v, e->size, 2, sh_data, LIST_SEQ, out);
    if (t == 0x04 && key_is(e, "nsInfo", 6)) return sh_array_with(c, v, e->size, 2, sh_verbatim, -1, out);
    if (key_is(e, "pipeline", 8)) return sh_pipeline(c, t, v, e->size, 1, out);
    if (key_is(e, "let", 3)) return sh_expr(c, t, v, e->size, 1, out); /* an empty or odd let */
    return sh_data(c, t, v, e->size, 1, out);
}

/* One top-level field's hash; *skip: left out of the skeleton (SH_NONE: Python says). */
static int sh_top_field(ShapeCtx *c, const Elem *e, uint64_t *out, int *skip) {
    *skip = 0;
    if (in_list(e, DROPPED_KEYS)) {
        *skip = 1;
        return SH_OK;
    }
    if (key_is(e, "comment", 7)) {
        if (e->type != 0x02 || e->size < 5) return SH_NONE;
        if (contains(e->value + 4, e->size - 5, c->marker, c->marker_len)) *out = MARKER_HASH;
        else *skip = 1;
        return SH_OK;
    }
    if (is_dollar_ref(e) || compares_across(e)) return SH_NONE;
    return sh_top_value(c, e, out);
}

/* The command's first value: skeleton._Builder.first_value (an explain's inner command: Python). */
static int sh_first(ShapeCtx *c, const Elem *first, uint64_t *out) {
    uint8_t t = first->type;
    if (key_is(first, "explain", 7) && t == 0x03 && first->size > 5) return SH_NONE;
    if (key_is(first, "getMore", 7) || t == 0x03 || t == 0x04) return sh_data(c, t, first->value, first->size, 1, out);
    return sh_verbatim(c, t, first->value, first->size, 1, out);
}

#define TOP_FIELDS 64

/* The kind-1 sections, as the "<sequences>" document of the skeleton (sorted by name). */
static int sh_sections(ShapeCtx *c, const uint8_t *m, Py_ssize_t pos, Py_ssize_t len, int *any, uint64_t *out) {
    TopField found[MAX_SEQUENCES];
    int n = 0, r;
    while (pos < len) {
        if (m[pos] != 1 || n == MAX_SEQUENCES || len - pos < 6) return SH_NONE;
        Py_ssize_t size = read_i32(m + pos + 1);
        if (size < 5 || size > len - pos - 1) return SH_NONE;
        const uint8_t *ident = m + pos + 5, *stop = m + pos + 1 + size;
        const uint8_t *nul = memchr(ident, 0, (size_t)(stop - ident));
        if (nul == NULL) return SH_NONE;
        Elem e = {0x04, ident, nul - ident, NULL, 0};
        ValueHash each = key_is(&e, "documents", 9) ? sh_data
                         : (key_is(&e, "updates", 7) || key_is(&e, "deletes", 7) || key_is(&e, "ops", 3)) ? sh_statement
                         : NULL;
        if (each == NULL) return SH_NONE; /* nsInfo and others: Python */
        if ((r = sh_run(c, nul + 1, stop, each, &found[n].hash)) != SH_OK) return r;
        found[n].key = ident;
        found[n].key_len = nul - ident;
        n++;
        pos = stop - m;
    }
    *any = n > 0;
    if (n == 0) return SH_OK;
    sort_items(found, (size_t)n, sizeof(TopField), top_order);
    Hs h;
    hs_init(&h);
    hs_byte(&h, 'D');
    for (int i = 0; i < n; i++) {
        feed_key(&h, found[i].key, found[i].key_len);
        hs_u64(&h, found[i].hash);
    }
    hs_byte(&h, 'E');
    *out = hs_finish(&h);
    return SH_OK;
}

static int sh_message(ShapeCtx *c, const uint8_t *m, Py_ssize_t len, uint64_t *out) {
    if (len < BODY_AT + 5 || read_i32(m) != len || read_i32(m + 12) != 2013) return SH_NONE;
    uint32_t flags = (uint32_t)read_i32(m + 16);
    if (flags & 0xFFFFu & ~FLAG_MORE_TO_COME || m[20] != 0) return SH_NONE;
    Py_ssize_t body_size = read_i32(m + BODY_AT);
    const uint8_t *p, *end;
    if (body_size > len - BODY_AT || !doc_span(m + BODY_AT, body_size, &p, &end)) return SH_NONE;
    /* A replacement in a top-level "update" (findAndModify) numbers the values it shares with
     * "query": Python says. No pass of its own for it: sh_update answers None for it below. */
    int any_sections = 0, r, more, skip;
    uint64_t sections = 0, hash;
    if ((r = sh_sections(c, m, BODY_AT + body_size, len, &any_sections, &sections)) != SH_OK) return r;

    Elem first, e;
    if (next_elem(&p, end, &first) != 1 || compares_across(&first)) return SH_NONE;
    Hs h;
    hs_init(&h);
    hs_byte(&h, 'D');
    feed_key(&h, first.key, first.key_len);
    if ((r = sh_first(c, &first, &hash)) != SH_OK) return r;
    hs_u64(&h, hash);
    TopField fields[TOP_FIELDS];
    Py_ssize_t n = 0;
    while ((more = next_elem(&p, end, &e)) > 0) {
        if ((r = sh_top_field(c, &e, &hash, &skip)) != SH_OK) return r;
        if (skip) continue;
        if (n == TOP_FIELDS) return SH_NONE;
        fields[n].key = e.key;
        fields[n].key_len = e.key_len;
        fields[n].hash = hash;
        n++;
    }
    if (more < 0) return SH_NONE;
    sort_items(fields, (size_t)n, sizeof(TopField), top_order);
    for (Py_ssize_t i = 0; i < n; i++) {
        feed_key(&h, fields[i].key, fields[i].key_len);
        hs_u64(&h, fields[i].hash);
    }
    if (any_sections) {
        hs_feed(&h, "<sequences>", 12); /* the key, with its NUL */
        hs_u64(&h, sections);
    }
    hs_byte(&h, 'E');
    *out = hs_finish(&h);
    return SH_OK;
}

PyDoc_STRVAR(shape_hash_doc,
             "shape_hash(data, marker, scanned=False) -> int | None\n\n"
             "The shape id (scalyproxy.evidence.skeleton) of an OP_MSG command, from its bytes;\n"
             "marker: the allow marker, UTF-8; scanned: the message is known to be strictly valid\n"
             "(fast_decide allowed it), else it is scanned first: a repeated key or a string that\n"
             "is not UTF-8 is the Python skeleton's. None when the Python skeleton must say.");

/* shape_hash and shape_key: the message's shape id under FNV (secret NULL) or SipHash. */
static PyObject *shape_of_message(PyObject *data, PyObject *marker, int scanned, const uint64_t *secret) {
    ShapeCtx c = {(const uint8_t *)PyBytes_AS_STRING(marker), PyBytes_GET_SIZE(marker), NULL, 0, 0};
    Py_buffer buffer;
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t hash = 0;
    int r = SH_NONE;
    Span spans[MAX_SEQUENCES];
    int32_t body_size;
    int nseq;
    if (scanned || parse_message(buffer.buf, buffer.len, &body_size, spans, &nseq)) {
        hs_secret = secret;
        r = sh_message(&c, buffer.buf, buffer.len, &hash);
        hs_secret = NULL;
    }
    PyBuffer_Release(&buffer);
    if (r == SH_ERROR) return NULL;
    if (r == SH_NONE) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(hash);
}

static PyObject *shape_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "shape_hash(data, marker: bytes, scanned: bool = False)");
        return NULL;
    }
    int scanned = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
    if (scanned < 0) return NULL;
    return shape_of_message(args[0], args[1], scanned, NULL);
}

PyDoc_STRVAR(shape_key_doc,
             "shape_key(data, marker, secret) -> int | None\n\n"
             "The shape id of shape_hash computed with SipHash-1-3 under secret (16 bytes) in place\n"
             "of FNV-1a: equal skeletons give equal keys, and without the secret no one can make two\n"
             "skeletons collide. The message is scanned first, as by shape_hash(data, marker).\n"
             "None when shape_hash would say None.");

static PyObject *shape_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) || PyBytes_GET_SIZE(args[2]) != 16) {
        PyErr_SetString(PyExc_TypeError, "shape_key(data, marker: bytes, secret: bytes of 16)");
        return NULL;
    }
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(args[2]);
    uint64_t secret[2] = {0, 0};
    for (int i = 0; i < 8; i++) {
        secret[0] |= (uint64_t)k[i] << (8 * i);
        secret[1] |= (uint64_t)k[8 + i] << (8 * i);
    }
    return shape_of_message(args[0], args[1], 0, secret);
}

PyDoc_STRVAR(shape_digest_doc,
             "shape_digest(data) -> int\n\n"
             "64-bit FNV-1a of the bytes with a splitmix64 finish: the node hash of\n"
             "scalyproxy.evidence.skeleton.");

static PyObject *shape_digest(PyObject *module, PyObject *data) {
    Py_buffer buffer;
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t h = FNV_OFFSET;
    fnv_feed(&h, buffer.buf, (size_t)buffer.len);
    PyBuffer_Release(&buffer);
    return PyLong_FromUnsignedLongLong(fnv_finish(h));
}

/* -- the hooks' accounting ------------------------------------------------------------
 *
 * What the admin hooks (scalyproxy.admin.events) do for every command and every reply,
 * with no Python frame of their own: a histogram series' observation (Series, the
 * metrics' HotHistogram series) and the profile row's counting and latency (RowOps,
 * on scalyproxy.evidence.table.Row). Each gives the figures its Python twin gives, to
 * the bit (tests/unit/admin/test_hot_c.py); the objects they update stay readable and
 * writable from Python as before.
 */

/* bisect.bisect_left / bisect_right on doubles, their loops as written in Python (a NaN
 * compares false both ways: bisect_left puts it first, bisect_right last, as Python does). */
static inline Py_ssize_t bisect_left_d(const double *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static inline Py_ssize_t bisect_right_d(const double *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < a[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* A tuple of numbers as doubles (PyMem); NULL with an exception set. */
static double *doubles_of(PyObject *seq, Py_ssize_t *n) {
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of floats");
        return NULL;
    }
    *n = PyTuple_GET_SIZE(seq);
    double *out = PyMem_Malloc((size_t)(*n ? *n : 1) * sizeof(double));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        out[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(seq, i));
        if (out[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
    }
    return out;
}

/* Series: one histogram series, its bucket counts (per bucket, not cumulative; the last is
 * +Inf) and the sum of the values, as metrics._Series holds them. */
typedef struct {
    PyObject_HEAD
    double *bounds;
    Py_ssize_t nbounds;
    long long *counts; /* nbounds + 1 */
    double total;
} Series;

static void series_dealloc(Series *s) {
    PyMem_Free(s->bounds);
    PyMem_Free(s->counts);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *series_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *bounds;
    if (!PyArg_ParseTuple(args, "O!:Series", &PyTuple_Type, &bounds)) return NULL;
    Series *s = (Series *)type->tp_alloc(type, 0);
    if (s == NULL) return NULL;
    s->bounds = doubles_of(bounds, &s->nbounds);
    s->counts = s->bounds == NULL ? NULL : PyMem_Calloc((size_t)s->nbounds + 1, sizeof(long long));
    if (s->counts == NULL) {
        if (s->bounds != NULL) PyErr_NoMemory();
        Py_DECREF(s);
        return NULL;
    }
    s->total = 0.0;
    return (PyObject *)s;
}

static PyObject *series_observe(Series *s, PyObject *value) {
    double x = PyFloat_CheckExact(value) ? PyFloat_AS_DOUBLE(value) : PyFloat_AsDouble(value);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    s->counts[bisect_left_d(s->bounds, s->nbounds, x)]++; /* le: value <= bound */
    s->total += x;
    Py_RETURN_NONE;
}

static PyObject *series_counts(Series *s, void *closure) {
    PyObject *out = PyList_New(s->nbounds + 1);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i <= s->nbounds; i++) {
        PyObject *n = PyLong_FromLongLong(s->counts[i]);
        if (n == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, n);
    }
    return out;
}

static PyObject *series_total(Series *s, void *closure) { return PyFloat_FromDouble(s->total); }

static PyMethodDef series_methods[] = {
    {"observe", (PyCFunction)series_observe, METH_O, "observe(value): one more value in its bucket and the sum."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef series_getset[] = {
    {"counts", (getter)series_counts, NULL, "A new list of the counts per bucket (not cumulative; last: +Inf).",
     NULL},
    {"total", (getter)series_total, NULL, "The sum of the values observed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SeriesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scalyproxy._scan.Series",
    .tp_basicsize = sizeof(Series),
    .tp_dealloc = (destructor)series_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Series(bounds: tuple[float, ...]): one histogram series (bisect_left on the bounds).",
    .tp_methods = series_methods,
    .tp_getset = series_getset,
    .tp_new = series_new,
};

/* RowOps: the hot figures of a profile row, written through the __slots__ of its class
 * (their offsets read once from the class's member descriptors; only rows of exactly that
 * class are touched, anything else is left to Python). */
enum { ROW_COUNT, ROW_ALLOWED, ROW_LAST_SEEN, ROW_LATENCY, ROW_LATENCY_SUM, ROW_SLOTS };
static const char *const ROW_SLOT_NAMES[ROW_SLOTS] = {"count", "allowed", "last_seen", "latency", "latency_sum"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t offset[ROW_SLOTS];
    double *ends;
    Py_ssize_t nends;
    PyObject *observe_name;
} RowOps;

#define ROW_SLOT(row, ops, i) ((PyObject **)((char *)(row) + (ops)->offset[i]))

static int rowops_traverse(RowOps *r, visitproc visit, void *arg) {
    Py_VISIT(r->cls);
    return 0;
}

static int rowops_clear(RowOps *r) {
    Py_CLEAR(r->cls);
    return 0;
}

static void rowops_dealloc(RowOps *r) {
    PyObject_GC_UnTrack(r);
    rowops_clear(r);
    Py_CLEAR(r->observe_name);
    PyMem_Free(r->ends);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *rowops_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *cls, *ends;
    if (!PyArg_ParseTuple(args, "O!O!:RowOps", &PyType_Type, &cls, &PyTuple_Type, &ends)) return NULL;
    RowOps *r = (RowOps *)type->tp_alloc(type, 0);
    if (r == NULL) return NULL;
    r->cls = (PyTypeObject *)Py_NewRef(cls);
    for (int i = 0; i < ROW_SLOTS; i++) {
        PyObject *d = PyDict_GetItemString(r->cls->tp_dict, ROW_SLOT_NAMES[i]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "RowOps: %s.%s is not a slot of its own", r->cls->tp_name,
                         ROW_SLOT_NAMES[i]);
            Py_DECREF(r);
            return NULL;
        }
        r->offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    r->ends = doubles_of(ends, &r->nends);
    r->observe_name = PyUnicode_InternFromString("observe");
    if (r->ends == NULL || r->observe_name == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

/* x + 1 as Python's `x += 1` gives it (a new reference). */
static PyObject *plus_one(PyObject *x) {
    if (PyLong_CheckExact(x)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (!overflow && v != -1 && v < LLONG_MAX) return PyLong_FromLongLong(v + 1);
        if (v == -1 && PyErr_Occurred()) return NULL;
    }
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) return NULL;
    PyObject *out = PyNumber_InPlaceAdd(x, one);
    Py_DECREF(one);
    return out;
}

/* time.time(), computed as it does (_PyTime_AsSecondsDouble of the system clock in ns). */
static PyObject *wall_clock(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    double d = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
    return PyFloat_FromDouble(d);
}

static inline void set_slot(PyObject **slot, PyObject *value) { /* steals value */
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
}

PyDoc_STRVAR(rowops_count_doc,
             "count(apps, app, data, marker) -> Row | int | None\n\n"
             "An allowed command of the fast path (data: its bytes, scanned by fast_decide) counted in\n"
             "its row, apps[app][shape_hash(data, marker, True)], whose count and allowed go up by one and\n"
             "last_seen becomes time.time(). Having changed nothing: the shape id when there is no such\n"
             "row, None when the shape is Python's to say or the row is not of the class.");

static PyObject *rowops_count(RowOps *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "count(apps: dict, app, data, marker: bytes)");
        return NULL;
    }
    PyObject *id = shape_of_message(args[2], args[3], 1, NULL);
    if (id == NULL || id == Py_None) return id;
    PyObject *rows = PyDict_GetItemWithError(args[0], args[1]); /* borrowed */
    if (rows == NULL || !PyDict_CheckExact(rows)) {
        if (!PyErr_Occurred()) return id; /* no row yet: the caller makes it, knowing its id */
        Py_DECREF(id);
        return NULL;
    }
    PyObject *row = PyDict_GetItemWithError(rows, id); /* borrowed */
    if (row == NULL) {
        if (!PyErr_Occurred()) return id; /* no row yet: the caller makes it, knowing its id */
        Py_DECREF(id);
        return NULL;
    }
    Py_DECREF(id);
    PyObject **count = ROW_SLOT(row, r, ROW_COUNT), **allowed = ROW_SLOT(row, r, ROW_ALLOWED);
    if (Py_TYPE(row) != r->cls || *count == NULL || *allowed == NULL) Py_RETURN_NONE;
    PyObject *now = wall_clock(), *c = plus_one(*count), *a = c == NULL ? NULL : plus_one(*allowed);
    if (now == NULL || c == NULL || a == NULL) {
        Py_XDECREF(now);
        Py_XDECREF(c);
        Py_XDECREF(a);
        return NULL;
    }
    set_slot(count, c);
    set_slot(allowed, a);
    set_slot(ROW_SLOT(row, r, ROW_LAST_SEEN), now);
    return Py_NewRef(row);
}

PyDoc_STRVAR(rowops_observe_doc,
             "observe(row, seconds) -> None\n\n"
             "Row.observe(seconds) (one round trip in its latency bucket and sum), in C for a row of\n"
             "the class and a float; anything else calls row.observe.");

static PyObject *rowops_observe(RowOps *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "observe(row, seconds)");
        return NULL;
    }
    PyObject *row = args[0], *seconds = args[1];
    PyObject **latency = ROW_SLOT(row, r, ROW_LATENCY), **sum = ROW_SLOT(row, r, ROW_LATENCY_SUM);
    if (Py_TYPE(row) != r->cls || !PyFloat_CheckExact(seconds) || *latency == NULL || !PyDict_CheckExact(*latency) ||
        *sum == NULL || !PyFloat_CheckExact(*sum))
        return PyObject_CallMethodOneArg(row, r->observe_name, seconds);
    double x = PyFloat_AS_DOUBLE(seconds);
    PyObject *index = PyLong_FromSsize_t(bisect_right_d(r->ends, r->nends, x));
    if (index == NULL) return NULL;
    PyObject *old = PyDict_GetItemWithError(*latency, index), *n; /* borrowed */
    if (old == NULL && PyErr_Occurred()) n = NULL;
    else n = old == NULL ? PyLong_FromLong(1) : plus_one(old);
    PyObject *total = n == NULL ? NULL : PyFloat_FromDouble(PyFloat_AS_DOUBLE(*sum) + x);
    int failed = total == NULL || PyDict_SetItem(*latency, index, n) < 0;
    Py_DECREF(index);
    Py_XDECREF(n);
    if (failed) {
        Py_XDECREF(total);
        return NULL;
    }
    set_slot(sum, total);
    Py_RETURN_NONE;
}

static PyMethodDef rowops_methods[] = {
    {"count", (PyCFunction)(void (*)(void))rowops_count, METH_FASTCALL, rowops_count_doc},
    {"observe", (PyCFunction)(void (*)(void))rowops_observe, METH_FASTCALL, rowops_observe_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RowOpsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scalyproxy._scan.RowOps",
    .tp_basicsize = sizeof(RowOps),
    .tp_dealloc = (destructor)rowops_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)rowops_traverse,
    .tp_clear = (inquiry)rowops_clear,
    .tp_doc = "RowOps(row_class, ends: tuple[float, ...]): Row's hot figures updated in C (see count, observe).",
    .tp_methods = rowops_methods,
    .tp_new = rowops_new,
};

/* -- the relay's common round trip ---------------------------------------------------
 *
 * ClientLane, UpstreamLane and TrackerLane are the C bases of
 * scalyproxy.server.relay.ClientConnection, relay.UpstreamConnection and
 * scalyproxy.server.stream.ReplyTracker. They hold the fields the common round
 * trip reads as C members (exposed to Python as the slots they were, so every
 * line of Python that reads or writes them is unchanged) and do that round trip
 * in C, exactly as the Python code does it:
 *
 * - ClientLane.data_received: a chunk that is one whole message, nothing
 *   buffered, the upstream up, allowed by fast_decide: the bytes counters, the
 *   hooks.command call, the round-trip bookkeeping (sent_at, awaiting) and the
 *   write upstream. A command fast_decide does not answer goes to
 *   self._handle(make_frame(data)); any other chunk, before anything is done,
 *   to the Python self._chunk_received (the framer path). An Exception raised on
 *   the way goes to self._failed, as the Python try/except does.
 * - ClientLane.from_upstream: a chunk that is exactly one whole reply to forward
 *   (TrackerLane.whole): the write to the client, the hooks.round_trip call, the
 *   counters; any other chunk to self._reply_in_pieces (the tracker's feed).
 * - UpstreamLane.data_received: client.from_upstream(data), without a frame of
 *   Python in between.
 *
 * Everything rarer (moreToCome, a closed upstream transport, injections, drop
 * and capture ids, replies in pieces) calls the Python
 * methods the Python path calls. The hooks stay Python calls, with the same
 * arguments in the same order. The GIL is held throughout.
 */

static struct {
    PyObject *fast_decide;   /* this module's fast_decide function */
    PyObject *relay;         /* the globals of scalyproxy.server.relay (lane_configure) */
    PyObject *s_bytes_in, *s_bytes_out, *s_engine, *s_fast, *s_hooks, *s_command, *s_round_trip,
        *s_config, *s_limits, *s_timeout, *s_transport, *s_is_closing, *s_write, *s_chunk_received,
        *s_failed, *s_handle, *s_send, *s_answered, *s_no_longer_awaiting, *s_reply_in_pieces,
        *s_whole, *s_from_upstream, *s_fast_decide, *s_make_frame, *s_max_pending,
        *s_last_upstream_data;
} lane;


/* time.monotonic(), computed as Python computes it (the same double for the same clock reading) */
static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (ns % 1000000000 == 0) return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

typedef struct {
    PyObject_HEAD
    PyObject *proxy, *transport, *upstream, *framer, *tracker, *closing, *last_activity, *message_started,
        *last_request, *last_reply_end, *sent_at, *awaiting, *max_message_size, *stream_offset;
} ClientLane;

typedef struct {
    PyObject_HEAD
    PyObject *client, *transport;
} UpstreamLane;

typedef struct {
    PyObject_HEAD
    PyObject *remaining, *header, *injections, *max_size, *drop_ids, *capture_ids;
} TrackerLane;

static PyTypeObject ClientLaneType, UpstreamLaneType, TrackerLaneType;

/* A member read as Python reads a slot: unset is an AttributeError. */
static PyObject *member(PyObject *value, PyObject *owner, const char *name) {
    if (value == NULL)
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(owner)->tp_name, name);
    return value;
}

static inline void set_member(PyObject **slot, PyObject *value) {
    Py_INCREF(value);
    Py_XSETREF(*slot, value);
}

/* obj.name += n (the proxy's byte counters); 0 or -1 */
static int add_to(PyObject *obj, PyObject *name, Py_ssize_t n) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    PyObject *step = PyLong_FromSsize_t(n);
    if (step == NULL) {
        Py_DECREF(value);
        return -1;
    }
    PyObject *sum = PyNumber_InPlaceAdd(value, step);
    Py_DECREF(value);
    Py_DECREF(step);
    if (sum == NULL) return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* *slot += n for an int member; 0 or -1 */
static int add_member(PyObject **slot, PyObject *owner, const char *name, Py_ssize_t n) {
    if (member(*slot, owner, name) == NULL) return -1;
    PyObject *step = PyLong_FromSsize_t(n);
    if (step == NULL) return -1;
    PyObject *sum = PyNumber_InPlaceAdd(*slot, step);
    Py_DECREF(step);
    if (sum == NULL) return -1;
    Py_SETREF(*slot, sum);
    return 0;
}

/* self.<name>(args...), discarding the result; 0 or -1 */
static int call_method(PyObject *self, PyObject *name, PyObject *const *args, size_t nargs) {
    PyObject *stack[6];
    stack[0] = self;
    for (size_t i = 0; i < nargs; i++) stack[i + 1] = args[i];
    PyObject *r = PyObject_VectorcallMethod(name, stack, (nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *call_method_result(PyObject *self, PyObject *name) {
    PyObject *stack[1] = {self};
    return PyObject_VectorcallMethod(name, stack, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* transport.is_closing(): 1, 0 or -1 */
static int is_closing(PyObject *transport) {
    PyObject *r = call_method_result(transport, lane.s_is_closing);
    if (r == NULL) return -1;
    int closing = PyObject_IsTrue(r);
    Py_DECREF(r);
    return closing;
}

/* -- TrackerLane -------------------------------------------------------------------- */

/* ReplyTracker.whole on a message already in memory: 1 with *response_to set, 0 (not the
 * common case: nothing consumed), -1 with an error set. */
static int tracker_whole(TrackerLane *t, const uint8_t *m, Py_ssize_t n, int32_t *response_to) {
    PyObject *o = (PyObject *)t;
    int truth;
    if (member(t->remaining, o, "remaining") == NULL) return -1;
    if ((truth = PyObject_IsTrue(t->remaining)) != 0) return truth < 0 ? -1 : 0;
    if (member(t->header, o, "header") == NULL) return -1;
    if ((truth = PyObject_IsTrue(t->header)) != 0) return truth < 0 ? -1 : 0;
    if (n < 16) return 0;
    if (member(t->injections, o, "injections") == NULL) return -1;
    if ((truth = PyObject_IsTrue(t->injections)) != 0) return truth < 0 ? -1 : 0;
    if (read_i32(m) != n) return 0;
    if (member(t->max_size, o, "max_size") == NULL) return -1;
    int overflow;
    long long max_size = PyLong_AsLongLongAndOverflow(t->max_size, &overflow);
    if (max_size == -1 && PyErr_Occurred()) return -1;
    if (overflow == 0 && n > max_size) return 0;
    if (overflow < 0) return 0;
    int32_t rt = read_i32(m + 8);
    PyObject *sets[2] = {t->drop_ids, t->capture_ids};
    const char *names[2] = {"_drop_ids", "_capture_ids"};
    PyObject *key = NULL;
    for (int i = 0; i < 2; i++) {
        if (member(sets[i], o, names[i]) == NULL) goto error;
        if (PyAnySet_Check(sets[i]) && PySet_GET_SIZE(sets[i]) == 0) continue;
        if (key == NULL && (key = PyLong_FromLong(rt)) == NULL) return -1;
        int in = PySequence_Contains(sets[i], key);
        if (in != 0) {
            Py_DECREF(key);
            return in < 0 ? -1 : 0;
        }
    }
    Py_XDECREF(key);
    *response_to = rt;
    return 1;
error:
    Py_XDECREF(key);
    return -1;
}

PyDoc_STRVAR(tracker_whole_doc,
             "whole(data) -> int | None\n\n"
             "The responseTo of data if it is exactly one whole message to forward as it is\n"
             "(see scalyproxy.server.stream.ReplyTracker.whole); None: nothing was consumed.");

static PyObject *tracker_whole_method(TrackerLane *self, PyObject *data) {
    Py_buffer buffer;
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    int32_t rt;
    int r = tracker_whole(self, buffer.buf, buffer.len, &rt);
    PyBuffer_Release(&buffer);
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_NONE;
    return PyLong_FromLong(rt);
}

static int tracker_traverse(TrackerLane *self, visitproc visit, void *arg) {
    Py_VISIT(self->remaining);
    Py_VISIT(self->header);
    Py_VISIT(self->injections);
    Py_VISIT(self->max_size);
    Py_VISIT(self->drop_ids);
    Py_VISIT(self->capture_ids);
    return 0;
}

static int tracker_clear(TrackerLane *self) {
    Py_CLEAR(self->remaining);
    Py_CLEAR(self->header);
    Py_CLEAR(self->injections);
    Py_CLEAR(self->max_size);
    Py_CLEAR(self->drop_ids);
    Py_CLEAR(self->capture_ids);
    return 0;
}

static void tracker_dealloc(TrackerLane *self) {
    PyObject_GC_UnTrack(self);
    tracker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef tracker_members[] = {
    {"remaining", T_OBJECT_EX, offsetof(TrackerLane, remaining), 0, NULL},
    {"header", T_OBJECT_EX, offsetof(TrackerLane, header), 0, NULL},
    {"injections", T_OBJECT_EX, offsetof(TrackerLane, injections), 0, NULL},
    {"max_size", T_OBJECT_EX, offsetof(TrackerLane, max_size), 0, NULL},
    {"_drop_ids", T_OBJECT_EX, offsetof(TrackerLane, drop_ids), 0, NULL},
    {"_capture_ids", T_OBJECT_EX, offsetof(TrackerLane, capture_ids), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef tracker_methods[] = {
    {"whole", (PyCFunction)tracker_whole_method, METH_O, tracker_whole_doc},
    {NULL, NULL, 0, NULL},
};

/* -- ClientLane ------------------------------------------------------------------------ */

/* The request went through: hooks.command was called, ``tag`` is what it returned. What
 * ClientConnection._send does for it, in C when it is the common case. 0 or -1. */
static int lane_send(ClientLane *self, PyObject *data, const uint8_t *m, PyObject *now, PyObject *tag) {
    PyObject *o = (PyObject *)self;
    int32_t rid = read_i32(m + 4);
    int expects_reply = !(m[16] & FLAG_MORE_TO_COME);
    PyObject *upstream = member(self->upstream, o, "upstream");
    if (upstream == NULL) return -1;
    PyObject *transport = NULL;
    if (upstream != Py_None) {
        if (Py_IS_TYPE(upstream, &UpstreamLaneType) || PyObject_TypeCheck(upstream, &UpstreamLaneType)) {
            transport = member(((UpstreamLane *)upstream)->transport, upstream, "transport");
            Py_XINCREF(transport);
        } else {
            transport = PyObject_GetAttr(upstream, lane.s_transport);
        }
        if (transport == NULL) return -1;
    }
    Py_ssize_t max_pending = 0;
    PyObject *max_obj = PyDict_GetItemWithError(lane.relay, lane.s_max_pending);
    if (max_obj == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_NameError, "name 'MAX_PENDING_RTT' is not defined");
    } else {
        max_pending = PyLong_AsSsize_t(max_obj);
    }
    if (PyErr_Occurred()) {
        Py_XDECREF(transport);
        return -1;
    }
    if (!expects_reply || transport == NULL || transport == Py_None || self->sent_at == NULL ||
        !PyDict_CheckExact(self->sent_at)) {
        Py_XDECREF(transport);
        PyObject *args[5] = {data, NULL, expects_reply ? Py_True : Py_False, tag, now};
        if ((args[1] = PyLong_FromLong(rid)) == NULL) return -1;
        int r = call_method(o, lane.s_send, args, 5);
        Py_DECREF(args[1]);
        return r;
    }
    set_member(&self->last_request, now);
    PyObject *key = PyLong_FromLong(rid);
    if (key == NULL) goto error;
    if (PyDict_GET_SIZE(self->sent_at) < max_pending) {
        PyObject *sent = PyTuple_Pack(2, now, tag);
        if (sent == NULL || PyDict_SetItem(self->sent_at, key, sent) < 0) {
            Py_XDECREF(sent);
            goto error;
        }
        Py_DECREF(sent);
    }
    PyObject *config = NULL, *limits = NULL, *timeout = NULL;
    PyObject *proxy = member(self->proxy, o, "proxy");
    if (proxy == NULL || (config = PyObject_GetAttr(proxy, lane.s_config)) == NULL) goto error;
    limits = PyObject_GetAttr(config, lane.s_limits);
    Py_DECREF(config);
    if (limits == NULL) goto error;
    timeout = PyObject_GetAttr(limits, lane.s_timeout);
    Py_DECREF(limits);
    if (timeout == NULL) goto error;
    int waits = PyObject_IsTrue(timeout);
    Py_DECREF(timeout);
    if (waits < 0) goto error;
    if (waits && (member(self->awaiting, o, "awaiting") == NULL || PyObject_SetItem(self->awaiting, key, now) < 0))
        goto error;
    Py_CLEAR(key);
    int closing = is_closing(transport);
    if (closing < 0) goto error;
    if (!closing) {
        PyObject *args[2] = {transport, data};
        PyObject *r = PyObject_VectorcallMethod(lane.s_write, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL) goto error;
        Py_DECREF(r);
    }
    Py_DECREF(transport);
    return 0;
error:
    Py_XDECREF(key);
    Py_DECREF(transport);
    return -1;
}

/* The common case once it is known to be one: 0, or -1 with the error set (for _failed). */
static int lane_whole_request(ClientLane *self, PyObject *data, double started, PyObject *now) {
    PyObject *o = (PyObject *)self, *engine, *table, *verdict;
    PyObject *proxy = member(self->proxy, o, "proxy"), *hooks;
    if (proxy == NULL) return -1;
    Py_INCREF(proxy);
    engine = PyObject_GetAttr(proxy, lane.s_engine);
    table = engine == NULL ? NULL : PyObject_GetAttr(engine, lane.s_fast);
    Py_XDECREF(engine);
    hooks = table == NULL ? NULL : PyObject_GetAttr(proxy, lane.s_hooks);
    Py_DECREF(proxy);
    if (hooks == NULL) {
        Py_XDECREF(table);
        return -1;
    }
    PyObject *args[2] = {data, table};
    verdict = fast_decide(NULL, args, 2);
    Py_DECREF(table);
    if (verdict == NULL || verdict == Py_None) Py_DECREF(hooks);
    if (verdict == NULL) return -1;
    if (verdict == Py_None) { /* the engine decides: self._handle(make_frame(data)) */
        Py_DECREF(verdict);
        PyObject *make_frame = PyDict_GetItemWithError(lane.relay, lane.s_make_frame);
        if (make_frame == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_NameError, "name 'make_frame' is not defined");
            return -1;
        }
        PyObject *frame = PyObject_CallOneArg(make_frame, data);
        if (frame == NULL) return -1;
        int r = call_method(o, lane.s_handle, &frame, 1);
        Py_DECREF(frame);
        return r;
    }
    PyObject *seconds = NULL, *tag = NULL;
    if ((seconds = PyFloat_FromDouble(monotonic_now() - started)) == NULL) goto error;
    PyObject *hook_args[6] = {hooks, o, Py_None, verdict, seconds, data};
    tag = PyObject_VectorcallMethod(lane.s_command, hook_args, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (tag == NULL) goto error;
    Py_DECREF(hooks);
    Py_DECREF(seconds);
    Py_DECREF(verdict);
    int r = lane_send(self, data, (const uint8_t *)PyBytes_AS_STRING(data), now, tag);
    Py_DECREF(tag);
    return r;
error:
    Py_XDECREF(hooks);
    Py_XDECREF(seconds);
    Py_DECREF(verdict);
    return -1;
}

PyDoc_STRVAR(lane_data_received_doc,
             "data_received(data)\n\n"
             "Bytes from the client: one whole message allowed by fast_decide is forwarded\n"
             "here; anything else goes to self._chunk_received (see the comment in _scan.c).");

static PyObject *lane_data_received(ClientLane *self, PyObject *data) {
    PyObject *o = (PyObject *)self;
    PyObject *fd = lane.relay == NULL ? NULL : PyDict_GetItemWithError(lane.relay, lane.s_fast_decide);
    if (fd == NULL && PyErr_Occurred()) return NULL;
    if (fd != lane.fast_decide || !PyBytes_CheckExact(data) || self->closing == NULL || self->framer == NULL ||
        self->upstream == NULL || self->max_message_size == NULL) {
        goto python; /* the Python path (or its AttributeError) */
    }
    if (self->closing != Py_False) {
        int closing = PyObject_IsTrue(self->closing);
        if (closing < 0) return NULL;
        if (closing) Py_RETURN_NONE;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    const uint8_t *m = (const uint8_t *)PyBytes_AS_STRING(data);
    if (self->framer != Py_None || n < 16 || read_i32(m) != n || self->upstream == Py_None) goto python;
    int overflow;
    long long max_size = PyLong_AsLongLongAndOverflow(self->max_message_size, &overflow);
    if (max_size == -1 && PyErr_Occurred()) return NULL;
    if (overflow < 0 || (overflow == 0 && n > max_size)) goto python;

    double started = monotonic_now();
    PyObject *now = PyFloat_FromDouble(started);
    if (now == NULL) return NULL;
    set_member(&self->last_activity, now);
    PyObject *proxy = member(self->proxy, o, "proxy");
    Py_XINCREF(proxy);
    int counted = proxy != NULL && add_to(proxy, lane.s_bytes_in, n) == 0;
    Py_XDECREF(proxy);
    if (!counted || add_member(&self->stream_offset, o, "stream_offset", n) < 0) {
        Py_DECREF(now);
        return NULL;
    }
    if (lane_whole_request(self, data, started, now) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(now);
            return NULL;
        }
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) PyException_SetTraceback(value, tb);
        int r = call_method(o, lane.s_failed, &value, 1);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (r < 0) {
            Py_DECREF(now);
            return NULL;
        }
    }
    Py_DECREF(now);
    set_member(&self->message_started, Py_None);
    Py_RETURN_NONE;
python:
    if (call_method(o, lane.s_chunk_received, &data, 1) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ClientConnection._answered, for a sent_at that is a dict. 0 or -1. */
static int lane_answered(ClientLane *self, int32_t response_to, double now, PyObject *now_obj) {
    PyObject *o = (PyObject *)self;
    PyObject *sent_at = member(self->sent_at, o, "sent_at");
    if (sent_at == NULL) return -1;
    PyObject *key = PyLong_FromLong(response_to);
    if (key == NULL) return -1;
    if (!PyDict_CheckExact(sent_at)) {
        PyObject *args[2] = {key, now_obj};
        int r = call_method(o, lane.s_answered, args, 2);
        Py_DECREF(key);
        return r;
    }
    Py_INCREF(sent_at); /* held across the hook, which may replace it */
    PyObject *sent = PyDict_GetItemWithError(sent_at, key);
    if (sent == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred()) {
            Py_DECREF(sent_at);
            return -1;
        }
    } else {
        Py_INCREF(sent);
        int r = PyDict_DelItem(sent_at, key);
        Py_DECREF(key);
        if (r < 0) {
            Py_DECREF(sent);
            Py_DECREF(sent_at);
            return -1;
        }
        PyObject *proxy = member(self->proxy, o, "proxy"), *hooks = NULL, *seconds = NULL, *result = NULL;
        if (proxy == NULL || !PyTuple_Check(sent) || PyTuple_GET_SIZE(sent) != 2) {
            if (proxy != NULL) PyErr_SetString(PyExc_TypeError, "sent_at: (sent, tag) expected");
            Py_DECREF(sent);
            Py_DECREF(sent_at);
            return -1;
        }
        if ((hooks = PyObject_GetAttr(proxy, lane.s_hooks)) != NULL) {
            PyObject *start = PyTuple_GET_ITEM(sent, 0);
            double t = PyFloat_CheckExact(start) ? PyFloat_AS_DOUBLE(start) : PyFloat_AsDouble(start);
            if (!(t == -1.0 && PyErr_Occurred()) && (seconds = PyFloat_FromDouble(now - t)) != NULL) {
                PyObject *args[3] = {hooks, PyTuple_GET_ITEM(sent, 1), seconds};
                result = PyObject_VectorcallMethod(lane.s_round_trip, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
        }
        Py_XDECREF(hooks);
        Py_XDECREF(seconds);
        Py_DECREF(sent);
        if (result == NULL) {
            Py_DECREF(sent_at);
            return -1;
        }
        Py_DECREF(result);
    }
    if (PyDict_GET_SIZE(sent_at) == 0) PyDict_Clear(sent_at); /* an emptied dict keeps its table */
    Py_DECREF(sent_at);
    return 0;
}

/* ClientConnection._no_longer_awaiting((response_to,), now) for a dict. 0 or -1. */
static int lane_no_longer_awaiting(PyObject *o, PyObject *awaiting, int32_t response_to, PyObject *now) {
    if (PyObject_SetAttr(o, lane.s_last_upstream_data, now) < 0) return -1;
    PyObject *key = PyLong_FromLong(response_to);
    if (key == NULL) return -1;
    int r = PyDict_Contains(awaiting, key);
    if (r > 0) r = PyDict_DelItem(awaiting, key);
    Py_DECREF(key);
    if (r < 0) return -1;
    if (PyDict_GET_SIZE(awaiting) == 0) PyDict_Clear(awaiting);
    return 0;
}

PyDoc_STRVAR(lane_from_upstream_doc,
             "from_upstream(data)\n\n"
             "Bytes from the upstream: exactly one whole reply is forwarded here; anything else\n"
             "goes to self._reply_in_pieces (see the comment in _scan.c).");

static PyObject *lane_from_upstream(ClientLane *self, PyObject *data) {
    PyObject *o = (PyObject *)self;
    PyObject *transport = member(self->transport, o, "transport");
    if (transport == NULL) return NULL;
    if (transport == Py_None) Py_RETURN_NONE;
    Py_INCREF(transport);
    int closing = is_closing(transport);
    if (closing != 0) {
        Py_DECREF(transport);
        if (closing < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *tracker = member(self->tracker, o, "tracker");
    if (tracker == NULL) goto error;
    Py_INCREF(tracker);
    int32_t response_to = 0;
    int whole;
    if (PyBytes_CheckExact(data) && PyObject_TypeCheck(tracker, &TrackerLaneType)) {
        whole = tracker_whole((TrackerLane *)tracker, (const uint8_t *)PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data), &response_to);
    } else {
        PyObject *args[2] = {tracker, data};
        PyObject *r = PyObject_VectorcallMethod(lane.s_whole, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        whole = r == NULL ? -1 : r != Py_None;
        if (r != NULL && r != Py_None) {
            response_to = (int32_t)PyLong_AsLong(r);
            if (response_to == -1 && PyErr_Occurred()) whole = -1;
        }
        Py_XDECREF(r);
    }
    if (whole < 0) goto error_tracker;
    if (whole == 0) {
        PyObject *args[3] = {transport, tracker, data};
        int r = call_method(o, lane.s_reply_in_pieces, args, 3);
        Py_DECREF(tracker);
        Py_DECREF(transport);
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    Py_DECREF(tracker);
    PyObject *args[2] = {transport, data};
    PyObject *r = PyObject_VectorcallMethod(lane.s_write, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(transport);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    double now = monotonic_now();
    PyObject *now_obj = PyFloat_FromDouble(now);
    if (now_obj == NULL) return NULL;
    set_member(&self->last_reply_end, now_obj);
    if (lane_answered(self, response_to, now, now_obj) < 0) goto error_now;
    PyObject *awaiting = member(self->awaiting, o, "awaiting");
    if (awaiting == NULL) goto error_now;
    int waiting = PyDict_CheckExact(awaiting) ? PyDict_GET_SIZE(awaiting) != 0 : PyObject_IsTrue(awaiting);
    if (waiting < 0) goto error_now;
    if (waiting && PyDict_CheckExact(awaiting)) {
        Py_INCREF(awaiting);
        int r = lane_no_longer_awaiting(o, awaiting, response_to, now_obj);
        Py_DECREF(awaiting);
        if (r < 0) goto error_now;
        waiting = 0;
    }
    if (waiting) {
        PyObject *answered = Py_BuildValue("(l)", (long)response_to);
        if (answered == NULL) goto error_now;
        PyObject *call_args[2] = {answered, now_obj};
        int failed = call_method(o, lane.s_no_longer_awaiting, call_args, 2);
        Py_DECREF(answered);
        if (failed < 0) goto error_now;
    }
    Py_DECREF(now_obj);
    PyObject *proxy = member(self->proxy, o, "proxy");
    if (proxy == NULL || add_to(proxy, lane.s_bytes_out, PyObject_Length(data)) < 0) return NULL;
    Py_RETURN_NONE;
error_now:
    Py_DECREF(now_obj);
    return NULL;
error_tracker:
    Py_DECREF(tracker);
error:
    Py_DECREF(transport);
    return NULL;
}

static int client_traverse(ClientLane *self, visitproc visit, void *arg) {
    Py_VISIT(self->proxy);
    Py_VISIT(self->transport);
    Py_VISIT(self->upstream);
    Py_VISIT(self->framer);
    Py_VISIT(self->tracker);
    Py_VISIT(self->closing);
    Py_VISIT(self->last_activity);
    Py_VISIT(self->message_started);
    Py_VISIT(self->last_request);
    Py_VISIT(self->last_reply_end);
    Py_VISIT(self->sent_at);
    Py_VISIT(self->awaiting);
    Py_VISIT(self->max_message_size);
    Py_VISIT(self->stream_offset);
    return 0;
}

static int client_clear(ClientLane *self) {
    Py_CLEAR(self->proxy);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->upstream);
    Py_CLEAR(self->framer);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->closing);
    Py_CLEAR(self->last_activity);
    Py_CLEAR(self->message_started);
    Py_CLEAR(self->last_request);
    Py_CLEAR(self->last_reply_end);
    Py_CLEAR(self->sent_at);
    Py_CLEAR(self->awaiting);
    Py_CLEAR(self->max_message_size);
    Py_CLEAR(self->stream_offset);
    return 0;
}

static void client_dealloc(ClientLane *self) {
    PyObject_GC_UnTrack(self);
    client_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define CLIENT_MEMBER(name, field) {name, T_OBJECT_EX, offsetof(ClientLane, field), 0, NULL}
static PyMemberDef client_members[] = {
    CLIENT_MEMBER("proxy", proxy),
    CLIENT_MEMBER("transport", transport),
    CLIENT_MEMBER("upstream", upstream),
    CLIENT_MEMBER("_framer", framer),
    CLIENT_MEMBER("tracker", tracker),
    CLIENT_MEMBER("closing", closing),
    CLIENT_MEMBER("last_activity", last_activity),
    CLIENT_MEMBER("message_started", message_started),
    CLIENT_MEMBER("last_request", last_request),
    CLIENT_MEMBER("last_reply_end", last_reply_end),
    CLIENT_MEMBER("sent_at", sent_at),
    CLIENT_MEMBER("awaiting", awaiting),
    CLIENT_MEMBER("max_message_size", max_message_size),
    CLIENT_MEMBER("stream_offset", stream_offset),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef client_methods[] = {
    {"data_received", (PyCFunction)lane_data_received, METH_O, lane_data_received_doc},
    {"from_upstream", (PyCFunction)lane_from_upstream, METH_O, lane_from_upstream_doc},
    {NULL, NULL, 0, NULL},
};

/* -- UpstreamLane ------------------------------------------------------------------------ */

static PyObject *upstream_data_received(UpstreamLane *self, PyObject *data) {
    PyObject *client = member(self->client, (PyObject *)self, "client");
    if (client == NULL) return NULL;
    if (PyObject_TypeCheck(client, &ClientLaneType)) {
        /* unless a subclass has its own from_upstream (RawRelayConnection), call ours directly */
        PyObject *found = _PyType_Lookup(Py_TYPE(client), lane.s_from_upstream);
        if (found != NULL && PyObject_TypeCheck(found, &PyMethodDescr_Type) &&
            ((PyMethodDescrObject *)found)->d_method->ml_meth == (PyCFunction)lane_from_upstream) {
            Py_INCREF(client);
            PyObject *r = lane_from_upstream((ClientLane *)client, data);
            Py_DECREF(client);
            return r;
        }
    }
    Py_INCREF(client);
    PyObject *args[2] = {client, data};
    PyObject *r = PyObject_VectorcallMethod(lane.s_from_upstream, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(client);
    return r;
}

static int upstream_traverse(UpstreamLane *self, visitproc visit, void *arg) {
    Py_VISIT(self->client);
    Py_VISIT(self->transport);
    return 0;
}

static int upstream_clear(UpstreamLane *self) {
    Py_CLEAR(self->client);
    Py_CLEAR(self->transport);
    return 0;
}

static void upstream_dealloc(UpstreamLane *self) {
    PyObject_GC_UnTrack(self);
    upstream_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef upstream_members[] = {
    {"client", T_OBJECT_EX, offsetof(UpstreamLane, client), 0, NULL},
    {"transport", T_OBJECT_EX, offsetof(UpstreamLane, transport), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef upstream_methods[] = {
    {"data_received", (PyCFunction)upstream_data_received, METH_O,
     "data_received(data)\n\nBytes from the upstream: self.client.from_upstream(data)."},
    {NULL, NULL, 0, NULL},
};

#define LANE_TYPE(var, cname, ctype, doc, prefix)                                                    \
    static PyTypeObject var = {                                                                  \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "scalyproxy._scan." cname,                      \
        .tp_basicsize = sizeof(ctype),                                                           \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,               \
        .tp_doc = doc,                                                                           \
        .tp_new = PyType_GenericNew,                                                             \
        .tp_dealloc = (destructor)prefix##_dealloc,                                              \
        .tp_traverse = (traverseproc)prefix##_traverse,                                          \
        .tp_clear = (inquiry)prefix##_clear,                                                     \
        .tp_members = prefix##_members,                                                          \
        .tp_methods = prefix##_methods,                                                          \
    }

LANE_TYPE(ClientLaneType, "ClientLane", ClientLane,
          "The C base of relay.ClientConnection: its hot fields and its common round trip.", client);
LANE_TYPE(UpstreamLaneType, "UpstreamLane", UpstreamLane,
          "The C base of relay.UpstreamConnection: replies go to the client's C lane.", upstream);
LANE_TYPE(TrackerLaneType, "TrackerLane", TrackerLane,
          "The C base of stream.ReplyTracker: the fields whole() reads, and whole().", tracker);

PyDoc_STRVAR(lane_configure_doc,
             "lane_configure(namespace)\n\n"
             "The globals of scalyproxy.server.relay: ClientLane reads fast_decide (anything but\n"
             "this module's: the Python path) and make_frame there at each message.");

static PyObject *lane_configure(PyObject *module, PyObject *namespace) {
    if (!PyDict_Check(namespace)) {
        PyErr_SetString(PyExc_TypeError, "lane_configure(namespace: dict)");
        return NULL;
    }
    Py_INCREF(namespace);
    Py_XSETREF(lane.relay, namespace);
    Py_RETURN_NONE;
}

/* At module init: the types and the interned names. 0 or -1. */
static int lane_init(PyObject *module) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&lane.s_bytes_in, "bytes_in"}, {&lane.s_bytes_out, "bytes_out"}, {&lane.s_engine, "engine"},
        {&lane.s_fast, "fast"}, {&lane.s_hooks, "hooks"}, {&lane.s_command, "command"},
        {&lane.s_round_trip, "round_trip"}, {&lane.s_config, "config"}, {&lane.s_limits, "limits"},
        {&lane.s_timeout, "upstream_timeout_s"}, {&lane.s_transport, "transport"},
        {&lane.s_is_closing, "is_closing"}, {&lane.s_write, "write"},
        {&lane.s_chunk_received, "_chunk_received"}, {&lane.s_failed, "_failed"}, {&lane.s_handle, "_handle"},
        {&lane.s_send, "_send"}, {&lane.s_answered, "_answered"},
        {&lane.s_no_longer_awaiting, "_no_longer_awaiting"}, {&lane.s_reply_in_pieces, "_reply_in_pieces"},
        {&lane.s_whole, "whole"}, {&lane.s_from_upstream, "from_upstream"},
        {&lane.s_fast_decide, "fast_decide"}, {&lane.s_make_frame, "make_frame"},
        {&lane.s_max_pending, "MAX_PENDING_RTT"}, {&lane.s_last_upstream_data, "last_upstream_data"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) return -1;
    lane.fast_decide = PyObject_GetAttr(module, lane.s_fast_decide);
    if (lane.fast_decide == NULL) return -1;
    PyTypeObject *types[] = {&ClientLaneType, &UpstreamLaneType, &TrackerLaneType};
    const char *type_names[] = {"ClientLane", "UpstreamLane", "TrackerLane"};
    for (int i = 0; i < 3; i++) {
        if (PyType_Ready(types[i]) < 0) return -1;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, type_names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
    return 0;
}

static PyMethodDef methods[] = {
    {"fast_decide", (PyCFunction)(void (*)(void))fast_decide, METH_FASTCALL, fast_decide_doc},
    {"shape_hash", (PyCFunction)(void (*)(void))shape_hash, METH_FASTCALL, shape_hash_doc},
    {"shape_key", (PyCFunction)(void (*)(void))shape_key, METH_FASTCALL, shape_key_doc},
    {"shape_digest", shape_digest, METH_O, shape_digest_doc},
    {"compile_schema", compile_schema, METH_O, compile_schema_doc},
    {"schema_unconfirmed", schema_unconfirmed, METH_VARARGS, schema_unconfirmed_doc},
    {"command_view", (PyCFunction)(void (*)(void))command_view, METH_FASTCALL | METH_KEYWORDS, command_view_doc},
    {"scan_document", scan_document, METH_O, scan_document_doc},
    {"scan_run", scan_run, METH_O, scan_run_doc},
    {"fast_view", fast_view, METH_O, fast_view_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"lane_configure", lane_configure, METH_O, lane_configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "scalyproxy._scan",
    "BSON scanning and the OP_MSG command view in C (see _scan.c).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    shape_hash_init();
    state.op_msg = PyLong_FromLong(2013);
    state.db_key = PyUnicode_InternFromString("$db");
    state.max_key = PyUnicode_InternFromString("max_message_size");
    if (state.op_msg == NULL || state.db_key == NULL || state.max_key == NULL) return NULL;
    if (PyType_Ready(&SeriesType) < 0 || PyType_Ready(&RowOpsType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Series", (PyObject *)&SeriesType) < 0 ||
        PyModule_AddObjectRef(module, "RowOps", (PyObject *)&RowOpsType) < 0 || lane_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
