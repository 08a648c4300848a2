/* A KCP echo load generator for bench/many_sessions.py --client c: many client sessions in one
 * process, cheap enough that the server, not the load, is what a 2-core machine measures.
 *
 *   kcp_echo_load HOST PORT SESSIONS SECONDS WARM_BATCH SEED [SOURCE]
 *
 * SOURCE: the local address the sockets bind to (another 127.x address per process: one address
 * has only the ephemeral port range's ~28,000 ports).
 * Each session has its own UDP socket (connected to HOST:PORT, as kcp-go's dial does) and a random
 * conv. It speaks KCP's segment format (24-byte header: conv u32, cmd u8, frg u8, wnd u16, ts u32,
 * sn u32, una u32, len u32, little-endian; PUSH 81, ACK 82, WASK 83, WINS 84) with no packet layer
 * (kcp.CompatWire() without crypt or FEC), as a stop-and-wait sender: one 32-byte message in
 * flight per session, resent until the server acknowledges it after a timeout that doubles (100 ms,
 * at most 1 s; 10 timeouts without the echo are an error), every
 * PUSH of the server acknowledged at once in one datagram per datagram received.
 *
 * Warm-up: each session's first echo, WARM_BATCH sessions in flight at a time; then it prints
 * "ready" and waits for a line on stdin. Measurement: every session sends one message per second,
 * phases spread over the second, for SECONDS; then it prints one line:
 *   "result ERRORS CPU_SECONDS WALL_SECONDS N LAT_US LAT_US ..."
 * (the N echo latencies in microseconds). A session whose message exhausts its tries counts as an
 * error and stops. Bounded: the whole run ends by SECONDS + 15 s after "go" whatever the server
 * does, and the warm-up fails (exit 2) after 120 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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

#define MSG 32
#define HDR 24
#define CMD_PUSH 81
#define CMD_ACK 82
#define CMD_WASK 83
#define CMD_WINS 84
#define WND 128
#define RTO0_NS 100000000LL
#define RTO_MAX_NS 1000000000LL
#define TRIES 10

typedef struct {
    int fd;
    uint32_t conv;
    uint32_t snd_sn;   /* sn of the message in flight (or the next one) */
    uint32_t rcv_nxt;  /* next sn expected from the server */
    int inflight;      /* a message sent, its echo not yet received */
    int acked;         /* the server acknowledged the message in flight */
    int tries;
    int dead;
    int64_t t_sent;    /* first send of the message in flight */
    int64_t rto;
    int64_t next_send; /* measurement phase: when the next message goes */
    uint8_t payload[MSG];
} Sess;

static Sess *S;
static int NS;
static uint32_t *gen;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t now_ms(void) { return (uint32_t)(now_ns() / 1000000LL); }

static void seg(uint8_t *p, uint32_t conv, uint8_t cmd, uint32_t ts, uint32_t sn, uint32_t una, uint32_t len) {
    put32le(p, conv);
    p[4] = cmd;
    p[5] = 0;
    put16le(p + 6, WND);
    put32le(p + 8, ts);
    put32le(p + 12, sn);
    put32le(p + 16, una);
    put32le(p + 20, len);
}

static void arm(int idx, int64_t t) {
    gen[idx]++;
    heap_push(t, idx, gen[idx]);
}

static void transmit(Sess *s) {
    uint8_t buf[HDR + MSG];
    seg(buf, s->conv, CMD_PUSH, now_ms(), s->snd_sn, s->rcv_nxt, MSG);
    memcpy(buf + HDR, s->payload, MSG);
    (void)send(s->fd, buf, sizeof buf, 0);
}

static int in_flight; /* messages sent whose echo has not come back (nor their tries run out) */

static void start_message(int idx, int64_t t) {
    Sess *s = &S[idx];
    in_flight++;
    s->inflight = 1;
    s->acked = 0;
    s->tries = 1;
    s->t_sent = t;
    s->rto = RTO0_NS;
    snprintf((char *)s->payload, MSG, "%08x%016llx", s->conv, (unsigned long long)t);
    transmit(s);
    arm(idx, t + s->rto);
}

/* counters and results */
static long errors;
static int64_t *lats;
static long nlat, lat_cap;
static int measuring;         /* 0: warm-up; then echoes are timed */
static int64_t window_end = 0; /* a message due before it is part of the measurement */

static void echo_done(int idx, int64_t t) {
    Sess *s = &S[idx];
    in_flight--;
    s->inflight = 0;
    s->snd_sn++;
    if (measuring) {
        if (nlat == lat_cap) {
            lat_cap = lat_cap ? lat_cap * 2 : 65536;
            lats = realloc(lats, sizeof(int64_t) * lat_cap);
            if (!lats) exit(3);
        }
        lats[nlat++] = (t - s->t_sent) / 1000;
        arm(idx, s->next_send);
    } else {
        gen[idx]++; /* no timer until the measurement */
    }
}

