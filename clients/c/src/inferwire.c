/* libinferwire: InferWire protocol v1 client. See include/inferwire.h. */
#define _POSIX_C_SOURCE 200809L
#include "inferwire.h"

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

#include "inferwire/v1/frames.pb-c.h"
#include "inferwire/v1/inference.pb-c.h"
#include "inferwire/v1/status.pb-c.h"

enum {
    FT_HELLO = 1, FT_REQUEST = 2, FT_RESPONSE = 3, FT_ERROR = 4,
    FT_CANCEL = 5, FT_PING = 6, FT_PONG = 7, FT_GOAWAY = 8
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

struct iw_conn {
    int fd;
    iw_options opts;
    iw_hello hello;
    char *server_name, *server_version;
    bool have_hello;
    bool broken;          /* no more answers will arrive */
    bool goaway;          /* server accepts no new requests */
    iw_error fatal;       /* why broken / goaway */
    uint32_t next_id;
    pending *pend;
    size_t npend, cappend;
    cnode *chead, *ctail;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    iw_stats stats;
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
    case IW_INT16: case IW_FP16: return 2;
    case IW_INT32: case IW_FP32: return 4;
    case IW_INT64: case IW_FP64: return 8;
    default: return 0;
    }
}

static uint32_t recv_limit(const iw_conn *c)
{
    if (c->opts.max_recv_frame_size) return c->opts.max_recv_frame_size;
    if (c->have_hello && c->hello.max_frame_size) return c->hello.max_frame_size;
    return DEFAULT_MAX_FRAME;
}

static uint32_t send_limit(const iw_conn *c)
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

static pending *find_pending(iw_conn *c, uint32_t id, size_t *idx)
{
    for (size_t i = 0; i < c->npend; i++)
        if (c->pend[i].id == id) { if (idx) *idx = i; return &c->pend[i]; }
    return NULL;
}

static void remove_pending(iw_conn *c, size_t idx)
{
    c->pend[idx] = c->pend[--c->npend];
}

/* Fails everything in flight (connection over). */
static void fail_all_pending(iw_conn *c, const char *why)
{
    for (size_t i = 0; i < c->npend; i++) {
        if (c->pend[i].abandoned) continue;
        cnode *n = new_node(c->pend[i].id, c->pend[i].method, IW_UNAVAILABLE, why);
        if (n) push_completion(c, n);
    }
    c->npend = 0;
}

static void mark_broken(iw_conn *c, iw_status_code code, const char *fmt, ...)
{
    if (!c->broken) {
        c->broken = true;
        c->fatal.code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->fatal.message, sizeof c->fatal.message, fmt, ap);
        va_end(ap);
    }
    char why[600];
    snprintf(why, sizeof why, "client: connection ended before an answer (%s)", c->fatal.message);
    fail_all_pending(c, why);
}

/* ------------------------------------------------------------ writing */

static bool wreserve(iw_conn *c, size_t more)
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
static bool queue_frame(iw_conn *c, uint8_t type, uint8_t flags, uint16_t method, uint32_t id,
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
    return true;
}

static int pump_read(iw_conn *c);

/* Writes the output buffer; while the socket is not writable, keeps reading
 * (the server stops reading while we do not read its answers). timeout_ms -1:
 * until done; 0: only what goes without blocking. Returns -1 on failure. */
