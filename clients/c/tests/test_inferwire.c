/* libinferwire tests against a real server. Usage: test_inferwire port
 * (the plaintext server; the TLS, authentication and reconnection tests find
 * theirs in the environment that run_tests.sh sets: IW_PKI, IW_PORT_*,
 * IW_TOKEN_*, IW_CTL and IW_ACK). The retry rules are tested against a scripted
 * server on a thread. Prints one line per check and a final "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "inferwire.h"
/* The scripted server decodes and encodes InferRequest/InferResponse with the library's
 * generated protobuf-c code (in libinferwire.a; gen/ is on the include path). */
#include "inferwire/v1/inference.pb-c.h"

static int passed, failed;
static uint16_t port;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            passed++;                                                     \
        } else {                                                          \
            failed++;                                                     \
            printf("FAIL %s:%d: %s: ", __func__, __LINE__, #cond);       \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
        }                                                                 \
    } while (0)

static iw_conn *conn_with(const iw_options *o)
{
    iw_error err;
    iw_conn *c = iw_connect("127.0.0.1", port, o, &err);
    CHECK(c != NULL, "connect: %s %s", iw_status_name(err.code), err.message);
    return c;
}

static float fget(const iw_tensor *t, size_t i)
{
    float v;
    memcpy(&v, (const char *)t->data + i * 4, 4);
    return v;
}

/* add_sub request with rows x 4 floats; a[i] = base + i, b[i] = 10 * (i + 1) */
typedef struct addsub {
    float a[64 * 4], b[64 * 4];
    int64_t shape[2];
    iw_tensor in[2];
    iw_infer_request req;
} addsub;

static void addsub_init(addsub *s, int rows, float base)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < rows * 4; i++) {
        s->a[i] = base + (float)i;
        s->b[i] = 10.0f * (float)(i + 1);
    }
    s->shape[0] = rows;
    s->shape[1] = 4;
    s->in[0] = (iw_tensor){"INPUT0", IW_FP32, s->shape, 2, s->a, (size_t)rows * 16};
    s->in[1] = (iw_tensor){"INPUT1", IW_FP32, s->shape, 2, s->b, (size_t)rows * 16};
    s->req.model_name = "add_sub";
    s->req.inputs = s->in;
    s->req.n_inputs = 2;
}

static int addsub_ok(const addsub *s, const iw_result *r)
{
    const iw_tensor *o0 = iw_result_output(r, "OUTPUT0"), *o1 = iw_result_output(r, "OUTPUT1");
    size_t n = (size_t)s->shape[0] * 4;
    if (!o0 || !o1 || o0->size != n * 4 || o1->size != n * 4 || o0->datatype != IW_FP32) return 0;
    if (o0->ndim != 2 || o0->shape[0] != s->shape[0] || o0->shape[1] != 4) return 0;
    for (size_t i = 0; i < n; i++)
        if (fget(o0, i) != s->a[i] + s->b[i] || fget(o1, i) != s->a[i] - s->b[i]) return 0;
    return 1;
}

static void test_hello_and_health(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    const iw_hello *h = iw_conn_hello(c);
    CHECK(h->version == 1, "version %u", h->version);
    CHECK(h->max_frame_size > 0 && h->max_concurrent_requests > 0, "limits %u %u",
          h->max_frame_size, h->max_concurrent_requests);
    CHECK(h->server_name && strlen(h->server_name) > 0, "server name");
    iw_error err;
    bool live = false, ready = false;
    CHECK(iw_server_live(c, &live, &err) == IW_OK && live, "live: %s", err.message);
    CHECK(iw_server_ready(c, &ready, &err) == IW_OK && ready, "ready: %s", err.message);
    int64_t v = 0;
    CHECK(iw_model_ready(c, "add_sub", 0, &ready, &v, &err) == IW_OK && ready && v == 1,
          "model ready %d v%lld %s", ready, (long long)v, err.message);
    CHECK(iw_model_ready(c, "no_such_model", 0, &ready, NULL, &err) == IW_OK && !ready,
          "unknown model ready: %s", err.message);
    iw_model_metadata *md = NULL;
    CHECK(iw_model_metadata_get(c, "add_sub", 0, &md, &err) == IW_OK, "metadata: %s", err.message);
    if (md) {
        CHECK(md->n_inputs == 2 && md->n_outputs == 2 && md->max_batch_size == 64, "io counts");
        CHECK(md->inputs[0].datatype == IW_FP32 && md->inputs[0].ndim == 2 &&
                  md->inputs[0].shape[0] == -1 && md->inputs[0].shape[1] == 4,
              "input shape");
        iw_model_metadata_free(md);
    }
    iw_close(c);
}

static void test_known_answer(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    static addsub s;
    iw_error err;
    for (int rows = 1; rows <= 3; rows += 2) {
        addsub_init(&s, rows, 1.0f);
        iw_result *r = NULL;
        iw_status_code rc = iw_infer(c, &s.req, &r, &err);
        CHECK(rc == IW_OK, "infer: %s %s", iw_status_name(err.code), err.message);
        if (r) {
            CHECK(addsub_ok(&s, r), "wrong add_sub answer for %d rows", rows);
            CHECK(strcmp(r->model_name, "add_sub") == 0 && r->model_version == 1, "model/version");
            iw_result_free(r);
        }
    }
    /* selecting outputs and a correlation id */
    addsub_init(&s, 1, 1.0f);
    const char *names[] = {"OUTPUT1"};
    s.req.output_names = names;
    s.req.n_output_names = 1;
    s.req.id = "corr-42";
    iw_result *r = NULL;
    CHECK(iw_infer(c, &s.req, &r, &err) == IW_OK, "infer: %s", err.message);
    if (r) {
        CHECK(r->n_outputs == 1 && iw_result_output(r, "OUTPUT1") != NULL, "only OUTPUT1");
        CHECK(r->id && strcmp(r->id, "corr-42") == 0, "correlation id echoed");
        iw_result_free(r);
    }
    iw_close(c);
}

/* The Trace Context recommendation's example traceparent, and a tracestate. */
#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT_SPAN_ID "00f067aa0ba902b7"
#define TRACEPARENT "00-" TRACE_ID "-" PARENT_SPAN_ID "-01"
#define TRACESTATE "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

/* traceparent/tracestate go with blocking and pipelined requests and those are served;
 * a traceparent the server cannot parse is ignored, not refused. */
static void test_trace_context(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    static addsub s;
    iw_error err;
    iw_result *r = NULL;
    addsub_init(&s, 2, 3.0f);
    s.req.traceparent = TRACEPARENT;
    s.req.tracestate = TRACESTATE;
    s.req.id = "traced";
    CHECK(iw_infer(c, &s.req, &r, &err) == IW_OK, "traced infer: %s %s", iw_status_name(err.code), err.message);
    if (r) {
        CHECK(addsub_ok(&s, r), "wrong add_sub answer with a traceparent");
        CHECK(r->id && strcmp(r->id, "traced") == 0, "correlation id echoed");
        iw_result_free(r);
        r = NULL;
    }
    const char *invalid[] = {"not a traceparent", "00-00000000000000000000000000000000-" PARENT_SPAN_ID "-01",
                             "00-" TRACE_ID "-" PARENT_SPAN_ID, ""};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        addsub_init(&s, 1, (float)i);
        s.req.traceparent = invalid[i];
        s.req.tracestate = "x";
        iw_status_code rc = iw_infer(c, &s.req, &r, &err);
        CHECK(rc == IW_OK && r && addsub_ok(&s, r), "traceparent '%s' gave %s: %s", invalid[i],
              iw_status_name(rc), err.message);
        iw_result_free(r);
        r = NULL;
    }
    /* pipelined */
    addsub_init(&s, 3, 7.0f);
    s.req.traceparent = TRACEPARENT;
    uint32_t id = 0;
    CHECK(iw_send_infer(c, &s.req, &id, &err) == IW_OK, "traced send: %s", err.message);
    iw_completion comp;
    memset(&comp, 0, sizeof comp);
    int pr = iw_poll(c, 10000, &comp, &err);
    CHECK(pr == 1 && comp.request_id == id && comp.error.code == IW_OK && comp.result &&
              addsub_ok(&s, comp.result),
          "traced pipelined request: poll %d, %s %s", pr, iw_status_name(comp.error.code), comp.error.message);
    if (pr == 1) iw_completion_clear(&comp);
    iw_close(c);
}

/* 64 requests in flight, mixing a slow model (mlp, 64 rows) with add_sub, so that
 * answers usually come back out of order; every answer must match its request id.
 * How many arrive out of order depends on timing, so it is reported, not asserted
 * (the server's own tests prove out-of-order completion deterministically). */
static void test_pipelining(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    enum { N = 64 };
    static addsub reqs[N];
    uint32_t ids[N];
    int kind[N], got[N];
    iw_error err;
    iw_model_metadata *md = NULL;
    CHECK(iw_model_metadata_get(c, "mlp", 0, &md, &err) == IW_OK, "mlp metadata: %s", err.message);
    if (!md) { iw_close(c); return; }
    int64_t feat = md->inputs[0].shape[md->inputs[0].ndim - 1];
    static float mlp_in[64 * 512];
    int64_t mlp_shape[2] = {64, feat};
    iw_tensor mt = {md->inputs[0].name, IW_FP32, mlp_shape, 2, mlp_in, (size_t)(64 * feat * 4)};
    iw_infer_request mreq = {.model_name = "mlp", .inputs = &mt, .n_inputs = 1};

    for (int i = 0; i < N; i++) {
        got[i] = 0;
        kind[i] = (i < 16 && i % 2 == 0) || i % 8 == 0; /* slow mlp requests, mostly early */
        iw_status_code rc;
        if (kind[i]) {
            rc = iw_send_infer(c, &mreq, &ids[i], &err);
        } else {
            addsub_init(&reqs[i], 1 + i % 5, (float)(i * 100));
            rc = iw_send_infer(c, &reqs[i].req, &ids[i], &err);
        }
        CHECK(rc == IW_OK, "send %d: %s", i, err.message);
    }
    /* each send first reads what has arrived (to notice a GOAWAY), so answers to the
       first requests may already be in, and those are no longer in flight */
    CHECK(iw_in_flight(c) <= N, "in flight %zu", iw_in_flight(c));
    int order_breaks = 0, answered = 0, last = -1, bad = 0;
    while (answered < N) {
        iw_completion comp;
        int pr = iw_poll(c, 10000, &comp, &err);
        if (pr != 1) { CHECK(0, "poll returned %d: %s", pr, err.message); break; }
        int k = -1;
        for (int i = 0; i < N; i++) if (ids[i] == comp.request_id) k = i;
        if (k < 0 || got[k]) { bad++; iw_completion_clear(&comp); continue; }
        got[k] = 1;
        answered++;
        if (k < last) order_breaks++;
        last = k;
        if (comp.error.code != IW_OK || !comp.result) {
            bad++;
            printf("  request %d: %s %s\n", k, iw_status_name(comp.error.code), comp.error.message);
        } else if (kind[k]) {
            if (comp.result->n_outputs < 1 || strcmp(comp.result->model_name, "mlp") != 0) bad++;
            else if (comp.result->outputs[0].shape[0] != 64) bad++;
        } else if (!addsub_ok(&reqs[k], comp.result)) {
            bad++;
        }
        iw_completion_clear(&comp);
    }
    CHECK(answered == N && bad == 0, "answered %d, bad %d", answered, bad);
    printf("  pipelining: %d answers, %d out of order\n", answered, order_breaks);
    CHECK(iw_in_flight(c) == 0, "in flight after %zu", iw_in_flight(c));
    iw_model_metadata_free(md);
    iw_close(c);
}

