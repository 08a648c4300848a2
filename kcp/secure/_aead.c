/* kcp.secure._aead: AES-GCM and ChaCha20-Poly1305 on OpenSSL's EVP interface, one kept context per
 * direction and key.
 *
 * A drop-in for cryptography's AESGCM(key) and ChaCha20Poly1305(key) as secure mode uses them:
 * encrypt(nonce, data, associated_data) -> ciphertext + 16-byte tag, decrypt(...) -> plaintext or
 * cryptography.exceptions.InvalidTag. Each object initialises one EVP_CIPHER_CTX for encryption and
 * one for decryption with its key once; a call only sets the nonce (see set_nonce), feeds the
 * associated data and the data, and finishes. That per-call setup is what makes
 * it cheaper than cryptography's, which prepares a context on every call. seal(header, nonce,
 * plaintext) is encrypt with the header as associated data, returning header + ciphertext + tag in
 * one allocation (secure mode's packet); open(packet, header_len, nonce) is its inverse, the header
 * and the body read in place (no slices).
 *
 * The tag is checked by OpenSSL (EVP_CTRL_AEAD_SET_TAG, then EVP_DecryptFinal_ex); a failed check
 * returns no plaintext. Calls hold the GIL: they are short, and the contexts are per object.
 *
 * No OpenSSL header is needed to build this: the few EVP functions are declared below with the
 * prototypes they have had since OpenSSL 1.1.0 (their ABI is the same in 1.1 and 3.x), on opaque
 * types. setup.py links libcrypto, the library Python's own ssl module loads (only built on Linux).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <string.h>

/* ------------------------------------------------------------------------------ OpenSSL, declared */

typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct engine_st ENGINE;

extern EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
extern void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx); /* cleanses the key schedule */
extern int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
extern const EVP_CIPHER *EVP_aes_128_gcm(void);
extern const EVP_CIPHER *EVP_aes_192_gcm(void);
extern const EVP_CIPHER *EVP_aes_256_gcm(void);
extern const EVP_CIPHER *EVP_chacha20_poly1305(void);
extern int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                              const unsigned char *key, const unsigned char *iv);
extern int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                             const unsigned char *in, int inl);
extern int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
extern int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                              const unsigned char *key, const unsigned char *iv);
extern int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                             const unsigned char *in, int inl);
extern int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
extern void ERR_clear_error(void);
extern const char *OpenSSL_version(int type);

/* include/openssl/evp.h: EVP_CTRL_AEAD_GET_TAG = EVP_CTRL_GCM_GET_TAG, the SET one likewise */
#define AEAD_CTRL_GET_TAG 0x10
#define AEAD_CTRL_SET_TAG 0x11
/* EVP_CTRL_AEAD_SET_IV_FIXED = EVP_CTRL_GCM_SET_IV_FIXED; with length -1 it sets the whole IV */
#define AEAD_CTRL_SET_IV_FIXED 0x12
#define OPENSSL_VERSION_TEXT_TYPE 0 /* OpenSSL_version(OPENSSL_VERSION) */

#define NONCE_LEN 12 /* the default IV length of both ciphers: never set per context */
#define TAG_LEN 16

/* ------------------------------------------------------------------------------ module state */

/* Single-phase module (m_size -1): these live as long as the process. */
static PyObject *InvalidTag = NULL;  /* cryptography.exceptions.InvalidTag */
static PyObject *AESGCM_Type = NULL;
static PyObject *ChaCha_Type = NULL;

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    int gcm; /* AES-GCM with OpenSSL's IV control (see set_nonce) */
} AeadObject;

/* ------------------------------------------------------------------------------ arguments */

/* A read-only view of a bytes-like argument: bytes directly, anything else through the buffer
 * protocol (memoryview slices of a datagram, bytearray). */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    int held; /* view must be released */
    Py_buffer view;
} Arg;

static int
arg_get(PyObject *obj, Arg *a, int none_ok)
{
    a->held = 0;
    if (obj == Py_None && none_ok) {
        a->p = NULL;
        a->n = 0;
        return 0;
    }
    if (PyBytes_CheckExact(obj)) {
        a->p = (const unsigned char *)PyBytes_AS_STRING(obj);
        a->n = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_SIMPLE) < 0)
        return -1;
    a->held = 1;
    a->p = (const unsigned char *)a->view.buf;
    a->n = a->view.len;
    return 0;
}