static int flush(iw_conn *c, int timeout_ms)
{
    uint64_t end = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    while (c->woff < c->wlen) {
        if (c->broken) return -1;
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            c->stats.bytes_sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            mark_broken(c, IW_UNAVAILABLE, "client: send failed: %s", strerror(errno));
            return -1;
        }
        if (timeout_ms == 0) return 0;
        int wait = -1;
        if (timeout_ms > 0) {
            uint64_t t = now_ns();
            if (t >= end) return 0;
            wait = (int)((end - t) / 1000000ull) + 1;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLOUT | POLLIN};
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

/* ------------------------------------------------------------ reading */

static void process_frame(iw_conn *c, uint8_t type, uint8_t flags, uint16_t method, uint32_t id,
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
        c->have_hello = true;
        inferwire__v1__hello__free_unpacked(h, NULL);
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
                inferwire__v1__status__free_unpacked(s, NULL);
            } else {
                n = new_node(id, m, IW_INTERNAL, "client: ERROR payload does not parse");
            }
        } else {
            c->stats.responses_received++;
            n = new_node(id, m, IW_OK, "");
            if (n && (flags & FL_COMPRESSED)) {
                c->stats.compressed_received++;
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
        if (n) push_completion(c, n);
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
static int pump_read(iw_conn *c)
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
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            c->stats.bytes_received += (uint64_t)n;
        } else if (n == 0) {
            /* process what we have, then end */
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            mark_broken(c, IW_UNAVAILABLE, "client: recv failed: %s", strerror(errno));
            return -1;
        }
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
static int pump(iw_conn *c, int timeout_ms)
{
    if (c->broken) return -1;
    if (c->woff < c->wlen && flush(c, 0) < 0) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->woff < c->wlen) p.events |= POLLOUT;
    int r = poll(&p, 1, timeout_ms);
    if (r < 0) {
        if (errno == EINTR) return 0;
        mark_broken(c, IW_UNAVAILABLE, "client: poll failed: %s", strerror(errno));
        return -1;
    }
    if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
        if (pump_read(c) < 0) return -1;
    if (c->woff < c->wlen && flush(c, 0) < 0) return -1;
    return 0;
}

/* --------------------------------------------------------- connecting */

iw_conn *iw_connect(const char *host, uint16_t port, const iw_options *opts, iw_error *err)
{
    iw_conn *c = calloc(1, sizeof *c);
    if (!c) { set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return NULL; }
    c->fd = -1;
    if (opts) c->opts = *opts;
    c->next_id = 1;
    uint32_t cto = c->opts.connect_timeout_ms ? c->opts.connect_timeout_ms : 10000;
    uint64_t end = now_ns() + (uint64_t)cto * 1000000ull;

    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        set_err(err, IW_UNAVAILABLE, "client: cannot resolve %s: %s", host, gai_strerror(gai));
        free(c);
        return NULL;
    }
    int lasterr = 0;
    for (struct addrinfo *a = ai; a && c->fd < 0; a = a->ai_next) {
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
            c->fd = fd;
        } else {
            lasterr = errno;
            close(fd);
        }
    }
    freeaddrinfo(ai);
    if (c->fd < 0) {
        set_err(err, IW_UNAVAILABLE, "client: cannot connect to %s:%u: %s", host,
                (unsigned)port, strerror(lasterr));
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    static const uint8_t preface[8] = {'I', 'W', 'I', 'R', 0, 1, 0, 1};
    if (!wreserve(c, sizeof preface)) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        iw_close(c);
        return NULL;
    }
    memcpy(c->wbuf, preface, sizeof preface);
    c->wlen = sizeof preface;
    while (!c->have_hello && !c->broken && !c->goaway) {
        uint64_t t = now_ns();
        if (t >= end) {
            set_err(err, IW_DEADLINE_EXCEEDED, "client: no HELLO from %s:%u within %u ms", host,
                    (unsigned)port, cto);
            iw_close(c);
            return NULL;
        }
        if (c->woff < c->wlen) flush(c, (int)((end - t) / 1000000ull) + 1);
        else pump(c, (int)((end - t) / 1000000ull) + 1);
    }
    if (!c->have_hello) {
        copy_err(err, &c->fatal);
        iw_close(c);
        return NULL;
    }
    if (c->hello.version != 1) {
        set_err(err, IW_FAILED_PRECONDITION, "client: server chose protocol version %u; this client speaks 1",
                c->hello.version);
        iw_close(c);
        return NULL;
    }
    return c;
}

const iw_hello *iw_conn_hello(const iw_conn *c) { return &c->hello; }
iw_stats iw_conn_stats(const iw_conn *c) { return c->stats; }
size_t iw_in_flight(const iw_conn *c) { return c->npend; }

void iw_close(iw_conn *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    cnode *n = c->chead;
    while (n) {
        cnode *next = n->next;
        iw_completion_clear(&n->c);
        free(n);
        n = next;
    }
    free(c->pend);
    free(c->rbuf);
    free(c->wbuf);
    free(c->server_name);
    free(c->server_version);
    free(c);
}