static void test_errors(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    static addsub s;
    iw_error err;
    iw_result *r = NULL;
    addsub_init(&s, 1, 1.0f);
    s.req.model_name = "no_such_model";
    iw_status_code rc = iw_infer(c, &s.req, &r, &err);
    CHECK(rc == IW_NOT_FOUND && err.code == IW_NOT_FOUND, "unknown model gave %s", iw_status_name(rc));
    CHECK(strstr(err.message, "no_such_model") != NULL, "message names the model: '%s'", err.message);
    CHECK(r == NULL, "no result on error");
    printf("  NOT_FOUND message: %s\n", err.message);

    addsub_init(&s, 1, 1.0f);
    int64_t bad_shape[2] = {1, 3};
    s.in[0].shape = bad_shape;
    s.in[0].size = 12;
    rc = iw_infer(c, &s.req, &r, &err);
    CHECK(rc == IW_INVALID_ARGUMENT, "wrong shape gave %s: %s", iw_status_name(rc), err.message);
    CHECK(strstr(err.message, "INPUT0") != NULL, "message names the input: '%s'", err.message);
    printf("  INVALID_ARGUMENT message: %s\n", err.message);

    addsub_init(&s, 1, 1.0f);
    s.in[1].size = 8; /* raw_contents length not matching the shape */
    rc = iw_infer(c, &s.req, &r, &err);
    CHECK(rc == IW_INVALID_ARGUMENT, "short raw_contents gave %s", iw_status_name(rc));

    addsub_init(&s, 1, 1.0f);
    s.req.model_version = 99;
    rc = iw_infer(c, &s.req, &r, &err);
    CHECK(rc == IW_NOT_FOUND, "unknown version gave %s", iw_status_name(rc));

    /* unknown method through the raw API */
    uint8_t *resp = NULL;
    size_t rl = 0;
    rc = iw_call_raw(c, 99, NULL, 0, 0, &resp, &rl, &err);
    CHECK(rc == IW_UNIMPLEMENTED, "unknown method gave %s", iw_status_name(rc));

    /* the connection carries on after per-request errors */
    addsub_init(&s, 2, 5.0f);
    rc = iw_infer(c, &s.req, &r, &err);
    CHECK(rc == IW_OK && r && addsub_ok(&s, r), "infer after errors: %s", err.message);
    iw_result_free(r);
    iw_close(c);

    /* connection refused → UNAVAILABLE */
    iw_conn *none = iw_connect("127.0.0.1", 1, NULL, &err);
    CHECK(none == NULL && err.code == IW_UNAVAILABLE, "connect to closed port: %s", err.message);
}

static void test_deadline(void)
{
    iw_conn *c = conn_with(NULL);
    if (!c) return;
    iw_error err;
    iw_model_metadata *md = NULL;
    if (iw_model_metadata_get(c, "mlp", 0, &md, &err) != IW_OK) {
        CHECK(0, "mlp metadata: %s", err.message);
        iw_close(c);
        return;
    }
    /* Fill mlp's queue with big batches: every one is answered. */
    int64_t feat = md->inputs[0].shape[md->inputs[0].ndim - 1];
    static float mlp_in[64 * 512];
    int64_t shape[2] = {64, feat};
    iw_tensor t = {md->inputs[0].name, IW_FP32, shape, 2, mlp_in, (size_t)(64 * feat * 4)};
    iw_infer_request req = {.model_name = "mlp", .inputs = &t, .n_inputs = 1};
    enum { FLOOD = 200 };
    for (int i = 0; i < FLOOD; i++)
        CHECK(iw_send_infer(c, &req, NULL, &err) == IW_OK, "flood: %s", err.message);
    int done = 0, fails = 0;
    iw_completion comp;
    while (iw_poll(c, 10000, &comp, &err) == 1) {
        done++;
        fails += comp.error.code != IW_OK;
        iw_completion_clear(&comp);
    }
    CHECK(done == FLOOD && fails == 0, "flood answered %d, failed %d", done, fails);

    /* One row to mlp_held waits a second in its queue for rows to batch with (run_tests.sh
       adds the model), so a 1 ms deadline passes first however fast the machine is. */
    int64_t one_row[2] = {1, feat};
    iw_tensor row = {md->inputs[0].name, IW_FP32, one_row, 2, mlp_in, (size_t)(feat * 4)};
    iw_infer_request held = {.model_name = "mlp_held", .inputs = &row, .n_inputs = 1, .timeout_us = 1000};
    iw_result *r = NULL;
    iw_status_code rc = iw_infer(c, &held, &r, &err);
    CHECK(rc == IW_DEADLINE_EXCEEDED, "deadline gave %s: %s", iw_status_name(rc), err.message);
    printf("  DEADLINE_EXCEEDED message: %s\n", err.message);
    iw_result_free(r);

    /* Local timeout: a deadline too short for any answer → CANCEL sent, DEADLINE_EXCEEDED. */
    req.timeout_us = 1;
    uint64_t cancels = iw_conn_stats(c).cancels_sent;
    rc = iw_infer(c, &req, &r, &err);
    CHECK(rc == IW_DEADLINE_EXCEEDED, "1 us deadline gave %s", iw_status_name(rc));
    CHECK(iw_conn_stats(c).cancels_sent == cancels + 1, "local timeout sent CANCEL");
    /* the abandoned request's answer is discarded; the connection carries on */
    req.timeout_us = 0;
    rc = iw_infer(c, &req, &r, &err);
    CHECK(rc == IW_OK && r, "infer after timeout: %s", err.message);
    iw_result_free(r);

    /* Explicit cancel of a queued request: rows to mlp_held wait in its queue, so the
       CANCEL always arrives first. */
    held.timeout_us = 0;
    for (int i = 0; i < 10; i++) iw_send_infer(c, &held, NULL, &err);
    uint32_t id;
    CHECK(iw_send_infer(c, &held, &id, &err) == IW_OK, "send");
    CHECK(iw_cancel(c, id, &err) == IW_OK, "cancel: %s", err.message);
    int cancelled = 0, answered = 0;
    while (iw_poll(c, 10000, &comp, &err) == 1) {
        if (comp.request_id == id) cancelled = comp.error.code == IW_CANCELLED ? 1 : 2;
        else answered += comp.error.code == IW_OK;
        iw_completion_clear(&comp);
    }
    CHECK(cancelled == 1, "cancelled request got %s", cancelled == 2 ? "an answer" : "nothing");
    CHECK(answered == 10, "the other queued requests were answered: %d of 10", answered);
    CHECK(iw_in_flight(c) == 0, "in flight %zu", iw_in_flight(c));
    iw_model_metadata_free(md);
    iw_close(c);
}

static void test_compression(void)
{
    iw_options o = {.compression = true};
    iw_conn *c = conn_with(&o);
    if (!c) return;
    CHECK(iw_conn_hello(c)->compression, "server offers compression");
    static float x[64 * 16];
    for (int i = 0; i < 64 * 16; i++) x[i] = (float)(i % 7);
    int64_t shape[2] = {64, 16};
    iw_tensor t = {"INPUT0", IW_FP32, shape, 2, x, sizeof x};
    iw_infer_request req = {.model_name = "identity", .inputs = &t, .n_inputs = 1};
    iw_error err;
    iw_result *r = NULL;
    CHECK(iw_infer(c, &req, &r, &err) == IW_OK, "compressed infer: %s", err.message);
    if (r) {
        const iw_tensor *o0 = iw_result_output(r, "OUTPUT0");
        CHECK(o0 && o0->size == sizeof x && memcmp(o0->data, x, sizeof x) == 0, "identity echo");
        iw_result_free(r);
    }
    iw_stats st = iw_conn_stats(c);
    CHECK(st.compressed_sent == 1, "compressed requests sent %llu", (unsigned long long)st.compressed_sent);
    CHECK(st.compressed_received == 1, "compressed responses %llu", (unsigned long long)st.compressed_received);
    CHECK(st.bytes_sent < sizeof x, "request went compressed (%llu bytes)", (unsigned long long)st.bytes_sent);
    /* small payloads stay uncompressed and still work */
    static addsub s;
    addsub_init(&s, 1, 1.0f);
    CHECK(iw_infer(c, &s.req, &r, &err) == IW_OK && r && addsub_ok(&s, r), "small: %s", err.message);
    iw_result_free(r);
    iw_close(c);
}

/* ------------------------------------------------------ TLS and authentication */

/* run_tests.sh starts more servers and says where they are through the environment:
 * IW_PKI (the directory of the test certificates), IW_PORT_<NAME> for each server,
 * IW_TOKEN_<NAME> for the tokens in the auth servers' token file. */
static const char *pki_dir;
static char pki_buf[8][512];

static const char *pki(const char *file)
{
    static int next;
    char *b = pki_buf[next++ % 8];
    snprintf(b, sizeof pki_buf[0], "%s/%s", pki_dir, file);
    return b;
}

static uint16_t env_port(const char *name)
{
    char var[64];
    snprintf(var, sizeof var, "IW_PORT_%s", name);
    const char *v = getenv(var);
    return v ? (uint16_t)atoi(v) : 0;
}

static const char *env_token(const char *name)
{
    char var[64];
    snprintf(var, sizeof var, "IW_TOKEN_%s", name);
    return getenv(var);
}

/* true when the variables for these tests are set; otherwise one failure */
static bool have_env(const char *server)
{
    bool ok = pki_dir && env_port(server);
    CHECK(ok, "IW_PKI and IW_PORT_%s are not set (run the tests through run_tests.sh)", server);
    return ok;
}

