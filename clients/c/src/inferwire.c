/* libinferwire: InferWire protocol v1 client. See include/inferwire.h. */
#define _POSIX_C_SOURCE 200809L
#include "inferwire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "inferwire/v1/frames.pb-c.h"
#include "inferwire/v1/inference.pb-c.h"
#include "inferwire/v1/status.pb-c.h"

enum {
    FT_HELLO = 1, FT_REQUEST = 2, FT_RESPONSE = 3, FT_ERROR = 4,
    FT_CANCEL = 5, FT_PING = 6, FT_PONG = 7, FT_GOAWAY = 8, FT_AUTH = 9
};
enum { FL_COMPRESSED = 1, FL_COMPRESS_RESPONSE = 2 };
#define HDR 16
#define DEFAULT_MAX_FRAME (64u * 1024u * 1024u)
#define COMPRESS_MIN 256

typedef struct pending {
    uint32_t id;
    uint16_t method;
    bool abandoned;      /* local deadline passed: CANCEL sent, answer discarded */
    uint64_t deadline_ns;/* monotonic; 0: none */
} pending;

typedef struct cnode {
    struct cnode *next;
    iw_completion c;
    bool decode_infer;
} cnode;

/* One connection: a socket, maybe TLS over it, its HELLO, principal, buffers and
 * the requests in flight on it. An iw_conn has a current one (cur) and may have
 * older ones still answering requests after a GOAWAY (draining). */
typedef struct tr {
    iw_conn *own;
    struct tr *next;      /* in own->draining */
    int fd;
    iw_hello hello;
    char *server_name, *server_version;
    bool have_hello;
    /* Authentication: the principal the server named (HELLO or AUTH answer). */
    Inferwire__V1__Principal *principal_msg;
    iw_principal principal;
    bool auth_pending;    /* AUTH sent, the server's answer not read yet */
    /* TLS (NULL ssl: plaintext). All bytes go through io_read/io_write. */
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    BIO_METHOD *bio_meth;
    bool ssl_failed;      /* fatal TLS error: no close_notify at close */
    bool read_wants_write;/* SSL_read needs the socket writable */
    bool write_wants_read;/* SSL_write needs the socket readable */
    char alpn[64];
    uint8_t hs_peek[16];  /* the first bytes the server sent during the handshake */
    size_t hs_peek_len;
    char verify_detail[300]; /* the certificate verification failure, from verify_cb */
    iw_error write_err;   /* a failed write, reported unless what the server sent says more */
    bool broken;          /* no more answers will arrive */
    bool goaway;          /* server accepts no new requests */
    iw_error fatal;       /* why broken / goaway */
    pending *pend;
    size_t npend, cappend;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    uint64_t wqueued, wsent; /* bytes ever queued in / written from wbuf */
} tr;

/* Connections that received GOAWAY UNAVAILABLE with requests in flight keep being
 * read after a new connection replaced them; beyond this many the oldest is closed. */
#define MAX_DRAINING 4

struct iw_conn {
    /* What a new connection needs: copies, owned here. */
    iw_options opts;
    char *host;
    uint16_t port;
    char peer[300];       /* "host:port", for messages */
    bool tls;
    char *ca_file, *cert_file, *key_file, *server_name;
    char *token;          /* the last token the server accepted (or the one connected with) */
    tr *cur;              /* the connection calls go to; never NULL (maybe over) */
    tr *draining;         /* older connections still answering, newest first */
    size_t ndraining;
    uint64_t reconnects;
    uint32_t next_id;     /* request ids are unique across all connections */
    cnode *chead, *ctail; /* completions not yet taken */
    iw_stats stats;       /* summed over every connection */
};

/* ------------------------------------------------------------------ utils */

/* Expands the macro here, so it reports the library's version, not the caller's header. */
const char *inferwire_version(void)
{
    return INFERWIRE_VERSION_STRING;
}

static void set_err(iw_error *err, iw_status_code code, const char *fmt, ...)
{
    if (!err) return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static void copy_err(iw_error *dst, const iw_error *src)
{
    if (dst && src) *dst = *src;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}
static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

const char *iw_status_name(iw_status_code code)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    if ((int)code < 0 || (int)code > 16) return "UNKNOWN_CODE";
    return names[code];
}

size_t iw_datatype_size(iw_datatype dt)
{
    switch (dt) {
    case IW_BOOL: case IW_UINT8: case IW_INT8: return 1;
    case IW_FP8_E4M3FN: case IW_FP8_E4M3FNUZ: case IW_FP8_E5M2: case IW_FP8_E5M2FNUZ:
    case IW_FP8_E8M0: case IW_FP4_E2M1: case IW_INT4: case IW_UINT4: case IW_INT2: case IW_UINT2: return 1;
    case IW_INT16: case IW_UINT16: case IW_FP16: case IW_BF16: return 2;
    case IW_INT32: case IW_UINT32: case IW_FP32: return 4;
    case IW_INT64: case IW_UINT64: case IW_FP64: return 8;
    default: return 0;
    }
}

static uint32_t recv_limit(const tr *c)
{
    if (c->own->opts.max_recv_frame_size) return c->own->opts.max_recv_frame_size;
    if (c->have_hello && c->hello.max_frame_size) return c->hello.max_frame_size;
    return DEFAULT_MAX_FRAME;
}

static uint32_t send_limit(const tr *c)
{
    return (c->have_hello && c->hello.max_frame_size) ? c->hello.max_frame_size
                                                      : DEFAULT_MAX_FRAME;
}

/* -------------------------------------------------------- completions */

static void push_completion(iw_conn *c, cnode *n)
{
    n->next = NULL;
    if (c->ctail) c->ctail->next = n; else c->chead = n;
    c->ctail = n;
}

static cnode *new_node(uint32_t id, uint16_t method, iw_status_code code, const char *msg)
{
    cnode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->c.request_id = id;
    n->c.method = method;
    n->c.error.code = code;
    size_t k = msg ? strlen(msg) : 0;
    if (k >= sizeof n->c.error.message) k = sizeof n->c.error.message - 1;
    if (k) memcpy(n->c.error.message, msg, k);
    n->c.error.message[k] = 0;
    return n;
}

static cnode *take_completion(iw_conn *c, bool any, uint32_t id)
{
    cnode *prev = NULL;
    for (cnode *n = c->chead; n; prev = n, n = n->next) {
        if (any || n->c.request_id == id) {
            if (prev) prev->next = n->next; else c->chead = n->next;
            if (c->ctail == n) c->ctail = prev;
            return n;
        }
    }
    return NULL;
}

void iw_completion_clear(iw_completion *c)
{
    if (!c) return;
    iw_result_free(c->result);
    free(c->payload);
    memset(c, 0, sizeof *c);
}

/* ----------------------------------------------------------- pending */

static pending *find_pending(tr *c, uint32_t id, size_t *idx)
{
    for (size_t i = 0; i < c->npend; i++)
        if (c->pend[i].id == id) { if (idx) *idx = i; return &c->pend[i]; }
    return NULL;
}

static void remove_pending(tr *c, size_t idx)
{
    c->pend[idx] = c->pend[--c->npend];
}

/* The connection a request is in flight on (also abandoned ones), or NULL. */
static tr *find_tr(iw_conn *c, uint32_t id, pending **p)
{
    pending *q = find_pending(c->cur, id, NULL);
    if (q) { if (p) *p = q; return c->cur; }
    for (tr *t = c->draining; t; t = t->next)
        if ((q = find_pending(t, id, NULL))) { if (p) *p = q; return t; }
    return NULL;
}

/* Fails everything in flight (connection over). */
static void fail_all_pending(tr *c, const char *why)
{
    for (size_t i = 0; i < c->npend; i++) {
        if (c->pend[i].abandoned) continue;
        cnode *n = new_node(c->pend[i].id, c->pend[i].method, IW_UNAVAILABLE, why);
        if (n) push_completion(c->own, n);
    }
    c->npend = 0;
}

static const char *unprefixed(const char *msg)
{
    return strncmp(msg, "client: ", 8) == 0 ? msg + 8 : msg;
}

/* The connection is over: records why (the arguments may point into c->fatal) and
 * fails the requests in flight on it. */
static void mark_broken(tr *c, iw_status_code code, const char *fmt, ...)
{
    if (!c->broken) {
        char msg[sizeof c->fatal.message];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        c->broken = true;
        c->fatal.code = code;
        memcpy(c->fatal.message, msg, sizeof msg);
    }
    char why[600];
    snprintf(why, sizeof why, "client: connection ended before an answer (%s)", unprefixed(c->fatal.message));
    fail_all_pending(c, why);
}

/* ---------------------------------------------------------- I/O layer */

/* Every byte of a connection goes through io_read() and io_write(): the socket
 * itself, or OpenSSL on top of it. Both return a byte count (> 0), 0 (io_read:
 * end of stream), IO_AGAIN (it would block; for TLS, read_wants_write or
 * write_wants_read say which readiness to wait for) or IO_FAILED (io_read: the
 * connection is marked broken; io_write: see write_failed()). */
enum { IO_AGAIN = -1, IO_FAILED = -2 };

static void tls_reason(tr *c, int ssl_err, int saved_errno, char *buf, size_t size);

/* A fatal TLS error on an established TLS connection; before HELLO it is still
 * the handshake as far as the user can tell (TLS 1.3 servers refuse a client
 * certificate after the client's side of the handshake is done). */
static void tls_broken(tr *c, int ssl_err, int saved_errno)
{
    char why[450];
    tls_reason(c, ssl_err, saved_errno, why, sizeof why);
    c->ssl_failed = true;
    if (c->have_hello)
        mark_broken(c, IW_UNAVAILABLE, "client: TLS error on the connection to %s: %s", c->own->peer, why);
    else
        mark_broken(c, IW_UNAVAILABLE, "client: TLS handshake with %s failed: %s", c->own->peer, why);
}