static void on_datagram(int idx, const uint8_t *p, ssize_t n, int64_t t) {
    Sess *s = &S[idx];
    uint8_t out[1500];
    int on = 0;
    while (n >= HDR) {
        uint32_t conv = get32le(p), ts = get32le(p + 8), sn = get32le(p + 12), una = get32le(p + 16), len = get32le(p + 20);
        uint8_t cmd = p[4];
        if (conv != s->conv || (ssize_t)(HDR + len) > n) break;
        if (s->inflight && (int32_t)(una - s->snd_sn) > 0) s->acked = 1;
        if (cmd == CMD_ACK) {
            if (s->inflight && sn == s->snd_sn) s->acked = 1;
        } else if (cmd == CMD_PUSH) {
            if (on + HDR <= (int)sizeof out) {
                seg(out + on, s->conv, CMD_ACK, ts, sn, 0, 0);
                on += HDR;
            }
            if (sn == s->rcv_nxt) {
                s->rcv_nxt++;
                if (len == MSG && s->inflight && memcmp(p + HDR, s->payload, MSG) == 0) echo_done(idx, t);
            }
        } else if (cmd == CMD_WASK) {
            if (on + HDR <= (int)sizeof out) {
                seg(out + on, s->conv, CMD_WINS, 0, 0, 0, 0);
                on += HDR;
            }
        }
        p += HDR + len;
        n -= HDR + len;
    }
    if (on) {
        for (int i = 0; i < on; i += HDR) put32le(out + i + 16, s->rcv_nxt); /* una: what we hold */
        (void)send(s->fd, out, on, 0);
    }
}

static void on_timer(int idx, int64_t t) {
    Sess *s = &S[idx];
    if (s->dead) return;
    if (s->inflight) { /* the echo is late: resend, unless the tries are spent */
        if (s->tries >= TRIES) {
            s->dead = 1;
            s->inflight = 0;
            in_flight--;
            errors++;
            return;
        }
        s->tries++;
        s->rto = s->rto * 2 > RTO_MAX_NS ? RTO_MAX_NS : s->rto * 2;
        if (!s->acked) transmit(s); /* acknowledged: the server resends a lost echo itself */
        arm(idx, t + s->rto);
        return;
    }
    if (measuring && t >= s->next_send && s->next_send < window_end) {
        s->next_send += 1000000000LL;
        start_message(idx, t);
    }
}

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

/* one turn: the timers due, then at most one wait for datagrams (until the next timer, `until`
 * or 50 ms) and the datagrams it found */
static void pump(int ep, int64_t until) {
    struct epoll_event evs[256];
    uint8_t buf[2048];
    int64_t t = now_ns();
    while (heap_n > 0 && heap[0].t <= t) {
        Ev e = heap_pop();
        if (e.gen == gen[e.idx]) on_timer(e.idx, t);
    }
    if (t >= until) return;
    int64_t wait = until - t;
    if (heap_n > 0 && heap[0].t - t < wait) wait = heap[0].t - t;
    int ms = (int)((wait + 999999) / 1000000);
    if (ms > 50) ms = 50;
    int k = epoll_wait(ep, evs, 256, ms);
    t = now_ns();
    for (int i = 0; i < k; i++) {
        int idx = evs[i].data.u32;
        for (int j = 0; j < 8; j++) { /* a few datagrams per socket per wake */
            ssize_t n = recv(S[idx].fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) break;
            on_datagram(idx, buf, n, t);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT SESSIONS SECONDS WARM_BATCH SEED [SOURCE]\n", argv[0]);
        return 1;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    NS = atoi(argv[3]);
    double seconds = atof(argv[4]);
    int warm_batch = atoi(argv[5]);
    srand((unsigned)atoi(argv[6]));
    S = calloc(NS, sizeof(Sess));
    gen = calloc(NS, sizeof(uint32_t));
    if (!S || !gen) return 3;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        return 1;
    }
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET;
    if (argc == 8 && inet_pton(AF_INET, argv[7], &src.sin_addr) != 1) {
        fprintf(stderr, "bad source %s\n", argv[7]);
        return 1;
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < NS; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0 || (argc == 8 && bind(fd, (struct sockaddr *)&src, sizeof src) < 0) ||
            connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("socket");
            return 2;
        }
        S[i].fd = fd;
        S[i].conv = ((uint32_t)rand() << 16) ^ (uint32_t)rand() ^ (uint32_t)i;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    /* warm-up: every session's first echo, warm_batch in flight at a time */
    int64_t warm_end = now_ns() + 120000000000LL;
    int warm_next = 0;
    while (warm_next < NS || in_flight > 0) {
        while (warm_next < NS && in_flight < warm_batch) start_message(warm_next++, now_ns());
        if (now_ns() > warm_end) {
            fprintf(stderr, "warm-up: %d of %d sessions echoed in 120 s\n", warm_next - in_flight, NS);
            return 2;
        }
        pump(ep, warm_end);
    }
    long warm_errors = errors;
    printf("ready %ld\n", warm_errors);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    /* measurement */
    errors = 0;
    measuring = 1;
    int64_t start = now_ns();
    double cpu0 = cpu_seconds();
    int64_t end = window_end = start + (int64_t)(seconds * 1e9);
    for (int i = 0; i < NS; i++) {
        if (S[i].dead) continue;
        S[i].next_send = start + (int64_t)((double)rand() / RAND_MAX * 1e9);
        arm(i, S[i].next_send);
    }
    int64_t hard_end = end + 15000000000LL;
    for (;;) { /* after the window: the messages due in it, then their echoes still in flight */
        int64_t t = now_ns();
        if (t >= end && in_flight == 0 && (heap_n == 0 || heap[0].t >= end)) break;
        if (t >= hard_end) break;
        pump(ep, t < end ? end : hard_end);
    }
    double cpu = cpu_seconds() - cpu0;
    double wall = (now_ns() - start) / 1e9;
    errors += in_flight; /* echoes that never came back by the hard end */
    printf("result %ld %.6f %.6f %ld", errors, cpu, wall, nlat);
    for (long i = 0; i < nlat; i++) printf(" %lld", (long long)lats[i]);
    printf("\n");
    fflush(stdout);
    return 0;
}