/* The line of the server log at path that names request_id=id (NULL if none) in line[]. */
static const char *log_line(const char *path, const char *id, char *line, size_t size)
{
    char key[128];
    snprintf(key, sizeof key, "request_id=%s ", id);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    const char *found = NULL;
    while (!found && fgets(line, (int)size, f))
        if (strstr(line, key)) found = line;
    fclose(f);
    return found;
}

/* Against the server with an access log of every request (run_tests.sh: "traced", log in
 * IW_LOG_TRACED): the traced request's line names the trace id and parent span id sent;
 * an untraced one's names none. The ids are unique per run (native, then valgrind). */
static void test_trace_context_logged(void)
{
    const char *path = getenv("IW_LOG_TRACED");
    uint16_t tp = env_port("TRACED");
    CHECK(path && tp, "IW_LOG_TRACED and IW_PORT_TRACED are not set (run the tests through run_tests.sh)");
    if (!path || !tp) return;
    iw_options o = {.default_timeout_us = 30000000};
    iw_error err;
    iw_conn *c = iw_connect("127.0.0.1", tp, &o, &err);
    CHECK(c != NULL, "connect to the traced server: %s", err.message);
    if (!c) return;
    char traced[64], untraced[64];
    snprintf(traced, sizeof traced, "c-traced-%ld", (long)getpid());
    snprintf(untraced, sizeof untraced, "c-untraced-%ld", (long)getpid());
    static addsub s;
    iw_result *r = NULL;
    addsub_init(&s, 1, 1.0f);
    s.req.id = traced;
    s.req.traceparent = TRACEPARENT;
    s.req.tracestate = TRACESTATE;
    CHECK(iw_infer(c, &s.req, &r, &err) == IW_OK, "traced infer: %s", err.message);
    iw_result_free(r);
    r = NULL;
    s.req.id = untraced;
    s.req.traceparent = NULL;
    s.req.tracestate = NULL;
    CHECK(iw_infer(c, &s.req, &r, &err) == IW_OK, "untraced infer: %s", err.message);
    iw_result_free(r);
    iw_close(c);

    /* the server writes the line before it answers; wait a little anyway */
    static char a[4096], b[4096];
    const char *la = NULL, *lb = NULL;
    for (int i = 0; i < 100 && !(la && lb); i++) {
        la = log_line(path, traced, a, sizeof a);
        lb = log_line(path, untraced, b, sizeof b);
        if (!(la && lb)) nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    CHECK(la != NULL, "no access log line for %s in %s", traced, path);
    CHECK(lb != NULL, "no access log line for %s in %s", untraced, path);
    if (la) {
        CHECK(strstr(la, "trace_id=" TRACE_ID) != NULL, "traced line lacks the trace id: %s", la);
        CHECK(strstr(la, "parent_span_id=" PARENT_SPAN_ID) != NULL, "traced line lacks the parent span: %s", la);
        CHECK(strstr(la, "code=OK") != NULL, "traced line: %s", la);
    }
    if (lb) CHECK(strstr(lb, "trace_id=") == NULL, "untraced line names a trace: %s", lb);
}

static iw_connect_options tls_opts(void)
{
    iw_connect_options o;
    memset(&o, 0, sizeof o);
    o.tls = true;
    o.ca_file = pki("ca.pem");
    o.base.default_timeout_us = 30000000; /* no call waits forever */
    return o;
}

/* connect expecting failure: returns the error (and closes a connection that succeeded) */
static iw_error connect_fails(const char *host, const char *server, const iw_connect_options *o)
{
    iw_error err;
    memset(&err, 0, sizeof err);
    iw_conn *c = iw_connect_opts(host, env_port(server), o, &err);
    CHECK(c == NULL, "connect to %s succeeded", server);
    iw_close(c);
    return err;
}

#define HAS(err, text) \
    CHECK(strstr((err).message, text) != NULL, "%s: message lacks '%s': %s", \
          iw_status_name((err).code), text, (err).message)

/* one add_sub inference; returns its status */
static iw_status_code addsub_call(iw_conn *c, iw_error *err)
{
    static addsub s;
    addsub_init(&s, 2, 3.0f);
    iw_result *r = NULL;
    iw_status_code rc = iw_infer(c, &s.req, &r, err);
    if (rc == IW_OK) CHECK(r && addsub_ok(&s, r), "wrong add_sub answer");
    iw_result_free(r);
    return rc;
}

/* LIST_MODELS through the raw API; returns its status */
static iw_status_code list_models(iw_conn *c, iw_error *err)
{
    uint8_t *resp = NULL;
    size_t len = 0;
    iw_status_code rc = iw_call_raw(c, 100 /* LIST_MODELS */, NULL, 0, 0, &resp, &len, err);
    free(resp);
    return rc;
}

static void test_tls(void)
{
    if (!have_env("TLS")) return;
    iw_connect_options o = tls_opts();
    iw_error err;
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("TLS"), &o, &err);
    CHECK(c != NULL, "TLS connect: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const char *v = iw_conn_tls_version(c), *alpn = iw_conn_alpn(c);
        CHECK(v && strncmp(v, "TLSv1.", 6) == 0, "TLS version %s", v ? v : "(none)");
        CHECK(alpn && strcmp(alpn, "inferwire/1") == 0, "ALPN %s", alpn ? alpn : "(none)");
        printf("  TLS: %s, ALPN %s\n", v ? v : "-", alpn ? alpn : "-");
        CHECK(addsub_call(c, &err) == IW_OK, "TLS infer: %s %s", iw_status_name(err.code), err.message);
        CHECK(iw_conn_principal(c) == NULL, "no principal without authentication");
        CHECK(!iw_conn_hello(c)->authentication_required, "TLS server without auth");
        /* pipelined requests through TLS */
        static addsub reqs[32];
        int ok = 0;
        for (int i = 0; i < 32; i++) {
            addsub_init(&reqs[i], 1 + i % 4, (float)i);
            CHECK(iw_send_infer(c, &reqs[i].req, NULL, &err) == IW_OK, "send: %s", err.message);
        }
        iw_completion comp;
        while (iw_poll(c, 10000, &comp, &err) == 1) {
            ok += comp.error.code == IW_OK && comp.result;
            iw_completion_clear(&comp);
        }
        CHECK(ok == 32, "pipelined TLS answers: %d of 32", ok);
        iw_close(c);
    }
    /* the DNS name in the certificate works as well (and is sent as SNI) */
    c = iw_connect_opts("localhost", env_port("TLS"), &o, &err);
    CHECK(c != NULL, "TLS connect to localhost: %s %s", iw_status_name(err.code), err.message);
    if (c) CHECK(addsub_call(c, &err) == IW_OK, "infer: %s", err.message);
    iw_close(c);
    /* compression inside TLS */
    o.base.compression = true;
    c = iw_connect_opts("127.0.0.1", env_port("TLS"), &o, &err);
    CHECK(c != NULL, "TLS + compression connect: %s", err.message);
    if (c) {
        static float x[64 * 16];
        int64_t shape[2] = {64, 16};
        iw_tensor t = {"INPUT0", IW_FP32, shape, 2, x, sizeof x};
        iw_infer_request req = {.model_name = "identity", .inputs = &t, .n_inputs = 1};
        iw_result *r = NULL;
        CHECK(iw_infer(c, &req, &r, &err) == IW_OK && r, "compressed TLS infer: %s", err.message);
        iw_result_free(r);
        CHECK(iw_conn_stats(c).compressed_received == 1, "compressed response inside TLS");
        iw_close(c);
    }

    /* Without ca_file the system's trust store is used, which does not hold the test CA. */
    o = tls_opts();
    o.ca_file = NULL;
    err = connect_fails("127.0.0.1", "TLS", &o);
    CHECK(err.code == IW_UNAVAILABLE, "system trust store: %s", iw_status_name(err.code));
    HAS(err, "TLS handshake");
    HAS(err, "certificate verify failed");
    printf("  system trust store: %s\n", err.message);

    /* a CA file that does not exist */
    o = tls_opts();
    o.ca_file = pki("no-such-file.pem");
    err = connect_fails("127.0.0.1", "TLS", &o);
    CHECK(err.code == IW_INVALID_ARGUMENT, "missing CA file: %s", iw_status_name(err.code));
    HAS(err, "no-such-file.pem");
    /* TLS options without tls = true are refused rather than ignored */
    o = tls_opts();
    o.tls = false;
    err = connect_fails("127.0.0.1", "TLS", &o);
    CHECK(err.code == IW_INVALID_ARGUMENT, "ca_file without tls: %s", iw_status_name(err.code));
}

static void test_tls_refusals(void)
{
    if (!have_env("TLS") || !have_env("TLS_WRONG_CA") || !have_env("TLS_WRONG_HOST") ||
        !have_env("TLS_EXPIRED"))
        return;
    iw_connect_options o = tls_opts();
    iw_error err;

    /* a server certificate from a CA the client does not trust */
    err = connect_fails("127.0.0.1", "TLS_WRONG_CA", &o);
    CHECK(err.code == IW_UNAVAILABLE, "untrusted CA: %s", iw_status_name(err.code));
    HAS(err, "TLS handshake");
    HAS(err, "certificate verify failed");
    HAS(err, "unable to get local issuer certificate");
    printf("  untrusted CA: %s\n", err.message);

    /* a certificate for other.example, reached as 127.0.0.1 and as localhost */
    err = connect_fails("127.0.0.1", "TLS_WRONG_HOST", &o);
    HAS(err, "TLS handshake");
    HAS(err, "IP address mismatch");
    HAS(err, "other.example");
    printf("  wrong host (IP): %s\n", err.message);
    err = connect_fails("localhost", "TLS_WRONG_HOST", &o);
    HAS(err, "hostname mismatch");
    printf("  wrong host (DNS): %s\n", err.message);
    /* server_name: verify (and send as SNI) another name than the one connected to */
    o.server_name = "other.example";
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("TLS_WRONG_HOST"), &o, &err);
    CHECK(c != NULL, "server_name other.example: %s", err.message);
    if (c) CHECK(addsub_call(c, &err) == IW_OK, "infer: %s", err.message);
    iw_close(c);
    err = connect_fails("127.0.0.1", "TLS", &o); /* and the right server under a wrong name */
    HAS(err, "hostname mismatch");
    o.server_name = NULL;

    /* an expired certificate */
    err = connect_fails("127.0.0.1", "TLS_EXPIRED", &o);
    CHECK(err.code == IW_UNAVAILABLE, "expired: %s", iw_status_name(err.code));
    HAS(err, "TLS handshake");
    HAS(err, "certificate has expired");
    printf("  expired: %s\n", err.message);
}