static ssize_t io_read(tr *c, void *buf, size_t len)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t n = recv(c->fd, buf, len, 0);
            if (n >= 0) return n;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_AGAIN;
            mark_broken(c, IW_UNAVAILABLE, "client: recv failed: %s", strerror(errno));
            return IO_FAILED;
        }
    }
    c->read_wants_write = false;
    if (len > INT_MAX) len = INT_MAX;
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, (int)len);
    int saved = errno;
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->read_wants_write = true;
        return IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        return 0;
    default:
        tls_broken(c, e, saved);
        return IO_FAILED;
    }
}

static ssize_t io_write(tr *c, const void *buf, size_t len)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (n > 0) return n;
            if (n == 0) return IO_AGAIN;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_AGAIN;
            set_err(&c->write_err, IW_UNAVAILABLE, "client: send failed: %s", strerror(errno));
            return IO_FAILED;
        }
    }
    /* A write that would block is retried later with the same bytes at the same
     * offset of wbuf (which may have moved or grown since: SSL_MODE_ACCEPT_MOVING_
     * WRITE_BUFFER, SSL_MODE_ENABLE_PARTIAL_WRITE). */
    c->write_wants_read = false;
    if (len > INT_MAX) len = INT_MAX;
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, (int)len);
    int saved = errno;
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_WRITE) return IO_AGAIN;
    if (e == SSL_ERROR_WANT_READ) {
        c->write_wants_read = true;
        return IO_AGAIN;
    }
    if (e != SSL_ERROR_SYSCALL) {
        tls_broken(c, e, saved);
        return IO_FAILED;
    }
    /* the socket failed (the server closed it): what it sent before may say why */
    char why[450];
    tls_reason(c, e, saved, why, sizeof why);
    set_err(&c->write_err, IW_UNAVAILABLE, c->have_hello ? "client: TLS error on the connection to %s: %s"
                                                        : "client: TLS handshake with %s failed: %s",
            c->own->peer, why);
    return IO_FAILED;
}

static int pump_read(tr *c);

/* io_write() failed. A server that refuses a connection says why and closes it
 * (a GOAWAY, or a TLS alert such as "certificate required"); a write after that
 * fails with a reset, while the reason is still waiting to be read. So read it,
 * and report the write's error only when there was nothing to read. */
static void write_failed(tr *c)
{
    if (!c->broken) pump_read(c);
    if (!c->broken) mark_broken(c, c->write_err.code, "%s", c->write_err.message);
}

/* ------------------------------------------------------------ writing */

static bool wreserve(tr *c, size_t more)
{
    if (c->woff > 0 && c->woff == c->wlen) c->woff = c->wlen = 0;
    if (c->wlen + more <= c->wcap) return true;
    size_t cap = c->wcap ? c->wcap : 4096;
    while (cap < c->wlen + more) cap *= 2;
    uint8_t *p = realloc(c->wbuf, cap);
    if (!p) return false;
    c->wbuf = p;
    c->wcap = cap;
    return true;
}

/* Appends a whole frame to the output buffer. */
static bool queue_frame(tr *c, uint8_t type, uint8_t flags, uint16_t method, uint32_t id,
                        uint32_t timeout_us, const void *payload, size_t len)
{
    if (!wreserve(c, HDR + len)) return false;
    uint8_t *h = c->wbuf + c->wlen;
    put32(h, (uint32_t)len);
    h[4] = type;
    h[5] = flags;
    put16(h + 6, method);
    put32(h + 8, id);
    put32(h + 12, timeout_us);
    if (len) memcpy(h + HDR, payload, len);
    c->wlen += HDR + len;
    c->wqueued += HDR + len;
    return true;
}

/* Writes the output buffer; while the socket is not writable, keeps reading
 * (the server stops reading while we do not read its answers). timeout_ms -1:
 * until done; 0: only what goes without blocking. Returns -1 on failure. */
static int flush(tr *c, int timeout_ms)
{
    uint64_t end = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    while (c->woff < c->wlen) {
        if (c->broken) return -1;
        ssize_t n = io_write(c, c->wbuf + c->woff, c->wlen - c->woff);
        if (n > 0) {
            c->woff += (size_t)n;
            c->wsent += (uint64_t)n;
            c->own->stats.bytes_sent += (uint64_t)n;
            continue;
        }
        if (n == IO_FAILED) {
            write_failed(c);
            return -1;
        }
        if (timeout_ms == 0) return 0;
        int wait = -1;
        if (timeout_ms > 0) {
            uint64_t t = now_ns();
            if (t >= end) return 0;
            wait = (int)((end - t) / 1000000ull) + 1;
        }
        /* TLS may need to read before it can write (write_wants_read) */
        struct pollfd p = {.fd = c->fd, .events = c->write_wants_read ? POLLIN : POLLOUT | POLLIN};
        int r = poll(&p, 1, wait);
        if (r < 0 && errno != EINTR) {
            mark_broken(c, IW_UNAVAILABLE, "client: poll failed: %s", strerror(errno));
            return -1;
        }
        if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
            if (pump_read(c) < 0) return -1;
    }
    c->woff = c->wlen = 0;
    return 0;
}

/* ------------------------------------------------------- compression */

static int deflate_buf(const uint8_t *in, size_t len, int level, uint8_t **out, size_t *outlen)
{
    uLongf cap = compressBound((uLong)len);
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return -1;
    if (compress2(buf, &cap, in, (uLong)len, level ? level : Z_DEFAULT_COMPRESSION) != Z_OK) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = cap;
    return 0;
}

/* Inflates a zlib stream, refusing more than limit bytes. 0 ok, -1 bad, -2 too big. */
static int inflate_buf(const uint8_t *in, size_t len, size_t limit, uint8_t **out, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK) return -1;
    size_t cap = len * 4 + 64, n = 0;
    if (cap > limit + 1) cap = limit + 1;
    uint8_t *buf = malloc(cap);
    if (!buf) { inflateEnd(&zs); return -1; }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    int rc = -1;
    for (;;) {
        if (n == cap) {
            if (cap > limit) { rc = -2; break; }
            size_t ncap = cap * 2;
            if (ncap > limit + 1) ncap = limit + 1;
            uint8_t *p = realloc(buf, ncap);
            if (!p) break;
            buf = p;
            cap = ncap;
        }
        zs.next_out = buf + n;
        zs.avail_out = (uInt)(cap - n);
        int z = inflate(&zs, Z_NO_FLUSH);
        n = cap - zs.avail_out;
        if (z == Z_STREAM_END) {
            rc = n > limit ? -2 : 0;
            break;
        }
        if (z != Z_OK && !(z == Z_BUF_ERROR && zs.avail_out == 0)) break;
        if (z == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) break; /* truncated */
    }
    inflateEnd(&zs);
    if (rc != 0) { free(buf); return rc; }
    *out = buf;
    *outlen = n;
    return 0;
}

/* ---------------------------------------------------------- principal */

/* Takes ownership of p (a message unpacked on its own by protobuf-c: the
 * sub-message of an unpacked HELLO or Authenticated, detached from it). */
static void take_principal(tr *c, Inferwire__V1__Principal *p)
{
    if (c->principal_msg) inferwire__v1__principal__free_unpacked(c->principal_msg, NULL);
    c->principal_msg = p;
    memset(&c->principal, 0, sizeof c->principal);
    if (!p) return;
    c->principal.name = p->name ? p->name : "";
    c->principal.roles = (const char *const *)p->roles;
    c->principal.n_roles = p->n_roles;
    c->principal.models = (const char *const *)p->models;
    c->principal.n_models = p->n_models;
    c->principal.expires_unix_seconds = p->expires_unix_seconds;
}

const iw_principal *iw_conn_principal(const iw_conn *c)
{
    return c && c->cur->principal_msg ? &c->cur->principal : NULL;
}

bool iw_principal_has_role(const iw_principal *p, const char *role)
{
    if (!p || !role) return false;
    for (size_t i = 0; i < p->n_roles; i++)
        if (p->roles[i] && strcmp(p->roles[i], role) == 0) return true;
    return false;
}