static void
arg_release(Arg *a)
{
    if (a->held) {
        PyBuffer_Release(&a->view);
        a->held = 0;
    }
}

/* Positional or keyword arguments of a METH_FASTCALL | METH_KEYWORDS method taking exactly three. */
static int
parse3(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
       const char *const names[3], PyObject *out[3])
{
    Py_ssize_t i, k, nkw;
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 3 arguments (%zd given)", fname, nargs);
        return -1;
    }
    for (i = 0; i < 3; i++)
        out[i] = i < nargs ? args[i] : NULL;
    nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (i = 0; i < 3; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                found = (int)i;
                break;
            }
        }
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return -1;
        }
        if (out[found] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (i = 0; i < 3; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static int
check_lengths(const Arg *nonce, const Arg *data, const Arg *aad)
{
    if (nonce->n != NONCE_LEN) {
        PyErr_SetString(PyExc_ValueError, "Nonce must be 12 bytes");
        return -1;
    }
    if (data->n > INT_MAX || aad->n > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "Data or associated data too long. Max 2**31 - 1 bytes");
        return -1;
    }
    return 0;
}

static PyObject *
openssl_failed(const char *what)
{
    ERR_clear_error();
    PyErr_Format(PyExc_RuntimeError, "OpenSSL %s failed", what);
    return NULL;
}

/* ------------------------------------------------------------------------------ the AEAD core */

/* Set the nonce of a keyed context for the next packet. AES-GCM takes it as the whole IV through
 * EVP_CTRL_AEAD_SET_IV_FIXED with length -1 (as TLS restores a record's IV): in OpenSSL 3 an
 * EVP_*Init_ex call with only an IV asks the provider for the IV length through its parameter
 * interface on every call, which cost more than the AES-GCM of a small packet in a fan-out's
 * profile. ChaCha20-Poly1305 has no such control: its nonce goes through Init_ex. */
static int
set_nonce(AeadObject *self, EVP_CIPHER_CTX *ctx, const unsigned char *nonce, int enc)
{
    if (self->gcm)
        return EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_SET_IV_FIXED, -1, (void *)nonce) == 1;
    if (enc)
        return EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1;
    return EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1;
}

/* Whether this OpenSSL's AES-GCM takes a whole IV through the control (OpenSSL 3's provider does;
 * 1.1's legacy cipher accepts the control but then refuses to encrypt): found out once, on the first
 * AES-GCM object, by sealing an empty message both ways and comparing the tags. -1: not yet known. */
static int gcm_iv_control = -1;

static int
probe_gcm_iv_control(EVP_CIPHER_CTX *ctx)
{
    static const unsigned char nonce[NONCE_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    unsigned char tag1[TAG_LEN], tag2[TAG_LEN], scratch[TAG_LEN];
    int n = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptFinal_ex(ctx, scratch, &n) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_GET_TAG, TAG_LEN, tag1) != 1)
        return -1; /* the ordinary path failed: the caller reports it */
    if (EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_SET_IV_FIXED, -1, (void *)nonce) != 1
        || EVP_EncryptFinal_ex(ctx, scratch, &n) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_GET_TAG, TAG_LEN, tag2) != 1) {
        ERR_clear_error();
        return 0;
    }
    return memcmp(tag1, tag2, TAG_LEN) == 0;
}

