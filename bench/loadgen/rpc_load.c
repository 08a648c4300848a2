/* An RPC load generator for bench/rpc_sessions.py --client c: many kcprpc client connections in
 * one process, each doing what one kcprpc.connect client does on the default wire, cheaply enough
 * that on a 2-core machine the server, not the load, is what is measured.
 *
 *   rpc_load HOST PORT SESSIONS SECONDS RATE SEED [SOURCE] [--idle] [--key PASSPHRASE]
 *            [--inflight N] [--group-ms MS] [--stats]
 *
 * SOURCE: the local address the sockets bind to (another 127.x address per process: one address
 * has only the ephemeral port range's ~28,000 ports). RATE: connects started per second; at most
 * --inflight (default 64) connects are in flight at once (from the initiation to the warm-up
 * call's reply), as bench/rpc_sessions.py's Python clients do per process. --idle: no calls at
 * all (no warm-up call either): the connections only keep themselves alive. --key: secure mode
 * with a passphrase (the PSK is scrypt(passphrase, "kcprpc secure psk v1", N=2^14, r=8, p=1), as
 * kcp.secure.derive_psk); without it the anonymous PSK of kcprpc.connect (32 zero bytes).
 * --group-ms MS: the connections made within one MS-ms slot share one heartbeat schedule (their
 * keepalives leave together), as the links a Python client process makes in one event-loop turn
 * share theirs; by default (0) each connection has its own, as independent devices. What reaches
 * the server is the same either way; how much of it comes in one receive batch is not, and the
 * server's cost per datagram falls with the batch (bench/rpc_sessions.py --group-ms).
 *
 * What each connection speaks (written from docs/security.md, docs/wire-format/kcp.md, smux.md
 * and rpc.md, and this repository's own kcp/secure, kcp/session.py, kcprpc/link.py and
 * heartbeat.py, whose client behaviour it copies where it changes what the server does):
 * - its own UDP socket (connected, DF set as the Python client's path MTU search sets it);
 * - the secure handshake, Noise_NNpsk0_25519_AESGCM_SHA256 (ChaChaPoly if the server refuses
 *   AESGCM): a 1200-byte padded INITIATION with mac1, resent after 250 ms doubling to 1 s until
 *   20 s (kcprpc.connect's connect_timeout); a RETRY's cookie (ChaCha20-Poly1305) opened and the
 *   initiation resent at once with mac2. The proposal: version 1, suites [AESGCM, ChaChaPoly],
 *   MTU 1400, windows 512/512, no FEC, smux version 2, an empty token, features held acks and
 *   repeated acks (not DATA_PART: no reassembly here; a server sends DATA_PART only after its
 *   path MTU fell, never on loopback);
 * - transport packets (0xC8|phase, the server's connection ID, packet number, AEAD with the
 *   header as associated data, nonce IV xor packet number; keys from HKDF-Expand), a replay
 *   window, the server's key updates followed (it never starts one: runs are shorter than
 *   rekey_after_ms, 2 min); the key-confirming PING; PING_ACK to every PING that carries an id
 *   (the server's path MTU probes); PATH_RESPONSE; CLOSE, GOAWAY and stateless resets end the
 *   connection; the client's own path MTU search as kcp/pmtud.py runs it (from the base, 1200: a
 *   1472-byte probe at once, a binary search below a size lost 3 times; then, while it sends KCP
 *   segments, a 1472 + 1200 confirmation round every 15 s, the base after 3 failed rounds);
 * - KCP segments (conv from the handshake hash, stream mode, wnd 512): a small sender (16 segments
 *   in flight at most) with ikcp's RTT estimate (nodelay: minimum RTO 30 ms) and the Python
 *   session's sparse loss recovery ("adaptive": rounds of 2 copies 10 ms apart, 1 to 6 as the
 *   rounds lost whole say, kcp/engine.py recovery_copies_for; the first 3 rounds one RTO apart,
 *   then 1.5x, at most 4 RTOs; 20 rounds: dead link); every PUSH of the server acknowledged (out
 *   of order ones kept, 16 at most, and repeated as REACK in the next two flushes with ACKs, as
 *   negotiated); WASK answered;
 *   acks sent as kcp/session.py's defaults do (ack_delay 5 ms: a lone ack waits 5 ms for data to
 *   ride with; after 8 lone acks in a row they go at once, every 32nd waiting again; acks with data
 *   ride with it);
 * - smux v2: SYN of stream 3 (its own datagram), UPD after the first read and every 256 KiB read
 *   (window 512 KiB), server frames parsed (PSH, UPD, FIN, NOP);
 * - RPC: HELLO {"v": 1, "md": {}, "tping": true}, WELCOME (its "hb" caps the heartbeat stretch at
 *   2.5 hb); unary calls `bench.Sessions/Echo` with a 32-byte bin payload on the control stream
 *   (CALL with timeout 5000 ms; REPLY; a TRAILER fails the call; a call past its 5 s deadline sends
 *   CANCEL and fails); server PINGs answered with PONG; GOAWAY ends the connection;
 * - heartbeats as kcprpc/heartbeat.py with WELCOME's tping: a secure-layer keepalive PING (probe id
 *   with the top bit set) every 1 s, stretched to 2 s and 2.5 s while answered, skipped while
 *   traffic went both ways within the last second (one still every 10 s); dead after 5 s without
 *   an RPC frame or a keepalive answer; timers as uvloop's (a millisecond clock read once per loop
 *   turn);
 * - reconnects as the bench's Python clients (ReconnectPolicy(initial=0.5, maximum=2.0,
 *   restore=False), wait_for_ready off): a lost connection is dialled again on a new socket after
 *   0.5 s, 1 s, then 2 s (jitter 20 %), its HELLO claiming the last session back ("resume": the
 *   WELCOME's session id and HMAC-SHA256(token, "kcprpc-resume-v1" | sid | the new handshake hash),
 *   "restore": {"offsets": {}}); no warm-up call; every call due while it is down fails at once.
 *
 * Warm-up: every connection connects (and, unless --idle, makes one call with a 20 s deadline); a
 * connect that fails counts as a connect error. Then it prints "ready CONNECTED CONNECT_ERRORS"
 * and waits for a line on stdin, keeping the connections alive meanwhile. Measurement: every
 * connection makes one call per second (phases spread over the second), one at a time, for
 * SECONDS; then it prints one line:
 *   "result FAILED CPU_SECONDS WALL_SECONDS RECONNECTS LOST N LAT_US LAT_US ..."
 * RECONNECTS: those that succeeded in the window; LOST is "-" or "why:count,why:count" (heartbeat,
 * closed, goaway, reset, dead-link, fin: the connections lost in the window), then the N call
 * latencies in microseconds (--stats: counts of the traffic on stderr too). When stdin then ends (the coordinator closes it after its own
 * window, so that no CLOSE lands in the server's measurement), or 30 s later, every connection
 * sends an authenticated CLOSE and the process exits. Bounded: the warm-up fails (exit 2) after
 * SESSIONS / RATE + 90 s, the wait for "go" after 600 s (exit 2), and the measurement ends by
 * SECONDS + 15 s after "go" whatever the server does.
 *
 * Build: cc -O2 -o rpc_load rpc_load.c -lcrypto (OpenSSL 1.1.1 or 3.x headers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "le_bytes.h"
#include "timer_heap.h"

/* ------------------------------------------------------------------------------- constants */
#define NS_PER_MS 1000000LL
#define NS_PER_S 1000000000LL

#define INIT_SIZE 1200
#define CID_LEN 8
#define HDR 17 /* transport header: type, cid, packet number */
#define TAG 16
#define OVERHEAD (HDR + 1 + TAG) /* 34 */
#define T_INITIATION 0xC1
#define T_RESPONSE 0xC2
#define T_RETRY 0xC3
#define T_HINT 0xC4
#define T_TRANSPORT 0xC8
#define F_DATA 0
#define F_PING 1
#define F_PATH_CHALLENGE 2
#define F_PATH_RESPONSE 3
#define F_CLOSE 4
#define F_GOAWAY 5
#define F_PING_ACK 6
#define KEEPALIVE_BIT 0x8000000000000000ULL
#define FEATURES 0x06 /* held acks | repeated acks */

#define HS_TIMEOUT_MS 20000 /* kcprpc.connect's connect_timeout (also the handshake's) */
#define HS_RETRY_MS 250
#define HS_RETRY_MAX_MS 1000
#define CONNECT_WAIT_MS 20000 /* WELCOME, then the warm-up call */

#define MTU0 1400
#define PMTU_MAX 1472
#define PMTU_BASE 1200
#define KCP_WND 512
#define KCP_HDR 24
#define CMD_PUSH 81
#define CMD_ACK 82
#define CMD_WASK 83
#define CMD_WINS 84
#define CMD_REACK 85
#define SND_RING 16
#define SEG_MAX 240 /* the largest write this client makes (a CALL is 77 bytes) */
#define OOO_MAX 16
#define ACKS_MAX 64
#define REACKS_MAX 16
#define RTO_DEF 200
#define RTO_MIN 30 /* nodelay */
#define KCP_INTERVAL 10
#define DEAD_LINK 20
#define COPY_GAP_MS 10     /* loss_recovery "adaptive": copy_gap, rounded up to the interval */
#define MAX_COPIES 6       /* max_copies */
#define ADAPT_SAMPLES 32
#define ADAPT_FAILED 4
#define ACK_DELAY_MS 5
#define LONE_ACKS 8
#define LONE_ACK_PROBE 32
#define HOLD_EXTRA_MS 250

#define SMUX_VER 2
#define STREAM_ID 3
#define STREAM_WINDOW (512 * 1024)

#define HB_INTERVAL 1000
#define HB_TIMEOUT 5000
#define CALL_TIMEOUT_MS 5000
#define WARM_TIMEOUT_MS 20000

/* ------------------------------------------------------------------------------- the clock */
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}
static int64_t T_BASE;
/* The loop's clock, as uvloop's (libuv): milliseconds, read once per turn; timers are due in whole
 * milliseconds and fire in the first turn whose clock reaches them. The Python client runs on it,
 * and it shapes what the server receives: the connections whose handshakes complete in one turn get
 * the same heartbeat schedule (kcprpc/heartbeat.py counts from the link's creation), so their
 * keepalives leave together and reach the server in one receive batch. Latencies use now_ns(). */
static int64_t loop_now(void) { return now_ns() / NS_PER_MS * NS_PER_MS; }
static uint32_t kcp_ms(int64_t t) { return (uint32_t)((t - T_BASE) / NS_PER_MS); }

static void die(const char *what) {
    fprintf(stderr, "rpc_load: %s\n", what);
    exit(3);
}