/* Queues an AUTH frame carrying the token. */
static bool queue_auth(tr *c, const char *token)
{
    Inferwire__V1__Authenticate m;
    inferwire__v1__authenticate__init(&m);
    m.bearer_token = (char *)token;
    size_t len = inferwire__v1__authenticate__get_packed_size(&m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return false;
    inferwire__v1__authenticate__pack(&m, buf);
    bool ok = queue_frame(c, FT_AUTH, 0, 0, 0, 0, buf, len);
    free(buf);
    if (ok) c->auth_pending = true;
    return ok;
}

/* ------------------------------------------------------------ reading */

static void process_frame(tr *c, uint8_t type, uint8_t flags, uint16_t method, uint32_t id,
                          const uint8_t *payload, size_t len)
{
    (void)method; /* answers are matched by id; the pending entry knows the method */
    switch (type) {
    case FT_HELLO: {
        Inferwire__V1__Hello *h = inferwire__v1__hello__unpack(NULL, len, payload);
        if (!h) { mark_broken(c, IW_INTERNAL, "client: HELLO does not parse"); return; }
        free(c->server_name);
        free(c->server_version);
        c->server_name = strdup(h->server_name ? h->server_name : "");
        c->server_version = strdup(h->server_version ? h->server_version : "");
        c->hello.version = h->version;
        c->hello.max_frame_size = h->max_frame_size ? h->max_frame_size : DEFAULT_MAX_FRAME;
        c->hello.max_concurrent_requests = h->max_concurrent_requests ? h->max_concurrent_requests : 1024;
        c->hello.server_name = c->server_name;
        c->hello.server_version = c->server_version;
        c->hello.compression = h->compression;
        c->hello.authentication_required = h->authentication_required;
        c->have_hello = true;
        if (h->principal) { /* the TLS client certificate authenticated the connection */
            take_principal(c, h->principal);
            h->principal = NULL;
        }
        inferwire__v1__hello__free_unpacked(h, NULL);
        return;
    }
    case FT_AUTH: { /* the answer to our AUTH: accepted (refusals are a GOAWAY) */
        Inferwire__V1__Authenticated *a = inferwire__v1__authenticated__unpack(NULL, len, payload);
        if (!a) { mark_broken(c, IW_INTERNAL, "client: AUTH answer does not parse"); return; }
        take_principal(c, a->principal);
        a->principal = NULL;
        inferwire__v1__authenticated__free_unpacked(a, NULL);
        c->auth_pending = false;
        return;
    }
    case FT_RESPONSE:
    case FT_ERROR: {
        size_t idx;
        pending *p = find_pending(c, id, &idx);
        if (!p) return; /* not ours (or already failed): ignore */
        bool abandoned = p->abandoned;
        uint16_t m = p->method;
        remove_pending(c, idx);
        if (abandoned) return;
        cnode *n;
        if (type == FT_ERROR) {
            Inferwire__V1__Status *s = inferwire__v1__status__unpack(NULL, len, payload);
            if (s) {
                n = new_node(id, m, (iw_status_code)s->code, s->message);
                /* answered UNAVAILABLE after the server's GOAWAY: read after it, never run */
                if (n && s->code == INFERWIRE__V1__STATUS_CODE__UNAVAILABLE && c->goaway)
                    n->c.retryable = true;
                inferwire__v1__status__free_unpacked(s, NULL);
            } else {
                n = new_node(id, m, IW_INTERNAL, "client: ERROR payload does not parse");
            }
        } else {
            c->own->stats.responses_received++;
            n = new_node(id, m, IW_OK, "");
            if (n && (flags & FL_COMPRESSED)) {
                c->own->stats.compressed_received++;
                int r = inflate_buf(payload, len, recv_limit(c), &n->c.payload, &n->c.payload_len);
                if (r != 0) {
                    n->c.error.code = r == -2 ? IW_RESOURCE_EXHAUSTED : IW_INTERNAL;
                    snprintf(n->c.error.message, sizeof n->c.error.message,
                             r == -2 ? "client: inflated response exceeds the frame limit"
                                     : "client: compressed response is not valid zlib");
                }
            } else if (n) {
                n->c.payload = malloc(len ? len : 1);
                if (n->c.payload) { memcpy(n->c.payload, payload, len); n->c.payload_len = len; }
                else { n->c.error.code = IW_RESOURCE_EXHAUSTED; snprintf(n->c.error.message, sizeof n->c.error.message, "client: out of memory"); }
            }
            if (n) n->decode_infer = (m == INFERWIRE__V1__METHOD__INFER);
        }
        if (n) push_completion(c->own, n);
        return;
    }
    case FT_PING:
        if (len <= 64) queue_frame(c, FT_PONG, 0, 0, 0, 0, payload, len);
        return;
    case FT_GOAWAY: {
        Inferwire__V1__GoAway *g = inferwire__v1__go_away__unpack(NULL, len, payload);
        iw_status_code code = g ? (iw_status_code)g->code : IW_UNAVAILABLE;
        const char *msg = (g && g->message) ? g->message : "";
        c->goaway = true;
        c->fatal.code = code;
        snprintf(c->fatal.message, sizeof c->fatal.message, "%s", msg);
        if (code != IW_UNAVAILABLE) mark_broken(c, code, "%s", msg);
        if (g) inferwire__v1__go_away__free_unpacked(g, NULL);
        return;
    }
    default:
        return; /* PONG, and frame types from later versions: ignore */
    }
}

/* Reads what is available (non-blocking) and processes complete frames.
 * Returns -1 once the connection is over. */
static int pump_read(tr *c)
{
    if (c->broken) return -1;
    for (;;) {
        if (c->rcap - c->rlen < 65536) {
            size_t cap = c->rcap ? c->rcap * 2 : 131072;
            uint8_t *p = realloc(c->rbuf, cap);
            if (!p) { mark_broken(c, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return -1; }
            c->rbuf = p;
            c->rcap = cap;
        }
        ssize_t n = io_read(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n == IO_FAILED) return -1;
        if (n > 0) {
            c->rlen += (size_t)n;
            c->own->stats.bytes_received += (uint64_t)n;
        }
        /* n == 0: process what we have, then end */
        size_t off = 0;
        while (c->rlen - off >= HDR) {
            const uint8_t *h = c->rbuf + off;
            uint32_t len = get32(h);
            if (len > recv_limit(c)) {
                mark_broken(c, IW_RESOURCE_EXHAUSTED,
                            "client: frame of %u bytes exceeds the receive limit", len);
                return -1;
            }
            if (c->rlen - off < HDR + (size_t)len) break;
            process_frame(c, h[4], h[5], get16(h + 6), get32(h + 8), h + HDR, len);
            off += HDR + (size_t)len;
            if (c->broken) return -1;
        }
        if (off) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
        if (n == 0) {
            if (c->goaway)
                mark_broken(c, c->fatal.code, "%s", c->fatal.message);
            else
                mark_broken(c, IW_UNAVAILABLE, "client: server closed the connection");
            return -1;
        }
        if (n < 0) return 0;
    }
}

/* Waits up to timeout_ms for input (-1 forever) and processes it; also
 * flushes pending output (PONGs, CANCELs). */
static int pump(tr *c, int timeout_ms)
{
    if (c->broken) return -1;
    if (c->woff < c->wlen && flush(c, 0) < 0) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->woff < c->wlen || c->read_wants_write) p.events |= POLLOUT;
    int r = poll(&p, 1, timeout_ms);
    if (r < 0) {
        if (errno == EINTR) return 0;
        mark_broken(c, IW_UNAVAILABLE, "client: poll failed: %s", strerror(errno));
        return -1;
    }
    if (r > 0 && ((p.revents & (POLLIN | POLLHUP | POLLERR)) ||
                  (c->read_wants_write && (p.revents & POLLOUT))))
        if (pump_read(c) < 0) return -1;
    if (c->woff < c->wlen && flush(c, 0) < 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------- TLS */

/* The BIO under SSL: the connection's non-blocking socket, written with
 * MSG_NOSIGNAL (a peer that went away must not raise SIGPIPE in the caller's
 * process) and recording the first bytes of the server's answer during the
 * handshake, to recognise a plaintext InferWire answer (PROTOCOL.md 1a). */
static int bio_write(BIO *b, const char *buf, int len)
{
    tr *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do n = send(c->fd, buf, (size_t)len, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    tr *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do n = recv(c->fd, buf, (size_t)len, 0); while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    if (n > 0 && !SSL_is_init_finished(c->ssl)) {
        size_t k = sizeof c->hs_peek - c->hs_peek_len;
        if (k > (size_t)n) k = (size_t)n;
        memcpy(c->hs_peek + c->hs_peek_len, buf, k);
        c->hs_peek_len += k;
    }
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b; (void)num; (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* nothing is buffered here */
}

/* Names in a certificate's subject alternative names, "DNS:a, IP:1.2.3.4". */
static void san_list(X509 *cert, char *buf, size_t size)
{
    buf[0] = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) return;
    size_t used = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && used < size; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char one[INET6_ADDRSTRLEN + 8] = "";
        if (g->type == GEN_DNS) {
            const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
            int l = ASN1_STRING_length(g->d.dNSName);
            if (d && l > 0) snprintf(one, sizeof one, "DNS:%.*s", l > 40 ? 40 : l, (const char *)d);
        } else if (g->type == GEN_IPADD) {
            int l = ASN1_STRING_length(g->d.iPAddress);
            char ip[INET6_ADDRSTRLEN];
            if ((l == 4 || l == 16) &&
                inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), ip,
                          sizeof ip))
                snprintf(one, sizeof one, "IP:%s", ip);
        }
        if (one[0]) used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", one);
    }
    GENERAL_NAMES_free(names);
}

/* Records why the server's certificate failed verification (the first failure),
 * for the handshake's error message; OpenSSL's verdict stands. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    if (ok) return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tr *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!c || c->verify_detail[0]) return ok;
    int e = X509_STORE_CTX_get_error(x);
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    char subject[160] = "?", issuer[160] = "?";
    if (cert && !X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject))
        snprintf(subject, sizeof subject, "?");
    if (cert && !X509_NAME_oneline(X509_get_issuer_name(cert), issuer, sizeof issuer))
        snprintf(issuer, sizeof issuer, "?");
    if ((e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH) && cert) {
        char names[200];
        san_list(cert, names, sizeof names);
        snprintf(c->verify_detail, sizeof c->verify_detail, " (the certificate names %s)",
                 names[0] ? names : "no subject alternative names");
    } else if ((e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID) && cert) {
        struct tm tm;
        const ASN1_TIME *t = e == X509_V_ERR_CERT_HAS_EXPIRED ? X509_get0_notAfter(cert)
                                                                : X509_get0_notBefore(cert);
        char when[40] = "?";
        if (t && ASN1_TIME_to_tm(t, &tm) == 1) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        snprintf(c->verify_detail, sizeof c->verify_detail, " (%s, %s %s)", subject,
                 e == X509_V_ERR_CERT_HAS_EXPIRED ? "valid until" : "valid from", when);
    } else {
        snprintf(c->verify_detail, sizeof c->verify_detail, " (%s, issued by %s)", subject, issuer);
    }
    return ok;
}

/* The reason of an OpenSSL error code, for messages. */
static const char *ossl_reason(unsigned long e)
{
    if (ERR_SYSTEM_ERROR(e)) return strerror(ERR_GET_REASON(e));
    const char *r = ERR_reason_error_string(e);
    return r ? r : "unknown OpenSSL error";
}

/* Why a TLS operation failed, from the certificate verification, OpenSSL's error
 * queue or errno; clears the error queue. */
static void tls_reason(tr *c, int ssl_err, int saved_errno, char *buf, size_t size)
{
    long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    if (v != X509_V_OK) {
        snprintf(buf, size, "certificate verify failed: %s%s", X509_verify_cert_error_string(v),
                 c->verify_detail);
    } else if (e) {
        const char *what = ossl_reason(e);
        const char *hint = NULL;
        if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
            switch (ERR_GET_REASON(e)) {
            case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
                hint = "the server requires a client certificate (give cert_file and key_file)";
                break;
            case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
            case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
            case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
            case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
            case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
            case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
            case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
                hint = "the server rejected the client certificate";
                break;
            case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
                hint = "the server does not accept the ALPN protocol inferwire/1";
                break;
            case SSL_R_WRONG_VERSION_NUMBER:
            case SSL_R_PACKET_LENGTH_TOO_LONG:
            case SSL_R_HTTP_REQUEST:
                hint = "the port does not speak TLS";
                break;
            }
        }
        if (hint) snprintf(buf, size, "%s (%s)", hint, what);
        else snprintf(buf, size, "%s", what);
    } else if (ssl_err == SSL_ERROR_SYSCALL && saved_errno) {
        snprintf(buf, size, "%s", strerror(saved_errno));
    } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, size, "the server closed the connection");
    } else {
        snprintf(buf, size, "OpenSSL error %d", ssl_err);
    }
    ERR_clear_error();
}

