/* A tiny throughput/latency probe.
 * Usage: probe [host] port [model=add_sub] [requests=2000] [inflight=64]
 * Prints p50/p99 latency with 1 request in flight (blocking iw_infer), then
 * requests/s with N requests in flight on one connection (iw_send_infer/iw_poll).
 * Models: add_sub (FP32 [1,4] x2) or identity (FP32 [1,16]). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inferwire.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int ai = 1;
    const char *host = "127.0.0.1";
    if (argc > 2 && strchr(argv[1], '.')) host = argv[ai++];
    if (ai >= argc) {
        fprintf(stderr, "usage: probe [host] port [model] [requests] [inflight]\n");
        return 2;
    }
    int port = atoi(argv[ai++]);
    const char *model = ai < argc ? argv[ai++] : "add_sub";
    int n = ai < argc ? atoi(argv[ai++]) : 2000;
    int inflight = ai < argc ? atoi(argv[ai++]) : 64;
    if (n < 1) n = 1;
    if (inflight < 1) inflight = 1;

    iw_error err;
    iw_conn *conn = iw_connect(host, (uint16_t)port, NULL, &err);
    if (!conn) {
        fprintf(stderr, "connect: %s: %s\n", iw_status_name(err.code), err.message);
        return 1;
    }
    float data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    bool identity = strcmp(model, "identity") == 0;
    int64_t shape[2] = {1, identity ? 16 : 4};
    iw_tensor in[2] = {
        {.name = "INPUT0", .datatype = IW_FP32, .shape = shape, .ndim = 2, .data = data,
         .size = (size_t)shape[1] * sizeof(float)},
        {.name = "INPUT1", .datatype = IW_FP32, .shape = shape, .ndim = 2, .data = data,
         .size = (size_t)shape[1] * sizeof(float)},
    };
    iw_infer_request req = {.model_name = model, .inputs = in, .n_inputs = identity ? 1 : 2};

    /* 1 in flight */
    double *lat = malloc((size_t)n * sizeof *lat);
    if (!lat) return 1;
    for (int i = 0; i < 100; i++) { /* warm-up */
        iw_result *r;
        if (iw_infer(conn, &req, &r, &err) != IW_OK) goto fail;
        iw_result_free(r);
    }
    for (int i = 0; i < n; i++) {
        iw_result *r;
        double t0 = now_s();
        if (iw_infer(conn, &req, &r, &err) != IW_OK) goto fail;
        lat[i] = now_s() - t0;
        iw_result_free(r);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("%s, 1 in flight: p50 %.1f us, p99 %.1f us (%d requests)\n", model,
           lat[n / 2] * 1e6, lat[(size_t)((n - 1) * 0.99)] * 1e6, n);
    free(lat);
    lat = NULL;

    /* N in flight, pipelined on one connection */
    int total = n * 5, sent = 0, done = 0, failed = 0;
    double t0 = now_s();
    while (done < total) {
        while (sent < total && sent - done < inflight) {
            if (iw_send_infer(conn, &req, NULL, &err) != IW_OK) goto fail;
            sent++;
        }
        iw_completion c;
        int pr = iw_poll(conn, -1, &c, &err);
        if (pr < 0) goto fail;
        if (pr == 0) continue;
        if (c.error.code != IW_OK) failed++;
        done++;
        iw_completion_clear(&c);
    }
    double el = now_s() - t0;
    printf("%s, %d in flight: %.0f requests/s (%d requests, %d failed)\n", model, inflight,
           total / el, total, failed);
    iw_close(conn);
    return failed != 0;
fail:
    fprintf(stderr, "probe: %s: %s\n", iw_status_name(err.code), err.message);
    free(lat);
    iw_close(conn);
    return 1;
}