/* ------------------------------------------------------------------------------- bytes */
/* le_bytes.h (included above): put32le, put16le, get32le, get16le */
static void put32be(uint8_t *p, uint32_t v) {
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}
static uint32_t get32be(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static void put64be(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}
static uint64_t get64be(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------------------------- crypto */
static void hmac256(const uint8_t *key, int klen, const uint8_t *d, size_t n, uint8_t out[32]) {
    unsigned int ol = 32;
    if (!HMAC(EVP_sha256(), key, klen, d, n, out, &ol)) die("HMAC failed");
}
static void sha256(const uint8_t *d, size_t n, uint8_t out[32]) { SHA256(d, n, out); }

/* Noise's HKDF (RFC 5869, salt = the chaining key, empty info): `outputs` 32-byte outputs */
static void noise_hkdf(const uint8_t ck[32], const uint8_t *ikm, size_t n, int outputs, uint8_t *o1, uint8_t *o2,
                       uint8_t *o3) {
    uint8_t temp[32], buf[33];
    hmac256(ck, 32, ikm, n, temp);
    buf[0] = 1;
    hmac256(temp, 32, buf, 1, o1);
    memcpy(buf, o1, 32);
    buf[32] = 2;
    hmac256(temp, 32, buf, 33, o2);
    if (outputs == 3) {
        memcpy(buf, o2, 32);
        buf[32] = 3;
        hmac256(temp, 32, buf, 33, o3);
    }
}

/* HKDF-Expand-SHA256(secret, label, len), len <= 32 */
static void hkdf_expand(const uint8_t secret[32], const char *label, uint8_t *out, int len) {
    uint8_t buf[64], t[32];
    size_t n = strlen(label);
    memcpy(buf, label, n);
    buf[n] = 1;
    hmac256(secret, 32, buf, n + 1, t);
    memcpy(out, t, len);
}

#define SUITE_CHACHA 1
#define SUITE_AESGCM 2
static const EVP_CIPHER *suite_cipher(int suite) {
    return suite == SUITE_AESGCM ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
}

/* one-shot AEAD (handshake, cookie): returns the output length or -1 */
static int aead_once(int enc, const EVP_CIPHER *cipher, const uint8_t key[32], const uint8_t nonce[12],
                     const uint8_t *ad, int adlen, const uint8_t *in, int inlen, uint8_t *out) {
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int ok = 0, l = 0, n = 0;
    if (!x) die("EVP_CIPHER_CTX_new");
    if (enc) {
        ok = EVP_EncryptInit_ex(x, cipher, NULL, key, nonce) && EVP_EncryptUpdate(x, NULL, &l, ad, adlen) &&
             EVP_EncryptUpdate(x, out, &l, in, inlen) && EVP_EncryptFinal_ex(x, out + l, &n) &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, TAG, out + inlen);
        n = inlen + TAG;
    } else if (inlen >= TAG) {
        int m = inlen - TAG;
        ok = EVP_DecryptInit_ex(x, cipher, NULL, key, nonce) && EVP_DecryptUpdate(x, NULL, &l, ad, adlen) &&
             EVP_DecryptUpdate(x, out, &l, in, m) &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)(in + m)) &&
             EVP_DecryptFinal_ex(x, out + l, &n) > 0;
        n = m;
    }
    EVP_CIPHER_CTX_free(x);
    return ok ? n : -1;
}

/* the transport keys of one direction in one epoch: a context with the key set, the IV */
typedef struct {
    EVP_CIPHER_CTX *ctx;
    uint8_t iv[12];
    uint8_t secret[32];
    int epoch;
} Keys;

static void keys_set(Keys *k, int suite, const uint8_t secret[32], int epoch, int enc) {
    uint8_t key[32];
    memcpy(k->secret, secret, 32);
    k->epoch = epoch;
    hkdf_expand(secret, "kcprpc key", key, 32);
    hkdf_expand(secret, "kcprpc iv", k->iv, 12);
    if (!k->ctx && !(k->ctx = EVP_CIPHER_CTX_new())) die("EVP_CIPHER_CTX_new");
    int ok = enc ? EVP_EncryptInit_ex(k->ctx, suite_cipher(suite), NULL, key, NULL)
                 : EVP_DecryptInit_ex(k->ctx, suite_cipher(suite), NULL, key, NULL);
    if (!ok) die("cipher init failed");
}
static void keys_next(Keys *dst, const Keys *src, int suite, int enc) {
    uint8_t s[32];
    hkdf_expand(src->secret, "kcprpc ku", s, 32);
    keys_set(dst, suite, s, src->epoch + 1, enc);
}
static void keys_free(Keys *k) {
    if (k->ctx) EVP_CIPHER_CTX_free(k->ctx);
    k->ctx = NULL;
}
static void pn_nonce(const uint8_t iv[12], uint64_t pn, uint8_t nonce[12]) {
    memcpy(nonce, iv, 12);
    for (int i = 0; i < 8; i++) nonce[11 - i] ^= (uint8_t)(pn >> (8 * i));
}

static EVP_PKEY *x25519_new(uint8_t pub[32]) {
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    size_t n = 32;
    if (!pc || EVP_PKEY_keygen_init(pc) <= 0 || EVP_PKEY_keygen(pc, &k) <= 0) die("X25519 keygen failed");
    EVP_PKEY_CTX_free(pc);
    if (EVP_PKEY_get_raw_public_key(k, pub, &n) <= 0 || n != 32) die("X25519 public key");
    return k;
}
static int x25519_dh(EVP_PKEY *mine, const uint8_t peer[32], uint8_t out[32]) {
    EVP_PKEY *p = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
    EVP_PKEY_CTX *c = p ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
    size_t n = 32;
    int ok = c && EVP_PKEY_derive_init(c) > 0 && EVP_PKEY_derive_set_peer(c, p) > 0 && EVP_PKEY_derive(c, out, &n) > 0 &&
             n == 32;
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(p);
    return ok;
}

/* ------------------------------------------------------------------------------- the connection */
enum { ST_WAITING, ST_HANDSHAKE, ST_HELLO, ST_WARM, ST_READY, ST_RECONNECT, ST_DONE };
#define gone(c) ((c)->state == ST_DONE || (c)->state == ST_RECONNECT) /* no connection (now) */
enum { WHY_HEARTBEAT, WHY_CLOSED, WHY_GOAWAY, WHY_RESET, WHY_DEADLINK, WHY_FIN, WHY_N };
static const char *WHY[WHY_N] = {"heartbeat", "closed", "goaway", "reset", "dead-link", "fin"};

typedef struct {
    uint32_t sn, ts, resendts, rto;
    uint16_t len;
    uint8_t xmit, acked, copies; /* copies: of this recovery round, still to send */
    uint8_t data[SEG_MAX];
} Seg;

typedef struct {
    uint32_t sn, ts;
} AckItem;

typedef struct {
    uint32_t sn, ts;
    int left;
} Reack;

typedef struct {
    uint8_t *p;
    int n, cap;
} Buf;

static void buf_add(Buf *b, const uint8_t *d, int n) {
    if (b->n + n > b->cap) {
        int cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) die("out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void buf_drop(Buf *b, int n) {
    memmove(b->p, b->p + n, b->n - n);
    b->n -= n;
}
static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

typedef struct {
    int fd, state, suite;
    uint32_t gen;
    int64_t armed; /* the time of this connection's entry in the timer heap (0: none) */
    /* handshake */
    uint8_t local_cid[CID_LEN], remote_cid[CID_LEN];
    uint8_t *init; /* the initiation without mac2 (INIT_SIZE - 16 bytes), during the handshake */
    uint8_t mac1[16], cookie[16], h[32], ck[32], k[32];
    int have_cookie, copies;
    uint64_t hs_n;
    EVP_PKEY *eph;
    int64_t hs_sent, hs_next, hs_deadline;
    int hs_interval, suites_tried;
    int64_t phase_deadline; /* ST_HELLO: the WELCOME's; ST_WARM: the warm-up call's */
    /* transport */
    Keys snd, rcv, rcv_prev;
    uint64_t pn_next, rw_top, rw_bits, first_pn;
    int rw_any, have_prev;
    int64_t prev_expiry;
    uint8_t reset_token[16];
    int has_reset, features;
    /* kcp */
    uint32_t conv, snd_una, snd_nxt, rcv_nxt;
    int mtu; /* the engine's: the path's MTU less the secure overhead */
    int rx_srtt, rx_rttval, rx_rto, rto_extra;
    int rec_copies;     /* copies per recovery round (kcp/engine.py recovery_copies, adaptive) */
    int rec_rounds[4];  /* recovery rounds by their number (1st..4th) since the last pick */
    Seg sbuf[SND_RING]; /* in flight, by sn % SND_RING */
    int inflight;
    uint8_t pend[1024];
    int npend;
    AckItem acks[ACKS_MAX];
    int nacks;
    Reack reacks[REACKS_MAX];
    int nreacks, wins;
    uint8_t *ooo[OOO_MAX];
    uint16_t ooo_len[OOO_MAX];
    uint32_t ooo_sn[OOO_MAX];
    int lone;
    int64_t ack_due; /* -1: none */
    uint64_t activity; /* KCP datagrams sent (the heartbeat's skip rule) */
    uint64_t segs_sent, segs_seen;
    /* smux and rpc */
    Buf in, frames;
    uint32_t consumed, upd_at;
    uint32_t next_cid;
    int welcomed;
    /* heartbeat */
    int hb_on;
    int64_t hb_current, hb_max, last_receive, last_ping, last_ping_sent;
    uint32_t hb_nonce, hb_ponged;
    uint64_t hb_act_seen;
    /* path MTU search */
    int pm_state; /* 0 off, 1 searching, 2 complete, 3 confirmation round */
    int pmtu, pm_lo, pm_hi, pm_size, pm_losses, pm_srtt, pm_rttvar, pm_active, pm_small_acked, pm_failures;
    uint64_t pm_next_id, pm_first_id, pm_big, pm_small;
    int64_t pm_due, pm_confirm_at, pm_sent, hs_rtt;
    /* calls */
    uint32_t call_id;
    int64_t call_t0, call_deadline, next_call;
    int measuring;
    /* reconnects, as kcprpc.ReconnectPolicy(initial=0.5, maximum=2.0, restore=False) of the bench's
     * clients: the last WELCOME's session id and resume token make the next HELLO's resume claim */
    int reconnecting, attempt, sid_len, has_token;
    int64_t reconnect_at;
    char sid[64];
    uint8_t token[32];
} Conn;

static Conn *C;
static int NS;
static uint8_t PSK[32];
static uint8_t MAC1_KEY[32], COOKIE_KEY[32];
static struct sockaddr_in DST, SRC;
static int HAVE_SRC, IDLE, EP, STATS;
static int64_t GROUP_NS; /* --group-ms: heartbeat clocks anchored to slots of this many ms */
static uint8_t HELLO_TLV[64];
static int HELLO_TLV_LEN;

/* counters */
static long connect_errors, connected, failed, lost[WHY_N], lost_total, reconnects;
static long st_dgram_out, st_dgram_in, st_bytes_out, st_bytes_in, st_retrans, st_keepalives, st_probes,
    st_probe_acks_sent, st_lone_acks, st_reacks, st_retries, st_inits, st_cancels, st_decrypt_err;
static long st_err_reason[8];
static int64_t *lats;
static long nlat, lat_cap;
static int measuring;         /* 0: warm-up and settle; 1: window; 2: after the window */
static int64_t window_end;

/* ------------------------------------------------------------------------------- timer heap */
/* timer_heap.h (included above): heap_push(t, idx, gen) and heap_pop() */

/* ------------------------------------------------------------------------------- sending */
static void udp_send(Conn *c, const uint8_t *d, int n) {
    if (send(c->fd, d, n, 0) >= 0) {
        st_dgram_out++;
        st_bytes_out += n;
    }
}

/* seal one frame (type byte + body) into a transport packet and send it */
static void seal_send(Conn *c, const uint8_t *frame, int n) {
    uint8_t out[2048], nonce[12];
    int l = 0, f = 0;
    Keys *k = &c->snd;
    uint64_t pn = c->pn_next++;
    out[0] = T_TRANSPORT | (k->epoch & 1);
    memcpy(out + 1, c->remote_cid, CID_LEN);
    put64be(out + 9, pn);
    pn_nonce(k->iv, pn, nonce);
    if (!EVP_EncryptInit_ex(k->ctx, NULL, NULL, NULL, nonce) || !EVP_EncryptUpdate(k->ctx, NULL, &l, out, HDR) ||
        !EVP_EncryptUpdate(k->ctx, out + HDR, &l, frame, n) || !EVP_EncryptFinal_ex(k->ctx, out + HDR + l, &f) ||
        !EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_GET_TAG, TAG, out + HDR + n))
        die("seal failed");
    udp_send(c, out, HDR + n + TAG);
}