/* The handshake failed: did the server answer in plaintext? A plaintext InferWire
 * port answers a TLS ClientHello with a GOAWAY frame (PROTOCOL.md 1a), whose rest
 * is read here (OpenSSL stops after a record header). */
static bool plaintext_answer(tr *c, uint64_t end, char *why, size_t size,
                             iw_status_code *code)
{
    if (c->hs_peek_len == 0 || (c->hs_peek[0] >= 20 && c->hs_peek[0] <= 24)) return false;
    *code = IW_UNAVAILABLE;
    uint8_t frame[HDR + 1024];
    size_t have = c->hs_peek_len;
    memcpy(frame, c->hs_peek, have);
    uint32_t len = have >= 4 ? get32(frame) : UINT32_MAX;
    if (have >= 5 && frame[4] == FT_GOAWAY && len <= sizeof frame - HDR) {
        uint64_t stop = now_ns() + 2000000000ull;
        if (stop > end) stop = end;
        while (have < HDR + len) {
            uint64_t t = now_ns();
            if (t >= stop) break;
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int r = poll(&p, 1, (int)((stop - t) / 1000000ull) + 1);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            ssize_t n = recv(c->fd, frame + have, HDR + len - have, 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (n <= 0) break;
            have += (size_t)n;
        }
        if (have == HDR + len) {
            Inferwire__V1__GoAway *g = inferwire__v1__go_away__unpack(NULL, len, frame + HDR);
            if (g) {
                *code = (iw_status_code)g->code;
                snprintf(why, size, "the port does not speak TLS; it answered in plaintext "
                         "InferWire with GOAWAY %s: %s", iw_status_name(*code),
                         g->message ? g->message : "");
                inferwire__v1__go_away__free_unpacked(g, NULL);
                return true;
            }
        }
    }
    char hex[3 * sizeof c->hs_peek + 1] = "";
    for (size_t i = 0; i < c->hs_peek_len && i < 8; i++)
        snprintf(hex + 3 * i, sizeof hex - 3 * i, "%s%02x", i ? " " : "", c->hs_peek[i]);
    snprintf(why, size, "the port does not speak TLS (it answered with bytes %s …)", hex);
    return true;
}

static int tls_setup_failed(tr *c, iw_error *err, iw_status_code code, const char *what,
                            const char *file)
{
    unsigned long e = ERR_peek_error();
    set_err(err, code, "client: %s%s%s: %s", what, file ? " " : "", file ? file : "",
            e ? ossl_reason(e) : "OpenSSL error");
    ERR_clear_error();
    (void)c;
    return -1;
}

/* Prepares c->ssl for a handshake with the host (or the server_name option): trust
 * roots, client certificate, ALPN, host name verification and SNI. The files are
 * read again for every connection. */
static int tls_setup(tr *c, iw_error *err)
{
    static const unsigned char alpn[] = "\x0b" "inferwire/1";
    const iw_conn *o = c->own;
    const char *name = o->server_name && *o->server_name ? o->server_name : o->host;
    ERR_clear_error();
    c->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ssl_ctx) return tls_setup_failed(c, err, IW_INTERNAL, "TLS: SSL_CTX_new failed", NULL);
    SSL_CTX *ctx = c->ssl_ctx;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return tls_setup_failed(c, err, IW_INTERNAL, "TLS: cannot require TLS 1.2", NULL);
    /* A server that closes without close_notify ends the stream like TCP does; the
     * framing catches a connection cut inside a frame. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    if (o->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot load CA file", o->ca_file);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return tls_setup_failed(c, err, IW_INTERNAL, "TLS: cannot load the system's trust store", NULL);
    }
    if (o->cert_file) {
        const char *key = o->key_file ? o->key_file : o->cert_file;
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot load client certificate", o->cert_file);
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot load private key", key);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: the private key does not match the certificate", o->cert_file);
    }
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1) != 0) /* 0 is success here */
        return tls_setup_failed(c, err, IW_INTERNAL, "TLS: cannot set ALPN", NULL);

    c->ssl = SSL_new(ctx);
    if (!c->ssl) return tls_setup_failed(c, err, IW_INTERNAL, "TLS: SSL_new failed", NULL);
    if (SSL_set_app_data(c->ssl, c) != 1)
        return tls_setup_failed(c, err, IW_INTERNAL, "TLS: SSL_set_app_data failed", NULL);
    unsigned char addr[16];
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1) {
        /* an IP address: matched against the certificate's IP names; no SNI (RFC 6066) */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot verify against IP address", name);
    } else {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(c->ssl, name) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot verify against host name", name);
        if (SSL_set_tlsext_host_name(c->ssl, name) != 1)
            return tls_setup_failed(c, err, IW_INVALID_ARGUMENT, "TLS: cannot send SNI", name);
    }

    int index = BIO_get_new_index();
    if (index == -1) return tls_setup_failed(c, err, IW_INTERNAL, "TLS: BIO_get_new_index failed", NULL);
    c->bio_meth = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "inferwire socket");
    if (!c->bio_meth) return tls_setup_failed(c, err, IW_INTERNAL, "TLS: BIO_meth_new failed", NULL);
    if (BIO_meth_set_write(c->bio_meth, bio_write) != 1 ||
        BIO_meth_set_read(c->bio_meth, bio_read) != 1 ||
        BIO_meth_set_ctrl(c->bio_meth, bio_ctrl) != 1)
        return tls_setup_failed(c, err, IW_INTERNAL, "TLS: BIO_meth_set failed", NULL);
    BIO *b = BIO_new(c->bio_meth);
    if (!b) return tls_setup_failed(c, err, IW_INTERNAL, "TLS: BIO_new failed", NULL);
    BIO_set_data(b, c);
    BIO_set_init(b, 1);
    SSL_set_bio(c->ssl, b, b); /* c->ssl owns b now */
    return 0;
}

/* Runs the handshake on the non-blocking socket until it is done or end passes. */
static int tls_handshake(tr *c, uint64_t end, uint32_t cto, iw_error *err)
{
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        int saved = errno;
        if (r == 1) break;
        int e = SSL_get_error(c->ssl, r);
        short events = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (!events) {
            char why[450];
            iw_status_code code = IW_UNAVAILABLE;
            c->ssl_failed = true;
            if (plaintext_answer(c, end, why, sizeof why, &code)) ERR_clear_error();
            else tls_reason(c, e, saved, why, sizeof why);
            set_err(err, code, "client: TLS handshake with %s failed: %s", c->own->peer, why);
            return -1;
        }
        uint64_t t = now_ns();
        if (t >= end) {
            set_err(err, IW_DEADLINE_EXCEEDED, "client: TLS handshake with %s did not finish within %u ms",
                    c->own->peer, cto);
            return -1;
        }
        struct pollfd p = {.fd = c->fd, .events = events};
        if (poll(&p, 1, (int)((end - t) / 1000000ull) + 1) < 0 && errno != EINTR) {
            set_err(err, IW_UNAVAILABLE, "client: poll failed: %s", strerror(errno));
            return -1;
        }
    }
    const unsigned char *proto = NULL;
    unsigned int plen = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    if (proto && plen < sizeof c->alpn) {
        memcpy(c->alpn, proto, plen);
        c->alpn[plen] = 0;
    }
    return 0;
}

const char *iw_conn_tls_version(const iw_conn *c)
{
    return c && c->cur->ssl ? SSL_get_version(c->cur->ssl) : NULL;
}

const char *iw_conn_alpn(const iw_conn *c)
{
    return c && c->cur->alpn[0] ? c->cur->alpn : NULL;
}

/* --------------------------------------------------------- connecting */

static uint64_t check_deadlines(iw_conn *c);

/* Reads and writes until the HELLO (and the answer to an AUTH) arrived, the
 * connection failed, or end passed. 0 done, -1 failed (*err filled). */
static int await_handshake(tr *c, uint64_t end, uint32_t cto, iw_error *err)
{
    while (!c->broken && !c->goaway && !(c->have_hello && !c->auth_pending)) {
        uint64_t t = now_ns();
        if (t >= end) {
            set_err(err, IW_DEADLINE_EXCEEDED, "client: no %s from %s within %u ms",
                    c->have_hello ? "answer to AUTH" : "HELLO", c->own->peer, cto);
            return -1;
        }
        int wait = (int)((end - t) / 1000000ull) + 1;
        if (c->woff < c->wlen) flush(c, wait);
        else pump(c, wait);
    }
    if (!c->have_hello || c->auth_pending) {
        copy_err(err, &c->fatal);
        return -1;
    }
    return 0;
}