static void test_tls_plaintext_mismatch(void)
{
    if (!have_env("TLS")) return;
    iw_error err;
    /* plaintext to the TLS port: the server's GOAWAY */
    iw_conn *c = iw_connect("127.0.0.1", env_port("TLS"), NULL, &err);
    CHECK(c == NULL, "plaintext connect to a TLS port succeeded");
    iw_close(c);
    CHECK(err.code == IW_FAILED_PRECONDITION, "plaintext to TLS: %s %s", iw_status_name(err.code), err.message);
    HAS(err, "requires TLS");
    printf("  plaintext to TLS port: %s: %s\n", iw_status_name(err.code), err.message);

    /* TLS to the plaintext port */
    iw_connect_options o = tls_opts();
    c = iw_connect_opts("127.0.0.1", port, &o, &err);
    CHECK(c == NULL, "TLS connect to a plaintext port succeeded");
    iw_close(c);
    HAS(err, "TLS handshake");
    HAS(err, "does not speak TLS");
    printf("  TLS to plaintext port: %s: %s\n", iw_status_name(err.code), err.message);
    /* the plaintext server carries on */
    c = conn_with(NULL);
    if (c) CHECK(addsub_call(c, &err) == IW_OK, "plaintext infer after: %s", err.message);
    iw_close(c);
}

static void test_mtls(void)
{
    if (!have_env("MTLS")) return;
    iw_connect_options o = tls_opts();
    iw_error err;
    /* no client certificate */
    err = connect_fails("127.0.0.1", "MTLS", &o);
    CHECK(err.code == IW_UNAVAILABLE, "mTLS without certificate: %s", iw_status_name(err.code));
    HAS(err, "TLS handshake");
    HAS(err, "client certificate");
    printf("  mTLS without a client certificate: %s\n", err.message);
    /* a client certificate from another CA */
    o.cert_file = pki("otherclient.pem");
    o.key_file = pki("otherclient.key");
    err = connect_fails("127.0.0.1", "MTLS", &o);
    HAS(err, "TLS handshake");
    printf("  mTLS with another CA's client certificate: %s\n", err.message);
    /* the right one */
    o.cert_file = pki("client.pem");
    o.key_file = pki("client.key");
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("MTLS"), &o, &err);
    CHECK(c != NULL, "mTLS connect: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        CHECK(addsub_call(c, &err) == IW_OK, "mTLS infer: %s %s", iw_status_name(err.code), err.message);
        CHECK(iw_conn_principal(c) == NULL, "no token file: no principal");
        iw_close(c);
    }
    /* a key that is not the certificate's */
    o.key_file = pki("server.key");
    err = connect_fails("127.0.0.1", "MTLS", &o);
    CHECK(err.code == IW_INVALID_ARGUMENT, "mismatched key: %s %s", iw_status_name(err.code), err.message);
}

/* A mutual-TLS server with a token file: the certificate's CN authenticates the
 * connection (HELLO names the principal); a token sent anyway replaces it. */
static void test_mtls_principal(void)
{
    if (!have_env("MTLS_AUTH")) return;
    iw_connect_options o = tls_opts();
    o.cert_file = pki("client.pem");
    o.key_file = pki("client.key");
    iw_error err;
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("MTLS_AUTH"), &o, &err);
    CHECK(c != NULL, "mTLS + certificate principal: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const iw_principal *p = iw_conn_principal(c);
        CHECK(iw_conn_hello(c)->authentication_required, "HELLO says authentication_required");
        CHECK(p && strcmp(p->name, "ci-runner") == 0, "principal %s", p ? p->name : "(none)");
        CHECK(p && iw_principal_has_role(p, "infer") && !iw_principal_has_role(p, "admin"),
              "certificate principal's roles");
        CHECK(addsub_call(c, &err) == IW_OK, "infer as ci-runner: %s %s", iw_status_name(err.code), err.message);
        CHECK(list_models(c, &err) == IW_PERMISSION_DENIED, "LIST_MODELS as ci-runner: %s", iw_status_name(err.code));
        iw_close(c);
    }
    o.token = env_token("ADMIN");
    c = iw_connect_opts("127.0.0.1", env_port("MTLS_AUTH"), &o, &err);
    CHECK(c != NULL, "mTLS + token: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const iw_principal *p = iw_conn_principal(c);
        CHECK(p && strcmp(p->name, "ci-admin") == 0, "the token replaced the certificate's principal: %s",
              p ? p->name : "(none)");
        CHECK(list_models(c, &err) == IW_OK, "LIST_MODELS as ci-admin: %s", err.message);
        iw_close(c);
    }
}

static void test_auth(void)
{
    if (!have_env("AUTH")) return;
    uint16_t ap = env_port("AUTH");
    const char *admin = env_token("ADMIN"), *inferer = env_token("INFER"), *manager = env_token("MANAGE");
    CHECK(admin && inferer && manager, "IW_TOKEN_ADMIN, IW_TOKEN_INFER, IW_TOKEN_MANAGE");
    if (!admin || !inferer || !manager) return;
    iw_connect_options o;
    memset(&o, 0, sizeof o);
    o.base.default_timeout_us = 30000000;
    iw_error err;

    /* no token: refused at connect, locally, from HELLO */
    err = connect_fails("127.0.0.1", "AUTH", &o);
    CHECK(err.code == IW_UNAUTHENTICATED, "no token: %s", iw_status_name(err.code));
    HAS(err, "requires authentication");
    HAS(err, "token");
    printf("  no token: %s\n", err.message);

    /* a wrong token: the server's GOAWAY UNAUTHENTICATED, at connect */
    o.token = "not-a-token-the-server-knows";
    err = connect_fails("127.0.0.1", "AUTH", &o);
    CHECK(err.code == IW_UNAUTHENTICATED, "bad token: %s %s", iw_status_name(err.code), err.message);
    CHECK(strncmp(err.message, "client:", 7) != 0 && err.message[0], "the server's message: %s", err.message);
    printf("  bad token: %s: %s\n", iw_status_name(err.code), err.message);

    /* the admin token */
    o.token = admin;
    iw_conn *c = iw_connect_opts("127.0.0.1", ap, &o, &err);
    CHECK(c != NULL, "admin token: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const iw_principal *p = iw_conn_principal(c);
        CHECK(iw_conn_hello(c)->authentication_required, "HELLO says authentication_required");
        CHECK(p && strcmp(p->name, "ci-admin") == 0, "principal %s", p ? p->name : "(none)");
        CHECK(p && p->n_roles == 3 && iw_principal_has_role(p, "infer") &&
                  iw_principal_has_role(p, "manage") && iw_principal_has_role(p, "admin"),
              "admin roles (%zu)", p ? p->n_roles : 0);
        CHECK(p && p->n_models == 0, "every model");
        CHECK(addsub_call(c, &err) == IW_OK, "infer as admin: %s %s", iw_status_name(err.code), err.message);
        CHECK(list_models(c, &err) == IW_OK, "LIST_MODELS as admin: %s", err.message);
        bool live = false;
        CHECK(iw_server_live(c, &live, &err) == IW_OK && live, "live: %s", err.message);
        iw_close(c);
    }

    /* the inference-only token, limited to add_sub and ident* */
    o.token = inferer;
    c = iw_connect_opts("127.0.0.1", ap, &o, &err);
    CHECK(c != NULL, "infer token: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const iw_principal *p = iw_conn_principal(c);
        CHECK(p && strcmp(p->name, "ci-infer") == 0, "principal %s", p ? p->name : "(none)");
        CHECK(p && p->n_roles == 1 && iw_principal_has_role(p, "infer"), "infer role only");
        CHECK(p && p->n_models == 2, "two model entries (%zu)", p ? p->n_models : 0);
        /* a method of a role it lacks */
        iw_status_code rc = list_models(c, &err);
        CHECK(rc == IW_PERMISSION_DENIED, "LIST_MODELS as ci-infer: %s %s", iw_status_name(rc), err.message);
        HAS(err, "ci-infer");
        printf("  role outside the principal's: %s: %s\n", iw_status_name(rc), err.message);
        /* the connection carries on */
        CHECK(addsub_call(c, &err) == IW_OK, "infer after PERMISSION_DENIED: %s %s", iw_status_name(err.code), err.message);
        bool ready = false;
        CHECK(iw_model_ready(c, "identity", 0, &ready, NULL, &err) == IW_OK && ready,
              "identity (ident*) is reachable: %s", err.message);
        /* a model outside its models */
        float x[4] = {0};
        int64_t shape[2] = {1, 4};
        iw_tensor t = {"INPUT0", IW_FP32, shape, 2, x, sizeof x};
        iw_infer_request req = {.model_name = "mlp", .inputs = &t, .n_inputs = 1};
        iw_result *r = NULL;
        rc = iw_infer(c, &req, &r, &err);
        CHECK(rc == IW_PERMISSION_DENIED, "infer mlp as ci-infer: %s %s", iw_status_name(rc), err.message);
        HAS(err, "mlp");
        printf("  model outside the principal's: %s: %s\n", iw_status_name(rc), err.message);
        iw_result_free(r);
        CHECK(addsub_call(c, &err) == IW_OK, "infer after PERMISSION_DENIED: %s", err.message);

        /* a fresh AUTH on the open connection replaces the principal */
        CHECK(iw_authenticate(c, admin, &err) == IW_OK, "re-authenticate: %s %s", iw_status_name(err.code), err.message);
        p = iw_conn_principal(c);
        CHECK(p && strcmp(p->name, "ci-admin") == 0, "principal after AUTH: %s", p ? p->name : "(none)");
        CHECK(list_models(c, &err) == IW_OK, "LIST_MODELS after AUTH as admin: %s %s", iw_status_name(err.code), err.message);
        /* bad credentials on an open connection: GOAWAY UNAUTHENTICATED, connection over */
        rc = iw_authenticate(c, "wrong", &err);
        CHECK(rc == IW_UNAUTHENTICATED, "bad re-authentication: %s %s", iw_status_name(rc), err.message);
        CHECK(!iw_conn_is_open(c), "the connection is over after a refused AUTH");
        /* the next call opens a new connection with the token accepted last (admin) */
        CHECK(iw_conn_reconnects(c) == 0, "reconnects before %llu", (unsigned long long)iw_conn_reconnects(c));
        CHECK(list_models(c, &err) == IW_OK, "call after a refused AUTH: %s %s", iw_status_name(err.code), err.message);
        CHECK(iw_conn_reconnects(c) == 1, "reconnects after %llu", (unsigned long long)iw_conn_reconnects(c));
        p = iw_conn_principal(c);
        CHECK(p && strcmp(p->name, "ci-admin") == 0, "reconnected as %s", p ? p->name : "(none)");
        iw_close(c);
    }

    /* the same without reconnecting: the connection stays over */
    o.token = admin;
    o.base.no_reconnect = true;
    c = iw_connect_opts("127.0.0.1", ap, &o, &err);
    CHECK(c != NULL, "admin token, no_reconnect: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        CHECK(iw_authenticate(c, "wrong", &err) == IW_UNAUTHENTICATED, "bad re-authentication: %s", err.message);
        iw_status_code rc = addsub_call(c, &err);
        CHECK(rc == IW_UNAUTHENTICATED, "no_reconnect: call after a refused AUTH gave %s: %s", iw_status_name(rc), err.message);
        CHECK(iw_conn_reconnects(c) == 0, "no_reconnect: reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
        iw_close(c);
    }
    o.base.no_reconnect = false;

    /* the manage-only token may not infer */
    o.token = manager;
    c = iw_connect_opts("127.0.0.1", ap, &o, &err);
    CHECK(c != NULL, "manage token: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        iw_status_code rc = addsub_call(c, &err);
        CHECK(rc == IW_PERMISSION_DENIED, "infer as ci-manager: %s %s", iw_status_name(rc), err.message);
        CHECK(list_models(c, &err) == IW_OK, "LIST_MODELS as ci-manager: %s", err.message);
        iw_close(c);
    }

    /* A server without authentication answers a token with the principal "anonymous". */
    o.token = admin;
    c = iw_connect_opts("127.0.0.1", port, &o, &err);
    CHECK(c != NULL, "token to a server without auth: %s %s", iw_status_name(err.code), err.message);
    if (c) {
        const iw_principal *p = iw_conn_principal(c);
        CHECK(p && strcmp(p->name, "anonymous") == 0, "principal %s", p ? p->name : "(none)");
        CHECK(p && iw_principal_has_role(p, "infer") && iw_principal_has_role(p, "manage") &&
                  iw_principal_has_role(p, "admin"), "anonymous has every role");
        iw_close(c);
    }
    /* an empty token is a mistake, not "no token" */
    o.token = "";
    err = connect_fails("127.0.0.1", "AUTH", &o);
    CHECK(err.code == IW_INVALID_ARGUMENT, "empty token: %s", iw_status_name(err.code));
}

/* ------------------------------------------------------------- reconnection */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to timeout_ms for the server to end c's current connection (GOAWAY or
 * close): poll() on its socket, then iw_conn_is_open() to read what came. */