/* a PING, zero-padded to a datagram of `size` bytes (0: unpadded), carrying `id` if has_id */
static void send_ping(Conn *c, int has_id, uint64_t id, int size) {
    uint8_t f[2048];
    int n = 1;
    f[0] = F_PING;
    if (has_id) {
        put64be(f + 1, id);
        n = 9;
    }
    int want = size - HDR - TAG;
    if (want > n) {
        memset(f + n, 0, want - n);
        n = want;
    }
    seal_send(c, f, n);
}

static void send_close(Conn *c) {
    uint8_t f[3] = {F_CLOSE, 0, 0};
    seal_send(c, f, 3);
    c->pn_next--; /* the same datagram twice, as the Python session's CLOSE_COPIES */
    seal_send(c, f, 3);
}

/* ------------------------------------------------------------------------------- KCP */
static void seg_header(uint8_t *p, Conn *c, uint8_t cmd, uint8_t frg, uint32_t ts, uint32_t sn, uint32_t len) {
    put32le(p, c->conv);
    p[4] = cmd;
    p[5] = frg;
    put16le(p + 6, KCP_WND);
    put32le(p + 8, ts);
    put32le(p + 12, sn);
    put32le(p + 16, c->rcv_nxt);
    put32le(p + 20, len);
}

static void lose(Conn *c, int why);

static void emit(Conn *c, uint8_t *buf, int n) {
    buf[0] = F_DATA;
    seal_send(c, buf, n);
    c->activity++;
}

/* kcp/engine.py _adapt with recovery_copies_for: the least copies per round n (1..MAX_COPIES) with
 * q^n <= 2 %, q = f^(1/copies) the loss of a copy after a lost one, f = (failed + 0.1)/(rounds + 1)
 * (tested as f^n <= 0.02^copies: no libm); then half the counts are forgotten */
static void adapt_copies(Conn *c) {
    double f = (c->rec_rounds[1] + 0.1) / (c->rec_rounds[0] + 1), target = 1, q_hi = 1;
    for (int i = 0; i < c->rec_copies; i++) {
        target *= 0.02;
        q_hi *= 0.999;
    }
    int n = MAX_COPIES;
    if (f < q_hi) { /* q < 0.999 */
        double fn = 1;
        for (n = 1; n < MAX_COPIES; n++) {
            fn *= f;
            if (fn <= target) break;
        }
    }
    c->rec_copies = n;
    for (int i = 0; i < 4; i++) c->rec_rounds[i] /= 2;
}

/* one flush: the acks (then their repeats), a WINS if asked, new data and the resends that are due */
static void kcp_flush(Conn *c, int64_t t) {
    uint8_t buf[2048];
    int n = 1; /* buf[0] is the DATA frame type */
    int limit = 1 + c->mtu;
    uint32_t now = kcp_ms(t);
    int had_acks = c->nacks > 0;
    for (int i = 0; i < c->nacks; i++) {
        if (n + KCP_HDR > limit) {
            emit(c, buf, n);
            n = 1;
        }
        seg_header(buf + n, c, CMD_ACK, 0, c->acks[i].ts, c->acks[i].sn, 0);
        n += KCP_HDR;
        c->segs_sent++;
    }
    c->nacks = 0;
    if (had_acks) { /* repeated acks go only with a flush that sends acks */
        int k = 0;
        for (int i = 0; i < c->nreacks; i++) {
            Reack *r = &c->reacks[i];
            if ((int32_t)(r->sn - c->rcv_nxt) < 0) continue; /* una covers it now */
            if (n + KCP_HDR > limit) {
                emit(c, buf, n);
                n = 1;
            }
            seg_header(buf + n, c, CMD_REACK, 0, r->ts, r->sn, 0);
            n += KCP_HDR;
            st_reacks++;
            if (--r->left > 0) c->reacks[k++] = *r;
        }
        c->nreacks = k;
    }
    if (c->wins) {
        if (n + KCP_HDR > limit) {
            emit(c, buf, n);
            n = 1;
        }
        seg_header(buf + n, c, CMD_WINS, 0, 0, 0, 0);
        n += KCP_HDR;
        c->wins = 0;
    }
    /* new data: the pending bytes as segments (stream mode: small writes coalesce) */
    int mss = c->mtu - KCP_HDR;
    if (mss > SEG_MAX) mss = SEG_MAX;
    int off = 0;
    while (off < c->npend && (uint32_t)(c->snd_nxt - c->snd_una) < SND_RING) {
        int len = c->npend - off < mss ? c->npend - off : mss;
        Seg *s = &c->sbuf[c->snd_nxt % SND_RING];
        s->sn = c->snd_nxt++;
        s->len = len;
        s->xmit = 0;
        s->acked = 0;
        s->copies = 0; /* lead_copies 0 */
        memcpy(s->data, c->pend + off, len);
        c->inflight++;
        off += len;
    }
    if (off) {
        memmove(c->pend, c->pend + off, c->npend - off);
        c->npend -= off;
    }
    int rx_rto = c->rx_rto + c->rto_extra;
    for (uint32_t sn = c->snd_una; (int32_t)(c->snd_nxt - sn) > 0; sn++) {
        Seg *s = &c->sbuf[sn % SND_RING];
        if (s->acked) continue;
        if (s->xmit == 0) {
            s->xmit = 1;
            s->rto = rx_rto;
            s->resendts = now + s->rto;
        } else if ((int32_t)(now - s->resendts) >= 0) { /* sparse flight (kcp/engine.py flush) */
            st_retrans++;
            if (s->copies > 0) { /* the next copy of this round */
                s->copies--;
            } else { /* the round's copies all went unanswered: a new round */
                s->xmit++;
                int k = s->xmit - 2;
                if (k < 4) c->rec_rounds[k]++;
                if (s->xmit > 4) {
                    uint32_t r = s->rto + s->rto / 2, cap = 4 * (uint32_t)rx_rto;
                    s->rto = r < cap ? r : cap;
                } else {
                    s->rto = rx_rto;
                }
                if (c->rec_rounds[0] >= ADAPT_SAMPLES || c->rec_rounds[1] >= ADAPT_FAILED) adapt_copies(c);
                s->copies = c->rec_copies - 1;
            }
            s->resendts = now + (s->copies > 0 ? COPY_GAP_MS : s->rto);
            if (s->xmit >= DEAD_LINK) {
                if (n > 1) emit(c, buf, n);
                lose(c, WHY_DEADLINK);
                return;
            }
        } else {
            continue;
        }
        s->ts = now;
        if (n + KCP_HDR + s->len > limit) {
            emit(c, buf, n);
            n = 1;
        }
        seg_header(buf + n, c, CMD_PUSH, 0, now, s->sn, s->len);
        memcpy(buf + n + KCP_HDR, s->data, s->len);
        n += KCP_HDR + s->len;
        c->segs_sent++;
    }
    if (n > 1) emit(c, buf, n);
}

static int waitsnd(Conn *c) { return c->inflight + (c->npend > 0); }

/* after a flush or an input: acks that rode with data reset the lone-ack count (kcp/session.py _post) */
static void ack_post(Conn *c) {
    if (c->ack_due >= 0 && c->nacks == 0) {
        c->ack_due = -1;
        if (waitsnd(c)) c->lone = 0;
    }
}

/* queue bytes for the next flush; whole smux frames only (a frame that does not fit is dropped
 * whole, so the stream stays framed: never with one call at a time and a live server) */
static int kcp_room(Conn *c, int n) { return c->npend + n <= (int)sizeof c->pend; }
static void kcp_write(Conn *c, const uint8_t *d, int n) {
    memcpy(c->pend + c->npend, d, n);
    c->npend += n;
}

static void flush_now(Conn *c, int64_t t) {
    kcp_flush(c, t);
    if (!gone(c)) ack_post(c);
}

static void rtt_sample(Conn *c, int32_t rtt) {
    if (rtt < 0) return;
    if (c->rx_srtt == 0) {
        c->rx_srtt = rtt;
        c->rx_rttval = rtt / 2;
    } else {
        int32_t d = rtt - c->rx_srtt;
        if (d < 0) d = -d;
        c->rx_rttval = (3 * c->rx_rttval + d) / 4;
        c->rx_srtt = (7 * c->rx_srtt + rtt) / 8;
        if (c->rx_srtt < 1) c->rx_srtt = 1;
    }
    int lo = 4 * c->rx_rttval;
    if (lo < KCP_INTERVAL) lo = KCP_INTERVAL;
    int rto = c->rx_srtt + lo;
    c->rx_rto = rto < RTO_MIN ? RTO_MIN : rto > 60000 ? 60000 : rto;
}

static void release_una(Conn *c, uint32_t una) {
    while ((int32_t)(una - c->snd_una) > 0 && c->snd_una != c->snd_nxt) {
        Seg *s = &c->sbuf[c->snd_una % SND_RING];
        if (!s->acked) c->inflight--;
        s->acked = 1;
        c->snd_una++;
    }
}
static void release_sn(Conn *c, uint32_t sn) {
    if ((int32_t)(sn - c->snd_una) < 0 || (int32_t)(c->snd_nxt - sn) <= 0) return;
    Seg *s = &c->sbuf[sn % SND_RING];
    if (!s->acked) {
        s->acked = 1;
        c->inflight--;
    }
    while (c->snd_una != c->snd_nxt && c->sbuf[c->snd_una % SND_RING].acked) c->snd_una++;
}

static void deliver(Conn *c, const uint8_t *d, int n) { buf_add(&c->in, d, n); }

static void queue_ack(Conn *c, uint32_t sn, uint32_t ts) {
    if (c->nacks == ACKS_MAX) return; /* never here: the server resends what stays unacked */
    c->acks[c->nacks].sn = sn;
    c->acks[c->nacks].ts = ts;
    c->nacks++;
}