/* Closes and frees one connection. Requests still in flight on it are dropped
 * without completions (callers fail them first when that matters). */
static void tr_free(tr *t)
{
    if (!t) return;
    if (t->ssl) {
        /* close_notify, best effort (never after a fatal TLS error or a dead peer) */
        if (!t->ssl_failed && !t->broken && SSL_is_init_finished(t->ssl)) {
            ERR_clear_error();
            if (SSL_shutdown(t->ssl) < 0) ERR_clear_error();
        }
        SSL_free(t->ssl); /* and its BIO */
    }
    SSL_CTX_free(t->ssl_ctx);
    BIO_meth_free(t->bio_meth);
    if (t->fd >= 0) close(t->fd);
    if (t->principal_msg) inferwire__v1__principal__free_unpacked(t->principal_msg, NULL);
    free(t->pend);
    free(t->rbuf);
    free(t->wbuf);
    free(t->server_name);
    free(t->server_version);
    free(t);
}

/* Closes the socket of a connection that is over, or that owes no answers, before
 * a new one replaces it; the rest (HELLO, principal, TLS details) stays for the
 * accessors until then. */
static void tr_drop_socket(tr *t)
{
    if (t->fd < 0) return;
    if (t->ssl && !t->ssl_failed && !t->broken && SSL_is_init_finished(t->ssl)) {
        ERR_clear_error();
        if (SSL_shutdown(t->ssl) < 0) ERR_clear_error(); /* close_notify, best effort */
    }
    t->broken = true; /* fatal keeps the reason: the GOAWAY's, or why it broke */
    t->npend = 0;     /* only abandoned requests can be left */
    close(t->fd);
    t->fd = -1;
}

/* Opens a connection for c to its host and port, with its TLS settings: TCP
 * connect, TLS handshake, preface, AUTH with token (NULL: none), HELLO and the
 * answer to the token, all within connect_timeout_ms. NULL with *err on failure. */
static tr *tr_open(iw_conn *c, const char *token, iw_error *err)
{
    tr *t = calloc(1, sizeof *t);
    if (!t) { set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return NULL; }
    t->own = c;
    t->fd = -1;
    uint32_t cto = c->opts.connect_timeout_ms ? c->opts.connect_timeout_ms : 10000;
    uint64_t end = now_ns() + (uint64_t)cto * 1000000ull;

    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)c->port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(c->host, portstr, &hints, &ai);
    if (gai != 0) {
        set_err(err, IW_UNAVAILABLE, "client: cannot resolve %s: %s", c->host, gai_strerror(gai));
        tr_free(t);
        return NULL;
    }
    int lasterr = 0;
    for (struct addrinfo *a = ai; a && t->fd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) { lasterr = errno; continue; }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        int ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        if (!ok && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int r = poll(&p, 1, (int)cto);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                ok = 1;
            else
                errno = r == 0 ? ETIMEDOUT : soerr;
        }
        if (ok) {
            t->fd = fd;
        } else {
            lasterr = errno;
            close(fd);
        }
    }
    freeaddrinfo(ai);
    if (t->fd < 0) {
        set_err(err, IW_UNAVAILABLE, "client: cannot connect to %s: %s", c->peer, strerror(lasterr));
        tr_free(t);
        return NULL;
    }
    int one = 1;
    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    if (c->tls && (tls_setup(t, err) < 0 || tls_handshake(t, end, cto, err) < 0)) {
        tr_free(t);
        return NULL;
    }

    /* The preface, and the token right behind it (PROTOCOL.md 1b: no need to wait for HELLO). */
    static const uint8_t preface[8] = {'I', 'W', 'I', 'R', 0, 1, 0, 1};
    bool queued = wreserve(t, sizeof preface);
    if (queued) {
        memcpy(t->wbuf, preface, sizeof preface);
        t->wlen = t->wqueued = sizeof preface;
        if (token) queued = queue_auth(t, token);
    }
    if (!queued) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        tr_free(t);
        return NULL;
    }
    if (await_handshake(t, end, cto, err) < 0) {
        tr_free(t);
        return NULL;
    }
    if (t->hello.version != 1) {
        set_err(err, IW_FAILED_PRECONDITION, "client: server chose protocol version %u; this client speaks 1",
                t->hello.version);
        tr_free(t);
        return NULL;
    }
    if (t->hello.authentication_required && !token && !t->principal_msg) {
        set_err(err, IW_UNAUTHENTICATED,
                "client: the server at %s requires authentication: connect with a token "
                "(iw_connect_options.token)%s", c->peer,
                c->tls ? " or a client certificate it accepts" : "");
        tr_free(t);
        return NULL;
    }
    return t;
}

/* Whether new requests can go to this connection: it has not received GOAWAY
 * and has not ended. */
static bool usable(const tr *t)
{
    return !t->broken && !t->goaway;
}

/* Requests in flight on t whose answer someone waits for. */
static size_t live_pending(const tr *t)
{
    size_t k = 0;
    for (size_t i = 0; i < t->npend; i++) k += !t->pend[i].abandoned;
    return k;
}

/* A connection a new one replaced. It stays (draining) while the server still owes
 * answers on it: it sent GOAWAY UNAVAILABLE, which promises answers to the requests
 * it had read. Otherwise it is closed. */
static void retire(iw_conn *c, tr *t)
{
    if (t->broken || live_pending(t) == 0) {
        tr_free(t);
        return;
    }
    t->next = c->draining;
    c->draining = t;
    if (++c->ndraining <= MAX_DRAINING) return;
    tr **pp = &c->draining; /* too many: close the oldest, failing its requests */
    while ((*pp)->next) pp = &(*pp)->next;
    tr *oldest = *pp;
    *pp = NULL;
    c->ndraining--;
    mark_broken(oldest, IW_UNAVAILABLE,
                "client: closed an old connection still answering after GOAWAY (more than %d were)",
                MAX_DRAINING);
    tr_free(oldest);
}

/* Frees draining connections that ended (their requests were failed) or owe nothing. */
static void reap(iw_conn *c)
{
    for (tr **pp = &c->draining; *pp;) {
        tr *t = *pp;
        if (t->broken || (live_pending(t) == 0 && t->woff == t->wlen)) {
            *pp = t->next;
            c->ndraining--;
            tr_free(t);
        } else {
            pp = &t->next;
        }
    }
}

/* Makes sure c->cur can take a request: first reads, without waiting, whatever
 * has arrived on it (a GOAWAY, the end of the stream), so a connection the server
 * has given up is not used; once it is over, opens a new one presenting token
 * (NULL: the saved one). IW_OK, or the error in *err. */
static iw_status_code ensure_conn(iw_conn *c, const char *token, iw_error *err)
{
    if (usable(c->cur)) pump(c->cur, 0);
    if (usable(c->cur)) return IW_OK;
    tr *old = c->cur;
    if (!c->opts.no_reconnect && (old->broken || live_pending(old) == 0)) tr_drop_socket(old);
    if (c->opts.no_reconnect) {
        if (old->broken) {
            copy_err(err, &old->fatal);
            return old->fatal.code ? old->fatal.code : IW_UNAVAILABLE;
        }
        set_err(err, IW_UNAVAILABLE, "client: server sent GOAWAY: %s", old->fatal.message);
        return IW_UNAVAILABLE;
    }
    iw_error e;
    memset(&e, 0, sizeof e);
    tr *t = tr_open(c, token ? token : c->token, &e);
    if (t && !usable(t)) { /* a GOAWAY right behind its HELLO: no better than the old one */
        if (t->broken) copy_err(&e, &t->fatal);
        else set_err(&e, IW_UNAVAILABLE, "server sent GOAWAY: %s", t->fatal.message);
        tr_free(t);
        t = NULL;
    }
    if (!t) {
        /* UNAUTHENTICATED: the server refused the credentials, which trying again will not change */
        iw_status_code code = e.code == IW_UNAUTHENTICATED ? IW_UNAUTHENTICATED : IW_UNAVAILABLE;
        set_err(err, code, "client: the connection to %s ended (%s); reconnecting failed: %s",
                c->peer, old->fatal.message[0] ? unprefixed(old->fatal.message) : iw_status_name(old->fatal.code),
                unprefixed(e.message));
        return code;
    }
    c->cur = t;
    c->reconnects++;
    retire(c, old);
    return IW_OK;
}

/* Waits up to timeout_ms (-1: forever) for input on every open connection and
 * processes it; also flushes pending output (PONGs, CANCELs). -1: none is open. */
static int pump_all(iw_conn *c, int timeout_ms)
{
    tr *ts[1 + MAX_DRAINING];
    struct pollfd p[1 + MAX_DRAINING];
    nfds_t n = 0;
    for (tr *t = c->cur; t && n < 1 + MAX_DRAINING; t = t == c->cur ? c->draining : t->next) {
        if (!t->broken && t->woff < t->wlen) flush(t, 0);
        if (t->broken) continue;
        p[n].fd = t->fd;
        p[n].events = POLLIN;
        if (t->woff < t->wlen || t->read_wants_write) p[n].events |= POLLOUT;
        p[n].revents = 0;
        ts[n++] = t;
    }
    if (n == 0) {
        reap(c);
        return -1;
    }
    int r = poll(p, n, timeout_ms);
    if (r < 0 && errno != EINTR) {
        for (nfds_t i = 0; i < n; i++)
            mark_broken(ts[i], IW_UNAVAILABLE, "client: poll failed: %s", strerror(errno));
    }
    for (nfds_t i = 0; r > 0 && i < n; i++) {
        tr *t = ts[i];
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) ||
            (t->read_wants_write && (p[i].revents & POLLOUT)))
            pump_read(t);
        if (!t->broken && t->woff < t->wlen) flush(t, 0);
    }
    reap(c);
    return 0;
}