static bool wait_until_closed(iw_conn *c, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    while (iw_conn_is_open(c)) {
        uint64_t now = mono_ms();
        if (now >= end) return false;
        struct pollfd p = {.fd = iw_conn_fd(c), .events = POLLIN};
        if (p.fd < 0) return true;
        poll(&p, 1, (int)(end - now));
    }
    return true;
}

/* The idle servers (--idle-timeout 0.3) end a connection 0.3 to 0.45 s after its
 * last request: one call, the server's close, one more call on a new connection. */
static void idle_cycle(iw_conn *c, const char *what)
{
    iw_error err;
    CHECK(iw_conn_is_open(c), "%s: open after connect", what);
    CHECK(addsub_call(c, &err) == IW_OK, "%s: first call: %s %s", what, iw_status_name(err.code), err.message);
    CHECK(iw_conn_reconnects(c) == 0, "%s: reconnects %llu after the first call", what,
          (unsigned long long)iw_conn_reconnects(c));
    int fd = iw_conn_fd(c);
    CHECK(fd >= 0, "%s: socket %d", what, fd);
    CHECK(wait_until_closed(c, 10000), "%s: the server did not end the idle connection within 10 s", what);
    CHECK(!iw_conn_is_open(c), "%s: not open after the server's GOAWAY", what);
    CHECK(addsub_call(c, &err) == IW_OK, "%s: call after the idle close: %s %s", what,
          iw_status_name(err.code), err.message);
    CHECK(iw_conn_reconnects(c) == 1, "%s: exactly one reconnect, got %llu", what,
          (unsigned long long)iw_conn_reconnects(c));
    CHECK(iw_conn_is_open(c), "%s: open after the reconnect", what);
    CHECK(iw_conn_fd(c) >= 0, "%s: new socket", what);
    CHECK(iw_conn_stats(c).requests_sent == 2, "%s: requests sent %llu", what,
          (unsigned long long)iw_conn_stats(c).requests_sent);
    CHECK(iw_in_flight(c) == 0, "%s: in flight %zu", what, iw_in_flight(c));
}