/* one KCP packet (the payload of a DATA frame) */
static void kcp_input(Conn *c, const uint8_t *p, int n, int64_t t) {
    uint32_t now = kcp_ms(t);
    int hold = -1;
    while (n >= KCP_HDR) {
        uint32_t conv = get32le(p), ts = get32le(p + 8), sn = get32le(p + 12), una = get32le(p + 16),
                 len = get32le(p + 20);
        uint8_t cmd = p[4], frg = p[5];
        if (conv != c->conv || (int)(KCP_HDR + len) > n || cmd < CMD_PUSH || cmd > CMD_REACK) break;
        (void)get16le(p + 6); /* the server's window: this sender never fills one */
        release_una(c, una);
        if (cmd == CMD_ACK) {
            int32_t rtt = (int32_t)(now - ts);
            if (frg >= 2) rtt -= (frg - 1) * 4; /* held acks: the wait is not path delay */
            rtt_sample(c, rtt < 0 ? 0 : rtt);
            release_sn(c, sn);
            hold = frg >= 1;
        } else if (cmd == CMD_REACK) {
            release_sn(c, sn);
        } else if (cmd == CMD_PUSH) {
            hold = 0;
            int32_t d = (int32_t)(sn - c->rcv_nxt);
            if (d < KCP_WND) {
                if (d < 0) {
                    queue_ack(c, sn, ts); /* again: its ack was lost */
                } else if (d == 0) {
                    queue_ack(c, sn, ts);
                    deliver(c, p + KCP_HDR, len);
                    c->rcv_nxt++;
                    for (int moved = 1; moved;) { /* what waited above the hole */
                        moved = 0;
                        for (int i = 0; i < OOO_MAX; i++) {
                            if (c->ooo[i] && c->ooo_sn[i] == c->rcv_nxt) {
                                deliver(c, c->ooo[i], c->ooo_len[i]);
                                free(c->ooo[i]);
                                c->ooo[i] = NULL;
                                c->rcv_nxt++;
                                moved = 1;
                            }
                        }
                    }
                } else { /* above a hole: keep it if there is room, else no ack (the server resends) */
                    int slot = -1, dup = 0;
                    for (int i = 0; i < OOO_MAX; i++) {
                        if (c->ooo[i] && c->ooo_sn[i] == sn) dup = 1;
                        if (!c->ooo[i] && slot < 0) slot = i;
                    }
                    if (dup) {
                        queue_ack(c, sn, ts);
                    } else if (slot >= 0) {
                        c->ooo[slot] = malloc(len ? len : 1);
                        if (!c->ooo[slot]) die("out of memory");
                        memcpy(c->ooo[slot], p + KCP_HDR, len);
                        c->ooo_len[slot] = len;
                        c->ooo_sn[slot] = sn;
                        queue_ack(c, sn, ts);
                        if ((c->features & 0x04) && c->nreacks < REACKS_MAX) {
                            c->reacks[c->nreacks].sn = sn;
                            c->reacks[c->nreacks].ts = ts;
                            c->reacks[c->nreacks].left = 2;
                            c->nreacks++;
                        }
                    }
                }
            }
        } else if (cmd == CMD_WASK) {
            c->wins = 1;
        }
        p += KCP_HDR + len;
        n -= KCP_HDR + len;
    }
    if (hold >= 0 && (c->features & 0x02)) c->rto_extra = hold ? HOLD_EXTRA_MS : 0;
}

/* ------------------------------------------------------------------------------- RPC frames */
static const uint8_t HELLO_BODY[] = {0x83, 0xa1, 'v', 0x01, 0xa2, 'm', 'd', 0x80, 0xa5, 't', 'p', 'i', 'n', 'g', 0xc3};
static const char METHOD[] = "bench.Sessions/Echo";

static void smux_psh(Conn *c, const uint8_t *d, int n) {
    uint8_t h[8] = {SMUX_VER, 2};
    if (!kcp_room(c, 8 + n)) return;
    put16le(h + 2, n);
    put32le(h + 4, STREAM_ID);
    kcp_write(c, h, 8);
    kcp_write(c, d, n);
}

static void rpc_frame(Conn *c, uint8_t type, uint32_t cid, const uint8_t *body, int n) {
    uint8_t f[256];
    put32be(f, n);
    f[4] = type;
    put32be(f + 5, cid);
    memcpy(f + 9, body, n);
    smux_psh(c, f, 9 + n);
}

static void send_call(Conn *c, int timeout_ms, int64_t t) {
    uint8_t b[96];
    int n = 0;
    b[n++] = 0x95;
    b[n++] = 0xa0 | (sizeof METHOD - 1);
    memcpy(b + n, METHOD, sizeof METHOD - 1);
    n += sizeof METHOD - 1;
    b[n++] = 0xc0;
    b[n++] = 0xcd;
    b[n++] = timeout_ms >> 8;
    b[n++] = timeout_ms & 0xff;
    b[n++] = 0x01;
    b[n++] = 0xc4;
    b[n++] = 32;
    memset(b + n, 'x', 32);
    n += 32;
    c->call_id = ++c->next_cid;
    c->call_t0 = now_ns(); /* latencies on the precise clock (the Python client's perf_counter) */
    c->call_deadline = t + (int64_t)timeout_ms * NS_PER_MS;
    rpc_frame(c, 3, c->call_id, b, n);
    flush_now(c, t);
}

/* msgpack: the end of the value at p, or NULL (only what a WELCOME/TRAILER may hold) */
static const uint8_t *mp_skip(const uint8_t *p, const uint8_t *e, int depth) {
    if (p >= e || depth > 32) return NULL;
    uint8_t b = *p++;
    uint64_t n = 0, items = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return p;
    if ((b & 0xe0) == 0xa0) n = b & 0x1f;
    else if ((b & 0xf0) == 0x90) items = b & 0x0f;
    else if ((b & 0xf0) == 0x80) items = 2 * (b & 0x0f);
    else {
        switch (b) {
        case 0xcc: case 0xd0: return p + 1 <= e ? p + 1 : NULL;
        case 0xcd: case 0xd1: return p + 2 <= e ? p + 2 : NULL;
        case 0xce: case 0xd2: case 0xca: return p + 4 <= e ? p + 4 : NULL;
        case 0xcf: case 0xd3: case 0xcb: return p + 8 <= e ? p + 8 : NULL;
        case 0xc4: case 0xd9: if (p + 1 > e) return NULL; n = p[0]; p += 1; break;
        case 0xc5: case 0xda: if (p + 2 > e) return NULL; n = (uint64_t)p[0] << 8 | p[1]; p += 2; break;
        case 0xc6: case 0xdb: if (p + 4 > e) return NULL; n = get32be(p); p += 4; break;
        case 0xdc: if (p + 2 > e) return NULL; items = (uint64_t)p[0] << 8 | p[1]; p += 2; break;
        case 0xdd: if (p + 4 > e) return NULL; items = get32be(p); p += 4; break;
        case 0xde: if (p + 2 > e) return NULL; items = 2 * ((uint64_t)p[0] << 8 | p[1]); p += 2; break;
        case 0xdf: if (p + 4 > e) return NULL; items = 2 * (uint64_t)get32be(p); p += 4; break;
        case 0xd4: return p + 2 <= e ? p + 2 : NULL; /* fixext */
        case 0xd5: return p + 3 <= e ? p + 3 : NULL;
        case 0xd6: return p + 5 <= e ? p + 5 : NULL;
        case 0xd7: return p + 9 <= e ? p + 9 : NULL;
        case 0xd8: return p + 17 <= e ? p + 17 : NULL;
        case 0xc7: if (p + 1 > e) return NULL; n = p[0] + 1; p += 1; break;
        case 0xc8: if (p + 2 > e) return NULL; n = ((uint64_t)p[0] << 8 | p[1]) + 1; p += 2; break;
        case 0xc9: if (p + 4 > e) return NULL; n = (uint64_t)get32be(p) + 1; p += 4; break;
        default: return NULL;
        }
    }
    if (n) return (uint64_t)(e - p) >= n ? p + n : NULL;
    for (uint64_t i = 0; i < items; i++)
        if (!(p = mp_skip(p, e, depth + 1))) return NULL;
    return p;
}

/* an int value at p (returns 1 and sets *v) */
static int mp_int(const uint8_t *p, const uint8_t *e, int64_t *v) {
    if (p >= e) return 0;
    uint8_t b = *p;
    if (b <= 0x7f) { *v = b; return 1; }
    if (b >= 0xe0) { *v = (int8_t)b; return 1; }
    if (b == 0xcc && p + 2 <= e) { *v = p[1]; return 1; }
    if (b == 0xcd && p + 3 <= e) { *v = p[1] << 8 | p[2]; return 1; }
    if (b == 0xce && p + 5 <= e) { *v = get32be(p + 1); return 1; }
    if (b == 0xcf && p + 9 <= e) { *v = (int64_t)get64be(p + 1); return 1; }
    return 0;
}

/* a map's value for the str key `key`, or NULL */
static const uint8_t *mp_map_get(const uint8_t *p, const uint8_t *e, const char *key) {
    if (p >= e) return NULL;
    uint64_t items;
    if ((*p & 0xf0) == 0x80) {
        items = *p & 0x0f;
        p++;
    } else if (*p == 0xde && p + 3 <= e) {
        items = (uint64_t)p[1] << 8 | p[2];
        p += 3;
    } else {
        return NULL;
    }
    size_t kl = strlen(key);
    for (uint64_t i = 0; i < items; i++) {
        const uint8_t *k = p;
        if (!(p = mp_skip(p, e, 0))) return NULL;
        int match = (*k & 0xe0) == 0xa0 && (size_t)(*k & 0x1f) == kl && memcmp(k + 1, key, kl) == 0;
        if (match) return p;
        if (!(p = mp_skip(p, e, 0))) return NULL;
    }
    return NULL;
}

static void hb_start(Conn *c, int64_t t);
static void connected_ok(Conn *c);
static void connect_failed(Conn *c, int reason);
static void call_done(Conn *c, int ok, int64_t t);

static void rpc_input(Conn *c, uint8_t type, uint32_t cid, const uint8_t *b, int n, int64_t t) {
    const uint8_t *e = b + n;
    c->last_receive = t; /* any frame: the heartbeat's sign of life */
    switch (type) {
    case 2: { /* WELCOME */
        if (c->welcomed) return;
        c->welcomed = 1;
        int64_t hb = 0;
        const uint8_t *v = mp_map_get(b, e, "hb");
        if (v && mp_int(v, e, &hb) && hb > 0) {
            int64_t cap = hb * 5 / 2 * NS_PER_MS;
            if (cap < c->hb_max) c->hb_max = cap;
            if (c->hb_max < HB_INTERVAL * NS_PER_MS) c->hb_max = HB_INTERVAL * NS_PER_MS;
            if (c->hb_current > c->hb_max) c->hb_current = c->hb_max;
        }
        v = mp_map_get(b, e, "sid");
        c->has_token = 0;
        if (v && (*v & 0xe0) == 0xa0 && v + 1 + (*v & 0x1f) <= e) { /* fixstr: ids like "1db5-17" */
            c->sid_len = *v & 0x1f;
            memcpy(c->sid, v + 1, c->sid_len);
            const uint8_t *r = mp_map_get(b, e, "resume"), *tk = r ? mp_map_get(r, e, "token") : NULL;
            if (tk && tk + 34 <= e && tk[0] == 0xc4 && tk[1] == 32) {
                memcpy(c->token, tk + 2, 32);
                c->has_token = 1;
            }
        }
        v = mp_map_get(b, e, "tping");
        if (!v || *v != 0xc3) { /* an older server: this client has no PING frames; say so */
            fprintf(stderr, "rpc_load: the server's WELCOME has no tping (an older server)\n");
            exit(2);
        }
        hb_start(c, t);
        return;
    }
    case 8:  /* REPLY */
    case 7:  /* TRAILER: the call failed */
        if (cid && cid == c->call_id) call_done(c, type == 8, t);
        return;
    case 12: { /* PING: answer PONG [nonce] */
        if (n < 1 || (b[0] & 0xf0) != 0x90 || (b[0] & 0x0f) < 1) return;
        const uint8_t *v = b + 1, *ve = mp_skip(v, e, 0);
        if (!ve || ve - v > 16) return;
        uint8_t body[20];
        body[0] = 0x91;
        memcpy(body + 1, v, ve - v);
        rpc_frame(c, 13, 0, body, 1 + (int)(ve - v));
        return;
    }
    case 14: /* GOAWAY */
        lose(c, WHY_GOAWAY);
        return;
    default:
        return;
    }
}

