/**
 * @file inferwire.h
 * @brief libinferwire: a small C client for the InferWire inference protocol (v1).
 *
 * One ::iw_conn keeps one TCP connection at a time, plaintext or TLS
 * (iw_connect_opts()), and replaces it when it ends: after the server's GOAWAY
 * (idle timeout, shutdown) or a closed connection, the next call opens a new one
 * with the same address, TLS settings and credentials (see "Reconnection" below).
 * It is not thread-safe: use it from one thread at a time (or one ::iw_conn per
 * thread).
 *
 * Blocking calls (iw_infer(), iw_server_live(), ...) send one request and wait
 * for its answer. The pipelining API (iw_send_infer() / iw_poll()) keeps many
 * requests in flight on one connection; answers arrive in any order and are
 * matched by request id. Both can be mixed on one connection: answers that a
 * blocking call reads on the way are kept for iw_poll().
 *
 * Tensors are passed as name, datatype, shape and raw little-endian bytes
 * (row-major, no padding; BYTES elements are a 4-byte little-endian length
 * followed by the bytes).
 */
#ifndef INFERWIRE_H
#define INFERWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @name Version
 * The version of this header. The Makefile reads these three lines to name the
 * shared library (libinferwire.so.MAJOR) and to write inferwire.pc, so they are
 * the single place to bump it. MAJOR changes on ABI breaks; until 1.0, MINOR
 * may break too.
 * @{
 */
#define INFERWIRE_VERSION_MAJOR 0
#define INFERWIRE_VERSION_MINOR 4
#define INFERWIRE_VERSION_PATCH 0
/** "MAJOR.MINOR.PATCH", the same as inferwire_version() of the matching library. */
#define INFERWIRE_VERSION_STRING "0.4.0"
/** @} */

/**
 * The version of the library actually linked (INFERWIRE_VERSION_STRING as it
 * was when the library was built). Compare it with INFERWIRE_VERSION_STRING to
 * detect a program compiled against one version's header but run with
 * another version's shared library.
 */
const char *inferwire_version(void);

/** Status codes; the numbers mirror `inferwire.v1.StatusCode` (gRPC numbering). */
typedef enum iw_status_code {
    IW_OK = 0,
    IW_CANCELLED = 1,
    IW_UNKNOWN = 2,
    IW_INVALID_ARGUMENT = 3,
    IW_DEADLINE_EXCEEDED = 4,
    IW_NOT_FOUND = 5,
    IW_ALREADY_EXISTS = 6,
    IW_PERMISSION_DENIED = 7,
    IW_RESOURCE_EXHAUSTED = 8,
    IW_FAILED_PRECONDITION = 9,
    IW_ABORTED = 10,
    IW_OUT_OF_RANGE = 11,
    IW_UNIMPLEMENTED = 12,
    IW_INTERNAL = 13,
    IW_UNAVAILABLE = 14,
    IW_DATA_LOSS = 15,
    IW_UNAUTHENTICATED = 16
} iw_status_code;

/** Returns the enum name of a status code ("NOT_FOUND"), or "UNKNOWN_CODE". */
const char *iw_status_name(iw_status_code code);

/**
 * An error: the code and a human-readable message. For errors answered by the
 * server (ERROR or GOAWAY frames), `message` is the server's message, verbatim
 * (truncated to fit). Errors detected locally (I/O failure, local deadline,
 * bad arguments) use the closest code and a message prefixed by "client: ".
 */
typedef struct iw_error {
    iw_status_code code;
    char message[512];
} iw_error;

/**
 * Element types; the numbers mirror `inferwire.v1.DataType`. UINT16, UINT32,
 * UINT64 and BF16 were added to protocol version 1 later: a server that does
 * not run a type answers IW_INVALID_ARGUMENT.
 */
typedef enum iw_datatype {
    IW_TYPE_INVALID = 0,
    IW_BOOL = 1,
    IW_UINT8 = 2,
    IW_INT8 = 3,
    IW_INT16 = 4,
    IW_INT32 = 5,
    IW_INT64 = 6,
    IW_FP16 = 7,   /**< IEEE 754 binary16 */
    IW_FP32 = 8,   /**< IEEE 754 binary32 */
    IW_FP64 = 9,   /**< IEEE 754 binary64 */
    IW_BYTES = 10,
    IW_UINT16 = 11,
    IW_UINT32 = 12,
    IW_UINT64 = 13,
    IW_BF16 = 14,  /**< bfloat16: the upper 16 bits of an IEEE 754 binary32 */
    /* One byte per element: a float's code in the low bits; an integer's value
     * (INT4 and INT2 as a signed byte). */
    IW_FP8_E4M3FN = 15,
    IW_FP8_E4M3FNUZ = 16,
    IW_FP8_E5M2 = 17,
    IW_FP8_E5M2FNUZ = 18,
    IW_FP8_E8M0 = 19,
    IW_FP4_E2M1 = 20,
    IW_INT4 = 21,
    IW_UINT4 = 22,
    IW_INT2 = 23,
    IW_UINT2 = 24
} iw_datatype;

/** Bytes per element of a datatype; 0 for BYTES and invalid types. */
size_t iw_datatype_size(iw_datatype dt);

/**
 * A tensor: name, datatype, shape, and its raw little-endian bytes.
 * In requests the pointers are borrowed from the caller for the duration of
 * the call that takes them (the library copies what it sends). In results
 * they point into the ::iw_result and live until iw_result_free().
 */
typedef struct iw_tensor {
    const char *name;
    iw_datatype datatype;
    const int64_t *shape; /**< dimensions, outermost first; ndim 0 = scalar */
    size_t ndim;
    const void *data;     /**< raw_contents */
    size_t size;          /**< bytes at data */
} iw_tensor;

/** Request priority (`inferwire.v1.Priority`). */
typedef enum iw_priority { IW_PRIORITY_NORMAL = 0, IW_PRIORITY_HIGH = 1 } iw_priority;

/** An INFER request. Zero-initialise it, then fill what you need. */
typedef struct iw_infer_request {
    const char *model_name;          /**< required */
    int64_t model_version;           /**< >0: that exact version; 0: see label */
    const char *label;               /**< "stable"/"canary"; NULL: server routes */
    const iw_tensor *inputs;
    size_t n_inputs;
    const char *const *output_names; /**< NULL/0: all outputs */
    size_t n_output_names;
    iw_priority priority;
    const char *id;                  /**< optional correlation id, echoed back */
    const char *routing_key;         /**< optional, for sticky canaries */
    /**
     * Deadline in microseconds; 0 uses the connection's default_timeout_us
     * (and 0 there means none). It is sent in the frame header (capped at
     * 4294967295 µs) and also enforced locally: when it passes without an
     * answer, the client sends CANCEL and reports IW_DEADLINE_EXCEEDED.
     */
    uint64_t timeout_us;
    /**
     * W3C Trace Context (PROTOCOL.md, "Trace context"): the caller's `traceparent`
     * header value, "00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>",
     * and its optional `tracestate`. The server's spans and log records for the
     * request join that trace. NULL or "": none. Sent as given: the server ignores
     * a value it cannot parse (the request is served as if it had none).
     */
    const char *traceparent;
    const char *tracestate;
} iw_infer_request;

/** The answer to an INFER request. Free with iw_result_free(). */
typedef struct iw_result {
    const char *model_name;
    int64_t model_version; /**< the version that answered */
    const char *id;        /**< the request's correlation id */
    size_t n_outputs;
    iw_tensor *outputs;
} iw_result;

/** Finds an output by name, or NULL. */
const iw_tensor *iw_result_output(const iw_result *result, const char *name);
/** Frees a result (NULL is allowed). */
void iw_result_free(iw_result *result);

/** Connection options. Zero-initialise; all-zero means the defaults. */
typedef struct iw_options {
    /**
     * Enable compression (used only if the server's HELLO says it accepts it):
     * request payloads of at least 256 bytes are sent zlib-compressed, and
     * every request asks for compressed responses (COMPRESS_RESPONSE).
     */
    bool compression;
    int compression_level;       /**< zlib level 1-9; 0: Z_DEFAULT_COMPRESSION */
    uint32_t connect_timeout_ms; /**< TCP connect + TLS handshake + HELLO (+ AUTH answer) wait; 0: 10000 */
    uint64_t default_timeout_us; /**< deadline for calls that set none; 0: none */
    uint32_t max_recv_frame_size;/**< local receive limit; 0: HELLO's max_frame_size */
    /**
     * Do not reconnect: once the connection has received GOAWAY or closed, calls
     * fail (IW_UNAVAILABLE, or the GOAWAY's code) and nothing is retried. Default
     * (false): the next call opens a new connection; see "Reconnection".
     */
    bool no_reconnect;
} iw_options;

/**
 * The server's HELLO on the current connection. It and its strings stay valid
 * until a call opens a new connection (or iw_close()).
 */
typedef struct iw_hello {
    uint32_t version;
    uint32_t max_frame_size;
    uint32_t max_concurrent_requests;
    const char *server_name;
    const char *server_version;
    bool compression;
    /**
     * The server requires every connection to authenticate (PROTOCOL.md 1b): with a
     * token (iw_connect_options.token) or a TLS client certificate it accepts.
     */
    bool authentication_required;
} iw_hello;

/** Counters, mainly for tests and diagnostics; summed over all the connections an ::iw_conn opened. */
typedef struct iw_stats {
    uint64_t requests_sent;
    uint64_t compressed_sent;     /**< REQUEST frames sent with COMPRESSED */
    uint64_t responses_received;
    uint64_t compressed_received; /**< RESPONSE frames received with COMPRESSED */
    uint64_t cancels_sent;
    uint64_t bytes_sent;          /**< InferWire bytes (preface and frames; inside TLS, before encryption) */
    uint64_t bytes_received;      /**< InferWire bytes received (after decryption) */
} iw_stats;

typedef struct iw_conn iw_conn;

/**
 * @name Reconnection
 * Connections end: the server closes idle ones (GOAWAY UNAVAILABLE "connection
 * idle …", after `serve --idle-timeout`), it shuts down or restarts, the network
 * fails. An ::iw_conn carries on (PROTOCOL.md section 5, "Reconnecting"):
 *
 * - Before each call it reads, without waiting, what has arrived on its
 *   connection. Once that connection has received GOAWAY or closed, the call opens
 *   a new one to the same host and port, with the same TLS settings (the
 *   certificate, key and CA files are read again) and the same token (the last
 *   one the server accepted, see iw_authenticate()): TLS handshake, HELLO and AUTH
 *   are redone. iw_conn_reconnects() counts these new connections.
 * - If that fails (the server is down), the call returns IW_UNAVAILABLE — or
 *   IW_UNAUTHENTICATED when the server refused the credentials — with a message
 *   saying why the old connection ended and why the new one failed; nothing was
 *   sent. The next call tries again. Each attempt is bounded by connect_timeout_ms.
 * - A blocking call (iw_infer(), iw_call_raw(), iw_server_live(), ...) whose
 *   request never ran is sent once more, on a new connection, within what is left
 *   of its deadline: a request the failing connection never let out, and one the
 *   server answered ERROR UNAVAILABLE after its GOAWAY (the server reads it after
 *   the GOAWAY and never runs it). A request in flight when its connection closes
 *   without an answer fails IW_UNAVAILABLE ("connection ended before an answer"):
 *   it may have run, so retrying it is left to the caller.
 * - Pipelining (iw_send_infer(), iw_send_raw(), iw_poll()): a send after the
 *   connection received GOAWAY or closed goes to a new connection (a request that
 *   never left is sent on it too). Requests already sent stay with their
 *   connection: after a GOAWAY UNAVAILABLE the server still answers the ones it had
 *   read, and iw_poll() keeps reading the old connection for them (request ids are
 *   unique across connections); when it closes, those still unanswered complete
 *   with IW_UNAVAILABLE. Pipelined requests are never resent automatically: a
 *   completion with ::iw_completion.retryable set was refused unrun and may be
 *   sent again. At most 4 old connections are kept this way; a fifth closes the
 *   oldest, failing its requests.
 * - Accessors (iw_conn_hello(), iw_conn_principal(), iw_conn_tls_version(),
 *   iw_conn_alpn(), iw_conn_fd()) describe the current connection; what they
 *   return stays valid until a call opens a new one (or iw_close()).
 * - iw_options.no_reconnect switches all this off.
 *
 * The connection iw_connect() opens first is not retried: if it fails, iw_connect()
 * returns NULL.
 * @{
 */

/**
 * Whether the current connection still takes requests: it has received no GOAWAY
 * and has not closed. Reads what has arrived (on every connection of conn, without
 * waiting) first. When false, the next call opens a new connection (unless
 * no_reconnect).
 */
bool iw_conn_is_open(iw_conn *conn);

/**
 * The current connection's socket, to wait for it with poll()/select() (readable:
 * call iw_poll() or iw_conn_is_open()), or -1 when it has closed. A new
 * connection has a new socket. Do not read, write or close it.
 */
int iw_conn_fd(const iw_conn *conn);

/** New connections opened after the first (reconnects that succeeded). */
uint64_t iw_conn_reconnects(const iw_conn *conn);
/** @} */

/**
 * Connects in plaintext: opens TCP to host:port, sends the preface (versions 1..1)
 * and waits for HELLO, whose limits the connection then follows. For TLS or a
 * token, use iw_connect_opts().
 * @param opts NULL for defaults.
 * @return the connection, or NULL with *err filled (a GOAWAY's code and message
 *         when the server refuses the preface).
 */
iw_conn *iw_connect(const char *host, uint16_t port, const iw_options *opts, iw_error *err);

/**
 * Options for iw_connect_opts(): those of iw_connect(), plus TLS and credentials.
 * Zero-initialise; all-zero is a plaintext connection with the defaults, the same
 * as iw_connect(host, port, NULL, err). The strings are read during the call only.
 */
typedef struct iw_connect_options {
    iw_options base;         /**< compression, timeouts, limits, as for iw_connect() */
    /**
     * Speak TLS (1.2 or 1.3, ALPN "inferwire/1"). The server's certificate chain
     * is verified against ca_file (or the system's trust store) and its subject
     * alternative names against the host connected to (or server_name): a DNS
     * name, also sent as SNI, or an IP address. Verification cannot be turned off.
     */
    bool tls;
    const char *ca_file;     /**< PEM file of trusted CAs; NULL: the system's trust store */
    const char *cert_file;   /**< client certificate (PEM, may hold its chain), for mutual TLS */
    const char *key_file;    /**< its private key (PEM); NULL: the key is in cert_file */
    const char *server_name; /**< name to verify and send as SNI instead of host; NULL: host */
    /**
     * Bearer token (PROTOCOL.md 1b): an opaque token from the server's token file,
     * or a JWT. Sent in an AUTH frame right after the preface; connecting then
     * waits for the server to accept it (see iw_conn_principal()). NULL: none.
     */
    const char *token;
} iw_connect_options;

/**
 * Connects with TLS and/or a bearer token (see ::iw_connect_options); otherwise
 * like iw_connect(). connect_timeout_ms bounds everything: TCP connect, TLS
 * handshake, HELLO and the answer to the token.
 *
 * Failures, in *err:
 * - TLS handshake failures: IW_UNAVAILABLE, a message saying "TLS handshake" and
 *   why (certificate verify failed: the OpenSSL reason, e.g. "certificate has
 *   expired", "hostname mismatch"; the server requires or rejected the client
 *   certificate; the port does not speak TLS, with the server's plaintext answer).
 * - A TLS server reached without TLS: the server's GOAWAY, FAILED_PRECONDITION.
 * - Credentials refused: IW_UNAUTHENTICATED with the server's message. A server
 *   that requires authentication (HELLO) is refused locally with
 *   IW_UNAUTHENTICATED when there is no token and no client certificate it took.
 * @param opts NULL for defaults (plaintext).
 */
iw_conn *iw_connect_opts(const char *host, uint16_t port, const iw_connect_options *opts,
                         iw_error *err);

/** Who a connection acts as, and what it may do (PROTOCOL.md 1b). */
typedef struct iw_principal {
    const char *name;             /**< token file name, JWT `sub` or certificate CN */
    const char *const *roles;     /**< some of "infer", "manage", "admin" */
    size_t n_roles;
    const char *const *models;    /**< names, or prefixes ending in '*' */
    size_t n_models;              /**< 0: every model */
    int64_t expires_unix_seconds; /**< 0: the credentials do not expire */
} iw_principal;

/**
 * The principal the server accepted for the current connection: the answer to
 * its token, or the one HELLO named for its TLS client certificate. NULL when the
 * connection did not authenticate. Valid until iw_authenticate(), a call that
 * opens a new connection, or iw_close().
 */
const iw_principal *iw_conn_principal(const iw_conn *conn);

/** Whether the principal holds a role ("infer", "manage", "admin"). */
bool iw_principal_has_role(const iw_principal *principal, const char *role);

/**
 * Sends a (fresh) bearer token on the open connection, e.g. when the previous
 * one expired, and waits up to connect_timeout_ms for the answer; requests in
 * flight carry on. If the connection has received GOAWAY or closed, a new one is
 * opened presenting this token instead (unless no_reconnect). On IW_OK
 * iw_conn_principal() describes the new principal, and later reconnects present
 * this token. Refused credentials: IW_UNAUTHENTICATED with the server's message;
 * the server then closes the connection, and the next call reconnects with the
 * token accepted before.
 */
iw_status_code iw_authenticate(iw_conn *conn, const char *token, iw_error *err);

/** The TLS version of the current connection ("TLSv1.3"), or NULL for plaintext. */
const char *iw_conn_tls_version(const iw_conn *conn);
/** The ALPN protocol the server selected ("inferwire/1"), or NULL if none. */
const char *iw_conn_alpn(const iw_conn *conn);

/** The server's HELLO on the current connection (see ::iw_hello for how long it lives). */
const iw_hello *iw_conn_hello(const iw_conn *conn);
/** Counters, summed over every connection conn opened. */
iw_stats iw_conn_stats(const iw_conn *conn);
/**
 * Requests sent and not yet answered (including cancelled ones still reserved),
 * on the current connection and on old ones still answering after a GOAWAY.
 */
size_t iw_in_flight(const iw_conn *conn);

/**
 * Closes the connection(s) and frees conn (NULL is allowed). Requests still in
 * flight are abandoned; completions not yet polled are freed.
 */
void iw_close(iw_conn *conn);

/* ---------------------------------------------------------------- blocking */

/**
 * Runs one inference and waits for its answer. On a connection that has ended,
 * reconnects first; a request refused unrun is sent once more (see
 * "Reconnection"). The same holds for every blocking call below.
 * @param[out] result on IW_OK, the result (free with iw_result_free()); else NULL.
 * @return IW_OK, or the error code (also in *err, with the message).
 */
iw_status_code iw_infer(iw_conn *conn, const iw_infer_request *req, iw_result **result,
                        iw_error *err);

/** SERVER_LIVE. */
iw_status_code iw_server_live(iw_conn *conn, bool *live, iw_error *err);
/** SERVER_READY. */
iw_status_code iw_server_ready(iw_conn *conn, bool *ready, iw_error *err);
/**
 * MODEL_READY. version 0: the server's routing. An unknown model is not an
 * error: *ready is false. *ready_version (may be NULL) receives the version checked.
 */
iw_status_code iw_model_ready(iw_conn *conn, const char *name, int64_t version, bool *ready,
                              int64_t *ready_version, iw_error *err);

/** One input or output of a model. */
typedef struct iw_tensor_spec {
    const char *name;
    iw_datatype datatype;
    const int64_t *shape; /**< -1 for a dimension of any size */
    size_t ndim;
} iw_tensor_spec;

/** MODEL_METADATA answer. Free with iw_model_metadata_free(). */
typedef struct iw_model_metadata {
    const char *name;
    const int64_t *versions; /**< loaded and ready, ascending */
    size_t n_versions;
    int64_t version;         /**< the version described */
    const char *platform;
    iw_tensor_spec *inputs;
    size_t n_inputs;
    iw_tensor_spec *outputs;
    size_t n_outputs;
    int32_t max_batch_size;
} iw_model_metadata;

/** MODEL_METADATA. version 0: the server's routing. */
iw_status_code iw_model_metadata_get(iw_conn *conn, const char *name, int64_t version,
                                     iw_model_metadata **out, iw_error *err);
/** Frees model metadata (NULL is allowed). */
void iw_model_metadata_free(iw_model_metadata *md);

/**
 * Any method, with a caller-packed request message (e.g. a management method
 * packed with the generated protobuf-c code). Waits for the answer.
 * @param[out] resp on IW_OK, the (decompressed) response message bytes,
 *             malloc'ed; free() it. *resp_len receives its length.
 */
iw_status_code iw_call_raw(iw_conn *conn, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, uint8_t **resp, size_t *resp_len, iw_error *err);

/* -------------------------------------------------------------- pipelining */

/**
 * Sends an INFER request without waiting. The request id is stored in *request_id.
 * Fails with IW_RESOURCE_EXHAUSTED (locally, nothing sent) when the HELLO's
 * max_concurrent_requests are already in flight: poll some answers first. On a
 * connection that has received GOAWAY or closed, it opens a new one first and
 * sends there; if that fails, it returns the error and nothing was sent.
 */
iw_status_code iw_send_infer(iw_conn *conn, const iw_infer_request *req, uint32_t *request_id,
                             iw_error *err);

/** Like iw_send_infer() for any method with a caller-packed message. */
iw_status_code iw_send_raw(iw_conn *conn, uint16_t method, const void *req, size_t req_len,
                           uint64_t timeout_us, uint32_t *request_id, iw_error *err);

/** One finished request, as returned by iw_poll(). Release with iw_completion_clear(). */
typedef struct iw_completion {
    uint32_t request_id;
    uint16_t method;
    iw_error error;     /**< error.code == IW_OK on success */
    iw_result *result;  /**< INFER success: the decoded result */
    uint8_t *payload;   /**< other methods' success: the response message bytes */
    size_t payload_len;
    /**
     * IW_UNAVAILABLE answered by the server after its GOAWAY: it read the request
     * after the GOAWAY and did not run it, so sending it again is safe (a new send
     * goes to a new connection). False for every other completion, including
     * IW_UNAVAILABLE for a connection that closed without an answer (the request
     * may have run).
     */
    bool retryable;
} iw_completion;

/**
 * Waits up to timeout_ms (-1: forever, 0: don't block) for one request to
 * finish, answered or timed out locally (then CANCEL is sent and the
 * completion carries IW_DEADLINE_EXCEEDED).
 * Reads every connection that has requests in flight (the current one, and old
 * ones still answering after a GOAWAY).
 * @return 1: *out filled; 0: nothing finished in time, or nothing in flight;
 *         -1: nothing is in flight or left to report and the current connection
 *         has ended (*err says why). Requests in flight on a connection that
 *         ends are reported as IW_UNAVAILABLE completions first. The next send
 *         opens a new connection.
 */
int iw_poll(iw_conn *conn, int timeout_ms, iw_completion *out, iw_error *err);

/** Frees what a completion owns and zeroes it. */
void iw_completion_clear(iw_completion *c);

/**
 * Sends CANCEL for a request in flight. Its completion follows through
 * iw_poll(): normally IW_CANCELLED, or the answer if it was already on its way.
 */
iw_status_code iw_cancel(iw_conn *conn, uint32_t request_id, iw_error *err);

#ifdef __cplusplus
}
#endif

#endif /* INFERWIRE_H */