/* prefix (may be empty) + AEAD(nonce, data, aad) + tag, in one new bytes object. */
static PyObject *
seal_into_new(AeadObject *self, const Arg *prefix, const Arg *nonce, const Arg *data, const Arg *aad)
{
    EVP_CIPHER_CTX *ctx = self->enc;
    unsigned char *out, *ct;
    unsigned char scratch[TAG_LEN];
    int n = 0, total = 0;
    PyObject *res;
    if (prefix->n > PY_SSIZE_T_MAX - TAG_LEN - data->n) {
        PyErr_SetString(PyExc_OverflowError, "header and data too long");
        return NULL;
    }
    res = PyBytes_FromStringAndSize(NULL, prefix->n + data->n + TAG_LEN);
    if (res == NULL)
        return NULL;
    out = (unsigned char *)PyBytes_AS_STRING(res);
    if (prefix->n)
        memcpy(out, prefix->p, (size_t)prefix->n);
    ct = out + prefix->n;
    if (!set_nonce(self, ctx, nonce->p, 1))
        goto fail;
    if (aad->n && EVP_EncryptUpdate(ctx, NULL, &n, aad->p, (int)aad->n) != 1)
        goto fail;
    if (data->n) {
        if (EVP_EncryptUpdate(ctx, ct, &n, data->p, (int)data->n) != 1)
            goto fail;
        total = n;
    }
    /* both ciphers are stream modes: Update wrote every byte and Final writes none */
    if (EVP_EncryptFinal_ex(ctx, scratch, &n) != 1 || n != 0 || total != (int)data->n)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_GET_TAG, TAG_LEN, ct + data->n) != 1)
        goto fail;
    return res;
fail:
    Py_DECREF(res);
    return openssl_failed("encryption");
}

static PyObject *
open_into_new(AeadObject *self, const Arg *nonce, const Arg *data, const Arg *aad)
{
    EVP_CIPHER_CTX *ctx = self->dec;
    unsigned char tag[TAG_LEN];
    unsigned char scratch[TAG_LEN];
    Py_ssize_t ct_len;
    unsigned char *out;
    int n = 0, total = 0;
    PyObject *res;
    if (data->n < TAG_LEN) {
        PyErr_SetNone(InvalidTag);
        return NULL;
    }
    ct_len = data->n - TAG_LEN;
    memcpy(tag, data->p + ct_len, TAG_LEN);
    res = PyBytes_FromStringAndSize(NULL, ct_len);
    if (res == NULL)
        return NULL;
    out = (unsigned char *)PyBytes_AS_STRING(res); /* the shared b"" when ct_len is 0: never written */
    if (!set_nonce(self, ctx, nonce->p, 0))
        goto invalid;
    if (EVP_CIPHER_CTX_ctrl(ctx, AEAD_CTRL_SET_TAG, TAG_LEN, tag) != 1)
        goto invalid;
    if (aad->n && EVP_DecryptUpdate(ctx, NULL, &n, aad->p, (int)aad->n) != 1)
        goto invalid;
    if (ct_len) {
        if (EVP_DecryptUpdate(ctx, out, &n, data->p, (int)ct_len) != 1)
            goto invalid;
        total = n;
    }
    /* OpenSSL checks the tag here (constant time); any failure before it counts as one too */
    if (total != (int)ct_len || EVP_DecryptFinal_ex(ctx, scratch, &n) != 1 || n != 0)
        goto invalid;
    return res;
invalid:
    /* not authentic: the unauthenticated plaintext is wiped, never returned */
    ERR_clear_error();
    if (ct_len)
        memset(out, 0, (size_t)ct_len);
    Py_DECREF(res);
    PyErr_SetNone(InvalidTag);
    return NULL;
}

/* ------------------------------------------------------------------------------ methods */

static const char *const CRYPT_ARGS[3] = {"nonce", "data", "associated_data"};
static const char *const SEAL_ARGS[3] = {"header", "nonce", "plaintext"};
static const char *const OPEN_ARGS[3] = {"packet", "header_len", "nonce"};

/* The three bytes-like arguments of encrypt, decrypt and seal (the third may be None when
 * `third_none_ok`: associated_data). On failure nothing is held. */
static int
get3(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
     const char *const names[3], int third_none_ok, Arg a[3])
{
    PyObject *o[3];
    int i;
    if (parse3(args, nargs, kwnames, fname, names, o) < 0)
        return -1;
    for (i = 0; i < 3; i++) {
        if (arg_get(o[i], &a[i], i == 2 && third_none_ok) < 0) {
            while (--i >= 0)
                arg_release(&a[i]);
            return -1;
        }
    }
    return 0;
}

static void
release3(Arg a[3])
{
    int i;
    for (i = 0; i < 3; i++)
        arg_release(&a[i]);
}

