/* A min-heap of timer events for the C load generators (kcp_echo_load.c, rpc_load.c): each event
 * names a session by index and carries that session's generation when it was armed, so a timer
 * that was re-armed is invalidated lazily (the caller drops a popped event whose generation is
 * not the session's current one). Single-threaded; the heap grows by doubling (exit 3 when out of
 * memory). Included once per program: the state is static. */
#ifndef KCPRPC_TIMER_HEAP_H
#define KCPRPC_TIMER_HEAP_H
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    int64_t t;
    int idx;
    uint32_t gen;
} Ev;

static Ev *heap;
static int heap_n, heap_cap;

static void heap_push(int64_t t, int idx, uint32_t g) {
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 4096;
        heap = realloc(heap, sizeof(Ev) * heap_cap);
        if (!heap) exit(3);
    }
    int i = heap_n++;
    Ev e = {t, idx, g};
    while (i > 0) {
        int p = (i - 1) / 2;
        if (heap[p].t <= t) break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = e;
}

static Ev heap_pop(void) {
    Ev top = heap[0], last = heap[--heap_n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= heap_n) break;
        if (c + 1 < heap_n && heap[c + 1].t < heap[c].t) c++;
        if (heap[c].t >= last.t) break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_n > 0) heap[i] = last;
    return top;
}
#endif