/* the bytes KCP delivered: smux frames, and the control stream's RPC frames in them */
static void mux_input(Conn *c, int64_t t) {
    int off = 0, read_now = 0;
    while (!gone(c) && c->in.n - off >= 8) {
        uint8_t *h = c->in.p + off;
        int len = get16le(h + 2);
        uint8_t cmd = h[1];
        uint32_t sid = get32le(h + 4);
        if (c->in.n - off < 8 + len) break;
        if (cmd == 2 && sid == STREAM_ID) { /* PSH */
            buf_add(&c->frames, h + 8, len);
            c->consumed += len;
            read_now = 1;
        } else if (cmd == 1 && sid == STREAM_ID) { /* FIN of the control stream */
            off += 8 + len;
            lose(c, WHY_FIN);
            break;
        }
        off += 8 + len;
    }
    if (off && !gone(c)) buf_drop(&c->in, off);
    if (!read_now || gone(c)) return;
    /* smux v2: UPD on the first read of the stream, then every half window read */
    if (c->upd_at == 0 || c->consumed - c->upd_at >= STREAM_WINDOW / 2) {
        uint8_t u[16] = {SMUX_VER, 4, 8, 0};
        put32le(u + 4, STREAM_ID);
        put32le(u + 8, c->consumed);
        put32le(u + 12, STREAM_WINDOW);
        if (kcp_room(c, 16)) kcp_write(c, u, 16);
        c->upd_at = c->consumed ? c->consumed : 1;
    }
    int foff = 0;
    while (!gone(c) && c->frames.n - foff >= 9) {
        uint8_t *f = c->frames.p + foff;
        uint32_t len = get32be(f);
        if (len > (1u << 22)) {
            lose(c, WHY_FIN);
            return;
        }
        if ((uint32_t)(c->frames.n - foff) < 9 + len) break;
        rpc_input(c, f[4], get32be(f + 5), f + 9, (int)len, t);
        foff += 9 + len;
    }
    if (foff && !gone(c)) buf_drop(&c->frames, foff);
}

/* ------------------------------------------------------------------------------- heartbeat */
static void hb_start(Conn *c, int64_t t) {
    (void)t;
    c->hb_on = 1; /* the heartbeat's clock started with the link, before HELLO (kcprpc/link.py) */
}

static void hb_poll(Conn *c, int64_t t) {
    if (!c->hb_on) return;
    if (t - c->last_receive >= HB_TIMEOUT * NS_PER_MS) {
        lose(c, WHY_HEARTBEAT);
        return;
    }
    if (t - c->last_ping < c->hb_current) return;
    int sent_something = c->activity != c->hb_act_seen;
    c->hb_act_seen = c->activity;
    c->last_ping = t;
    if (sent_something && t - c->last_receive < HB_INTERVAL * NS_PER_MS &&
        t - c->last_ping_sent < 4 * c->hb_max)
        return; /* traffic went both ways: skipped */
    int answered = c->hb_nonce != 0 && c->hb_ponged == c->hb_nonce;
    if (answered) {
        c->hb_current = 2 * c->hb_current < c->hb_max ? 2 * c->hb_current : c->hb_max;
    } else {
        c->hb_current = HB_INTERVAL * NS_PER_MS;
    }
    c->last_ping_sent = t;
    c->hb_nonce++;
    send_ping(c, 1, KEEPALIVE_BIT | c->hb_nonce, 0);
    st_keepalives++;
}

static int64_t hb_due(Conn *c) {
    int64_t a = c->last_ping + c->hb_current, b = c->last_receive + HB_TIMEOUT * NS_PER_MS;
    return a < b ? a : b;
}

/* ------------------------------------------------------------------------------- path MTU */
static int64_t pm_timeout(Conn *c) {
    int srtt = c->pm_srtt;
    if (srtt <= 0) return 1000 * NS_PER_MS;
    int to = 3 * srtt;
    if (srtt + 4 * c->pm_rttvar > to) to = srtt + 4 * c->pm_rttvar;
    if (to < 100) to = 100;
    if (to > 1000) to = 1000;
    return (int64_t)to * NS_PER_MS;
}

static uint64_t pm_send(Conn *c, int size, int64_t t) {
    uint64_t id = c->pm_next_id++;
    send_ping(c, 1, id, size);
    st_probes++;
    c->pm_sent = t;
    c->pm_due = t + pm_timeout(c);
    return id;
}

static void pm_rtt(Conn *c, int64_t sent, int64_t t) {
    int rtt = (int)((t - sent) / NS_PER_MS);
    if (c->pm_srtt <= 0) {
        c->pm_srtt = rtt > 1 ? rtt : 1;
        c->pm_rttvar = rtt / 2;
    } else {
        int d = c->pm_srtt - rtt;
        c->pm_rttvar = (3 * c->pm_rttvar + (d < 0 ? -d : d)) / 4;
        c->pm_srtt = (7 * c->pm_srtt + rtt) / 8;
        if (c->pm_srtt < 1) c->pm_srtt = 1;
    }
}

static void pm_set(Conn *c, int size) {
    c->pmtu = size;
    c->mtu = size - OVERHEAD; /* the engine's MTU follows the search (SecurePath._apply_pmtu) */
}

/* kcp/pmtud.py's search: the maximum first, then a binary search between the largest size that
 * passed and the smallest that failed (3 lost probes), until they are 16 bytes apart */
static int pm_candidate(Conn *c) {
    if (c->pm_hi > PMTU_MAX) return PMTU_MAX > c->pm_lo ? PMTU_MAX : 0;
    if (c->pm_hi - c->pm_lo <= 16) return 0;
    return (c->pm_lo + c->pm_hi) / 2;
}

static void pm_complete(Conn *c, int64_t t) {
    c->pm_state = 2;
    c->pm_size = 0;
    c->pm_confirm_at = t + 15000 * NS_PER_MS;
}

static void pm_search(Conn *c, int64_t t, int lo, int hi) {
    c->pm_state = 1;
    c->pm_lo = lo;
    c->pm_hi = hi;
    c->pm_size = 0;
    c->pm_due = t;
    if (!pm_candidate(c)) pm_complete(c, t);
}

static void pm_start_round(Conn *c, int64_t t) {
    c->pm_state = 3;
    c->pm_big = pm_send(c, c->pmtu, t);
    c->pm_small = pm_send(c, PMTU_BASE, t);
    c->pm_small_acked = 0;
    c->pm_active = 0;
}

static void pm_ack(Conn *c, uint64_t id, int64_t t) {
    if (c->pm_state == 1 && c->pm_size && id >= c->pm_first_id && id < c->pm_next_id) {
        pm_rtt(c, c->pm_sent, t); /* a copy of the size being probed passed */
        c->pm_lo = c->pm_size;
        if (c->pm_size > c->pmtu) pm_set(c, c->pm_size);
        c->pm_size = 0;
        c->pm_due = t;
        if (!pm_candidate(c)) pm_complete(c, t);
    } else if (c->pm_state == 3 && id == c->pm_small) {
        c->pm_small_acked = 1;
    } else if (c->pm_state == 3 && id == c->pm_big) {
        pm_rtt(c, c->pm_sent, t);
        c->pm_failures = 0;
        pm_complete(c, t);
    }
}

static void pm_poll(Conn *c, int64_t t) {
    if (c->segs_sent != c->segs_seen) { /* an idle session is not probed (kcp/pmtud.py note_traffic) */
        c->segs_seen = c->segs_sent;
        c->pm_active = 1;
    }
    if (c->pm_state == 1 && t >= c->pm_due) {
        if (c->pm_size && ++c->pm_losses >= 3) { /* lost 3 times: too big */
            c->pm_hi = c->pm_size;
            c->pm_size = 0;
        }
        if (!c->pm_size) {
            int size = pm_candidate(c);
            if (!size) {
                pm_complete(c, t);
                return;
            }
            c->pm_size = size;
            c->pm_losses = 0;
            c->pm_first_id = c->pm_next_id;
        }
        pm_send(c, c->pm_size, t);
    } else if (c->pm_state == 3 && t >= c->pm_due) { /* the round's big probe went unanswered */
        if (!c->pm_small_acked) { /* the path may be down: that says nothing of the size */
            pm_complete(c, t);
            c->pm_confirm_at = t + 5000 * NS_PER_MS;
        } else if (++c->pm_failures < 3) {
            pm_start_round(c, t); /* the next round at once */
        } else { /* a black hole: back to the base, search again below the size that failed */
            int failed = c->pmtu;
            c->pm_failures = 0;
            pm_set(c, PMTU_BASE);
            pm_search(c, t, PMTU_BASE, failed);
        }
    } else if (c->pm_state == 2 && c->pmtu > PMTU_BASE && c->pm_active && t >= c->pm_confirm_at) {
        pm_start_round(c, t);
    }
}

static int64_t pm_wake(Conn *c) {
    if (c->pm_state == 1 || c->pm_state == 3) return c->pm_due;
    if (c->pm_state == 2 && c->pmtu > PMTU_BASE && (c->pm_active || c->segs_sent != c->segs_seen))
        return c->pm_confirm_at;
    return INT64_MAX;
}

/* ------------------------------------------------------------------------------- the handshake */
static void mix_hash(Conn *c, const uint8_t *d, size_t n) {
    uint8_t buf[32 + 1300];
    memcpy(buf, c->h, 32);
    memcpy(buf + 32, d, n);
    sha256(buf, 32 + n, c->h);
}
static void noise_nonce(Conn *c, uint8_t nonce[12]) {
    memset(nonce, 0, 12);
    for (int i = 0; i < 8; i++) {
        uint8_t b = (uint8_t)(c->hs_n >> (8 * i));
        if (c->suite == SUITE_AESGCM) nonce[11 - i] = b;
        else nonce[4 + i] = b;
    }
}

/* the next initiation (a new ephemeral key): Noise NNpsk0 message 1 with the proposal */
static void hs_start(Conn *c, int64_t t) {
    uint8_t *d = c->init;
    char name[64];
    snprintf(name, sizeof name, "Noise_NNpsk0_25519_%s_SHA256", c->suite == SUITE_AESGCM ? "AESGCM" : "ChaChaPoly");
    size_t nl = strlen(name);
    memset(c->h, 0, 32);
    if (nl <= 32) memcpy(c->h, name, nl);
    else sha256((const uint8_t *)name, nl, c->h);
    memcpy(c->ck, c->h, 32);
    d[0] = T_INITIATION;
    d[1] = 1;
    d[2] = c->suite;
    d[3] = 2; /* NNpsk0 */
    memcpy(d + 4, c->local_cid, CID_LEN);
    uint8_t pro[16 + 12];
    memcpy(pro, "kcprpc secure v1", 16);
    memcpy(pro + 16, d, 12);
    mix_hash(c, pro, sizeof pro);
    /* psk: MixKeyAndHash */
    uint8_t th[32];
    noise_hkdf(c->ck, PSK, 32, 3, c->ck, th, c->k);
    mix_hash(c, th, 32);
    c->hs_n = 0;
    /* e */
    uint8_t epub[32];
    if (c->eph) EVP_PKEY_free(c->eph);
    c->eph = x25519_new(epub);
    mix_hash(c, epub, 32);
    noise_hkdf(c->ck, epub, 32, 2, c->ck, c->k, NULL);
    c->hs_n = 0;
    /* payload: EncryptAndHash */
    uint8_t *msg = d + 14, nonce[12];
    memcpy(msg, epub, 32);
    noise_nonce(c, nonce);
    int ct = aead_once(1, suite_cipher(c->suite), c->k, nonce, c->h, 32, HELLO_TLV, HELLO_TLV_LEN, msg + 32);
    if (ct < 0) die("handshake seal failed");
    c->hs_n++;
    mix_hash(c, msg + 32, ct);
    int mlen = 32 + ct;
    d[12] = mlen >> 8;
    d[13] = mlen & 0xff;
    memset(d + 14 + mlen, 0, INIT_SIZE - 32 - 14 - mlen);
    uint8_t mac[32];
    hmac256(MAC1_KEY, 32, d, INIT_SIZE - 32, mac);
    memcpy(c->mac1, mac, 16);
    memcpy(d + INIT_SIZE - 32, c->mac1, 16);
    c->have_cookie = 0;
    c->hs_interval = HS_RETRY_MS;
    c->hs_next = t + HS_RETRY_MS * NS_PER_MS;
    c->hs_sent = t;
    c->copies = 1;
}