static void test_reconnect_idle(void)
{
    if (!have_env("IDLE")) return;
    iw_options o = {.default_timeout_us = 30000000};
    iw_error err;
    iw_conn *c = iw_connect("127.0.0.1", env_port("IDLE"), &o, &err);
    CHECK(c != NULL, "connect: %s", err.message);
    if (!c) return;
    idle_cycle(c, "plaintext");
    const iw_hello *h = iw_conn_hello(c);
    CHECK(h->version == 1 && h->server_name && h->server_name[0], "HELLO of the new connection");

    /* pipelining: a send after the idle close goes to a new connection */
    CHECK(wait_until_closed(c, 10000), "idle close before the pipelined sends");
    static addsub s[4];
    uint32_t ids[4];
    for (int i = 0; i < 4; i++) {
        addsub_init(&s[i], 1 + i, (float)i);
        CHECK(iw_send_infer(c, &s[i].req, &ids[i], &err) == IW_OK, "send %d: %s", i, err.message);
    }
    CHECK(iw_conn_reconnects(c) == 2, "the first send reconnected: %llu", (unsigned long long)iw_conn_reconnects(c));
    int ok = 0;
    iw_completion comp;
    while (iw_poll(c, 10000, &comp, &err) == 1) {
        for (int i = 0; i < 4; i++)
            if (comp.request_id == ids[i]) ok += comp.error.code == IW_OK && comp.result && addsub_ok(&s[i], comp.result);
        iw_completion_clear(&comp);
    }
    CHECK(ok == 4, "pipelined answers after the reconnect: %d of 4", ok);
    iw_close(c);

    /* no_reconnect: the call after the idle close fails with the server's reason */
    o.no_reconnect = true;
    c = iw_connect("127.0.0.1", env_port("IDLE"), &o, &err);
    CHECK(c != NULL, "connect: %s", err.message);
    if (!c) return;
    CHECK(addsub_call(c, &err) == IW_OK, "first call: %s", err.message);
    CHECK(wait_until_closed(c, 10000), "no_reconnect: idle close");
    iw_status_code rc = addsub_call(c, &err);
    CHECK(rc == IW_UNAVAILABLE, "no_reconnect: call after the close gave %s: %s", iw_status_name(rc), err.message);
    HAS(err, "idle");
    printf("  no_reconnect, idle connection: %s: %s\n", iw_status_name(rc), err.message);
    CHECK(iw_conn_reconnects(c) == 0, "no_reconnect: reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
    iw_close(c);
}

static void test_reconnect_auth(void)
{
    if (!have_env("IDLE_AUTH")) return;
    iw_connect_options o;
    memset(&o, 0, sizeof o);
    o.base.default_timeout_us = 30000000;
    o.token = env_token("INFER");
    iw_error err;
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("IDLE_AUTH"), &o, &err);
    CHECK(c != NULL, "connect with a token: %s %s", iw_status_name(err.code), err.message);
    if (!c) return;
    const iw_principal *p = iw_conn_principal(c);
    CHECK(p && strcmp(p->name, "ci-infer") == 0, "principal %s", p ? p->name : "(none)");
    idle_cycle(c, "token");
    p = iw_conn_principal(c);
    CHECK(p && strcmp(p->name, "ci-infer") == 0, "the new connection authenticated as %s",
          p ? p->name : "(none)");
    CHECK(iw_conn_hello(c)->authentication_required, "HELLO of the new connection requires authentication");
    /* a token accepted by iw_authenticate() is the one later connections present */
    CHECK(iw_authenticate(c, env_token("ADMIN"), &err) == IW_OK, "authenticate as admin: %s", err.message);
    CHECK(wait_until_closed(c, 10000), "idle close after AUTH");
    CHECK(list_models(c, &err) == IW_OK, "LIST_MODELS after the reconnect: %s %s", iw_status_name(err.code), err.message);
    p = iw_conn_principal(c);
    CHECK(p && strcmp(p->name, "ci-admin") == 0, "reconnected as %s", p ? p->name : "(none)");
    CHECK(iw_conn_reconnects(c) == 2, "reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
    /* iw_authenticate() on a connection that has ended opens a new one with that token */
    CHECK(wait_until_closed(c, 10000), "idle close before AUTH");
    CHECK(iw_authenticate(c, env_token("INFER"), &err) == IW_OK, "authenticate after the close: %s", err.message);
    p = iw_conn_principal(c);
    CHECK(p && strcmp(p->name, "ci-infer") == 0, "new connection as %s", p ? p->name : "(none)");
    CHECK(iw_conn_reconnects(c) == 3, "reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
    CHECK(list_models(c, &err) == IW_PERMISSION_DENIED, "LIST_MODELS as ci-infer: %s", iw_status_name(err.code));
    iw_close(c);
}

static void test_reconnect_tls(void)
{
    if (!have_env("IDLE_TLS")) return;
    iw_connect_options o = tls_opts();
    iw_error err;
    iw_conn *c = iw_connect_opts("127.0.0.1", env_port("IDLE_TLS"), &o, &err);
    CHECK(c != NULL, "TLS connect: %s %s", iw_status_name(err.code), err.message);
    if (!c) return;
    idle_cycle(c, "TLS");
    const char *v = iw_conn_tls_version(c), *alpn = iw_conn_alpn(c);
    CHECK(v && strncmp(v, "TLSv1.", 6) == 0, "TLS version of the new connection: %s", v ? v : "(none)");
    CHECK(alpn && strcmp(alpn, "inferwire/1") == 0, "ALPN of the new connection: %s", alpn ? alpn : "(none)");
    iw_close(c);
}

/* Asks run_tests.sh to "stop" or "start" the server on IW_PORT_RESTART: a line on
 * the FIFO IW_CTL, the answer ("ok") on the FIFO IW_ACK, waited for up to 60 s. */
static bool restart_ctl(const char *cmd)
{
    const char *ctl = getenv("IW_CTL"), *ack = getenv("IW_ACK");
    if (!ctl || !ack) return false;
    int afd = open(ack, O_RDONLY | O_NONBLOCK);
    int cfd = open(ctl, O_WRONLY | O_NONBLOCK); /* ENXIO: nobody reads it */
    char line[32];
    size_t n = 0;
    bool ok = false;
    if (afd >= 0 && cfd >= 0) {
        char msg[16];
        int len = snprintf(msg, sizeof msg, "%s\n", cmd);
        if (write(cfd, msg, (size_t)len) == len) {
            uint64_t end = mono_ms() + 60000;
            while (n < sizeof line - 1 && (n == 0 || line[n - 1] != '\n')) {
                uint64_t now = mono_ms();
                if (now >= end) break;
                struct pollfd p = {.fd = afd, .events = POLLIN};
                if (poll(&p, 1, (int)(end - now)) <= 0) continue;
                ssize_t k = read(afd, line + n, sizeof line - 1 - n);
                if (k > 0) n += (size_t)k;
                else if (k == 0 || (errno != EAGAIN && errno != EINTR)) break;
            }
            line[n] = 0;
            ok = strcmp(line, "ok\n") == 0;
        }
    }
    if (afd >= 0) close(afd);
    if (cfd >= 0) close(cfd);
    CHECK(ok, "run_tests.sh did not %s the server (answer '%.*s')", cmd, (int)n, line);
    return ok;
}

/* The server stops and starts again on the same port: calls fail while it is
 * down, and the first call after it is back succeeds on a new connection. */
static void test_restart(void)
{
    if (!have_env("RESTART")) return;
    CHECK(getenv("IW_CTL") && getenv("IW_ACK"), "IW_CTL and IW_ACK are not set (run through run_tests.sh)");
    iw_options o = {.default_timeout_us = 30000000, .connect_timeout_ms = 5000};
    iw_error err;
    iw_conn *c = iw_connect("127.0.0.1", env_port("RESTART"), &o, &err);
    CHECK(c != NULL, "connect: %s", err.message);
    if (!c) return;
    CHECK(addsub_call(c, &err) == IW_OK, "call before the stop: %s", err.message);
    if (!restart_ctl("stop")) { iw_close(c); return; }

    iw_status_code rc = addsub_call(c, &err);
    CHECK(rc == IW_UNAVAILABLE, "call while the server is down gave %s: %s", iw_status_name(rc), err.message);
    HAS(err, "reconnecting failed");
    HAS(err, "cannot connect");
    HAS(err, "shutting down"); /* why the old connection ended: the server's GOAWAY */
    printf("  server down: %s: %s\n", iw_status_name(rc), err.message);
    CHECK(!iw_conn_is_open(c), "not open while the server is down");
    CHECK(iw_conn_fd(c) == -1, "no socket while the server is down: %d", iw_conn_fd(c));
    /* every call tries again, and fails the same way while it is down */
    bool live = true;
    rc = iw_server_live(c, &live, &err);
    CHECK(rc == IW_UNAVAILABLE, "second call while down gave %s", iw_status_name(rc));
    HAS(err, "cannot connect");
    static addsub s;
    addsub_init(&s, 1, 1.0f);
    uint32_t id = 0;
    rc = iw_send_infer(c, &s.req, &id, &err);
    CHECK(rc == IW_UNAVAILABLE, "pipelined send while down gave %s", iw_status_name(rc));
    CHECK(iw_in_flight(c) == 0, "nothing in flight after a failed send: %zu", iw_in_flight(c));
    iw_completion comp;
    CHECK(iw_poll(c, 0, &comp, &err) == -1, "poll: the connection has ended");
    CHECK(iw_conn_reconnects(c) == 0, "no reconnect while down: %llu", (unsigned long long)iw_conn_reconnects(c));

    if (!restart_ctl("start")) { iw_close(c); return; }
    CHECK(addsub_call(c, &err) == IW_OK, "call after the restart: %s %s", iw_status_name(err.code), err.message);
    CHECK(iw_conn_reconnects(c) == 1, "one reconnect after the restart: %llu", (unsigned long long)iw_conn_reconnects(c));
    CHECK(iw_conn_is_open(c), "open after the restart");
    iw_close(c);
}

/* ----------------------------------------------- scripted server (retry rules) */

/* A minimal InferWire server on a thread, following a script, for the cases a real
 * server produces only by chance: a request answered ERROR UNAVAILABLE after the
 * server's GOAWAY, a connection closed with requests unanswered. It answers every
 * request with SERVER_LIVE's response (live = true) unless the script says
 * otherwise, and counts the connections and requests it saw. SCRIPT_ECHO answers
 * one INFER request with its own inputs as outputs, for data types that no example
 * model takes. */
enum script { SCRIPT_REFUSE_ONCE, SCRIPT_REFUSE_ALWAYS, SCRIPT_DROP, SCRIPT_DRAIN, SCRIPT_ECHO };

typedef struct fake {
    enum script script;
    int lfd;
    uint16_t port;
    pthread_t thread;
    int connections, requests;
    bool failed;         /* the script did not go as planned (message in why) */
    char why[200];
    /* SCRIPT_ECHO: the inputs of the INFER request as they arrived on the wire */
    size_t echo_n;
    int echo_datatype[8];  /* Tensor.datatype, the wire number */
    size_t echo_raw[8];    /* raw_contents bytes */
    bool echo_typed[8];    /* the typed `contents` lists were used (they should not be) */
} fake;

static const uint8_t HELLO_V1[] = {0x08, 0x01};       /* Hello{version: 1} */
static const uint8_t LIVE_TRUE[] = {0x08, 0x01};      /* ServerLiveResponse{live: true} */

static bool fk_io(fake *f, int fd, void *buf, size_t n, bool rd)
{
    size_t off = 0;
    while (off < n) {
        ssize_t k = rd ? read(fd, (char *)buf + off, n - off) : send(fd, (const char *)buf + off, n - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (!f->failed) snprintf(f->why, sizeof f->why, "%s failed: %s", rd ? "read" : "write",
                                     k == 0 ? "end of stream" : strerror(errno));
            f->failed = true;
            return false;
        }
        off += (size_t)k;
    }
    return true;
}

static void fk_frame(fake *f, int fd, uint8_t type, uint16_t method, uint32_t id, const void *p, size_t len)
{
    uint8_t h[16] = {0};
    h[0] = (uint8_t)(len >> 24); h[1] = (uint8_t)(len >> 16); h[2] = (uint8_t)(len >> 8); h[3] = (uint8_t)len;
    h[4] = type;
    h[6] = (uint8_t)(method >> 8); h[7] = (uint8_t)method;
    h[8] = (uint8_t)(id >> 24); h[9] = (uint8_t)(id >> 16); h[10] = (uint8_t)(id >> 8); h[11] = (uint8_t)id;
    if (fk_io(f, fd, h, sizeof h, false) && len) fk_io(f, fd, (void *)p, len, false);
}

/* GOAWAY or ERROR (Status) payload with code UNAVAILABLE and a message */
static void fk_status(fake *f, int fd, uint8_t type, uint32_t id, uint16_t method, const char *msg)
{
    uint8_t p[128];
    size_t k = strlen(msg), n = 0;
    if (type == 8) { p[n++] = 0x10; p[n++] = 14; p[n++] = 0x1a; } /* GoAway: code = 2, message = 3 */
    else { p[n++] = 0x08; p[n++] = 14; p[n++] = 0x12; }            /* Status: code = 1, message = 2 */
    p[n++] = (uint8_t)k;
    memcpy(p + n, msg, k);
    fk_frame(f, fd, type, method, id, p, n + k);
}

/* Accepts a connection, reads the preface, sends HELLO. */
static int fk_accept(fake *f)
{
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) {
        f->failed = true;
        snprintf(f->why, sizeof f->why, "accept: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    f->connections++;
    uint8_t preface[8];
    if (!fk_io(f, fd, preface, 8, true) || memcmp(preface, "IWIR", 4) != 0) {
        close(fd);
        return -1;
    }
    fk_frame(f, fd, 1, 0, 0, HELLO_V1, sizeof HELLO_V1);
    return fd;
}

/* Reads the next REQUEST: its id and method. */
static bool fk_request(fake *f, int fd, uint32_t *id, uint16_t *method)
{
    uint8_t h[16], body[256];
    if (!fk_io(f, fd, h, 16, true)) return false;
    uint32_t len = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (len > sizeof body || (len && !fk_io(f, fd, body, len, true))) return false;
    if (h[4] != 2) {
        f->failed = true;
        snprintf(f->why, sizeof f->why, "expected a REQUEST, got frame type %u", h[4]);
        return false;
    }
    *method = (uint16_t)((h[6] << 8) | h[7]);
    *id = ((uint32_t)h[8] << 24) | ((uint32_t)h[9] << 16) | ((uint32_t)h[10] << 8) | h[11];
    f->requests++;
    return true;
}

/* Ends a connection as a server does: FIN first, then read until the client closes. */
static void fk_close(int fd)
{
    shutdown(fd, SHUT_WR);
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {}
    close(fd);
}

/* The first request on a connection: refused after a GOAWAY; the connection closes. */
static bool fk_refuse(fake *f, int fd)
{
    uint32_t id;
    uint16_t m;
    if (!fk_request(f, fd, &id, &m)) return false;
    fk_status(f, fd, 8, 0, 0, "server is shutting down");
    fk_status(f, fd, 4, id, m, "the server is going away: request not run");
    fk_close(fd);
    return true;
}

/* Keeps a connection open until the client closes it. */
static void fk_hold(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {}
    close(fd);
}

/* Answers one request, then waits for the client to close. */
static void fk_answer_one(fake *f, int fd)
{
    uint32_t id;
    uint16_t m;
    if (fk_request(f, fd, &id, &m)) fk_frame(f, fd, 3, m, id, LIVE_TRUE, sizeof LIVE_TRUE);
    fk_hold(fd);
}

/* Reads one REQUEST, which must be an INFER that parses; answers it with a RESPONSE
 * whose outputs are the request's inputs (same name, datatype, shape and raw bytes),
 * noting what arrived; then waits for the client to close. */
static void fk_echo(fake *f, int fd)
{
    uint8_t h[16], *body = NULL, *out = NULL;
    Inferwire__V1__InferRequest *req = NULL;
    if (!fk_io(f, fd, h, 16, true)) goto done;
    uint32_t len = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    uint16_t method = (uint16_t)((h[6] << 8) | h[7]);
    uint32_t id = ((uint32_t)h[8] << 24) | ((uint32_t)h[9] << 16) | ((uint32_t)h[10] << 8) | h[11];
    body = malloc(len ? len : 1);
    if (!body || (len && !fk_io(f, fd, body, len, true))) goto done;
    f->requests++;
    if (h[4] == 2 && h[5] == 0 && method == 6) req = inferwire__v1__infer_request__unpack(NULL, len, body);
    if (!req) {
        f->failed = true;
        snprintf(f->why, sizeof f->why, "expected an uncompressed INFER REQUEST that parses: type %u, flags %u, method %u",
                 h[4], h[5], method);
        goto done;
    }
    for (size_t i = 0; i < req->n_inputs && i < 8; i++) {
        const Inferwire__V1__Tensor *t = req->inputs[i];
        f->echo_datatype[i] = (int)t->datatype;
        f->echo_raw[i] = t->raw_contents.len;
        f->echo_typed[i] = t->contents != NULL;
    }
    f->echo_n = req->n_inputs;
    Inferwire__V1__InferResponse resp;
    inferwire__v1__infer_response__init(&resp);
    resp.model_name = req->model_name;
    resp.model_version = 1;
    resp.id = req->id;
    resp.n_outputs = req->n_inputs;
    resp.outputs = req->inputs;
    size_t n = inferwire__v1__infer_response__get_packed_size(&resp);
    out = malloc(n ? n : 1);
    if (!out) goto done;
    inferwire__v1__infer_response__pack(&resp, out);
    fk_frame(f, fd, 3, method, id, out, n);
done:
    free(out);
    if (req) inferwire__v1__infer_request__free_unpacked(req, NULL);
    free(body);
    fk_hold(fd);
}

static void *fk_run(void *arg)
{
    fake *f = arg;
    int fd = fk_accept(f), fd2;
    uint32_t id[3];
    uint16_t m[3];
    if (fd < 0) return NULL;
    switch (f->script) {
    case SCRIPT_REFUSE_ONCE:   /* refused after GOAWAY, then answered on a new connection */
        if (fk_refuse(f, fd) && (fd = fk_accept(f)) >= 0) fk_answer_one(f, fd);
        break;
    case SCRIPT_REFUSE_ALWAYS: /* refused on both connections */
        if (fk_refuse(f, fd) && (fd = fk_accept(f)) >= 0) fk_refuse(f, fd);
        break;
    case SCRIPT_DROP:          /* closed with the request unanswered; then answered */
        if (fk_request(f, fd, &id[0], &m[0])) {
            fk_close(fd);
            if ((fd = fk_accept(f)) >= 0) fk_answer_one(f, fd);
        } else {
            close(fd);
        }
        break;
    case SCRIPT_DRAIN:
        /* three requests, then GOAWAY; a new connection gets one request, answered;
         * then the old one answers the first, refuses the second (read after the
         * GOAWAY) and closes with the third unanswered */
        for (int i = 0; i < 3; i++)
            if (!fk_request(f, fd, &id[i], &m[i])) { close(fd); return NULL; }
        fk_status(f, fd, 8, 0, 0, "server is shutting down");
        if ((fd2 = fk_accept(f)) < 0) { close(fd); return NULL; }
        uint32_t id2;
        uint16_t m2;
        if (fk_request(f, fd2, &id2, &m2)) fk_frame(f, fd2, 3, m2, id2, LIVE_TRUE, sizeof LIVE_TRUE);
        fk_frame(f, fd, 3, m[0], id[0], LIVE_TRUE, sizeof LIVE_TRUE);
        fk_status(f, fd, 4, id[1], m[1], "the server is going away: request not run");
        fk_close(fd);
        fk_hold(fd2);
        break;
    case SCRIPT_ECHO:
        fk_echo(f, fd);
        break;
    }
    return NULL;
}

static bool fk_start(fake *f, enum script script)
{
    memset(f, 0, sizeof *f);
    f->script = script;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 20}; /* accept() gives up after 20 s */
    bool ok = f->lfd >= 0 && setsockopt(f->lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
              bind(f->lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
              listen(f->lfd, 8) == 0 && getsockname(f->lfd, (struct sockaddr *)&a, &al) == 0 &&
              pthread_create(&f->thread, NULL, fk_run, f) == 0;
    CHECK(ok, "scripted server: %s", strerror(errno));
    if (!ok && f->lfd >= 0) close(f->lfd);
    f->port = ntohs(a.sin_port);
    return ok;
}

static void fk_join(fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->lfd);
    CHECK(!f->failed, "scripted server %d: %s", (int)f->script, f->why);
}

static iw_conn *fk_connect(const fake *f)
{
    iw_options o = {.default_timeout_us = 20000000};
    iw_error err;
    iw_conn *c = iw_connect("127.0.0.1", f->port, &o, &err);
    CHECK(c != NULL, "connect to the scripted server: %s", err.message);
    return c;
}

/* A blocking call the server refused unrun after its GOAWAY is sent once more, on
 * a new connection; a second refusal is the answer. */
static void test_retry_refused(void)
{
    fake f;
    if (!fk_start(&f, SCRIPT_REFUSE_ONCE)) return;
    iw_conn *c = fk_connect(&f);
    iw_error err;
    bool live = false;
    if (c) {
        CHECK(iw_server_live(c, &live, &err) == IW_OK && live, "refused once, then answered: %s %s",
              iw_status_name(err.code), err.message);
        CHECK(iw_conn_reconnects(c) == 1, "reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
    }
    iw_close(c);
    fk_join(&f);
    CHECK(f.connections == 2 && f.requests == 2, "connections %d, requests %d (want 2, 2)", f.connections, f.requests);

    if (!fk_start(&f, SCRIPT_REFUSE_ALWAYS)) return;
    c = fk_connect(&f);
    if (c) {
        iw_status_code rc = iw_server_live(c, &live, &err);
        CHECK(rc == IW_UNAVAILABLE, "refused twice gave %s: %s", iw_status_name(rc), err.message);
        HAS(err, "request not run");
        CHECK(iw_conn_reconnects(c) == 1, "retried once: reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
    }
    iw_close(c);
    fk_join(&f);
    CHECK(f.connections == 2 && f.requests == 2, "connections %d, requests %d (want 2, 2: one retry only)",
          f.connections, f.requests);
}

/* A call whose connection closes without an answer may have run: it fails
 * UNAVAILABLE and is not sent again; the next call reconnects. */
static void test_no_retry_in_flight(void)
{
    fake f;
    if (!fk_start(&f, SCRIPT_DROP)) return;
    iw_conn *c = fk_connect(&f);
    iw_error err;
    bool live = false;
    if (c) {
        iw_status_code rc = iw_server_live(c, &live, &err);
        CHECK(rc == IW_UNAVAILABLE, "closed without an answer gave %s: %s", iw_status_name(rc), err.message);
        HAS(err, "ended before an answer");
        printf("  in flight when the connection closed: %s: %s\n", iw_status_name(rc), err.message);
        CHECK(iw_conn_reconnects(c) == 0, "not retried: reconnects %llu", (unsigned long long)iw_conn_reconnects(c));
        CHECK(iw_server_live(c, &live, &err) == IW_OK && live, "next call: %s %s", iw_status_name(err.code), err.message);
        CHECK(iw_conn_reconnects(c) == 1, "next call reconnected: %llu", (unsigned long long)iw_conn_reconnects(c));
    }
    iw_close(c);
    fk_join(&f);
    CHECK(f.connections == 2 && f.requests == 2, "connections %d, requests %d (want 2, 2)", f.connections, f.requests);
}

/* Pipelining across a GOAWAY: requests sent before it are still answered on the old
 * connection, new sends go to a new one; a refused request is marked retryable, an
 * unanswered one fails UNAVAILABLE. */
static void test_pipelined_goaway(void)
{
    fake f;
    if (!fk_start(&f, SCRIPT_DRAIN)) return;
    iw_conn *c = fk_connect(&f);
    iw_error err;
    if (c) {
        uint32_t id[4];
        for (int i = 0; i < 3; i++)
            CHECK(iw_send_raw(c, 1, NULL, 0, 0, &id[i], &err) == IW_OK, "send %d: %s", i, err.message);
        CHECK(wait_until_closed(c, 10000), "GOAWAY within 10 s");
        CHECK(iw_in_flight(c) == 3, "in flight after GOAWAY %zu", iw_in_flight(c));
        CHECK(iw_send_raw(c, 1, NULL, 0, 0, &id[3], &err) == IW_OK, "send after GOAWAY: %s", err.message);
        CHECK(iw_conn_reconnects(c) == 1, "the send reconnected: %llu", (unsigned long long)iw_conn_reconnects(c));
        CHECK(iw_in_flight(c) == 4, "in flight on both connections %zu", iw_in_flight(c));
        iw_status_code got[4] = {99, 99, 99, 99};
        bool retryable[4] = {false};
        iw_completion comp;
        int n = 0;
        while (n < 4 && iw_poll(c, 10000, &comp, &err) == 1) {
            for (int i = 0; i < 4; i++)
                if (comp.request_id == id[i]) { got[i] = comp.error.code; retryable[i] = comp.retryable; n++; }
            iw_completion_clear(&comp);
        }
        CHECK(got[0] == IW_OK && !retryable[0], "sent before GOAWAY, answered: %s", iw_status_name(got[0]));
        CHECK(got[1] == IW_UNAVAILABLE && retryable[1], "refused after GOAWAY: %s, retryable %d",
              iw_status_name(got[1]), retryable[1]);
        CHECK(got[2] == IW_UNAVAILABLE && !retryable[2], "unanswered at close: %s, retryable %d",
              iw_status_name(got[2]), retryable[2]);
        CHECK(got[3] == IW_OK, "sent on the new connection: %s", iw_status_name(got[3]));
        CHECK(iw_in_flight(c) == 0, "in flight at the end %zu", iw_in_flight(c));
        CHECK(iw_conn_is_open(c), "the new connection is open");
    }
    iw_close(c);
    fk_join(&f);
    CHECK(f.connections == 2 && f.requests == 4, "connections %d, requests %d (want 2, 4)", f.connections, f.requests);
}

/* ----------------------------------------------------------------- data types */

/* The float32 whose upper half is the bfloat16 `bits` (the lower half zero). */
static float bf16_to_float(uint16_t bits)
{
    uint32_t w = (uint32_t)bits << 16;
    float v;
    memcpy(&v, &w, sizeof v);
    return v;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const void *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)((const uint8_t *)p)[i] << (8 * i);
    return v;
}

/* iw_datatype mirrors inferwire.v1.DataType, names and numbers (as the generated code
 * has them), and iw_datatype_size knows each type's element size (PROTOCOL.md, Tensors). */
static void test_datatype_table(void)
{
    static const struct { iw_datatype dt; const char *wire; size_t size; } types[] = {
        {IW_TYPE_INVALID, "DATA_TYPE_UNSPECIFIED", 0},
        {IW_BOOL, "BOOL", 1}, {IW_UINT8, "UINT8", 1}, {IW_INT8, "INT8", 1},
        {IW_INT16, "INT16", 2}, {IW_INT32, "INT32", 4}, {IW_INT64, "INT64", 8},
        {IW_FP16, "FP16", 2}, {IW_FP32, "FP32", 4}, {IW_FP64, "FP64", 8}, {IW_BYTES, "BYTES", 0},
        {IW_UINT16, "UINT16", 2}, {IW_UINT32, "UINT32", 4}, {IW_UINT64, "UINT64", 8},
        {IW_BF16, "BF16", 2},
        {IW_FP8_E4M3FN, "FP8_E4M3FN", 1}, {IW_FP8_E4M3FNUZ, "FP8_E4M3FNUZ", 1}, {IW_FP8_E5M2, "FP8_E5M2", 1},
        {IW_FP8_E5M2FNUZ, "FP8_E5M2FNUZ", 1}, {IW_FP8_E8M0, "FP8_E8M0", 1}, {IW_FP4_E2M1, "FP4_E2M1", 1},
        {IW_INT4, "INT4", 1}, {IW_UINT4, "UINT4", 1}, {IW_INT2, "INT2", 1}, {IW_UINT2, "UINT2", 1},
    };
    const size_t n = sizeof types / sizeof types[0];
    const ProtobufCEnumDescriptor *d = &inferwire__v1__data_type__descriptor;
    CHECK(d->n_values == n, "the generated DataType has %u values, the header %zu", d->n_values, n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, (int)types[i].dt);
        CHECK(v != NULL && strcmp(v->name, types[i].wire) == 0, "iw_datatype %d is %s on the wire, want %s",
              (int)types[i].dt, v ? v->name : "(none)", types[i].wire);
        CHECK(iw_datatype_size(types[i].dt) == types[i].size, "%s: %zu bytes per element, want %zu",
              types[i].wire, iw_datatype_size(types[i].dt), types[i].size);
    }
    CHECK(IW_UINT16 == 11 && IW_UINT32 == 12 && IW_UINT64 == 13 && IW_BF16 == 14,
          "UINT16 %d, UINT32 %d, UINT64 %d, BF16 %d", IW_UINT16, IW_UINT32, IW_UINT64, IW_BF16);
    CHECK((int)IW_UINT16 == (int)INFERWIRE__V1__DATA_TYPE__UINT16 && (int)IW_UINT32 == (int)INFERWIRE__V1__DATA_TYPE__UINT32 &&
          (int)IW_UINT64 == (int)INFERWIRE__V1__DATA_TYPE__UINT64 && (int)IW_BF16 == (int)INFERWIRE__V1__DATA_TYPE__BF16,
          "the header and the generated enum disagree");
    CHECK(iw_datatype_size((iw_datatype)25) == 0, "a type number past UINT2 has no size");
}

/* UINT16, UINT32, UINT64 and BF16 tensors as the library encodes them into an INFER
 * request and decodes them from the response: the scripted server answers with the
 * request's own inputs. No example model takes these types, so no real server is used. */
static void test_datatype_roundtrip(void)
{
    static const uint64_t u16v[] = {0, 1, 0x0102, 0x8000, 0xfffe, 0xffff};
    static const uint64_t u32v[] = {0, 1, 0x01020304, 0xffffffff};
    static const uint64_t u64v[] = {0, 0x0102030405060708ull, UINT64_MAX};
    /* 1, -2, 3.140625, +inf, the smallest subnormal (2^-133), -0 */
    static const uint64_t bf16v[] = {0x3f80, 0xc000, 0x4049, 0x7f80, 0x0001, 0x8000};
    static const uint64_t bf16s[] = {0x4040}; /* 3, a scalar */
    static const int64_t shape23[] = {2, 3}, shape4[] = {4}, shape31[] = {3, 1}, shape6[] = {6};
    struct { const char *name; iw_datatype dt; const int64_t *shape; size_t ndim; const uint64_t *v; size_t count; } in[] = {
        {"U16", IW_UINT16, shape23, 2, u16v, 6},
        {"U32", IW_UINT32, shape4, 1, u32v, 4},
        {"U64", IW_UINT64, shape31, 2, u64v, 3},
        {"H", IW_BF16, shape6, 1, bf16v, 6},
        {"HS", IW_BF16, NULL, 0, bf16s, 1},
    };
    enum { N = sizeof in / sizeof in[0] };
    uint8_t bytes[N][64];
    iw_tensor t[N];
    for (size_t i = 0; i < N; i++) {
        size_t es = iw_datatype_size(in[i].dt);
        for (size_t k = 0; k < in[i].count; k++) put_le(bytes[i] + k * es, in[i].v[k], es);
        t[i] = (iw_tensor){in[i].name, in[i].dt, in[i].shape, in[i].ndim, bytes[i], in[i].count * es};
    }
    CHECK(t[0].size == 12 && t[1].size == 16 && t[2].size == 24 && t[3].size == 12 && t[4].size == 2,
          "sizes %zu %zu %zu %zu %zu", t[0].size, t[1].size, t[2].size, t[3].size, t[4].size);

    fake f;
    if (!fk_start(&f, SCRIPT_ECHO)) return;
    iw_conn *c = fk_connect(&f);
    iw_result *r = NULL;
    if (c) {
        iw_infer_request req = {.model_name = "echo", .inputs = t, .n_inputs = N};
        iw_error err;
        iw_status_code rc = iw_infer(c, &req, &r, &err);
        CHECK(rc == IW_OK && r, "echo infer: %s %s", iw_status_name(rc), err.message);
    }
    if (r) {
        CHECK(r->n_outputs == N, "%zu outputs, want %d", r->n_outputs, (int)N);
        for (size_t i = 0; i < N; i++) {
            const iw_tensor *o = iw_result_output(r, in[i].name);
            CHECK(o != NULL, "output %s missing", in[i].name);
            if (!o) continue;
            bool same_shape = o->ndim == in[i].ndim;
            for (size_t d = 0; same_shape && d < o->ndim; d++) same_shape = o->shape[d] == in[i].shape[d];
            CHECK(o->datatype == in[i].dt && same_shape, "%s: datatype %d, ndim %zu", in[i].name, (int)o->datatype, o->ndim);
            CHECK(o->size == t[i].size && o->size == in[i].count * iw_datatype_size(o->datatype) &&
                  memcmp(o->data, t[i].data, t[i].size) == 0, "%s: %zu bytes back, sent %zu", in[i].name, o->size, t[i].size);
        }
        const iw_tensor *u64 = iw_result_output(r, "U64"), *h = iw_result_output(r, "H"), *hs = iw_result_output(r, "HS");
        if (u64 && u64->size == 24)
            CHECK(get_le((const uint8_t *)u64->data + 16, 8) == UINT64_MAX &&
                  get_le((const uint8_t *)u64->data + 8, 8) == 0x0102030405060708ull, "UINT64 values");
        if (h && h->size == 12) {
            float v[6];
            for (size_t k = 0; k < 6; k++) v[k] = bf16_to_float((uint16_t)get_le((const uint8_t *)h->data + 2 * k, 2));
            CHECK(v[0] == 1.0f && v[1] == -2.0f && v[2] == 3.140625f && v[3] > 3.4e38f && v[4] == 0x1p-133f &&
                  v[5] == 0.0f && signbit(v[5]), "BF16 values %g %g %g %g %g %g", v[0], v[1], v[2], v[3], v[4], v[5]);
        }
        if (hs && hs->size == 2)
            CHECK(bf16_to_float((uint16_t)get_le(hs->data, 2)) == 3.0f, "BF16 scalar");
        iw_result_free(r);
    }
    iw_close(c);
    fk_join(&f);
    static const int wire[N] = {11, 12, 13, 14, 14};
    CHECK(f.echo_n == N, "the server saw %zu inputs, want %d", f.echo_n, (int)N);
    for (size_t i = 0; i < N && i < f.echo_n; i++)
        CHECK(f.echo_datatype[i] == wire[i] && f.echo_raw[i] == t[i].size && !f.echo_typed[i],
              "%s on the wire: datatype %d (want %d), raw_contents %zu bytes (want %zu), typed contents %d",
              in[i].name, f.echo_datatype[i], wire[i], f.echo_raw[i], t[i].size, f.echo_typed[i]);
}

/* Header and library agree, and the string is spelled from the three numbers. */
static void test_version(void)
{
    CHECK(strcmp(inferwire_version(), INFERWIRE_VERSION_STRING) == 0, "library %s, header %s",
          inferwire_version(), INFERWIRE_VERSION_STRING);
    char s[32];
    snprintf(s, sizeof s, "%d.%d.%d", INFERWIRE_VERSION_MAJOR, INFERWIRE_VERSION_MINOR,
             INFERWIRE_VERSION_PATCH);
    CHECK(strcmp(s, INFERWIRE_VERSION_STRING) == 0, "numbers %s, string %s", s,
          INFERWIRE_VERSION_STRING);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_inferwire port\n");
        return 2;
    }
    port = (uint16_t)atoi(argv[1]);
    pki_dir = getenv("IW_PKI");
    struct { const char *name; void (*fn)(void); } tests[] = {
        {"version", test_version},
        {"hello_and_health", test_hello_and_health},
        {"known_answer", test_known_answer},
        {"trace_context", test_trace_context},
        {"trace_context_logged", test_trace_context_logged},
        {"pipelining", test_pipelining},
        {"errors", test_errors},
        {"deadline", test_deadline},
        {"compression", test_compression},
        {"tls", test_tls},
        {"tls_refusals", test_tls_refusals},
        {"tls_plaintext_mismatch", test_tls_plaintext_mismatch},
        {"mtls", test_mtls},
        {"mtls_principal", test_mtls_principal},
        {"auth", test_auth},
        {"reconnect_idle", test_reconnect_idle},
        {"reconnect_auth", test_reconnect_auth},
        {"reconnect_tls", test_reconnect_tls},
        {"restart", test_restart},
        {"retry_refused", test_retry_refused},
        {"no_retry_in_flight", test_no_retry_in_flight},
        {"pipelined_goaway", test_pipelined_goaway},
        {"datatype_table", test_datatype_table},
        {"datatype_roundtrip", test_datatype_roundtrip},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int f = failed;
        tests[i].fn();
        printf("%s %s\n", failed == f ? "ok  " : "FAIL", tests[i].name);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