static PyObject *
aead_encrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Arg a[3], none; /* nonce, data, associated_data */
    PyObject *res = NULL;
    if (get3(args, nargs, kwnames, "encrypt", CRYPT_ARGS, 1, a) < 0)
        return NULL;
    none.p = NULL;
    none.n = 0;
    none.held = 0;
    if (check_lengths(&a[0], &a[1], &a[2]) == 0)
        res = seal_into_new(self, &none, &a[0], &a[1], &a[2]);
    release3(a);
    return res;
}

static PyObject *
aead_decrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Arg a[3]; /* nonce, data, associated_data */
    PyObject *res = NULL;
    if (get3(args, nargs, kwnames, "decrypt", CRYPT_ARGS, 1, a) < 0)
        return NULL;
    if (check_lengths(&a[0], &a[1], &a[2]) == 0)
        res = open_into_new(self, &a[0], &a[1], &a[2]);
    release3(a);
    return res;
}

static PyObject *
aead_seal(AeadObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Arg a[3]; /* header (also the associated data), nonce, plaintext */
    PyObject *res = NULL;
    if (get3(args, nargs, kwnames, "seal", SEAL_ARGS, 0, a) < 0)
        return NULL;
    if (check_lengths(&a[1], &a[2], &a[0]) == 0)
        res = seal_into_new(self, &a[0], &a[1], &a[2], &a[0]);
    release3(a);
    return res;
}

static PyObject *
aead_open(AeadObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    Arg packet, nonce, header, body;
    Py_ssize_t header_len;
    PyObject *res = NULL;
    if (parse3(args, nargs, kwnames, "open", OPEN_ARGS, a) < 0)
        return NULL;
    header_len = PyLong_AsSsize_t(a[1]);
    if (header_len == -1 && PyErr_Occurred())
        return NULL;
    if (arg_get(a[0], &packet, 0) < 0)
        return NULL;
    if (arg_get(a[2], &nonce, 0) < 0)
        goto done_packet;
    if (header_len < 0 || header_len > packet.n) {
        PyErr_SetString(PyExc_ValueError, "header_len must be within the packet");
        goto done_nonce;
    }
    header.p = packet.p;
    header.n = header_len;
    header.held = 0;
    body.p = packet.p + header_len;
    body.n = packet.n - header_len;
    body.held = 0;
    if (check_lengths(&nonce, &body, &header) == 0)
        res = open_into_new(self, &nonce, &body, &header);
done_nonce:
    arg_release(&nonce);
done_packet:
    arg_release(&packet);
    return res;
}

/* The packet-numbered forms: the header is prefix + pn (8 bytes, big-endian) and the nonce is iv
 * XOR pn (pn in the last 8 of its 12 bytes, big-endian): secure mode's transport packets, built
 * here without the header's and the nonce's intermediate objects. */

#define MAX_PREFIX 64

static int
nonce_for(const Arg *iv, unsigned long long pn, unsigned char nonce[NONCE_LEN])
{
    int i;
    if (iv->n != NONCE_LEN) {
        PyErr_SetString(PyExc_ValueError, "IV must be 12 bytes");
        return -1;
    }
    memcpy(nonce, iv->p, NONCE_LEN);
    for (i = 0; i < 8; i++)
        nonce[NONCE_LEN - 1 - i] ^= (unsigned char)(pn >> (8 * i));
    return 0;
}