static void hs_send(Conn *c) {
    uint8_t out[INIT_SIZE];
    memcpy(out, c->init, INIT_SIZE - 16);
    if (c->have_cookie) {
        uint8_t m[32];
        hmac256(c->cookie, 16, c->init, INIT_SIZE - 16, m);
        memcpy(out + INIT_SIZE - 16, m, 16);
    } else {
        memset(out + INIT_SIZE - 16, 0, 16);
    }
    udp_send(c, out, INIT_SIZE);
    st_inits++;
}

static int tlv_find(const uint8_t *p, int n, int tag, const uint8_t **v) {
    int pos = 0;
    while (pos + 3 <= n) {
        int tg = p[pos], len = p[pos + 1] << 8 | p[pos + 2];
        pos += 3;
        if (pos + len > n) return -1;
        if (tg == tag) {
            *v = p + pos;
            return len;
        }
        pos += len;
    }
    return -1;
}

static void established(Conn *c, const uint8_t *tlv, int tn, int64_t t) {
    const uint8_t *v;
    int l = tlv_find(tlv, tn, 10, &v);
    if (l != CID_LEN) {
        connect_failed(c, 6);
        return;
    }
    memcpy(c->remote_cid, v, CID_LEN);
    if (tlv_find(tlv, tn, 11, &v) == 16) {
        memcpy(c->reset_token, v, 16);
        c->has_reset = 1;
    }
    int mtu = MTU0;
    if (tlv_find(tlv, tn, 3, &v) == 2) mtu = v[0] << 8 | v[1];
    if (tlv_find(tlv, tn, 6, &v) != 1 || v[0] != SMUX_VER || tlv_find(tlv, tn, 2, &v) != 1 || v[0] != c->suite) {
        connect_failed(c, 6);
        return;
    }
    c->features = tlv_find(tlv, tn, 12, &v) >= 1 ? v[0] & FEATURES : 0;
    /* Split, then the conv from the handshake hash */
    uint8_t k1[32], k2[32];
    noise_hkdf(c->ck, NULL, 0, 2, k1, k2, NULL);
    keys_set(&c->snd, c->suite, k1, 0, 1);
    keys_set(&c->rcv, c->suite, k2, 0, 0);
    c->conv = get32le(c->h);
    EVP_PKEY_free(c->eph);
    c->eph = NULL;
    free(c->init);
    c->init = NULL;
    c->mtu = mtu - OVERHEAD;
    c->rx_rto = RTO_DEF;
    c->rec_copies = 2; /* kcp/session_setup.py: min(2, max_copies) */
    c->ack_due = -1;
    c->hs_rtt = c->copies == 1 ? (t - c->hs_sent) / NS_PER_MS : 0;
    if (c->hs_rtt < 1 && c->copies == 1) c->hs_rtt = 1;
    c->pm_srtt = (int)c->hs_rtt;
    c->pm_rttvar = c->pm_srtt / 2;
    /* as the Python client: its path MTU search's first probe, the key-confirming PING, then the
     * control stream's SYN and HELLO, each flushed on its own */
    c->pm_next_id = 1;
    pm_set(c, PMTU_BASE); /* the search starts at the base (the engine's MTU too) */
    pm_search(c, t, PMTU_BASE, PMTU_MAX + 1);
    pm_poll(c, t); /* its first probe now */
    send_ping(c, 0, 0, 0);
    c->state = ST_HELLO;
    c->phase_deadline = t + CONNECT_WAIT_MS * NS_PER_MS;
    /* the heartbeat's clock starts with the link (before HELLO), its task after WELCOME */
    c->hb_current = HB_INTERVAL * NS_PER_MS;
    c->hb_max = 2500 * NS_PER_MS; /* min(timeout / 2, 4 x interval) */
    c->last_receive = c->last_ping = c->last_ping_sent = GROUP_NS ? t / GROUP_NS * GROUP_NS : t;
    uint8_t syn[8] = {SMUX_VER, 0, 0, 0};
    put32le(syn + 4, STREAM_ID);
    kcp_write(c, syn, 8);
    flush_now(c, t);
    if (c->reconnecting && c->has_token) { /* {"v", "md", "restore": {"offsets": {}}, "resume", "tping"} */
        uint8_t b[160], msg[16 + 64 + 32], proof[32];
        int n = 0, m = 0;
        memcpy(msg, "kcprpc-resume-v1", 16);
        memcpy(msg + 16, c->sid, c->sid_len);
        memcpy(msg + 16 + c->sid_len, c->h, 32); /* the new connection's channel binding */
        m = 16 + c->sid_len + 32;
        hmac256(c->token, 32, msg, m, proof);
        static const uint8_t head[] = {0x85, 0xa1, 'v', 0x01, 0xa2, 'm', 'd', 0x80, 0xa7, 'r', 'e', 's', 't',
                                       'o', 'r', 'e', 0x81, 0xa7, 'o', 'f', 'f', 's', 'e', 't', 's', 0x80,
                                       0xa6, 'r', 'e', 's', 'u', 'm', 'e', 0x82, 0xa3, 's', 'i', 'd'};
        memcpy(b, head, sizeof head);
        n = sizeof head;
        b[n++] = 0xa0 | c->sid_len;
        memcpy(b + n, c->sid, c->sid_len);
        n += c->sid_len;
        static const uint8_t mid[] = {0xa5, 'p', 'r', 'o', 'o', 'f', 0xc4, 32};
        memcpy(b + n, mid, sizeof mid);
        n += sizeof mid;
        memcpy(b + n, proof, 32);
        n += 32;
        static const uint8_t tail[] = {0xa5, 't', 'p', 'i', 'n', 'g', 0xc3};
        memcpy(b + n, tail, sizeof tail);
        n += sizeof tail;
        rpc_frame(c, 1, 0, b, n);
    } else {
        rpc_frame(c, 1, 0, HELLO_BODY, sizeof HELLO_BODY);
    }
    flush_now(c, t);
}

static void hs_input(Conn *c, const uint8_t *d, int n, int64_t t) {
    if (n < 1) return;
    if (d[0] == T_RETRY) {
        if (n != 54 || memcmp(d + 2, c->local_cid, CID_LEN) != 0) return;
        uint8_t cookie[32];
        if (aead_once(0, EVP_chacha20_poly1305(), COOKIE_KEY, d + 10, c->mac1, 16, d + 22, 32, cookie) != 16) return;
        memcpy(c->cookie, cookie, 16);
        c->have_cookie = 1;
        st_retries++;
        hs_send(c); /* at once, with mac2 */
        return;
    }
    if (d[0] == T_HINT) {
        if (n == 20 && memcmp(d + 4, c->init, 16) == 0) connect_failed(c, 1); /* wrong key or wire */
        return;
    }
    if (d[0] != T_RESPONSE || n < 10 + 48 || memcmp(d + 2, c->local_cid, CID_LEN) != 0) return;
    /* Noise message 2: e, ee, then the server's answer */
    const uint8_t *re = d + 10;
    uint8_t dh[32], nonce[12], pt[512];
    mix_hash(c, re, 32);
    noise_hkdf(c->ck, re, 32, 2, c->ck, c->k, NULL);
    c->hs_n = 0;
    if (!x25519_dh(c->eph, re, dh)) {
        connect_failed(c, 6);
        return;
    }
    noise_hkdf(c->ck, dh, 32, 2, c->ck, c->k, NULL);
    c->hs_n = 0;
    int ctn = n - 42;
    if (ctn > (int)sizeof pt + TAG) {
        connect_failed(c, 6);
        return;
    }
    noise_nonce(c, nonce);
    int pn = aead_once(0, suite_cipher(c->suite), c->k, nonce, c->h, 32, d + 42, ctn, pt);
    if (pn < 0) {
        connect_failed(c, 6); /* PSK mismatch */
        return;
    }
    mix_hash(c, d + 42, ctn);
    const uint8_t *v;
    int l = tlv_find(pt, pn, 8, &v);
    if (l != 1) {
        connect_failed(c, 6);
        return;
    }
    if (v[0] != 0) {
        if (v[0] == 2 && !c->suites_tried) { /* suite refused: ChaChaPoly, at once */
            c->suites_tried = 1;
            c->suite = SUITE_CHACHA;
            hs_start(c, t);
            hs_send(c);
            return;
        }
        connect_failed(c, v[0]);
        return;
    }
    established(c, pt, pn, t);
}

/* ------------------------------------------------------------------------------- connections */
static int inflight_connects;

static void close_conn(Conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    keys_free(&c->snd);
    keys_free(&c->rcv);
    keys_free(&c->rcv_prev);
    if (c->eph) EVP_PKEY_free(c->eph);
    c->eph = NULL;
    free(c->init);
    c->init = NULL;
    buf_free(&c->in);
    buf_free(&c->frames);
    for (int i = 0; i < OOO_MAX; i++) {
        free(c->ooo[i]);
        c->ooo[i] = NULL;
    }
    c->state = ST_DONE;
}

/* a fresh connection's state: only the call schedule and what a reconnect needs stay */
static void conn_reset(Conn *c) {
    Conn keep = *c;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->gen = keep.gen;
    c->armed = keep.armed;
    c->measuring = keep.measuring;
    c->next_call = keep.next_call;
    c->reconnecting = keep.reconnecting;
    c->attempt = keep.attempt;
    c->sid_len = keep.sid_len;
    c->has_token = keep.has_token;
    memcpy(c->sid, keep.sid, sizeof c->sid);
    memcpy(c->token, keep.token, sizeof c->token);
    c->state = ST_DONE;
}

/* the next reconnect attempt, after the policy's delay (0.5 s doubling to 2 s, jitter 20 %) */
static void schedule_reconnect(Conn *c) {
    close_conn(c);
    if (measuring == 2) return; /* the run is over */
    conn_reset(c);
    double base = 0.5 * (double)(1 << (c->attempt < 3 ? c->attempt : 3));
    if (base > 2.0) base = 2.0;
    double r = (double)rand() / RAND_MAX;
    c->reconnect_at = loop_now() + (int64_t)(base * (1 + 0.2 * (2 * r - 1)) * NS_PER_S);
    c->attempt++;
    c->reconnecting = 1;
    c->state = ST_RECONNECT;
}

static void connect_failed(Conn *c, int reason) {
    int was = c->state;
    if (gone(c)) return;
    if (c->reconnecting) { /* a reconnect that failed: the next one later */
        schedule_reconnect(c);
        return;
    }
    if (was == ST_HANDSHAKE || was == ST_HELLO || was == ST_WARM) {
        inflight_connects--;
        connect_errors++;
        st_err_reason[reason & 7]++;
    }
    close_conn(c);
}

static void connected_ok(Conn *c) {
    if (c->reconnecting) {
        c->reconnecting = 0;
        c->attempt = 0;
        if (measuring == 1) reconnects++;
    } else {
        inflight_connects--;
        connected++;
    }
    c->state = ST_READY;
}