/* ----------------------------------------------------------- sending */

iw_status_code iw_send_raw(iw_conn *c, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, uint32_t *request_id, iw_error *err)
{
    if (!c) { set_err(err, IW_INVALID_ARGUMENT, "client: no connection"); return IW_INVALID_ARGUMENT; }
    if (c->broken) { copy_err(err, &c->fatal); return c->fatal.code ? c->fatal.code : IW_UNAVAILABLE; }
    if (c->goaway) {
        set_err(err, IW_UNAVAILABLE, "client: server sent GOAWAY: %s", c->fatal.message);
        return IW_UNAVAILABLE;
    }
    if (c->npend >= c->hello.max_concurrent_requests) {
        set_err(err, IW_RESOURCE_EXHAUSTED,
                "client: %u requests already in flight (server limit); poll first",
                c->hello.max_concurrent_requests);
        return IW_RESOURCE_EXHAUSTED;
    }
    if (!timeout_us) timeout_us = c->opts.default_timeout_us;

    uint8_t flags = 0;
    const uint8_t *payload = req;
    size_t len = req_len;
    uint8_t *zbuf = NULL;
    bool compress = c->opts.compression && c->hello.compression;
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
    if (req_len > send_limit(c) || len > send_limit(c)) {
        free(zbuf);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: request of %zu bytes exceeds max_frame_size %u",
                req_len, send_limit(c));
        return IW_RESOURCE_EXHAUSTED;
    }
    /* pick an id not in flight */
    uint32_t id;
    do {
        id = c->next_id++;
        if (c->next_id == 0) c->next_id = 1;
    } while (id == 0 || find_pending(c, id, NULL));

    if (c->npend == c->cappend) {
        size_t cap = c->cappend ? c->cappend * 2 : 64;
        pending *p = realloc(c->pend, cap * sizeof *p);
        if (!p) { free(zbuf); set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory"); return IW_RESOURCE_EXHAUSTED; }
        c->pend = p;
        c->cappend = cap;
    }
    uint32_t wire_timeout = timeout_us > UINT32_MAX ? UINT32_MAX : (uint32_t)timeout_us;
    if (!queue_frame(c, FT_REQUEST, flags, method, id, wire_timeout, payload, len)) {
        free(zbuf);
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    free(zbuf);
    pending *p = &c->pend[c->npend++];
    p->id = id;
    p->method = method;
    p->abandoned = false;
    p->deadline_ns = timeout_us ? now_ns() + timeout_us * 1000ull : 0;
    c->stats.requests_sent++;
    if (flags & FL_COMPRESSED) c->stats.compressed_sent++;
    if (request_id) *request_id = id;
    if (flush(c, -1) < 0 && !find_pending(c, id, NULL) && !c->chead) {
        copy_err(err, &c->fatal);
        return IW_UNAVAILABLE;
    }
    /* a failed flush reports the request through its completion */
    return IW_OK;
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

iw_status_code iw_send_infer(iw_conn *c, const iw_infer_request *r, uint32_t *request_id,
                             iw_error *err)
{
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
    iw_status_code rc;
    if (!buf) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        rc = IW_RESOURCE_EXHAUSTED;
    } else {
        inferwire__v1__infer_request__pack(&m, buf);
        rc = iw_send_raw(c, INFERWIRE__V1__METHOD__INFER, buf, len, r->timeout_us, request_id, err);
    }
    free(buf);
    free(ts);
    free(tps);
    return rc;
}

iw_status_code iw_cancel(iw_conn *c, uint32_t id, iw_error *err)
{
    pending *p = find_pending(c, id, NULL);
    if (!p || p->abandoned) {
        set_err(err, IW_NOT_FOUND, "client: request %u is not in flight", id);
        return IW_NOT_FOUND;
    }
    if (!queue_frame(c, FT_CANCEL, 0, 0, id, 0, NULL, 0)) {
        set_err(err, IW_RESOURCE_EXHAUSTED, "client: out of memory");
        return IW_RESOURCE_EXHAUSTED;
    }
    c->stats.cancels_sent++;
    if (flush(c, -1) < 0) { copy_err(err, &c->fatal); return IW_UNAVAILABLE; }
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

/* Local deadlines: CANCEL and report DEADLINE_EXCEEDED. Returns the nearest
 * remaining deadline (ns, 0 none). */
static uint64_t check_deadlines(iw_conn *c)
{
    uint64_t t = now_ns(), nearest = 0;
    for (size_t i = 0; i < c->npend; i++) {
        pending *p = &c->pend[i];
        if (p->abandoned || !p->deadline_ns) continue;
        if (p->deadline_ns <= t) {
            p->abandoned = true;
            if (!c->broken && queue_frame(c, FT_CANCEL, 0, 0, p->id, 0, NULL, 0))
                c->stats.cancels_sent++;
            cnode *n = new_node(p->id, p->method, IW_DEADLINE_EXCEEDED,
                                "client: deadline passed without an answer; request cancelled");
            if (n) push_completion(c, n);
        } else if (!nearest || p->deadline_ns < nearest) {
            nearest = p->deadline_ns;
        }
    }
    return nearest;
}

static size_t live_pending(const iw_conn *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->npend; i++) k += !c->pend[i].abandoned;
    return k;
}

/* Waits for the completion of id (any if !specific). 1 found, 0 timeout, -1 broken. */
static int wait_for(iw_conn *c, bool specific, uint32_t id, int timeout_ms, iw_completion *out,
                    iw_error *err)
{
    uint64_t end = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    for (;;) {
        uint64_t nearest = check_deadlines(c);
        cnode *n = take_completion(c, !specific, id);
        if (n) { finish_node(n, out); return 1; }
        if (c->broken) { copy_err(err, &c->fatal); return -1; }
        if (specific ? !find_pending(c, id, NULL) : live_pending(c) == 0) return 0;
        if (timeout_ms == 0 && c->woff == c->wlen) {
            pump(c, 0);
            check_deadlines(c);
            n = take_completion(c, !specific, id);
            if (n) { finish_node(n, out); return 1; }
            return 0;
        }
        uint64_t t = now_ns();
        uint64_t stop = end;
        if (nearest && (!stop || nearest < stop)) stop = nearest;
        int wait = -1;
        if (stop) wait = stop > t ? (int)((stop - t + 999999ull) / 1000000ull) : 0;
        if (timeout_ms > 0 && t >= end) return 0;
        pump(c, wait);
    }
}

int iw_poll(iw_conn *c, int timeout_ms, iw_completion *out, iw_error *err)
{
    memset(out, 0, sizeof *out);
    int r = wait_for(c, false, 0, timeout_ms, out, err);
    if (r == -1) {
        /* completions for failed requests may have been queued */
        cnode *n = take_completion(c, true, 0);
        if (n) { finish_node(n, out); return 1; }
    }
    return r;
}

static iw_status_code call_status(iw_conn *c, uint32_t id, iw_completion *out, iw_error *err)
{
    iw_error local;
    iw_error *e = err ? err : &local;
    memset(out, 0, sizeof *out);
    int r = wait_for(c, true, id, -1, out, e);
    if (r == 1) {
        *e = out->error;
        if (out->error.code != IW_OK) iw_completion_clear(out);
        return e->code;
    }
    if (r == 0) set_err(e, IW_UNAVAILABLE, "client: request %u was lost", id);
    return e->code ? e->code : IW_UNAVAILABLE;
}

iw_status_code iw_infer(iw_conn *c, const iw_infer_request *req, iw_result **result, iw_error *err)
{
    if (result) *result = NULL;
    uint32_t id;
    iw_status_code rc = iw_send_infer(c, req, &id, err);
    if (rc != IW_OK) return rc;
    iw_completion comp;
    rc = call_status(c, id, &comp, err);
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
    uint32_t id;
    iw_status_code rc = iw_send_raw(c, method, req, req_len, timeout_us, &id, err);
    if (rc != IW_OK) return rc;
    iw_completion comp;
    rc = call_status(c, id, &comp, err);
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