/* Saves a copy of an optional string; false when out of memory. */
static bool dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src) return true;
    *dst = strdup(src);
    return *dst != NULL;
}

iw_conn *iw_connect(const char *host, uint16_t port, const iw_options *opts, iw_error *err)
{
    iw_connect_options o;
    memset(&o, 0, sizeof o);
    if (opts) o.base = *opts;
    return iw_connect_opts(host, port, &o, err);
}

iw_conn *iw_connect_opts(const char *host, uint16_t port, const iw_connect_options *o,
                         iw_error *err)
{
    static const iw_connect_options defaults;
    if (!o) o = &defaults;
    if (!host) {
        set_err(err, IW_INVALID_ARGUMENT, "client: no host");
        return NULL;
    }
    if (!o->tls && (o->ca_file || o->cert_file || o->key_file || o->server_name)) {
        set_err(err, IW_INVALID_ARGUMENT,
                "client: ca_file, cert_file, key_file and server_name need tls = true");
        return NULL;
    }
    if (o->key_file && !o->cert_file) {
        set_err(err, IW_INVALID_ARGUMENT, "client: key_file without cert_file");
        return NULL;
    }
    if (o->token && !*o->token) {
        set_err(err, IW_INVALID_ARGUMENT, "client: the token is empty (NULL sends none)");
        return NULL;
    }
    iw_conn *c = calloc(1, sizeof *c);
    if (!c) { set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return NULL; }
    c->opts = o->base;
    c->port = port;
    c->tls = o->tls;
    c->next_id = 1;
    snprintf(c->peer, sizeof c->peer, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    if (!dup_opt(&c->host, host) || !dup_opt(&c->ca_file, o->ca_file) ||
        !dup_opt(&c->cert_file, o->cert_file) || !dup_opt(&c->key_file, o->key_file) ||
        !dup_opt(&c->server_name, o->server_name) || !dup_opt(&c->token, o->token)) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        iw_close(c);
        return NULL;
    }
    c->cur = tr_open(c, c->token, err);
    if (!c->cur) {
        iw_close(c);
        return NULL;
    }
    return c;
}

iw_status_code iw_authenticate(iw_conn *c, const char *token, iw_error *err)
{
    if (!c || !token || !*token) {
        set_err(err, IW_INVALID_ARGUMENT, "client: iw_authenticate needs a connection and a token");
        return IW_INVALID_ARGUMENT;
    }
    char *copy = strdup(token);
    if (!copy) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    if (usable(c->cur)) pump(c->cur, 0);
    if (!usable(c->cur)) {
        /* the connection is over: a new one presents the token from its start */
        iw_status_code rc = ensure_conn(c, copy, err);
        if (rc != IW_OK) { free(copy); return rc; }
        free(c->token);
        c->token = copy;
        if (err) { err->code = IW_OK; err->message[0] = 0; }
        return IW_OK;
    }
    tr *t = c->cur;
    if (!queue_auth(t, token)) {
        free(copy);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    uint32_t cto = c->opts.connect_timeout_ms ? c->opts.connect_timeout_ms : 10000;
    uint64_t end = now_ns() + (uint64_t)cto * 1000000ull;
    while (t->auth_pending && !t->broken) {
        uint64_t nearest = check_deadlines(c); /* requests in flight keep their deadlines */
        uint64_t now = now_ns();
        if (now >= end) {
            free(copy);
            set_err(err, IW_DEADLINE_EXCEEDED, "client: no answer to AUTH from %s within %u ms",
                    c->peer, cto);
            return IW_DEADLINE_EXCEEDED;
        }
        uint64_t stop = nearest && nearest < end ? nearest : end;
        int wait = stop > now ? (int)((stop - now + 999999ull) / 1000000ull) : 0;
        if (t->woff < t->wlen) flush(t, wait ? wait : 1);
        else pump_all(c, wait);
    }
    if (t->auth_pending) {
        free(copy);
        copy_err(err, &t->fatal);
        return t->fatal.code ? t->fatal.code : IW_UNAVAILABLE;
    }
    free(c->token); /* new connections present the token the server accepted last */
    c->token = copy;
    if (err) { err->code = IW_OK; err->message[0] = 0; }
    return IW_OK;
}

const iw_hello *iw_conn_hello(const iw_conn *c) { return &c->cur->hello; }
iw_stats iw_conn_stats(const iw_conn *c) { return c->stats; }
uint64_t iw_conn_reconnects(const iw_conn *c) { return c ? c->reconnects : 0; }

size_t iw_in_flight(const iw_conn *c)
{
    size_t k = c->cur->npend;
    for (const tr *t = c->draining; t; t = t->next) k += t->npend;
    return k;
}

int iw_conn_fd(const iw_conn *c)
{
    return c && !c->cur->broken ? c->cur->fd : -1;
}

bool iw_conn_is_open(iw_conn *c)
{
    if (!c) return false;
    pump_all(c, 0);
    return usable(c->cur);
}

void iw_close(iw_conn *c)
{
    if (!c) return;
    tr_free(c->cur);
    while (c->draining) {
        tr *next = c->draining->next;
        tr_free(c->draining);
        c->draining = next;
    }
    cnode *n = c->chead;
    while (n) {
        cnode *next = n->next;
        iw_completion_clear(&n->c);
        free(n);
        n = next;
    }
    free(c->host);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->server_name);
    free(c->token);
    free(c);
}

/* ----------------------------------------------------------- sending */

/* now + us, saturating. */
static uint64_t deadline_after(uint64_t us)
{
    uint64_t t = now_ns();
    if (us > (UINT64_MAX - t) / 1000ull) return UINT64_MAX;
    return t + us * 1000ull;
}

/* Sends a REQUEST on connection t. *unsent: the connection failed before any byte
 * of it left, so the server cannot have seen it (no completion is queued for it). */
static iw_status_code send_on(tr *t, uint16_t method, const void *req, size_t req_len,
                              uint64_t timeout_us, uint32_t *request_id, bool *unsent, iw_error *err)
{
    iw_conn *c = t->own;
    *unsent = false;
    if (t->npend >= t->hello.max_concurrent_requests) {
        set_err(err, IW_RESOURCE_EXHAUSTED,
                "client: %u requests already in flight (server limit); poll first",
                t->hello.max_concurrent_requests);
        return IW_RESOURCE_EXHAUSTED;
    }
    uint8_t flags = 0;
    const uint8_t *payload = req;
    size_t len = req_len;
    uint8_t *zbuf = NULL;
    bool compress = c->opts.compression && t->hello.compression;
    if (compress) {
        flags |= FL_COMPRESS_RESPONSE;
        size_t zlen;
        if (req_len >= COMPRESS_MIN &&
            deflate_buf(req, req_len, c->opts.compression_level, &zbuf, &zlen) == 0) {
            if (zlen < req_len) {
                payload = zbuf;
                len = zlen;
                flags |= FL_COMPRESSED;
            }
        }
    }
    if (req_len > send_limit(t) || len > send_limit(t)) {
        free(zbuf);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: request of %zu bytes exceeds max_frame_size %u",
                req_len, send_limit(t));
        return IW_RESOURCE_EXHAUSTED;
    }
    /* pick an id not in flight on any connection, so that completions are unambiguous */
    uint32_t id;
    do {
        id = c->next_id++;
        if (c->next_id == 0) c->next_id = 1;
    } while (id == 0 || find_tr(c, id, NULL));

    if (t->npend == t->cappend) {
        size_t cap = t->cappend ? t->cappend * 2 : 64;
        pending *p = realloc(t->pend, cap * sizeof *p);
        if (!p) { free(zbuf); set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return IW_RESOURCE_EXHAUSTED; }
        t->pend = p;
        t->cappend = cap;
    }
    uint32_t wire_timeout = timeout_us > UINT32_MAX ? UINT32_MAX : (uint32_t)timeout_us;
    uint64_t start = t->wqueued; /* where this frame begins in the connection's byte stream */
    if (!queue_frame(t, FT_REQUEST, flags, method, id, wire_timeout, payload, len)) {
        free(zbuf);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    free(zbuf);
    pending *p = &t->pend[t->npend++];
    p->id = id;
    p->method = method;
    p->abandoned = false;
    p->deadline_ns = timeout_us ? deadline_after(timeout_us) : 0;
    if (flush(t, -1) < 0 && t->wsent <= start) {
        /* Nothing of it left: take back the completion the failure queued for it. */
        size_t idx;
        if (find_pending(t, id, &idx)) remove_pending(t, idx);
        cnode *n = take_completion(c, false, id);
        if (n) { iw_completion_clear(&n->c); free(n); }
        *unsent = true;
        copy_err(err, &t->fatal);
        return t->fatal.code ? t->fatal.code : IW_UNAVAILABLE;
    }
    /* a failed flush after part of it left reports the request through its completion */
    c->stats.requests_sent++;
    if (flags & FL_COMPRESSED) c->stats.compressed_sent++;
    if (request_id) *request_id = id;
    return IW_OK;
}

/* Sends a REQUEST on the current connection, opening a new one first if that one
 * is over. A request the failing connection never let out is sent once more, on
 * a new connection. */
static iw_status_code send_request(iw_conn *c, uint16_t method, const void *req, size_t req_len,
                                   uint64_t timeout_us, uint32_t *request_id, iw_error *err)
{
    if (!c) { set_err(err, IW_INVALID_ARGUMENT, "client: no connection"); return IW_INVALID_ARGUMENT; }
    if (!timeout_us) timeout_us = c->opts.default_timeout_us;
    for (int attempt = 0;; attempt++) {
        iw_status_code rc = ensure_conn(c, NULL, err);
        if (rc != IW_OK) return rc;
        bool unsent;
        rc = send_on(c->cur, method, req, req_len, timeout_us, request_id, &unsent, err);
        if (rc == IW_OK || !unsent || attempt > 0 || c->opts.no_reconnect) return rc;
    }
}