/* an established connection is gone: count it, fail its call, reconnect */
static void lose(Conn *c, int why) {
    if (gone(c)) return;
    if (c->state != ST_READY) {
        connect_failed(c, 7);
        return;
    }
    if (measuring == 1) {
        lost[why]++;
        lost_total++;
        if (c->call_id) failed++; /* its call in flight fails */
    }
    c->call_id = 0;
    schedule_reconnect(c);
}

/* while a connection is down, each call it was due to make fails at once (the Python client's
 * calls without wait_for_ready) */
static void fail_slots(Conn *c, int64_t t) {
    while (c->measuring && c->next_call <= t && c->next_call < window_end) {
        failed++;
        c->next_call += NS_PER_S;
    }
}

static void call_done(Conn *c, int ok, int64_t t) {
    (void)t;
    if (c->state == ST_WARM) {
        c->call_id = 0;
        if (ok) connected_ok(c);
        else connect_failed(c, 5);
        return;
    }
    if (!c->measuring) {
        c->call_id = 0;
        return;
    }
    if (ok) {
        if (nlat == lat_cap) {
            lat_cap = lat_cap ? lat_cap * 2 : 65536;
            lats = realloc(lats, sizeof(int64_t) * lat_cap);
            if (!lats) die("out of memory");
        }
        lats[nlat++] = (now_ns() - c->call_t0) / 1000;
    } else {
        failed++;
    }
    c->call_id = 0;
}

static void start_connect(int idx, int64_t t) {
    Conn *c = &C[idx];
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int probe = IP_PMTUDISC_PROBE; /* DF, as the Python client's path MTU search sets it */
    if (fd < 0 || (HAVE_SRC && bind(fd, (struct sockaddr *)&SRC, sizeof SRC) < 0) ||
        connect(fd, (struct sockaddr *)&DST, sizeof DST) < 0) {
        perror("rpc_load: socket");
        exit(2);
    }
    (void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &probe, sizeof probe);
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(EP, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    if (RAND_bytes(c->local_cid, CID_LEN) != 1) die("RAND_bytes");
    c->suite = SUITE_AESGCM;
    c->init = malloc(INIT_SIZE);
    if (!c->init) die("out of memory");
    c->state = ST_HANDSHAKE;
    c->hs_deadline = t + HS_TIMEOUT_MS * NS_PER_MS;
    if (!c->reconnecting) inflight_connects++;
    hs_start(c, t);
    hs_send(c);
}

/* ------------------------------------------------------------------------------- receiving */
static void transport_input(Conn *c, const uint8_t *d, int n, int64_t t) {
    if (n < OVERHEAD || (d[0] & 0xfe) != T_TRANSPORT || memcmp(d + 1, c->local_cid, CID_LEN) != 0) return;
    uint64_t pn = get64be(d + 9);
    if (c->rw_any) { /* the replay window (64 packets here) */
        if (pn <= c->rw_top) {
            uint64_t back = c->rw_top - pn;
            if (back >= 64 || (c->rw_bits >> back) & 1) return;
        }
    }
    int phase = d[0] & 1;
    Keys next = {0};
    Keys *k = &c->rcv;
    int which = 0; /* 0 current, 1 previous, 2 next */
    if (phase != (c->rcv.epoch & 1)) {
        if (c->have_prev && t >= c->prev_expiry) {
            keys_free(&c->rcv_prev);
            c->have_prev = 0;
        }
        if (c->have_prev && pn < c->first_pn) {
            k = &c->rcv_prev;
            which = 1;
        } else {
            keys_next(&next, &c->rcv, c->suite, 0);
            k = &next;
            which = 2;
        }
    }
    uint8_t pt[2048], nonce[12];
    int m = n - HDR - TAG, l = 0, f = 0;
    pn_nonce(k->iv, pn, nonce);
    int ok = EVP_DecryptInit_ex(k->ctx, NULL, NULL, NULL, nonce) && EVP_DecryptUpdate(k->ctx, NULL, &l, d, HDR) &&
             EVP_DecryptUpdate(k->ctx, pt, &l, d + HDR, m) &&
             EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)(d + HDR + m)) &&
             EVP_DecryptFinal_ex(k->ctx, pt + l, &f) > 0;
    if (!ok) {
        if (which == 2) keys_free(&next);
        if (c->has_reset && memcmp(d + n - 16, c->reset_token, 16) == 0) {
            lose(c, WHY_RESET);
            return;
        }
        st_decrypt_err++;
        return;
    }
    if (which == 2) { /* the server updated its keys: follow */
        keys_free(&c->rcv_prev);
        c->rcv_prev = c->rcv;
        c->have_prev = 1;
        c->prev_expiry = t + 5000 * NS_PER_MS;
        c->rcv = next;
        c->first_pn = pn;
        while (c->snd.epoch < c->rcv.epoch) {
            Keys s = {0};
            keys_next(&s, &c->snd, c->suite, 1);
            keys_free(&c->snd);
            c->snd = s;
        }
    }
    if (!c->rw_any || pn > c->rw_top) {
        uint64_t shift = c->rw_any ? pn - c->rw_top : 64;
        c->rw_bits = shift >= 64 ? 0 : c->rw_bits << shift;
        c->rw_top = pn;
        c->rw_any = 1;
    }
    c->rw_bits |= 1ULL << (c->rw_top - pn);
    if (m < 1) return;
    switch (pt[0]) {
    case F_DATA:
        kcp_input(c, pt + 1, m - 1, t);
        break;
    case F_PING:
        if (m >= 9) { /* a probe (the server's path MTU search) or a keepalive: say it arrived */
            uint8_t a[9];
            a[0] = F_PING_ACK;
            memcpy(a + 1, pt + 1, 8);
            seal_send(c, a, 9);
            st_probe_acks_sent++;
        }
        break;
    case F_PATH_CHALLENGE:
        if (m == 9) {
            pt[0] = F_PATH_RESPONSE;
            seal_send(c, pt, 9);
        }
        break;
    case F_PING_ACK:
        if (m == 9) {
            uint64_t id = get64be(pt + 1);
            if (id & KEEPALIVE_BIT) {
                uint32_t nonce32 = (uint32_t)(id & 0xffffffffu);
                c->last_receive = t; /* the answer stands for the PONG */
                if (c->hb_nonce && (int32_t)(nonce32 - c->hb_ponged) > 0 && (int32_t)(c->hb_nonce - nonce32) >= 0)
                    c->hb_ponged = nonce32;
            } else {
                pm_ack(c, id, t);
            }
        }
        break;
    case F_CLOSE:
        lose(c, WHY_CLOSED);
        break;
    case F_GOAWAY:
        lose(c, WHY_GOAWAY);
        break;
    default:
        break;
    }
}

/* after a socket's batch of datagrams: deliver, then the acks as kcp/session.py after_input */
static void after_input(Conn *c, int64_t t) {
    if (gone(c) || c->state == ST_HANDSHAKE || c->state == ST_WAITING) return;
    if (c->in.n) mux_input(c, t);
    if (gone(c)) return;
    if (c->state == ST_HELLO && c->welcomed) {
        if (c->npend || c->nacks) flush_now(c, t); /* the ack of WELCOME rides with the UPD */
        if (gone(c)) return;
        if (IDLE || c->reconnecting) { /* a reconnect makes no warm-up call */
            connected_ok(c);
        } else {
            c->state = ST_WARM;
            c->phase_deadline = t + WARM_TIMEOUT_MS * NS_PER_MS;
            send_call(c, WARM_TIMEOUT_MS, t);
        }
        return;
    }
    if (waitsnd(c) || c->wins) {
        flush_now(c, t);
    } else if (c->nacks) {
        if (c->nacks == 1 && c->lone < LONE_ACKS) {
            if (c->ack_due < 0) c->ack_due = t + ACK_DELAY_MS * NS_PER_MS;
        } else {
            if (c->nacks == 1) { /* its lone acks found no ride lately: at once, every 32nd waits */
                int k = c->lone + 1;
                c->lone = k >= LONE_ACKS + LONE_ACK_PROBE ? LONE_ACKS - 1 : k;
                st_lone_acks++;
            }
            flush_now(c, t);
        }
    }
}

/* ------------------------------------------------------------------------------- timers */
static int64_t conn_wake(Conn *c) {
    int64_t w = INT64_MAX;
#define MIN(x) \
    do {       \
        if ((x) < w) w = (x); \
    } while (0)
    if (c->reconnecting && c->state != ST_READY && c->measuring && c->next_call < window_end) MIN(c->next_call);
    switch (c->state) {
    case ST_HANDSHAKE:
        MIN(c->hs_next);
        MIN(c->hs_deadline);
        return w;
    case ST_RECONNECT:
        MIN(c->reconnect_at);
        return w;
    case ST_DONE:
    case ST_WAITING:
        return w;
    case ST_HELLO:
    case ST_WARM:
        MIN(c->phase_deadline);
        break;
    default:
        break;
    }
    if (c->ack_due >= 0) MIN(c->ack_due);
    if (c->inflight) {
        for (uint32_t sn = c->snd_una; (int32_t)(c->snd_nxt - sn) > 0; sn++) {
            Seg *s = &c->sbuf[sn % SND_RING];
            if (!s->acked) MIN(T_BASE + (int64_t)s->resendts * NS_PER_MS); /* kcp_ms(T_BASE) is 0 */
        }
    }
    if (c->hb_on) MIN(hb_due(c));
    MIN(pm_wake(c));
    if (c->call_id) MIN(c->call_deadline);
    else if (c->measuring && c->next_call < window_end) MIN(c->next_call);
    return w;
#undef MIN
}

static void arm(int idx) {
    Conn *c = &C[idx];
    int64_t w = conn_wake(c);
    if (w == INT64_MAX) return;
    if (c->armed && c->armed <= w) return; /* the earlier entry re-arms when it fires */
    c->armed = w;
    heap_push(w, idx, ++c->gen);
}

static void conn_timer(Conn *c, int64_t t) {
    if (c->reconnecting && c->state != ST_READY) fail_slots(c, t);
    switch (c->state) {
    case ST_RECONNECT:
        if (t >= c->reconnect_at) start_connect((int)(c - C), t);
        return;
    case ST_HANDSHAKE:
        if (t >= c->hs_deadline) {
            connect_failed(c, 0);
        } else if (t >= c->hs_next) {
            int iv = c->hs_interval * 2;
            c->hs_interval = iv < HS_RETRY_MAX_MS ? iv : (HS_RETRY_MAX_MS > c->hs_interval ? HS_RETRY_MAX_MS : c->hs_interval);
            c->hs_next = t + (int64_t)c->hs_interval * NS_PER_MS;
            c->copies++;
            hs_send(c);
        }
        return;
    case ST_HELLO:
    case ST_WARM:
        if (t >= c->phase_deadline) {
            connect_failed(c, c->state == ST_HELLO ? 3 : 4);
            return;
        }
        break;
    case ST_READY:
        break;
    default:
        return;
    }
    uint32_t now = kcp_ms(t);
    if (c->ack_due >= 0 && t >= c->ack_due) { /* delayed acks found nothing to ride with */
        c->ack_due = -1;
        if (c->nacks) {
            if (c->lone < LONE_ACKS) c->lone++;
            flush_now(c, t);
            if (gone(c)) return;
        }
    }
    int due = 0;
    for (uint32_t sn = c->snd_una; c->inflight && (int32_t)(c->snd_nxt - sn) > 0; sn++) {
        Seg *s = &c->sbuf[sn % SND_RING];
        if (!s->acked && (int32_t)(now - s->resendts) >= 0) due = 1;
    }
    if (due) {
        flush_now(c, t);
        if (gone(c)) return;
    }
    hb_poll(c, t);
    if (gone(c)) return;
    pm_poll(c, t);
    if (c->state != ST_READY) return;
    if (c->call_id && t >= c->call_deadline) { /* past its deadline: CANCEL, failed */
        uint8_t nil = 0xc0;
        rpc_frame(c, 9, c->call_id, &nil, 1);
        st_cancels++;
        call_done(c, 0, t);
        flush_now(c, t);
        if (gone(c)) return;
    }
    if (c->measuring && !c->call_id && c->next_call < window_end && t >= c->next_call) {
        c->next_call += NS_PER_S;
        send_call(c, CALL_TIMEOUT_MS, t);
    }
}

