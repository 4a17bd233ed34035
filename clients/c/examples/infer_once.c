/* One-shot INFER of add_sub: prints OUTPUT0 (sum) and OUTPUT1 (difference).
 * Usage: infer_once [host] port */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferwire.h"

int main(int argc, char **argv)
{
    const char *host = argc > 2 ? argv[1] : "127.0.0.1";
    int port = atoi(argc > 2 ? argv[2] : argc > 1 ? argv[1] : "8001");
    iw_error err;
    iw_conn *conn = iw_connect(host, (uint16_t)port, NULL, &err);
    if (!conn) {
        fprintf(stderr, "connect: %s: %s\n", iw_status_name(err.code), err.message);
        return 1;
    }
    float a[4] = {1, 2, 3, 4}, b[4] = {10, 20, 30, 40};
    int64_t shape[2] = {1, 4};
    iw_tensor in[2] = {
        {.name = "INPUT0", .datatype = IW_FP32, .shape = shape, .ndim = 2, .data = a, .size = sizeof a},
        {.name = "INPUT1", .datatype = IW_FP32, .shape = shape, .ndim = 2, .data = b, .size = sizeof b},
    };
    iw_infer_request req = {.model_name = "add_sub", .inputs = in, .n_inputs = 2};
    iw_result *res;
    if (iw_infer(conn, &req, &res, &err) != IW_OK) {
        fprintf(stderr, "infer: %s: %s\n", iw_status_name(err.code), err.message);
        iw_close(conn);
        return 1;
    }
    printf("model %s version %lld\n", res->model_name, (long long)res->model_version);
    for (size_t i = 0; i < res->n_outputs; i++) {
        const iw_tensor *t = &res->outputs[i];
        printf("%s:", t->name);
        for (size_t k = 0; k < t->size / sizeof(float); k++) {
            float v; /* raw bytes are little-endian; this example assumes a little-endian host */
            memcpy(&v, (const char *)t->data + k * sizeof v, sizeof v);
            printf(" %g", v);
        }
        printf("\n");
    }
    iw_result_free(res);
    iw_close(conn);
    return 0;
}