iw_status_code iw_send_raw(iw_conn *c, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, uint32_t *request_id, iw_error *err)
{
    return send_request(c, method, req, req_len, timeout_us, request_id, err);
}

static Inferwire__V1__VersionSelector *make_selector(Inferwire__V1__VersionSelector *vs,
                                                     int64_t version, const char *label)
{
    inferwire__v1__version_selector__init(vs);
    if (version > 0) {
        vs->selector_case = INFERWIRE__V1__VERSION_SELECTOR__SELECTOR_VERSION;
        vs->version = version;
        return vs;
    }
    if (label) {
        vs->selector_case = INFERWIRE__V1__VERSION_SELECTOR__SELECTOR_LABEL;
        vs->label = (char *)label;
        return vs;
    }
    return NULL;
}

/* Packs an INFER request message into a malloc'ed buffer. */
static iw_status_code pack_infer(const iw_infer_request *r, uint8_t **out, size_t *out_len,
                                 iw_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (!r || !r->model_name || (r->n_inputs && !r->inputs)) {
        set_err(err, IW_INVALID_ARGUMENT, "client: request needs a model_name (and inputs when n_inputs > 0)");
        return IW_INVALID_ARGUMENT;
    }
    Inferwire__V1__InferRequest m;
    inferwire__v1__infer_request__init(&m);
    Inferwire__V1__VersionSelector vs;
    m.model_name = (char *)r->model_name;
    m.version = make_selector(&vs, r->model_version, r->label);
    if (r->id) m.id = (char *)r->id;
    if (r->routing_key) m.routing_key = (char *)r->routing_key;
    if (r->traceparent) m.traceparent = (char *)r->traceparent;
    if (r->tracestate) m.tracestate = (char *)r->tracestate;
    m.priority = r->priority == IW_PRIORITY_HIGH ? INFERWIRE__V1__PRIORITY__HIGH
                                                 : INFERWIRE__V1__PRIORITY__NORMAL;
    m.n_output_names = r->output_names ? r->n_output_names : 0;
    m.output_names = (char **)r->output_names;

    Inferwire__V1__Tensor *ts = NULL, **tps = NULL;
    if (r->n_inputs) {
        ts = calloc(r->n_inputs, sizeof *ts);
        tps = calloc(r->n_inputs, sizeof *tps);
        if (!ts || !tps) {
            free(ts); free(tps);
            set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
            return IW_RESOURCE_EXHAUSTED;
        }
    }
    for (size_t i = 0; i < r->n_inputs; i++) {
        const iw_tensor *t = &r->inputs[i];
        inferwire__v1__tensor__init(&ts[i]);
        ts[i].name = (char *)(t->name ? t->name : "");
        ts[i].datatype = (Inferwire__V1__DataType)t->datatype;
        ts[i].n_shape = t->ndim;
        ts[i].shape = (int64_t *)t->shape;
        ts[i].raw_contents.len = t->size;
        ts[i].raw_contents.data = (uint8_t *)t->data;
        tps[i] = &ts[i];
    }
    m.n_inputs = r->n_inputs;
    m.inputs = tps;

    size_t len = inferwire__v1__infer_request__get_packed_size(&m);
    uint8_t *buf = malloc(len ? len : 1);
    iw_status_code rc = IW_OK;
    if (!buf) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        rc = IW_RESOURCE_EXHAUSTED;
    } else {
        inferwire__v1__infer_request__pack(&m, buf);
        *out = buf;
        *out_len = len;
    }
    free(ts);
    free(tps);
    return rc;
}

iw_status_code iw_send_infer(iw_conn *c, const iw_infer_request *r, uint32_t *request_id,
                             iw_error *err)
{
    uint8_t *buf;
    size_t len;
    iw_status_code rc = pack_infer(r, &buf, &len, err);
    if (rc != IW_OK) return rc;
    rc = send_request(c, INFERWIRE__V1__METHOD__INFER, buf, len, r->timeout_us, request_id, err);
    free(buf);
    return rc;
}

iw_status_code iw_cancel(iw_conn *c, uint32_t id, iw_error *err)
{
    pending *p = NULL;
    tr *t = c ? find_tr(c, id, &p) : NULL;
    if (!t || p->abandoned) {
        set_err(err, IW_NOT_FOUND, "client: request %u is not in flight", id);
        return IW_NOT_FOUND;
    }
    if (!queue_frame(t, FT_CANCEL, 0, 0, id, 0, NULL, 0)) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    c->stats.cancels_sent++;
    if (flush(t, -1) < 0) { copy_err(err, &t->fatal); return IW_UNAVAILABLE; }
    return IW_OK;
}

/* ------------------------------------------------------------ results */

typedef struct result_impl {
    iw_result pub; /* first */
    Inferwire__V1__InferResponse *msg;
} result_impl;

static iw_result *decode_result(const uint8_t *buf, size_t len, iw_error *err)
{
    Inferwire__V1__InferResponse *m = inferwire__v1__infer_response__unpack(NULL, len, buf);
    if (!m) {
        set_err(err, IW_INTERNAL, "client: InferResponse does not parse");
        return NULL;
    }
    result_impl *r = calloc(1, sizeof *r);
    iw_tensor *outs = m->n_outputs ? calloc(m->n_outputs, sizeof *outs) : NULL;
    if (!r || (m->n_outputs && !outs)) {
        free(r); free(outs);
        inferwire__v1__infer_response__free_unpacked(m, NULL);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return NULL;
    }
    r->msg = m;
    r->pub.model_name = m->model_name;
    r->pub.model_version = m->model_version;
    r->pub.id = m->id;
    r->pub.n_outputs = m->n_outputs;
    r->pub.outputs = outs;
    for (size_t i = 0; i < m->n_outputs; i++) {
        Inferwire__V1__Tensor *t = m->outputs[i];
        outs[i].name = t->name;
        outs[i].datatype = (iw_datatype)t->datatype;
        outs[i].shape = t->shape;
        outs[i].ndim = t->n_shape;
        outs[i].data = t->raw_contents.data;
        outs[i].size = t->raw_contents.len;
    }
    return &r->pub;
}

const iw_tensor *iw_result_output(const iw_result *r, const char *name)
{
    if (!r || !name) return NULL;
    for (size_t i = 0; i < r->n_outputs; i++)
        if (r->outputs[i].name && strcmp(r->outputs[i].name, name) == 0) return &r->outputs[i];
    return NULL;
}

void iw_result_free(iw_result *pub)
{
    if (!pub) return;
    result_impl *r = (result_impl *)pub;
    free(r->pub.outputs);
    inferwire__v1__infer_response__free_unpacked(r->msg, NULL);
    free(r);
}

/* Turns a queued node into the caller's completion (decoding INFER results). */
static void finish_node(cnode *n, iw_completion *out)
{
    *out = n->c;
    if (n->decode_infer && out->error.code == IW_OK) {
        out->result = decode_result(out->payload, out->payload_len, &out->error);
        free(out->payload);
        out->payload = NULL;
        out->payload_len = 0;
    }
    free(n);
}

/* Local deadlines on one connection: CANCEL and report DEADLINE_EXCEEDED. Returns
 * the nearest remaining deadline (ns, 0 none), given the nearest so far. */
static uint64_t tr_deadlines(tr *t, uint64_t now, uint64_t nearest)
{
    for (size_t i = 0; i < t->npend; i++) {
        pending *p = &t->pend[i];
        if (p->abandoned || !p->deadline_ns) continue;
        if (p->deadline_ns <= now) {
            p->abandoned = true;
            if (!t->broken && queue_frame(t, FT_CANCEL, 0, 0, p->id, 0, NULL, 0))
                t->own->stats.cancels_sent++;
            cnode *n = new_node(p->id, p->method, IW_DEADLINE_EXCEEDED,
                                "client: deadline passed without an answer; request cancelled");
            if (n) push_completion(t->own, n);
        } else if (!nearest || p->deadline_ns < nearest) {
            nearest = p->deadline_ns;
        }
    }
    return nearest;
}

/* Local deadlines on every connection; the nearest remaining one (ns, 0 none). */
static uint64_t check_deadlines(iw_conn *c)
{
    uint64_t now = now_ns();
    uint64_t nearest = tr_deadlines(c->cur, now, 0);
    for (tr *t = c->draining; t; t = t->next) nearest = tr_deadlines(t, now, nearest);
    return nearest;
}

static size_t live_pending_all(const iw_conn *c)
{
    size_t k = live_pending(c->cur);
    for (const tr *t = c->draining; t; t = t->next) k += live_pending(t);
    return k;
}

/* Waits for the completion of id (any if !specific). 1 found; 0 timeout, or
 * nothing (that id) in flight; -1 nothing in flight and the current connection
 * is over (*err says why). */
static int wait_for(iw_conn *c, bool specific, uint32_t id, int timeout_ms, iw_completion *out,
                    iw_error *err)
{
    uint64_t end = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    for (;;) {
        uint64_t nearest = check_deadlines(c);
        cnode *n = take_completion(c, !specific, id);
        if (n) { finish_node(n, out); return 1; }
        if (specific) {
            if (!find_tr(c, id, NULL)) return 0;
        } else if (live_pending_all(c) == 0) {
            if (c->cur->broken) { copy_err(err, &c->cur->fatal); return -1; }
            return 0;
        }
        if (timeout_ms == 0) {
            pump_all(c, 0);
            check_deadlines(c);
            n = take_completion(c, !specific, id);
            if (n) { finish_node(n, out); return 1; }
            return 0;
        }
        uint64_t t = now_ns();
        if (timeout_ms > 0 && t >= end) return 0;
        uint64_t stop = end;
        if (nearest && (!stop || nearest < stop)) stop = nearest;
        int wait = -1;
        if (stop) wait = stop > t ? (int)((stop - t + 999999ull) / 1000000ull) : 0;
        pump_all(c, wait);
    }
}