static PyObject *
aead_seal_pn(AeadObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Arg prefix, iv, data, header, nonce;
    unsigned char hbuf[MAX_PREFIX + 8], nbuf[NONCE_LEN];
    unsigned long long pn;
    PyObject *res = NULL;
    int i;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "seal_pn() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    pn = PyLong_AsUnsignedLongLong(args[1]);
    if (pn == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (arg_get(args[0], &prefix, 0) < 0)
        return NULL;
    if (arg_get(args[2], &iv, 0) < 0)
        goto done_prefix;
    if (arg_get(args[3], &data, 0) < 0)
        goto done_iv;
    if (prefix.n > MAX_PREFIX) {
        PyErr_SetString(PyExc_ValueError, "prefix longer than 64 bytes");
        goto done;
    }
    if (nonce_for(&iv, pn, nbuf) < 0)
        goto done;
    memcpy(hbuf, prefix.p, (size_t)prefix.n);
    for (i = 0; i < 8; i++)
        hbuf[prefix.n + i] = (unsigned char)(pn >> (56 - 8 * i));
    header.p = hbuf;
    header.n = prefix.n + 8;
    header.held = 0;
    nonce.p = nbuf;
    nonce.n = NONCE_LEN;
    nonce.held = 0;
    if (check_lengths(&nonce, &data, &header) == 0)
        res = seal_into_new(self, &header, &nonce, &data, &header);
done:
    arg_release(&data);
done_iv:
    arg_release(&iv);
done_prefix:
    arg_release(&prefix);
    return res;
}

static PyObject *
aead_open_pn(AeadObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Arg packet, iv, header, body, nonce;
    unsigned char nbuf[NONCE_LEN];
    unsigned long long pn;
    Py_ssize_t header_len;
    PyObject *res = NULL;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "open_pn() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    header_len = PyLong_AsSsize_t(args[1]);
    if (header_len == -1 && PyErr_Occurred())
        return NULL;
    pn = PyLong_AsUnsignedLongLong(args[2]);
    if (pn == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (arg_get(args[0], &packet, 0) < 0)
        return NULL;
    if (arg_get(args[3], &iv, 0) < 0)
        goto done_packet;
    if (header_len < 0 || header_len > packet.n) {
        PyErr_SetString(PyExc_ValueError, "header_len must be within the packet");
        goto done;
    }
    if (nonce_for(&iv, pn, nbuf) < 0)
        goto done;
    header.p = packet.p;
    header.n = header_len;
    header.held = 0;
    body.p = packet.p + header_len;
    body.n = packet.n - header_len;
    body.held = 0;
    nonce.p = nbuf;
    nonce.n = NONCE_LEN;
    nonce.held = 0;
    if (check_lengths(&nonce, &body, &header) == 0)
        res = open_into_new(self, &nonce, &body, &header);
done:
    arg_release(&iv);
done_packet:
    arg_release(&packet);
    return res;
}

static PyMethodDef aead_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))aead_encrypt, METH_FASTCALL | METH_KEYWORDS,
     "encrypt(nonce, data, associated_data) -> ciphertext + 16-byte tag"},
    {"decrypt", (PyCFunction)(void (*)(void))aead_decrypt, METH_FASTCALL | METH_KEYWORDS,
     "decrypt(nonce, data, associated_data) -> plaintext; raises InvalidTag"},
    {"seal", (PyCFunction)(void (*)(void))aead_seal, METH_FASTCALL | METH_KEYWORDS,
     "seal(header, nonce, plaintext) -> header + ciphertext + tag, the header as associated data"},
    {"open", (PyCFunction)(void (*)(void))aead_open, METH_FASTCALL | METH_KEYWORDS,
     "open(packet, header_len, nonce) -> plaintext of packet[header_len:], packet[:header_len] as "
     "associated data; raises InvalidTag"},
    {"seal_pn", (PyCFunction)(void (*)(void))aead_seal_pn, METH_FASTCALL,
     "seal_pn(prefix, pn, iv, plaintext) -> seal(prefix + pn (8 bytes, big-endian), iv XOR pn, plaintext)"},
    {"open_pn", (PyCFunction)(void (*)(void))aead_open_pn, METH_FASTCALL,
     "open_pn(packet, header_len, pn, iv) -> open(packet, header_len, iv XOR pn); raises InvalidTag"},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------------ objects */

static void
aead_dealloc(AeadObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->enc != NULL)
        EVP_CIPHER_CTX_free(self->enc);
    if (self->dec != NULL)
        EVP_CIPHER_CTX_free(self->dec);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp); /* a heap type's instances own a reference to it */
}

