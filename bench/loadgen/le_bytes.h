/* Little-endian integers in byte buffers, as KCP's segment header stores them (conv, wnd, ts, sn,
 * una, len), for the C load generators (kcp_echo_load.c, rpc_load.c). */
#ifndef KCPRPC_LE_BYTES_H
#define KCPRPC_LE_BYTES_H
#include <stdint.h>

static void put32le(uint8_t *p, uint32_t v) {
    p[0] = v;
    p[1] = v >> 8;
    p[2] = v >> 16;
    p[3] = v >> 24;
}
static void put16le(uint8_t *p, uint16_t v) {
    p[0] = v;
    p[1] = v >> 8;
}
static uint32_t get32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint16_t get16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
#endif