int iw_poll(iw_conn *c, int timeout_ms, iw_completion *out, iw_error *err)
{
    memset(out, 0, sizeof *out);
    return wait_for(c, false, 0, timeout_ms, out, err);
}

/* Waits for request id; on IW_OK *out holds the answer. *retryable: the server
 * refused it unrun (ERROR UNAVAILABLE after its GOAWAY). */
static iw_status_code call_status(iw_conn *c, uint32_t id, iw_completion *out, bool *retryable,
                                  iw_error *err)
{
    iw_error local;
    iw_error *e = err ? err : &local;
    memset(out, 0, sizeof *out);
    *retryable = false;
    int r = wait_for(c, true, id, -1, out, e);
    if (r == 1) {
        *e = out->error;
        *retryable = out->retryable;
        if (out->error.code != IW_OK) iw_completion_clear(out);
        return e->code;
    }
    if (r == 0) set_err(e, IW_UNAVAILABLE, "client: request %u was lost", id);
    return e->code ? e->code : IW_UNAVAILABLE;
}

/* One blocking call: sends the request and waits for its answer. A request the
 * server refused unrun because its connection was closing is sent once more (on a
 * new connection), within what is left of the deadline. */
static iw_status_code call(iw_conn *c, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, iw_completion *out, iw_error *err)
{
    memset(out, 0, sizeof *out);
    if (!c) { set_err(err, IW_INVALID_ARGUMENT, "client: no connection"); return IW_INVALID_ARGUMENT; }
    if (!timeout_us) timeout_us = c->opts.default_timeout_us;
    uint64_t deadline = timeout_us ? deadline_after(timeout_us) : 0;
    for (int attempt = 0;; attempt++) {
        uint64_t left = timeout_us;
        if (deadline && attempt > 0) {
            uint64_t t = now_ns();
            left = t < deadline ? (deadline - t + 999ull) / 1000ull : 0;
            if (!left) {
                set_err(err, IW_DEADLINE_EXCEEDED, "client: deadline passed without an answer");
                return IW_DEADLINE_EXCEEDED;
            }
        }
        uint32_t id;
        iw_status_code rc = send_request(c, method, req, req_len, left, &id, err);
        if (rc != IW_OK) return rc;
        bool retryable;
        rc = call_status(c, id, out, &retryable, err);
        if (rc == IW_OK || !retryable || attempt > 0 || c->opts.no_reconnect) return rc;
    }
}

iw_status_code iw_infer(iw_conn *c, const iw_infer_request *req, iw_result **result, iw_error *err)
{
    if (result) *result = NULL;
    uint8_t *buf;
    size_t len;
    iw_status_code rc = pack_infer(req, &buf, &len, err);
    if (rc != IW_OK) return rc;
    iw_completion comp;
    rc = call(c, INFERWIRE__V1__METHOD__INFER, buf, len, req->timeout_us, &comp, err);
    free(buf);
    if (rc != IW_OK) return rc;
    if (result) *result = comp.result; else iw_result_free(comp.result);
    if (err) { err->code = IW_OK; err->message[0] = 0; }
    return IW_OK;
}

iw_status_code iw_call_raw(iw_conn *c, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, uint8_t **resp, size_t *resp_len, iw_error *err)
{
    if (resp) *resp = NULL;
    if (resp_len) *resp_len = 0;
    iw_completion comp;
    iw_status_code rc = call(c, method, req, req_len, timeout_us, &comp, err);
    if (rc != IW_OK) return rc;
    if (method == INFERWIRE__V1__METHOD__INFER && comp.result) {
        /* raw callers want bytes; re-pack the decoded message */
        result_impl *ri = (result_impl *)comp.result;
        size_t n = inferwire__v1__infer_response__get_packed_size(ri->msg);
        comp.payload = malloc(n ? n : 1);
        if (comp.payload) inferwire__v1__infer_response__pack(ri->msg, comp.payload);
        comp.payload_len = comp.payload ? n : 0;
        iw_result_free(comp.result);
        comp.result = NULL;
    }
    if (resp) *resp = comp.payload; else free(comp.payload);
    if (resp_len) *resp_len = comp.payload_len;
    return IW_OK;
}

/* Packs msg, calls, and unpacks the answer with desc. */
static iw_status_code call_msg(iw_conn *c, uint16_t method, const ProtobufCMessage *msg,
                               const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                               iw_error *err)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) { set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return IW_RESOURCE_EXHAUSTED; }
    protobuf_c_message_pack(msg, buf);
    uint8_t *resp;
    size_t rlen;
    iw_status_code rc = iw_call_raw(c, method, buf, len, 0, &resp, &rlen, err);
    free(buf);
    if (rc != IW_OK) return rc;
    *out = protobuf_c_message_unpack(desc, NULL, rlen, resp);
    free(resp);
    if (!*out) {
        set_err(err, IW_INTERNAL, "client: response to method %u does not parse", method);
        return IW_INTERNAL;
    }
    return IW_OK;
}

iw_status_code iw_server_live(iw_conn *c, bool *live, iw_error *err)
{
    Inferwire__V1__ServerLiveRequest req;
    inferwire__v1__server_live_request__init(&req);
    ProtobufCMessage *out;
    iw_status_code rc = call_msg(c, INFERWIRE__V1__METHOD__SERVER_LIVE, &req.base,
                                 &inferwire__v1__server_live_response__descriptor, &out, err);
    if (rc != IW_OK) return rc;
    if (live) *live = ((Inferwire__V1__ServerLiveResponse *)out)->live;
    protobuf_c_message_free_unpacked(out, NULL);
    return IW_OK;
}

iw_status_code iw_server_ready(iw_conn *c, bool *ready, iw_error *err)
{
    Inferwire__V1__ServerReadyRequest req;
    inferwire__v1__server_ready_request__init(&req);
    ProtobufCMessage *out;
    iw_status_code rc = call_msg(c, INFERWIRE__V1__METHOD__SERVER_READY, &req.base,
                                 &inferwire__v1__server_ready_response__descriptor, &out, err);
    if (rc != IW_OK) return rc;
    if (ready) *ready = ((Inferwire__V1__ServerReadyResponse *)out)->ready;
    protobuf_c_message_free_unpacked(out, NULL);
    return IW_OK;
}

iw_status_code iw_model_ready(iw_conn *c, const char *name, int64_t version, bool *ready,
                              int64_t *ready_version, iw_error *err)
{
    Inferwire__V1__ModelReadyRequest req;
    inferwire__v1__model_ready_request__init(&req);
    Inferwire__V1__VersionSelector vs;
    req.name = (char *)(name ? name : "");
    req.version = make_selector(&vs, version, NULL);
    ProtobufCMessage *out;
    iw_status_code rc = call_msg(c, INFERWIRE__V1__METHOD__MODEL_READY, &req.base,
                                 &inferwire__v1__model_ready_response__descriptor, &out, err);
    if (rc != IW_OK) return rc;
    Inferwire__V1__ModelReadyResponse *m = (Inferwire__V1__ModelReadyResponse *)out;
    if (ready) *ready = m->ready;
    if (ready_version) *ready_version = m->version;
    protobuf_c_message_free_unpacked(out, NULL);
    return IW_OK;
}

typedef struct md_impl {
    iw_model_metadata pub; /* first */
    Inferwire__V1__ModelMetadataResponse *msg;
} md_impl;

static iw_tensor_spec *specs(Inferwire__V1__TensorSpec **in, size_t n)
{
    iw_tensor_spec *s = calloc(n ? n : 1, sizeof *s);
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        s[i].name = in[i]->name;
        s[i].datatype = (iw_datatype)in[i]->datatype;
        s[i].shape = in[i]->shape;
        s[i].ndim = in[i]->n_shape;
    }
    return s;
}

iw_status_code iw_model_metadata_get(iw_conn *c, const char *name, int64_t version,
                                     iw_model_metadata **outp, iw_error *err)
{
    *outp = NULL;
    Inferwire__V1__ModelMetadataRequest req;
    inferwire__v1__model_metadata_request__init(&req);
    Inferwire__V1__VersionSelector vs;
    req.name = (char *)(name ? name : "");
    req.version = make_selector(&vs, version, NULL);
    ProtobufCMessage *out;
    iw_status_code rc = call_msg(c, INFERWIRE__V1__METHOD__MODEL_METADATA, &req.base,
                                 &inferwire__v1__model_metadata_response__descriptor, &out, err);
    if (rc != IW_OK) return rc;
    Inferwire__V1__ModelMetadataResponse *m = (Inferwire__V1__ModelMetadataResponse *)out;
    md_impl *d = calloc(1, sizeof *d);
    if (d) {
        d->msg = m;
        d->pub.name = m->name;
        d->pub.versions = m->versions;
        d->pub.n_versions = m->n_versions;
        d->pub.version = m->version;
        d->pub.platform = m->platform;
        d->pub.inputs = specs(m->inputs, m->n_inputs);
        d->pub.n_inputs = m->n_inputs;
        d->pub.outputs = specs(m->outputs, m->n_outputs);
        d->pub.n_outputs = m->n_outputs;
        d->pub.max_batch_size = m->max_batch_size;
    }
    if (!d || !d->pub.inputs || !d->pub.outputs) {
        if (d) { free(d->pub.inputs); free(d->pub.outputs); free(d); }
        protobuf_c_message_free_unpacked(out, NULL);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    *outp = &d->pub;
    return IW_OK;
}

void iw_model_metadata_free(iw_model_metadata *pub)
{
    if (!pub) return;
    md_impl *d = (md_impl *)pub;
    free(d->pub.inputs);
    free(d->pub.outputs);
    inferwire__v1__model_metadata_response__free_unpacked(d->msg, NULL);
    free(d);
}