static PyObject *
aead_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"key", NULL};
    PyObject *key_obj;
    Arg key;
    const EVP_CIPHER *cipher = NULL;
    AeadObject *self;
    int ok;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:__new__", kwlist, &key_obj))
        return NULL;
    if (arg_get(key_obj, &key, 0) < 0)
        return NULL;
    if ((PyObject *)type == ChaCha_Type) {
        if (key.n == 32)
            cipher = EVP_chacha20_poly1305();
        else
            PyErr_SetString(PyExc_ValueError, "ChaCha20Poly1305 key must be 32 bytes.");
    } else if (key.n == 16) {
        cipher = EVP_aes_128_gcm();
    } else if (key.n == 24) {
        cipher = EVP_aes_192_gcm();
    } else if (key.n == 32) {
        cipher = EVP_aes_256_gcm();
    } else {
        PyErr_SetString(PyExc_ValueError, "AESGCM key must be 128, 192, or 256 bits.");
    }
    if (cipher == NULL) {
        if (!PyErr_Occurred())
            openssl_failed("cipher lookup");
        arg_release(&key);
        return NULL;
    }
    self = (AeadObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        arg_release(&key);
        return NULL;
    }
    self->gcm = (PyObject *)type != ChaCha_Type;
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    ok = self->enc != NULL && self->dec != NULL
         && EVP_EncryptInit_ex(self->enc, cipher, NULL, key.p, NULL) == 1
         && EVP_DecryptInit_ex(self->dec, cipher, NULL, key.p, NULL) == 1;
    arg_release(&key);
    if (ok && self->gcm) {
        if (gcm_iv_control < 0) {
            int probed = probe_gcm_iv_control(self->enc);
            ok = probed >= 0;
            if (ok)
                gcm_iv_control = probed;
        }
        self->gcm = gcm_iv_control == 1;
    }
    if (!ok) {
        Py_DECREF(self); /* dealloc frees whichever context exists */
        return openssl_failed("cipher initialisation");
    }
    return (PyObject *)self;
}

#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

static PyType_Slot aesgcm_slots[] = {
    {Py_tp_new, aead_new},
    {Py_tp_dealloc, aead_dealloc},
    {Py_tp_methods, aead_methods},
    {Py_tp_doc, "AESGCM(key): AES-GCM with a 16, 24 or 32-byte key, 12-byte nonces, 16-byte tags."},
    {0, NULL},
};

static PyType_Slot chacha_slots[] = {
    {Py_tp_new, aead_new},
    {Py_tp_dealloc, aead_dealloc},
    {Py_tp_methods, aead_methods},
    {Py_tp_doc, "ChaCha20Poly1305(key): ChaCha20-Poly1305 (RFC 8439) with a 32-byte key."},
    {0, NULL},
};

static PyType_Spec aesgcm_spec = {
    "kcp.secure._aead.AESGCM", sizeof(AeadObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, aesgcm_slots,
};

static PyType_Spec chacha_spec = {
    "kcp.secure._aead.ChaCha20Poly1305", sizeof(AeadObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, chacha_slots,
};

/* ------------------------------------------------------------------------------ module */

static PyObject *
openssl_version(PyObject *module, PyObject *unused)
{
    const char *v = OpenSSL_version(OPENSSL_VERSION_TEXT_TYPE);
    return PyUnicode_FromString(v != NULL ? v : "OpenSSL");
}

static PyMethodDef module_methods[] = {
    {"openssl_version", openssl_version, METH_NOARGS,
     "openssl_version() -> the version text of the libcrypto this module runs on"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef aead_module = {
    PyModuleDef_HEAD_INIT, "kcp.secure._aead",
    "AES-GCM and ChaCha20-Poly1305 with kept OpenSSL contexts (drop-ins for cryptography's).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__aead(void)
{
    PyObject *m, *exceptions;
    if (InvalidTag == NULL) {
        exceptions = PyImport_ImportModule("cryptography.exceptions");
        if (exceptions == NULL)
            return NULL;
        InvalidTag = PyObject_GetAttrString(exceptions, "InvalidTag");
        Py_DECREF(exceptions);
        if (InvalidTag == NULL)
            return NULL;
    }
    if (AESGCM_Type == NULL && (AESGCM_Type = PyType_FromSpec(&aesgcm_spec)) == NULL)
        return NULL;
    if (ChaCha_Type == NULL && (ChaCha_Type = PyType_FromSpec(&chacha_spec)) == NULL)
        return NULL;
    m = PyModule_Create(&aead_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(AESGCM_Type);
    if (PyModule_AddObject(m, "AESGCM", AESGCM_Type) < 0) {
        Py_DECREF(AESGCM_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(ChaCha_Type);
    if (PyModule_AddObject(m, "ChaCha20Poly1305", ChaCha_Type) < 0) {
        Py_DECREF(ChaCha_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