/* ------------------------------------------------------------------------------- the loop */
static int stdin_line;

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static void on_socket(int idx, int64_t t) {
    Conn *c = &C[idx];
    uint8_t buf[2048];
    for (int j = 0; j < 16 && !gone(c); j++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ECONNREFUSED && c->state == ST_HANDSHAKE) connect_failed(c, 2);
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            continue;
        }
        st_dgram_in++;
        st_bytes_in += n;
        if (c->state == ST_HANDSHAKE) hs_input(c, buf, (int)n, t);
        else transport_input(c, buf, (int)n, t);
    }
    after_input(c, t);
    if (c->state != ST_DONE) arm(idx);
}

/* one turn: the timers due, then one wait for datagrams (until the next timer, `until` or 20 ms) */
static void pump(int64_t until) {
    struct epoll_event evs[512];
    int64_t t = loop_now();
    while (heap_n > 0 && heap[0].t <= t) {
        Ev e = heap_pop();
        Conn *c = &C[e.idx];
        if (e.gen != c->gen) continue;
        c->armed = 0;
        conn_timer(c, t);
        if (c->state != ST_DONE) arm(e.idx);
    }
    if (t >= until) return;
    int64_t wait = until - t;
    if (heap_n > 0 && heap[0].t - t < wait) wait = heap[0].t - t;
    int ms = (int)((wait + NS_PER_MS - 1) / NS_PER_MS);
    if (ms > 20) ms = 20;
    int k = epoll_wait(EP, evs, 512, ms);
    t = loop_now();
    for (int i = 0; i < k; i++) {
        uint32_t idx = evs[i].data.u32;
        if (idx == UINT32_MAX) {
            char line[256];
            ssize_t r = read(0, line, sizeof line);
            if (r <= 0) {
                fprintf(stderr, "rpc_load: stdin closed before \"go\"\n");
                exit(2);
            }
            stdin_line = 1;
            epoll_ctl(EP, EPOLL_CTL_DEL, 0, NULL);
            continue;
        }
        if (C[idx].fd >= 0 && !gone(&C[idx])) on_socket((int)idx, t);
    }
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s HOST PORT SESSIONS SECONDS RATE SEED [SOURCE] [--idle] [--key PASSPHRASE] [--inflight N] "
            "[--stats]\n",
            argv0);
    exit(1);
}

int main(int argc, char **argv) {
    const char *pos[7];
    int npos = 0, max_inflight = 64;
    const char *key = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--idle")) IDLE = 1;
        else if (!strcmp(argv[i], "--stats")) STATS = 1;
        else if (!strcmp(argv[i], "--group-ms") && i + 1 < argc) GROUP_NS = atoll(argv[++i]) * NS_PER_MS;
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) key = argv[++i];
        else if (!strcmp(argv[i], "--inflight") && i + 1 < argc) max_inflight = atoi(argv[++i]);
        else if (argv[i][0] == '-' && argv[i][1] == '-') usage(argv[0]);
        else if (npos < 7) pos[npos++] = argv[i];
        else usage(argv[0]);
    }
    if (npos < 6 || max_inflight < 1) usage(argv[0]);
    int port = atoi(pos[1]);
    NS = atoi(pos[2]);
    double seconds = atof(pos[3]), rate = atof(pos[4]);
    srand((unsigned)atoi(pos[5]));
    if (NS < 0 || seconds <= 0 || rate <= 0) usage(argv[0]);
    DST.sin_family = AF_INET;
    DST.sin_port = htons(port);
    if (inet_pton(AF_INET, pos[0], &DST.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", pos[0]);
        return 1;
    }
    SRC.sin_family = AF_INET;
    if (npos == 7) {
        HAVE_SRC = 1;
        if (inet_pton(AF_INET, pos[6], &SRC.sin_addr) != 1) {
            fprintf(stderr, "bad source %s\n", pos[6]);
            return 1;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* the PSK: anonymous (32 zero bytes) or scrypt of the passphrase; the mac1 and cookie keys */
    if (key) {
        const char salt[] = "kcprpc secure psk v1";
        if (EVP_PBE_scrypt(key, strlen(key), (const unsigned char *)salt, sizeof salt - 1, 1 << 14, 8, 1,
                           64 * 1024 * 1024, PSK, 32) != 1)
            die("scrypt failed");
    }
    uint8_t m[64];
    memcpy(m, "kcprpc mac1", 11);
    m[11] = 2;
    memcpy(m + 12, PSK, 32);
    sha256(m, 44, MAC1_KEY);
    memcpy(m, "kcprpc cookie", 13);
    m[13] = 2;
    memcpy(m + 14, PSK, 32);
    sha256(m, 46, COOKIE_KEY);
    /* the proposal (kcp/secure/config.py ClientHello.encode, tags 1-7 then 12) */
    const uint8_t tlv[] = {1, 0, 1, 1,                                        /* versions [1] */
                           2, 0, 2, SUITE_AESGCM, SUITE_CHACHA,               /* suites */
                           3, 0, 2, MTU0 >> 8, MTU0 & 0xff,                   /* mtu */
                           4, 0, 4, KCP_WND >> 8, KCP_WND & 0xff, KCP_WND >> 8, KCP_WND & 0xff, /* windows */
                           5, 0, 3, 0, 0, 0,                                  /* no FEC */
                           6, 0, 1, SMUX_VER,                                 /* mux */
                           7, 0, 0,                                           /* token */
                           12, 0, 1, FEATURES};
    memcpy(HELLO_TLV, tlv, sizeof tlv);
    HELLO_TLV_LEN = sizeof tlv;
    C = calloc(NS ? NS : 1, sizeof(Conn));
    if (!C) die("out of memory");
    for (int i = 0; i < NS; i++) C[i].fd = -1;
    EP = epoll_create1(0);
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(EP, EPOLL_CTL_ADD, 0, &sev);
    T_BASE = loop_now() - (int64_t)(rand() % 100000) * NS_PER_MS;
    /* warm-up: connects at RATE, at most max_inflight at once, each bounded by its timeouts */
    int64_t t0 = loop_now();
    int64_t warm_end = t0 + (int64_t)((NS / rate + 90) * NS_PER_S);
    int next = 0;
    while (next < NS || inflight_connects > 0) {
        int64_t t = loop_now();
        while (next < NS && inflight_connects < max_inflight && t >= t0 + (int64_t)(next / rate * NS_PER_S)) {
            start_connect(next, t);
            arm(next);
            next++;
        }
        if (t > warm_end) {
            fprintf(stderr, "rpc_load: warm-up: %ld of %d connected by the limit\n", connected, NS);
            return 2;
        }
        int64_t until = next < NS ? t0 + (int64_t)(next / rate * NS_PER_S) : warm_end;
        if (until <= t) until = t + NS_PER_MS;
        pump(until);
    }
    printf("ready %ld %ld\n", connected, connect_errors);
    fflush(stdout);
    /* settle: the connections live on (heartbeats, probes) until a line comes on stdin */
    int64_t go_end = now_ns() + 600 * NS_PER_S;
    while (!stdin_line) {
        if (now_ns() > go_end) {
            fprintf(stderr, "rpc_load: no \"go\" within 600 s\n");
            return 2;
        }
        pump(now_ns() + 50 * NS_PER_MS);
    }
    /* measurement */
    for (int i = 0; i < WHY_N; i++) lost[i] = 0;
    lost_total = 0;
    failed = 0;
    long out0 = st_dgram_out, in0 = st_dgram_in, ka0 = st_keepalives, rt0 = st_retrans;
    int64_t start = loop_now();
    double cpu0 = cpu_seconds();
    window_end = start + (int64_t)(seconds * NS_PER_S);
    measuring = 1;
    if (!IDLE) {
        for (int i = 0; i < NS; i++) {
            Conn *c = &C[i];
            if (c->state != ST_READY && !c->reconnecting) continue;
            c->measuring = 1;
            c->next_call = start + (int64_t)((double)rand() / RAND_MAX * NS_PER_S);
            arm(i);
        }
    }
    int64_t hard_end = window_end + 15 * NS_PER_S;
    for (;;) { /* the window, then the calls still in flight (each has its deadline) */
        int64_t t = now_ns();
        if (t >= hard_end) break;
        if (t >= window_end) { /* done when no call is in flight or still due in the window */
            int busy = 0;
            for (int i = 0; i < NS && !busy; i++) {
                Conn *c = &C[i];
                busy = c->state != ST_DONE && (c->call_id != 0 || (c->measuring && c->next_call < window_end));
            }
            if (!busy) break;
        }
        pump(t < window_end ? window_end : hard_end);
    }
    measuring = 2;
    double cpu = cpu_seconds() - cpu0;
    double wall = (now_ns() - start) / 1e9;
    /* by the hard end: a call still in flight fails, as does every call still due in the window */
    if (!IDLE) {
        for (int i = 0; i < NS; i++) {
            Conn *c = &C[i];
            if (!c->measuring) continue;
            if (c->call_id) failed++;
            for (int64_t s = c->next_call; s < window_end; s += NS_PER_S) failed++;
        }
    }
    printf("result %ld %.6f %.6f %ld ", failed, cpu, wall, reconnects);
    if (!lost_total) printf("-");
    for (int i = 0, first = 1; i < WHY_N; i++) {
        if (!lost[i]) continue;
        printf("%s%s:%ld", first ? "" : ",", WHY[i], lost[i]);
        first = 0;
    }
    printf(" %ld", nlat);
    for (long i = 0; i < nlat; i++) printf(" %lld", (long long)lats[i]);
    printf("\n");
    fflush(stdout);
    if (STATS)
        fprintf(stderr,
            "rpc_load: window: %ld datagrams out, %ld in, %ld keepalives, %ld resends; run: %ld initiations, %ld "
            "retries, %ld probes, %ld probe answers, %ld REACKs, %ld cancels, %ld undecryptable; connect errors by "
            "cause (timeout, hint, refused, hello, warm, call, proto, lost): %ld %ld %ld %ld %ld %ld %ld %ld\n",
            st_dgram_out - out0, st_dgram_in - in0, st_keepalives - ka0, st_retrans - rt0, st_inits, st_retries,
            st_probes, st_probe_acks_sent, st_reacks, st_cancels, st_decrypt_err, st_err_reason[0], st_err_reason[1],
            st_err_reason[2], st_err_reason[3], st_err_reason[4], st_err_reason[5], st_err_reason[6],
            st_err_reason[7]);
    /* an authenticated CLOSE on every live connection (as a client's close) once stdin ends */
    int64_t close_at = now_ns() + 30 * NS_PER_S;
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (;;) {
        int64_t left = (close_at - now_ns()) / NS_PER_MS;
        if (left <= 0) break;
        char buf[256];
        int r = poll(&in, 1, (int)left);
        if (r > 0 && read(0, buf, sizeof buf) <= 0) break;
        if (r < 0 && errno != EINTR) break;
    }
    for (int i = 0; i < NS; i++)
        if (C[i].state == ST_READY) send_close(&C[i]);
    return 0;
}
